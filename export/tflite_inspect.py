"""Reads a .tflite flatbuffer without running it: ops, tensors, quantization and output names.

Why parse the file instead of asking an interpreter: the checks here (builtin ops only, one subgraph,
no dynamic dimension, which output is which exit) must hold for every runtime the file ships to, and
TFLite Micro and LiteRT each expose only part of this. The flatbuffer is the single source of truth.

Output order: the converter does not keep the Keras output order for multi-output models (a 3-output
model can come out as [exit_b, exit_c, exit_a]). The only reliable link from an output position to a
Keras output name is the file's SignatureDef, which maps each name to a tensor index; `output_names`
is built from it.

The schema module is the flatbuffer reader generated from the TFLite schema; LiteRT ships one, and
TensorFlow's converter package another, so either works.
"""

import dataclasses
import os
import struct

import numpy as np

from export.errors import ExportError

try:
  from ai_edge_litert import schema_py_generated as _schema
except ImportError:  # pragma: no cover - LiteRT is a dependency; TF's copy is the fallback.
  from tensorflow.lite.python import schema_py_generated as _schema

SERVING_SIGNATURE = 'serving_default'

_OP_NAMES = {v: k for k, v in vars(_schema.BuiltinOperator).items() if not k.startswith('_')}
_TYPE_NAMES = {v: k.lower() for k, v in vars(_schema.TensorType).items() if not k.startswith('_')}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """One input or output tensor of the main subgraph.

  Attributes:
    name: tensor name in the file (converter-made, e.g. 'StatefulPartitionedCall:1').
    index: tensor index in the subgraph; what SignatureDefs and interpreters refer to.
    shape: static shape.
    shape_signature: shape with -1 for dimensions left dynamic; equals `shape` when all are fixed.
    dtype: numpy dtype name ('int8', 'float32', ...).
    scales: quantization scales (empty for float tensors; one per channel if per-axis).
    zero_points: quantization zero points, matching `scales`.
    quantized_dimension: axis of per-channel quantization.
  """
  name: str
  index: int
  shape: tuple
  shape_signature: tuple
  dtype: str
  scales: tuple = ()
  zero_points: tuple = ()
  quantized_dimension: int = 0

  @property
  def is_quantized(self):
    return bool(self.scales)

  @property
  def has_dynamic_dims(self):
    return any(d < 0 for d in self.shape_signature)

  @property
  def scale(self):
    """The per-tensor scale; inputs and outputs of exported files are always per-tensor."""
    self._require_per_tensor()
    return self.scales[0]

  @property
  def zero_point(self):
    self._require_per_tensor()
    return self.zero_points[0]

  def _require_per_tensor(self):
    if len(self.scales) != 1:
      raise ExportError(f'tensor {self.name!r} has {len(self.scales)} quantization scales; '
                        'expected exactly 1 (per-tensor int8 input/output)')


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
  """A SignatureDef: named inputs and outputs of one subgraph, by tensor index."""
  key: str
  subgraph_index: int
  inputs: dict
  outputs: dict


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What a .tflite file contains, as far as deployment checks care.

  Attributes:
    source: file name, or '<bytes>'; used in error messages.
    size_bytes: size of the flatbuffer.
    subgraph_count: number of subgraphs (1 for the files we export).
    op_counts: builtin op name (or 'CUSTOM:<code>') -> number of uses, in first-use order.
    custom_ops: custom op codes used (Flex ops are custom ops named 'Flex...').
    inputs: main-subgraph inputs, in file order.
    outputs: main-subgraph outputs, in file order.
    signatures: the file's SignatureDefs.
    input_names: names of `inputs` from the signature (tensor names if there is none).
    output_names: names of `outputs` from the signature (tensor names if there is none); this is the
      mapping from output position to Keras output name.
  """
  source: str
  size_bytes: int
  subgraph_count: int
  op_counts: dict
  custom_ops: tuple
  inputs: tuple
  outputs: tuple
  signatures: tuple
  input_names: tuple
  output_names: tuple

  @property
  def op_names(self):
    """Sorted names of the builtin ops used."""
    return tuple(sorted(n for n in self.op_counts if not n.startswith('CUSTOM:')))

  @property
  def flex_ops(self):
    return tuple(c for c in self.custom_ops if c.startswith('Flex'))

  @property
  def builtin_only(self):
    return not self.custom_ops

  @property
  def has_dynamic_dims(self):
    return any(t.has_dynamic_dims for t in self.inputs + self.outputs)

  def signature(self, key=SERVING_SIGNATURE):
    """The SignatureDef called `key`, or None."""
    for sig in self.signatures:
      if sig.key == key:
        return sig
    return None

  def output(self, name):
    """The output tensor whose signature name is `name`."""
    for tensor, tensor_name in zip(self.outputs, self.output_names):
      if tensor_name == name:
        return tensor
    raise ExportError(f'{self.source} has no output named {name!r}; outputs: {list(self.output_names)}')


def _read(model):
  if isinstance(model, (bytes, bytearray, memoryview)):
    return bytes(model), '<bytes>'
  path = os.fspath(model)
  if not os.path.isfile(path):
    raise ExportError(f'TFLite file {path} does not exist; pass the path of an exported .tflite')
  with open(path, 'rb') as f:
    return f.read(), path


def _decode(value):
  return value.decode('utf-8') if isinstance(value, bytes) else (value or '')


def _tensor_info(subgraph, index):
  t = subgraph.Tensors(index)
  shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
  signature = (tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength()
               else shape)
  scales, zero_points, axis = (), (), 0
  q = t.Quantization()
  if q is not None and q.ScaleLength():
    scales = tuple(float(s) for s in q.ScaleAsNumpy())
    zero_points = tuple(int(z) for z in q.ZeroPointAsNumpy())
    axis = int(q.QuantizedDimension())
  return TensorInfo(name=_decode(t.Name()), index=int(index), shape=shape, shape_signature=signature,
                    dtype=_TYPE_NAMES.get(t.Type(), f'type{t.Type()}'), scales=scales,
                    zero_points=zero_points, quantized_dimension=axis)


def _signatures(model):
  out = []
  for i in range(model.SignatureDefsLength()):
    s = model.SignatureDefs(i)
    inputs = {_decode(s.Inputs(j).Name()): int(s.Inputs(j).TensorIndex())
              for j in range(s.InputsLength())}
    outputs = {_decode(s.Outputs(j).Name()): int(s.Outputs(j).TensorIndex())
               for j in range(s.OutputsLength())}
    out.append(SignatureInfo(key=_decode(s.SignatureKey()), subgraph_index=int(s.SubgraphIndex()),
                             inputs=inputs, outputs=outputs))
  return tuple(out)


def _names(tensors, by_index):
  return tuple(by_index.get(t.index, t.name) for t in tensors)


def inspect_tflite(model):
  """Reads a .tflite file (path or bytes) and describes it.

  Args:
    model: path to a .tflite file, or its bytes.

  Returns:
    A `ModelInfo`.

  Raises:
    ExportError: the file does not exist or is not a TFLite flatbuffer.
  """
  data, source = _read(model)
  if len(data) < 8 or not _schema.Model.ModelBufferHasIdentifier(data, 0):
    raise ExportError(f'{source} is not a TFLite flatbuffer (no TFL3 identifier); '
                      'pass a file written by the TFLite converter')
  try:
    root = _schema.Model.GetRootAs(data, 0)
    codes = []
    for i in range(root.OperatorCodesLength()):
      code = root.OperatorCodes(i)
      builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
      if builtin == _schema.BuiltinOperator.CUSTOM:
        codes.append('CUSTOM:' + _decode(code.CustomCode()))
      else:
        codes.append(_OP_NAMES.get(builtin, f'BUILTIN_{builtin}'))
    op_counts = {}
    for g in range(root.SubgraphsLength()):
      sub = root.Subgraphs(g)
      for i in range(sub.OperatorsLength()):
        name = codes[sub.Operators(i).OpcodeIndex()]
        op_counts[name] = op_counts.get(name, 0) + 1
    main = root.Subgraphs(0)
    inputs = tuple(_tensor_info(main, int(i)) for i in main.InputsAsNumpy())
    outputs = tuple(_tensor_info(main, int(i)) for i in main.OutputsAsNumpy())
    signatures = _signatures(root)
    subgraph_count = root.SubgraphsLength()
  except (IndexError, ValueError, TypeError, AttributeError, struct.error) as e:
    # A truncated or damaged file makes the reader index past the end of the buffer.
    raise ExportError(f'{source} is a truncated or corrupt TFLite flatbuffer ({e}); re-export it'
                      ) from e
  main_sigs = [s for s in signatures if s.subgraph_index == 0]
  sig = next((s for s in main_sigs if s.key == SERVING_SIGNATURE), main_sigs[0] if main_sigs else None)
  in_names = {v: k for k, v in sig.inputs.items()} if sig else {}
  out_names = {v: k for k, v in sig.outputs.items()} if sig else {}
  return ModelInfo(
      source=source, size_bytes=len(data), subgraph_count=subgraph_count, op_counts=op_counts,
      custom_ops=tuple(n[len('CUSTOM:'):] for n in op_counts if n.startswith('CUSTOM:')),
      inputs=inputs, outputs=outputs, signatures=signatures,
      input_names=_names(inputs, in_names), output_names=_names(outputs, out_names))


def check_deployable(info, batch_size=1):
  """Raises if a file breaks the export contract (design section 3).

  The contract: one subgraph, builtin ops only (no Flex/select TF or custom ops), every input and
  output fully static with batch `batch_size`, and a serving signature naming every output (the
  benchmark tool needs it, and it is how outputs are matched to exits).

  Args:
    info: a `ModelInfo`.
    batch_size: required leading dimension of every input and output.

  Raises:
    ExportError: naming the first broken rule.
  """
  src = info.source
  if info.subgraph_count != 1:
    raise ExportError(f'{src} has {info.subgraph_count} subgraphs; exported files must have exactly 1 '
                      '(no IF/WHILE control flow)')
  if info.custom_ops:
    raise ExportError(f'{src} uses non-builtin ops {list(info.custom_ops)}; only TFLite builtin ops '
                      'are allowed (no Flex/select TF ops)')
  for kind, tensors in (('input', info.inputs), ('output', info.outputs)):
    for t in tensors:
      if t.has_dynamic_dims:
        raise ExportError(f'{src} {kind} {t.name!r} has dynamic shape {list(t.shape_signature)}; '
                          f'every dimension must be fixed, batch {batch_size}')
      if not t.shape or t.shape[0] != batch_size:
        raise ExportError(f'{src} {kind} {t.name!r} has shape {list(t.shape)}; the batch dimension '
                          f'must be {batch_size}')
  sig = info.signature(SERVING_SIGNATURE)
  if sig is None:
    raise ExportError(f'{src} has no {SERVING_SIGNATURE!r} signature; convert it with '
                      'export.tflite_convert so outputs can be named and the benchmark tool can run it')
  missing = [t.name for t in info.outputs if t.index not in sig.outputs.values()]
  if missing:
    raise ExportError(f'{src} outputs {missing} are not named in the {SERVING_SIGNATURE!r} signature')


def dtype_of(tensor):
  """numpy dtype of a `TensorInfo`."""
  return np.dtype(tensor.dtype)
