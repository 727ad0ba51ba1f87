"""Early-exit export for microcontrollers: one int8 .tflite per segment, plus a JSON manifest.

TFLite's IF op and multi-signature files do not survive int8 conversion or TFLite Micro reliably
(DESIGN.md 3), so an early-exit sub-network ships as a chain of plain single-subgraph files. For
exits e_1 < ... < e_n, segment i takes the previous segment's feature map (segment 1 the image) and
returns exit e_i's logits and its own feature map (the stage output that exit's head reads, which
feeds segment i+1); the last segment returns only logits. A device runs segment 1, checks the exit's
confidence, and runs the next segment only if it is not confident enough (export.cascade).

The segments are cut out of the extracted multi-exit model (export.graph_slice), so chaining them
computes exactly what that model computes. Stages only connect through their output (dense skips
stay inside a stage), so the feature map is the only tensor crossing a segment boundary.

Each segment is quantized with its own representative inputs: the representative images run
through the float segments before it. The multi-output file (every exit an output) is quantized from
the images directly; phones and the benchmark tool run it, and its output order is read from the
flatbuffer. The export finishes by running every segment under TFLite Micro, comparing it with
LiteRT's reference kernels and recording its arena in the manifest.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tf_keras

from export import graph_slice
from export import litert_runner
from export import manifest as manifest_lib
from export import tflite_convert
from export import tflite_inspect
from export import tflm_runner
from export import quantization
from export.errors import ExportError
from ofav2_tf import costs
from ofav2_tf import extraction

MANIFEST_NAME = 'manifest.json'
MULTI_OUTPUT_NAME = 'multi_exit.tflite'
IMAGE_INPUT = 'image'


def features_name(exit_number: int) -> str:
  """Name of the feature map segment `exit_number` hands to the next one (and its input name)."""
  return f'features{exit_number}'


def segment_file_name(position: int, exit_number: int) -> str:
  return f'segment{position + 1}_exit{exit_number}.tflite'


@dataclasses.dataclass(frozen=True)
class Segment:
  """One float segment model.

  Attributes:
    exit: The exit whose logits it returns.
    model: Functional tf_keras model of standard layers.
    input_name: 'image' or the previous segment's `features_name`.
    logits_name: 'exit{k}'.
    features_name: Name of the feature output, None for the last segment.
  """

  exit: int
  model: tf_keras.Model
  input_name: str
  logits_name: str
  features_name: Optional[str]


def model_exits(model) -> List[int]:
  """Exit numbers of an extracted model's outputs (named 'exit{k}')."""
  exits = []
  for name in model.output_names:
    if not (name.startswith('exit') and name[4:].isdigit()):
      raise ExportError(f'model {model.name!r} output {name!r} is not an exit; segments are cut '
                        "from extracted models whose outputs are named 'exit{k}'")
    exits.append(int(name[4:]))
  return sorted(exits)


def feature_layer(model, exit_number: int) -> str:
  """The layer whose output feeds exit `exit_number`'s head: the output of its stage."""
  try:
    head_conv = model.get_layer(f'exit{exit_number}_conv')
  except ValueError:
    raise ExportError(f'model {model.name!r} has no exit {exit_number} head '
                      f'(layer exit{exit_number}_conv); its exits: {model_exits(model)}') from None
  return head_conv.inbound_nodes[0].inbound_layers.name


def split(model, exits: Optional[Sequence[int]] = None, batch_size: Optional[int] = 1
          ) -> List[Segment]:
  """Cuts an extracted multi-exit model into one model per exit.

  Args:
    model: An extracted model (`extraction.extract(..., exits=[...])`), outputs 'exit{k}'.
    exits: The exits to cut at (a subset of the model's; the largest must be its last); default all
      of the model's exits.
    batch_size: Fixed batch of the segments' inputs (1 for deployment; None to run them on batches).

  Returns:
    The segments in run order.
  """
  available = model_exits(model)
  exits = sorted(set(int(e) for e in exits)) if exits is not None else available
  bad = [e for e in exits if e not in available]
  if bad or not exits:
    raise ExportError(f'exits {bad or exits} are not outputs of {model.name!r}; available exits: '
                      f'{available}')
  if exits[-1] != available[-1]:
    raise ExportError(f'the last segment must end at the model\'s last exit {available[-1]}; got '
                      f'exits {exits}')
  image_layer = model.inputs[0]._keras_history.layer.name  # pylint: disable=protected-access
  segments = []
  previous = None
  for position, exit_number in enumerate(exits):
    last = position == len(exits) - 1
    if previous is None:
      inputs, input_name = {image_layer: IMAGE_INPUT}, IMAGE_INPUT
    else:
      input_name = features_name(previous)
      inputs = {feature_layer(model, previous): input_name}
    outputs = [f'exit{exit_number}']
    if not last:
      outputs.append((feature_layer(model, exit_number), features_name(exit_number)))
    sliced = graph_slice.slice_model(model, inputs, outputs, batch_size=batch_size,
                                     name=f'{model.name}_segment{position + 1}')
    segments.append(Segment(exit=exit_number, model=sliced, input_name=input_name,
                            logits_name=f'exit{exit_number}',
                            features_name=None if last else features_name(exit_number)))
    previous = exit_number
  return segments


def _predict(model, inputs, batch_size):
  """Float outputs of `model` as a dict by output name, over `inputs` in batches."""
  results = {name: [] for name in model.output_names}
  for start in range(0, len(inputs), batch_size):
    outputs = model(inputs[start:start + batch_size], training=False)
    if not isinstance(outputs, (list, tuple)):
      outputs = [outputs]
    for name, value in zip(model.output_names, outputs):
      results[name].append(np.asarray(value))
  return {name: np.concatenate(values) for name, values in results.items()}


def run_float_chain(segments: Sequence[Segment], images, batch_size: int = 32
                    ) -> Dict[str, np.ndarray]:
  """Runs the float segments one after another on `images` [N, H, W, 3].

  Returns:
    Every segment output by name: 'exit{k}' logits and 'features{k}' maps, each [N, ...].
  """
  results = {}
  current = np.asarray(images, np.float32)
  for segment in segments:
    outputs = _predict(segment.model, current, batch_size)
    results.update(outputs)
    if segment.features_name is not None:
      current = outputs[segment.features_name]
  return results


def resolve_exits(supernet, config, exits) -> List[int]:
  """The exported exits: every exit up to `config.exit` by default; must include `config.exit`."""
  if not supernet.variant.early_exits:
    raise ExportError(f'variant {supernet.variant.name} has a single exit; early-exit segments '
                      'need an EE_* variant (export its one file with export.tflite_convert)')
  exits = list(range(1, config.exit + 1)) if exits is None else sorted(set(int(e) for e in exits))
  bad = [e for e in exits if not 1 <= e <= config.exit]
  if bad or config.exit not in exits:
    raise ExportError(f'exits {exits} are not valid for a sub-network ending at exit '
                      f'{config.exit}; choose exits from 1..{config.exit} including {config.exit}')
  return exits


@dataclasses.dataclass(frozen=True)
class ExportResult:
  """What `export_early_exit` produced.

  Attributes:
    manifest: The manifest written.
    manifest_path: Where it was written.
    model: The float multi-exit model the segments were cut from.
    segments: The float segment models (batch of any size), in run order.
  """

  manifest: manifest_lib.Manifest
  manifest_path: str
  model: tf_keras.Model
  segments: tuple


def _tensor_entries(tensors, names):
  return tuple(manifest_lib.TensorEntry.from_info(t, n, i)
               for i, (t, n) in enumerate(zip(tensors, names)))


def _tflm_check(path, int8_input):
  """Runs a segment under TFLite Micro and LiteRT's reference kernels on the same int8 input."""
  result = tflm_runner.run_tflm(path, int8_input, find_min_arena=True)
  expected = litert_runner.LiteRTModel(path, reference_kernels=True).run_raw(int8_input)
  diff = max(int(np.max(np.abs(got.astype(np.int32) - want.astype(np.int32))))
             for got, want in zip(result.outputs, expected))
  return {'arena_used_bytes': int(result.arena_used_bytes),
          'arena_bytes': int(result.arena_min_bytes), 'tflm_max_step_diff': diff}


def export_early_exit(supernet, config, representative_images, out_dir,
                      exits: Optional[Sequence[int]] = None,
                      max_samples: int = tflite_convert.DEFAULT_CALIBRATION_SAMPLES,
                      multi_output: bool = True, check_tflm: bool = True) -> ExportResult:
  """Exports an early-exit sub-network as int8 segment files, a multi-output file and a manifest.

  Args:
    supernet: A built early-exit `OFASupernet` (BN statistics re-calibrated for `config`).
    config: The sub-network; it ends at `config.exit`.
    representative_images: Preprocessed training images for int8 calibration (any form
      `tflite_convert.calibration_samples` takes), at the config's resolution.
    out_dir: Directory for the files (created); an existing export there is overwritten.
    exits: Exits to export, default every exit up to `config.exit` (which must be included).
    max_samples: Calibration images used.
    multi_output: Also write the single multi-output file.
    check_tflm: Run every segment under TFLite Micro: compare with LiteRT's reference kernels and
      record its arena (adds a few seconds per segment).

  Returns:
    An `ExportResult`; the manifest is at `out_dir/manifest.json`.
  """
  exits = resolve_exits(supernet, config, exits)
  model = extraction.extract(supernet, config, exits=exits)
  segments = split(model, exits, batch_size=None)
  shape = (1, config.resolution, config.resolution, 3)
  images = np.concatenate(tflite_convert.calibration_samples(representative_images, shape,
                                                             max_samples))
  os.makedirs(out_dir, exist_ok=True)
  entries = []
  current = images
  check_inputs = []
  previous_macs = 0
  for position, segment in enumerate(segments):
    file_name = segment_file_name(position, segment.exit)
    path = os.path.join(out_dir, file_name)
    data = tflite_convert.convert_int8(segment.model, current, path, max_samples=len(current))
    info = tflite_inspect.inspect_tflite(data)
    check_inputs.append(current[:1])
    cumulative = costs.count(config, supernet.variant, supernet.num_classes,
                             supernet.width_multiplier, supernet.expand_ratios,
                             exits=exits[:position + 1]).macs
    entries.append(manifest_lib.SegmentEntry(
        exit=segment.exit, file=file_name, size_bytes=len(data),
        inputs=_tensor_entries(info.inputs, info.input_names),
        outputs=_tensor_entries(info.outputs, info.output_names),
        logits=segment.logits_name, features=segment.features_name,
        macs=cumulative - previous_macs, cumulative_macs=cumulative))
    previous_macs = cumulative
    if segment.features_name is not None:
      current = _predict(segment.model, current, 32)[segment.features_name]

  multi = None
  if multi_output:
    path = os.path.join(out_dir, MULTI_OUTPUT_NAME)
    info = tflite_inspect.inspect_tflite(
        tflite_convert.convert_int8(model, images, path, max_samples=len(images)))
    outputs = _tensor_entries(info.outputs, info.output_names)
    multi = manifest_lib.MultiOutputEntry(
        file=MULTI_OUTPUT_NAME, size_bytes=info.size_bytes,
        inputs=_tensor_entries(info.inputs, info.input_names), outputs=outputs,
        output_index={t.name: t.index for t in outputs})

  if check_tflm:
    checked = []
    for entry, float_input in zip(entries, check_inputs):
      tensor = entry.inputs[0]
      int8_input = quantization.quantize(float_input, tensor.scale, tensor.zero_point, np.int8)
      path = os.path.join(out_dir, entry.file)
      checked.append(dataclasses.replace(
          entry, **_tflm_check(path, int8_input)))
    entries = checked

  manifest = manifest_lib.Manifest(
      variant=supernet.variant.name, num_classes=supernet.num_classes,
      width_multiplier=supernet.width_multiplier, config=config.to_dict(), exits=tuple(exits),
      segments=tuple(entries), multi_output=multi, calibration_images=len(images))
  manifest_path = manifest.save(os.path.join(out_dir, MANIFEST_NAME))
  return ExportResult(manifest=manifest, manifest_path=manifest_path, model=model,
                      segments=tuple(segments))
