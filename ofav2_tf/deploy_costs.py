"""Flash size and TFLite Micro arena of a sub-network's int8 .tflite, estimated from its config.

Search must reject sub-networks that do not fit a microcontroller's flash or RAM without converting
each one, so both are estimated from the block list (`ofav2_tf.block_shapes`) expanded into the ops
the TFLite converter emits for extraction's layers, as observed in converted files: BatchNorm and
ReLU fold into the preceding conv; hard-swish becomes five ops (MUL, ADD, MINIMUM, RELU, MUL) and
keeps its input alive until the last MUL; the squeeze-excite gate's scale and offset fold into its
conv, leaving MINIMUM and RELU; a BatchNorm without a conv (the transformation op at equal widths)
becomes MUL and ADD; an n-input addition is n-1 ADDs; a squeeze-excite pooling over a 1x1 map is
dropped (the head's pooling is kept: it also drops the 1x1 axes); the MEAN axes and hard-swish's
scalar constants are shared by all ops. This expansion reproduced the op counts per type and the
tensor count of 24 converted files exactly (up to a zero bias the converter drops).

Flash: the weights at 1 byte, biases at 4 bytes (int32), per-channel quantization parameters (a
float32 scale and an int64 zero point per output channel, for both a conv's weights and its bias),
and the flatbuffer's own structure: per tensor (name, shape, per-tensor quantization, buffer entry)
and per op, plus a fixed part. Those three constants were fitted by least squares on real exported
files (`fit_flash_constants`; see FLASH_* below for the data they came from).

Arena: TFLite Micro splits its arena into activation buffers (placed by its greedy memory planner,
16-byte aligned) and persistent data (per-tensor and per-op runtime structs, and the per-channel
output multipliers and shifts of every conv, 8 bytes per channel). The activation part is planned
here the way TFLite Micro plans it (largest buffer first, at the lowest offset that overlaps no
buffer alive at the same time); the structs are a linear model in tensors and ops fitted on the
recording allocator's totals. While planning, TFLite Micro also needs scratch (about 60 bytes per
tensor, measured); when that exceeds the planned activations (large, low-resolution networks) it
sets the minimum arena. Hard-swish's temporaries make the op-level activation peak higher than
`costs.count`'s peak_activation_elements (which folds activations), so the planner works on the
op-level graph instead.

The arena figures are those of TFLite Micro's x86-64 build (8-byte pointers); on a 32-bit
microcontroller the runtime structs are smaller, so the estimate should be an upper bound there
(not measured on a device).
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ofav2_tf import block_shapes
from ofav2_tf import subnet_config as sc

BUFFER_ALIGNMENT = 16
PER_CHANNEL_QUANT_BYTES = 4 + 8  # float32 scale + int64 zero point, per channel
MULTIPLIER_SHIFT_BYTES = 4 + 4  # TFLite Micro's per-channel output multiplier and shift

# Fitted constants (bytes), by `fit_flash_constants` and `fit_arena_constants` on 12 int8 files
# (two random sub-networks each of EE_B, EE_D, EE_P, SE_DP, EE_DP, SE_B at widths 0.25-0.5,
# resolutions 32-48, 5-10 classes; 42 KB-1.4 MB files, 26-143 KB arenas) measured with
# tflite-micro 0.dev20261023 on x86-64. On 12 other random sub-networks of the same kinds the
# estimates were off by 0.8% on average for flash (at most 3.7%, the smallest files) and 0.8% for
# the arena (at most 2.2%). Flash's per-op constant is negative because tensor and op counts grow
# together: only their combination is meaningful.
FLASH_PER_TENSOR = 222.57
FLASH_PER_OP = -24.03
FLASH_FIXED = 1356.2
ARENA_PER_TENSOR = 88.31
ARENA_PER_OP = 37.39
ARENA_FIXED = 506.3
ARENA_SCRATCH_PER_TENSOR = 60.08
ARENA_SLACK = 32  # alignment slack of the measured minimum (tflm_runner rounds up by 16 + 16)


@dataclasses.dataclass(frozen=True)
class Op:
  """One op of the int8 graph.

  Attributes:
    kind: Op type as TFLite names it ('CONV_2D', 'ADD', ...).
    inputs: Ids of the activation tensors it reads.
    output: Id of the activation tensor it writes.
    weights: int8 weight elements (0 for ops without weights).
    channels: Per-channel quantized output channels of its weights (conv, depthwise), or 0.
    bias: int32 bias elements.
    constants: Small constant tensors of its own besides weights and bias (scalars, vectors).
    constant_bytes: Their data.
    shared: Names of constants the converter shares between all ops using them (the MEAN axes,
      hard-swish's 1/6 and 1/2): counted once per graph.
  """

  kind: str
  inputs: Tuple[int, ...]
  output: int
  weights: int = 0
  channels: int = 0
  bias: int = 0
  constants: int = 0
  constant_bytes: int = 0
  shared: Tuple[str, ...] = ()


@dataclasses.dataclass
class Graph:
  """The int8 graph of a network: activation tensor sizes (bytes) and ops in execution order."""

  sizes: List[int] = dataclasses.field(default_factory=list)
  ops: List[Op] = dataclasses.field(default_factory=list)
  outputs: List[int] = dataclasses.field(default_factory=list)

  def tensor(self, elements: int) -> int:
    self.sizes.append(int(elements))
    return len(self.sizes) - 1

  def op(self, kind, inputs, elements, **kwargs) -> int:
    out = self.tensor(elements)
    self.ops.append(Op(kind, tuple(inputs), out, **kwargs))
    return out

  # ---- counts ---------------------------------------------------------------------------------

  @property
  def weight_bytes(self) -> int:
    return sum(op.weights for op in self.ops) + 4 * sum(op.bias for op in self.ops) + sum(
        op.constant_bytes for op in self.ops)

  @property
  def quantized_channels(self) -> int:
    """Channels carrying per-channel quantization parameters (weights and bias of each conv)."""
    return sum(2 * op.channels for op in self.ops)

  @property
  def tensor_count(self) -> int:
    constants = sum((op.weights > 0) + (op.bias > 0) + op.constants for op in self.ops)
    shared = {name for op in self.ops for name in op.shared}
    return len(self.sizes) + constants + len(shared)

  @property
  def multiplier_channels(self) -> int:
    """Output channels of ops that keep per-channel multipliers in TFLite Micro."""
    return sum(op.channels for op in self.ops)

  # ---- memory ---------------------------------------------------------------------------------

  def lifetimes(self):
    """(first op, last op) each activation tensor must stay allocated for."""
    end = len(self.ops) - 1
    first = [0] * len(self.sizes)
    last = [0] * len(self.sizes)
    for step, op in enumerate(self.ops):
      first[op.output] = step
      last[op.output] = max(last[op.output], step)
      for tid in op.inputs:
        last[tid] = max(last[tid], step)
    for tid in self.outputs:
      last[tid] = end
    return first, last

  def peak_bytes(self) -> int:
    """Largest total of simultaneously alive activations (a lower bound on any plan)."""
    first, last = self.lifetimes()
    return max(sum(s for t, s in enumerate(self.sizes) if first[t] <= step <= last[t])
               for step in range(len(self.ops)))

  def planned_bytes(self) -> int:
    """Arena bytes for activations under TFLite Micro's greedy planner.

    Buffers are placed largest first (ties: longer-lived first) at the lowest 16-byte-aligned
    offset where they overlap no already placed buffer whose lifetime intersects theirs.
    """
    first, last = self.lifetimes()
    aligned = [-(-s // BUFFER_ALIGNMENT) * BUFFER_ALIGNMENT for s in self.sizes]
    order = sorted(range(len(self.sizes)), key=lambda t: (-aligned[t], first[t] - last[t], t))
    placed = []  # (offset, size, first, last)
    high = 0
    for t in order:
      conflicts = sorted((o, s) for o, s, f, l in placed if f <= last[t] and first[t] <= l)
      offset = 0
      for o, s in conflicts:
        if offset + aligned[t] <= o:
          break
        offset = max(offset, o + s)
      placed.append((offset, aligned[t], first[t], last[t]))
      high = max(high, offset + aligned[t])
    return high


def _act(g, x, elements, activation, fused=True):
  """Activation after an op: ReLU folds into it; hard-swish is 5 ops reading x twice."""
  if activation == 'relu' and fused:
    return x
  if activation == 'relu':
    return g.op('RELU', [x], elements)
  y = g.op('MUL', [x], elements, shared=('hswish_scale',))
  y = g.op('ADD', [y], elements, shared=('hswish_offset',))
  y = g.op('MINIMUM', [y], elements, constants=1, constant_bytes=1)
  y = g.op('RELU', [y], elements)
  return g.op('MUL', [x, y], elements)


def _mean(g, x, size, channels):
  """Squeeze-excite pooling (keeps dims); the converter drops it when the map is already 1x1."""
  if size == 1:
    return x
  return g.op('MEAN', [x], channels, shared=('mean_axes',))


def _conv(g, kind, x, size, cin, cout, kernel=1, stride=1):
  out = block_shapes.out_size(size, stride)
  weights = kernel * kernel * (cin if kind == 'CONV_2D' else 1) * cout
  return g.op(kind, [x], out * out * cout, weights=weights, channels=cout, bias=cout), out


def _mbconv(g, x, b: block_shapes.BlockShape):
  size = b.resolution
  y = x
  if b.expand:
    y, _ = _conv(g, 'CONV_2D', y, size, b.in_width, b.mid)
    y = _act(g, y, size * size * b.mid, b.activation)
  y, size = _conv(g, 'DEPTHWISE_CONV_2D', y, size, b.mid, b.mid, b.kernel, b.stride)
  y = _act(g, y, size * size * b.mid, b.activation)
  if b.se:
    s = _mean(g, y, size, b.mid)
    s, _ = _conv(g, 'CONV_2D', s, 1, b.mid, b.se)
    s, _ = _conv(g, 'CONV_2D', s, 1, b.se, b.mid)
    s = g.op('MINIMUM', [s], b.mid, constants=1, constant_bytes=1)
    s = g.op('RELU', [s], b.mid)
    y = g.op('MUL', [y, s], size * size * b.mid)
  y, _ = _conv(g, 'CONV_2D', y, size, b.mid, b.out_width)
  if b.residual:
    y = g.op('ADD', [y, x], size * size * b.out_width)
  return y


def _block(g, b: block_shapes.BlockShape, inputs):
  x = inputs[0]
  if b.kind == 'stem':
    y, size = _conv(g, 'CONV_2D', x, b.resolution, b.in_width, b.out_width, b.kernel, b.stride)
    return _act(g, y, size * size * b.out_width, b.activation)
  if b.kind == 'mbconv':
    return _mbconv(g, x, b)
  if b.kind == 'conv1x1':
    y, size = _conv(g, 'CONV_2D', x, b.resolution, b.in_width, b.out_width, 1, b.stride)
    return _act(g, y, size * size * b.out_width, b.activation)
  if b.kind == 'transform':
    size = b.out_resolution
    y = x
    if b.stride > 1:
      y = g.op('MAX_POOL_2D', [y], size * size * b.in_width)
    if b.in_width != b.out_width:
      y, _ = _conv(g, 'CONV_2D', y, size, b.in_width, b.out_width)
    else:  # BatchNorm alone: per-channel MUL and ADD (ReLU fused into the ADD).
      y = g.op('MUL', [y], size * size * b.out_width, constants=1, constant_bytes=b.out_width)
      y = g.op('ADD', [y], size * size * b.out_width, constants=1, constant_bytes=b.out_width)
    return _act(g, y, size * size * b.out_width, b.activation)
  if b.kind == 'add':
    y = inputs[0]
    for other in inputs[1:]:
      y = g.op('ADD', [y, other], b.resolution * b.resolution * b.out_width)
    return y
  if b.kind == 'head':
    feature, mix = 6 * b.in_width, 8 * b.in_width
    y, _ = _conv(g, 'CONV_2D', x, b.resolution, b.in_width, feature)
    y = _act(g, y, b.resolution * b.resolution * feature, 'hswish')
    y = g.op('MEAN', [y], feature, shared=('mean_axes',))  # Also drops the 1x1 axes: kept.
    y = g.op('FULLY_CONNECTED', [y], mix, weights=feature * mix)
    y = _act(g, y, mix, 'hswish')
    return g.op('FULLY_CONNECTED', [y], b.classes, weights=mix * b.classes, bias=b.classes)
  raise ValueError(f'unknown block kind {b.kind!r}')


def int8_graph(config: sc.SubnetConfig, variant, num_classes: int,
               width_multiplier: float = 1.0, expand_ratios: Sequence[int] = (3, 4, 6),
               exits: Optional[Sequence[int]] = None) -> Graph:
  """The int8 graph the converter makes from the extracted model of `config` (see docstring)."""
  g = Graph()
  outputs = {-1: g.tensor(config.resolution * config.resolution * 3)}
  blocks = block_shapes.network_blocks(config, variant, num_classes, width_multiplier,
                                       expand_ratios, exits)
  for position, block in enumerate(blocks):
    outputs[position] = _block(g, block, [outputs[r] for r in block.reads])
    if block.kind == 'head':
      g.outputs.append(outputs[position])
  return g


@dataclasses.dataclass(frozen=True)
class DeployEstimate:
  """Estimated int8 deployment costs of one network.

  Attributes:
    flash_bytes: Size of the .tflite file.
    arena_bytes: Smallest TFLite Micro arena that loads and runs the file.
    activation_bytes: The planned activation part of the arena.
    persistent_bytes: Runtime structs and per-channel multipliers (the arena's tail).
    planning_bytes: Scratch the memory planner needs while planning (when it exceeds the planned
      activations, the arena must hold it instead).
    ops: Ops in the int8 graph.
    tensors: Tensors in the int8 graph (activations and constants).
  """

  flash_bytes: int
  arena_bytes: int
  activation_bytes: int
  persistent_bytes: int
  planning_bytes: int
  ops: int
  tensors: int


def flash_features(g: Graph) -> np.ndarray:
  """[known bytes, tensors, ops, 1]; the flash model is known bytes + fitted constants . rest."""
  known = g.weight_bytes + PER_CHANNEL_QUANT_BYTES * g.quantized_channels
  return np.array([known, g.tensor_count, len(g.ops), 1.0], np.float64)


def persistent_features(g: Graph) -> np.ndarray:
  """[known bytes, tensors, ops, 1]: per-channel multipliers are known, structs are fitted."""
  return np.array([MULTIPLIER_SHIFT_BYTES * g.multiplier_channels, g.tensor_count, len(g.ops),
                   1.0], np.float64)


def _fit(features, targets):
  """Least squares for the (tensors, ops, fixed) coefficients, the known part taken as is."""
  x = np.array(features, np.float64)
  y = np.array(targets, np.float64) - x[:, 0]
  coef, *_ = np.linalg.lstsq(x[:, 1:], y, rcond=None)
  return tuple(float(c) for c in coef)


def fit_flash_constants(graphs: Sequence[Graph], file_sizes: Sequence[int]):
  """(per tensor, per op, fixed) bytes that best explain real file sizes (see FLASH_*)."""
  return _fit([flash_features(g) for g in graphs], file_sizes)


def fit_arena_constants(graphs: Sequence[Graph], used: Sequence[int], minimum: Sequence[int]):
  """Arena constants from TFLite Micro measurements (see ARENA_*).

  Args:
    graphs: The graphs of the measured files.
    used: The recording allocator's totals (planned activations + persistent data).
    minimum: The smallest arenas that worked.

  Returns:
    (per tensor, per op, fixed) persistent bytes, fitted on used - planned activations; and the
    planner's scratch per tensor, fitted on the files whose minimum arena exceeds the total used
    by more than the alignment slack (None if there are none).
  """
  planned = [g.planned_bytes() for g in graphs]
  persistent = _fit([persistent_features(g) for g in graphs],
                    [u - p for u, p in zip(used, planned)])
  scratch = [(m - u + p - ARENA_SLACK) / g.tensor_count
             for g, u, m, p in zip(graphs, used, minimum, planned) if m - u > 2 * ARENA_SLACK]
  return persistent + (float(np.mean(scratch)) if scratch else None,)


def estimate_graph(g: Graph) -> DeployEstimate:
  """Flash and arena of a graph with the fitted constants."""
  flash = flash_features(g) @ np.array([1.0, FLASH_PER_TENSOR, FLASH_PER_OP, FLASH_FIXED])
  activations = g.planned_bytes()
  persistent = int(round(persistent_features(g) @ np.array(
      [1.0, ARENA_PER_TENSOR, ARENA_PER_OP, ARENA_FIXED])))
  planning = int(round(ARENA_SCRATCH_PER_TENSOR * g.tensor_count))
  arena = persistent + max(activations, planning) + ARENA_SLACK
  return DeployEstimate(flash_bytes=int(round(flash)), arena_bytes=int(arena),
                        activation_bytes=activations, persistent_bytes=persistent,
                        planning_bytes=planning, ops=len(g.ops), tensors=g.tensor_count)
def estimate(config: sc.SubnetConfig, variant, num_classes: int, width_multiplier: float = 1.0,
             expand_ratios: Sequence[int] = (3, 4, 6),
             exits: Optional[Sequence[int]] = None) -> DeployEstimate:
  """Flash and arena of the int8 .tflite of `config`'s extracted model (heads of `exits`)."""
  return estimate_graph(int8_graph(config, variant, num_classes, width_multiplier, expand_ratios,
                                   exits))


def flash_bytes(config: sc.SubnetConfig, variant, num_classes: int, **kwargs) -> int:
  """Estimated int8 .tflite size; keyword arguments as for `estimate`."""
  return estimate(config, variant, num_classes, **kwargs).flash_bytes


def arena_bytes(config: sc.SubnetConfig, variant, num_classes: int, **kwargs) -> int:
  """Estimated TFLite Micro arena; keyword arguments as for `estimate`."""
  return estimate(config, variant, num_classes, **kwargs).arena_bytes
