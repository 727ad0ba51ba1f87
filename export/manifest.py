"""The JSON manifest of an early-exit export: what a device needs to chain the segment files.

A microcontroller runs one single-subgraph int8 .tflite per segment (DESIGN.md 3). To chain them it
must know, without TensorFlow: the segment order and files; which input and output of each file is
which (by position, since the converter may reorder outputs); the quantization of every input and
output (segment k's feature output and segment k+1's input are calibrated separately, so a device
requantizes when they differ); the exit each segment ends at and its confidence threshold; the MACs
and arena each segment needs. The manifest also maps the single multi-output file's outputs to exits
for phones and the benchmark tool.

Confidence (recorded as `confidence` = 'max_softmax'): the largest softmax probability of an exit's
dequantized logits. A segment's threshold is null until a threshold sweep fills it; null means
"never stop here" (always run on), so a fresh manifest runs every segment, like the always-last
baseline.
The last segment always stops.
"""

import dataclasses
import json
import math
import os
from typing import Dict, Mapping, Optional, Tuple, Union

from export import atomic_write
from export.errors import ExportError

FORMAT = 'ofav2-early-exit'
VERSION = 1
CONFIDENCE = 'max_softmax'


def _require(data, key, where):
  if not isinstance(data, Mapping) or key not in data:
    raise ExportError(f'manifest {where} lacks field {key!r}; re-export with export.segments')
  return data[key]


@dataclasses.dataclass(frozen=True)
class TensorEntry:
  """One input or output of a .tflite file.

  Attributes:
    name: Signature name ('image', 'features2', 'exit2'); segment k+1's input has the name of
      segment k's feature output.
    index: Position among the file's inputs (or outputs); what a TFLite Micro interpreter's
      `input(i)` / `output(i)` take.
    tensor_index: Tensor index in the subgraph (what LiteRT's tensor details use).
    dtype: 'int8' for every exported file.
    shape: Static shape, batch 1.
    scale: Quantization scale (None for float tensors).
    zero_point: Quantization zero point (None for float tensors).
  """

  name: str
  index: int
  tensor_index: int
  dtype: str
  shape: Tuple[int, ...]
  scale: Optional[float] = None
  zero_point: Optional[int] = None

  @classmethod
  def from_info(cls, info, name: str, index: int) -> 'TensorEntry':
    """From a `tflite_inspect.TensorInfo`."""
    return cls(name=name, index=int(index), tensor_index=int(info.index), dtype=info.dtype,
               shape=tuple(int(d) for d in info.shape),
               scale=info.scale if info.is_quantized else None,
               zero_point=info.zero_point if info.is_quantized else None)

  def to_dict(self) -> dict:
    return {**dataclasses.asdict(self), 'shape': list(self.shape)}

  @classmethod
  def from_dict(cls, data, where) -> 'TensorEntry':
    fields = {f.name: _require(data, f.name, where) for f in dataclasses.fields(cls)}
    fields['shape'] = tuple(fields['shape'])
    return cls(**fields)


def _tensors_to_dict(tensors):
  return [t.to_dict() for t in tensors]


def _tensors_from_dict(items, where):
  return tuple(TensorEntry.from_dict(item, f'{where}[{i}]') for i, item in enumerate(items))


@dataclasses.dataclass(frozen=True)
class SegmentEntry:
  """One segment file.

  Attributes:
    exit: The exit whose logits this segment returns.
    file: File name, relative to the manifest's directory.
    size_bytes: File size (flash).
    inputs: The file's inputs (one: the image, or the previous segment's features).
    outputs: The file's outputs in file order.
    logits: Name of the logits output.
    features: Name of the feature output fed to the next segment (None for the last segment).
    macs: Multiply-accumulates of this segment alone.
    cumulative_macs: MACs spent by a cascade that stops at this exit (every segment so far).
    threshold: Confidence at or above which the cascade stops here; None = never stop here.
    arena_used_bytes: TFLite Micro recording allocator's total for this file.
    arena_bytes: Smallest TFLite Micro arena that loads and runs the file (what to reserve).
    tflm_max_step_diff: Largest difference, in quantization steps, between TFLite Micro's and
      LiteRT's reference kernels' outputs on a real input (the export check).
  """

  exit: int
  file: str
  size_bytes: int
  inputs: Tuple[TensorEntry, ...]
  outputs: Tuple[TensorEntry, ...]
  logits: str
  features: Optional[str]
  macs: int
  cumulative_macs: int
  threshold: Optional[float] = None
  arena_used_bytes: Optional[int] = None
  arena_bytes: Optional[int] = None
  tflm_max_step_diff: Optional[int] = None

  def output(self, name: str) -> TensorEntry:
    for tensor in self.outputs:
      if tensor.name == name:
        return tensor
    raise ExportError(f'segment {self.file} has no output {name!r}; outputs: '
                      f'{[t.name for t in self.outputs]}')

  def to_dict(self) -> dict:
    data = dataclasses.asdict(self)
    data['inputs'] = _tensors_to_dict(self.inputs)
    data['outputs'] = _tensors_to_dict(self.outputs)
    return data

  @classmethod
  def from_dict(cls, data, where) -> 'SegmentEntry':
    fields = {f.name: _require(data, f.name, where) for f in dataclasses.fields(cls)
              if f.default is dataclasses.MISSING}
    optional = {f.name: data.get(f.name) for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING}
    fields['inputs'] = _tensors_from_dict(fields['inputs'], f'{where}.inputs')
    fields['outputs'] = _tensors_from_dict(fields['outputs'], f'{where}.outputs')
    return cls(**fields, **optional)


@dataclasses.dataclass(frozen=True)
class MultiOutputEntry:
  """The single file with every exit as an output (phones, the benchmark tool).

  Attributes:
    file: File name, relative to the manifest's directory.
    size_bytes: File size.
    inputs: The image input.
    outputs: Outputs in file order (read from the flatbuffer; not the exit order).
    output_index: Exit output name ('exit3') -> position among the file's outputs.
  """

  file: str
  size_bytes: int
  inputs: Tuple[TensorEntry, ...]
  outputs: Tuple[TensorEntry, ...]
  output_index: Dict[str, int]

  def to_dict(self) -> dict:
    return {'file': self.file, 'size_bytes': self.size_bytes,
            'inputs': _tensors_to_dict(self.inputs), 'outputs': _tensors_to_dict(self.outputs),
            'output_index': dict(self.output_index)}

  @classmethod
  def from_dict(cls, data, where) -> 'MultiOutputEntry':
    return cls(file=_require(data, 'file', where), size_bytes=_require(data, 'size_bytes', where),
               inputs=_tensors_from_dict(_require(data, 'inputs', where), f'{where}.inputs'),
               outputs=_tensors_from_dict(_require(data, 'outputs', where), f'{where}.outputs'),
               output_index={str(k): int(v) for k, v in
                             _require(data, 'output_index', where).items()})


@dataclasses.dataclass(frozen=True)
class Manifest:
  """Everything about one early-exit export.

  Attributes:
    variant: Supernet variant name.
    num_classes: Logits per exit.
    width_multiplier: Supernet width multiplier.
    config: The sub-network (`SubnetConfig.to_dict()`).
    exits: The exported exits, in segment order.
    segments: One entry per segment, in run order.
    multi_output: The multi-output file, if written.
    confidence: How an exit's confidence is computed (see module docstring).
    calibration_images: Representative images used for int8 calibration.
    sweep: Summary of the threshold sweep that set the thresholds, if one did.
  """

  variant: str
  num_classes: int
  width_multiplier: float
  config: dict
  exits: Tuple[int, ...]
  segments: Tuple[SegmentEntry, ...]
  multi_output: Optional[MultiOutputEntry] = None
  confidence: str = CONFIDENCE
  calibration_images: int = 0
  sweep: Optional[dict] = None

  @property
  def thresholds(self) -> Dict[int, Optional[float]]:
    return {s.exit: s.threshold for s in self.segments}

  def with_thresholds(self, thresholds: Union[None, float, Mapping[int, Optional[float]]],
                      sweep: Optional[dict] = None) -> 'Manifest':
    """A copy with new thresholds: one value for every exit but the last, or a dict per exit.

    The last segment's threshold is always None: the cascade stops there anyway.
    """
    if thresholds is None or isinstance(thresholds, (int, float)):
      per_exit = {e: thresholds for e in self.exits}
    else:
      per_exit = {int(k): v for k, v in thresholds.items()}
      unknown = sorted(set(per_exit) - set(self.exits))
      if unknown:
        raise ExportError(f'thresholds given for exits {unknown}; this export has exits '
                          f'{list(self.exits)}')
    segments = []
    for i, seg in enumerate(self.segments):
      value = per_exit.get(seg.exit, seg.threshold)
      if i == len(self.segments) - 1:
        value = None
      if value is not None:
        value = float(value)
        if math.isnan(value) or not 0.0 <= value <= 1.0:
          raise ExportError(f'threshold {value} for exit {seg.exit} is not a probability; '
                            'give a value in [0, 1] or None')
      segments.append(dataclasses.replace(seg, threshold=value))
    return dataclasses.replace(self, segments=tuple(segments),
                               sweep=sweep if sweep is not None else self.sweep)

  def to_dict(self) -> dict:
    return {'format': FORMAT, 'version': VERSION, 'variant': self.variant,
            'num_classes': self.num_classes, 'width_multiplier': self.width_multiplier,
            'config': self.config, 'exits': list(self.exits), 'confidence': self.confidence,
            'calibration_images': self.calibration_images,
            'segments': [s.to_dict() for s in self.segments],
            'multi_output': self.multi_output.to_dict() if self.multi_output else None,
            'sweep': self.sweep}

  @classmethod
  def from_dict(cls, data, source='<dict>') -> 'Manifest':
    if not isinstance(data, Mapping) or data.get('format') != FORMAT:
      raise ExportError(f'{source} is not an early-exit manifest (format {FORMAT!r} expected)')
    if data.get('version') != VERSION:
      raise ExportError(f'{source} has manifest version {data.get("version")}; this code reads '
                        f'version {VERSION}')
    segments = tuple(SegmentEntry.from_dict(s, f'{source} segments[{i}]')
                     for i, s in enumerate(_require(data, 'segments', source)))
    if not segments:
      raise ExportError(f'{source} lists no segments')
    multi = data.get('multi_output')
    return cls(variant=_require(data, 'variant', source),
               num_classes=int(_require(data, 'num_classes', source)),
               width_multiplier=float(_require(data, 'width_multiplier', source)),
               config=_require(data, 'config', source),
               exits=tuple(int(e) for e in _require(data, 'exits', source)),
               segments=segments,
               multi_output=MultiOutputEntry.from_dict(multi, f'{source} multi_output')
               if multi else None,
               confidence=data.get('confidence', CONFIDENCE),
               calibration_images=int(data.get('calibration_images', 0)),
               sweep=data.get('sweep'))

  def save(self, path) -> str:
    """Writes the manifest as JSON, atomically; returns the path."""
    return atomic_write.write_text(path, json.dumps(self.to_dict(), indent=2) + '\n')

  @classmethod
  def load(cls, path) -> 'Manifest':
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise ExportError(f'manifest {path} does not exist; pass the manifest.json an early-exit '
                        'export wrote')
    with open(path, encoding='utf-8') as f:
      try:
        data = json.load(f)
      except json.JSONDecodeError as e:
        raise ExportError(f'manifest {path} is not valid JSON: {e}') from None
    return cls.from_dict(data, path)
