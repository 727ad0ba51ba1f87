"""Parameters, MACs and peak activation memory of any `SubnetConfig`, without building a model.

Search evaluates tens of thousands of configs, so the counts come from the architecture table
alone. Conventions follow the official OFA counter: MACs count conv and dense multiply-accumulates
(BN, activations, pooling and additions are free); parameters are the trainable ones of the
extracted network (conv/dense kernels and biases, BN scale and offset; not BN moving statistics,
not the elastic-kernel transform matrices, which extraction folds into the depthwise kernels).

Peak activation memory models sequential execution of the deployed graph, where BN and ReLU are
folded into the preceding conv: at each op, the tensors alive are those already produced and still
to be read (block inputs kept for residual and dense additions stay alive), plus the op's output.
The peak is the largest such sum, in elements (multiply by bytes per element for int8/float32).
"""

import dataclasses
from typing import Dict, List, Sequence, Tuple

from ofav2_tf import arch_spec
from ofav2_tf import subnet_config as sc
from ofav2_tf import variants as variants_lib


@dataclasses.dataclass(frozen=True)
class OpCost:
  name: str
  params: int
  macs: int
  output_shape: Tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class CostReport:
  """Costs of one sub-network (for one exit, or summed over several exits)."""

  params: int
  macs: int
  peak_activation_elements: int
  ops: Tuple[OpCost, ...] = ()

  def peak_activation_bytes(self, bytes_per_element: int = 1) -> int:
    return self.peak_activation_elements * bytes_per_element

  def as_dict(self) -> dict:
    return {'params': self.params, 'macs': self.macs,
            'peak_activation_elements': self.peak_activation_elements}


class _GraphCounter:
  """Records ops in execution order and computes tensor liveness for the peak memory."""

  def __init__(self):
    self.ops: List[OpCost] = []
    self._sizes: Dict[int, int] = {}
    self._produced: Dict[int, int] = {}
    self._last_use: Dict[int, int] = {}
    self._next_id = 0

  def tensor(self, shape: Tuple[int, int, int]) -> Tuple[int, Tuple[int, int, int]]:
    """Registers a graph input tensor."""
    tid = self._new(shape, produced=-1)
    return tid, shape

  def _new(self, shape, produced):
    tid = self._next_id
    self._next_id += 1
    h, w, c = shape
    self._sizes[tid] = h * w * c
    self._produced[tid] = produced
    self._last_use[tid] = produced
    return tid

  def op(self, name, inputs, output_shape, params=0, macs=0):
    """Adds an op reading `inputs` (tensor refs) and returns its output tensor ref."""
    step = len(self.ops)
    self.ops.append(OpCost(name, int(params), int(macs), tuple(output_shape)))
    for tid, _ in inputs:
      self._last_use[tid] = step
    tid = self._new(output_shape, produced=step)
    return tid, tuple(output_shape)

  def keep(self, ref):
    """Marks a tensor as read until the end (a network output)."""
    self._last_use[ref[0]] = len(self.ops)

  def peak(self) -> int:
    """Largest sum of live tensor sizes over the ops (a sweep over birth/death events)."""
    steps = len(self.ops)
    delta = [0] * (steps + 2)
    for tid, size in self._sizes.items():
      first = max(self._produced[tid], 0)
      last = self._last_use[tid]
      if last < first or first >= steps:
        continue
      delta[first] += size
      delta[last + 1] -= size
    peak = alive = 0
    for step in range(steps):
      alive += delta[step]
      peak = max(peak, alive)
    return peak


def _out_hw(h, w, stride):
  return -(-h // stride), -(-w // stride)  # 'SAME' padding


def _conv(g, name, x, out_ch, kernel=1, stride=1, bias=False, bn=True, depthwise=False):
  (h, w, c) = x[1]
  ho, wo = _out_hw(h, w, stride)
  if depthwise:
    params, macs, out_ch = kernel * kernel * c, ho * wo * c * kernel * kernel, c
  else:
    params, macs = kernel * kernel * c * out_ch, ho * wo * c * out_ch * kernel * kernel
  params += (out_ch if bias else 0) + (2 * out_ch if bn else 0)
  return g.op(name, [x], (ho, wo, out_ch), params, macs)


def _mbconv(g, name, x, spec: arch_spec.BlockSpec, kernel, mid, se_hidden, has_expand=True):
  y = x
  if has_expand:
    y = _conv(g, f'{name}/expand', y, mid)
  y = _conv(g, f'{name}/depthwise', y, mid, kernel=kernel, stride=spec.stride, depthwise=True)
  if spec.use_se:
    pooled = g.op(f'{name}/se_pool', [y], (1, 1, mid))
    squeezed = _conv(g, f'{name}/se_reduce', pooled, se_hidden, bias=True, bn=False)
    gate = _conv(g, f'{name}/se_expand', squeezed, mid, bias=True, bn=False)
    y = g.op(f'{name}/se_multiply', [y, gate], y[1])
  y = _conv(g, f'{name}/project', y, spec.out_width)
  if spec.residual:
    y = g.op(f'{name}/residual', [y, x], y[1])
  return y


def _level(g, spec: arch_spec.BlockSpec, x, config: sc.SubnetConfig, block: int, arch, parallel):
  e_index = arch.expand_ratios.index(config.expand[block])
  mid, se_hidden = spec.mid_widths[e_index], spec.se_widths[e_index]
  if not parallel:
    return _mbconv(g, spec.name, x, spec, config.kernel[block], mid, se_hidden)
  pattern = config.branches[block]
  outputs = []
  if pattern & sc.BRANCH_MBCONV:
    outputs.append(_mbconv(g, f'{spec.name}/mbconv', x, spec, config.kernel[block], mid,
                           se_hidden))
  if pattern & sc.BRANCH_CONV1X1:
    outputs.append(_conv(g, f'{spec.name}/conv1x1', x, spec.out_width, stride=spec.stride))
  if pattern & sc.BRANCH_TRANSFORM:
    y = x
    if spec.stride > 1:
      h, w = _out_hw(x[1][0], x[1][1], spec.stride)
      y = g.op(f'{spec.name}/transform_pool', [y], (h, w, x[1][2]))
    if spec.in_width != spec.out_width:
      y = _conv(g, f'{spec.name}/transform_conv', y, spec.out_width)
    else:
      y = g.op(f'{spec.name}/transform_bn', [y], y[1], params=2 * spec.out_width)
    outputs.append(y)
  y = outputs[0]
  for i, other in enumerate(outputs[1:]):
    y = g.op(f'{spec.name}/branch_sum{i + 1}', [y, other], y[1])
  return y


def _head(g, name, x, width, num_classes):
  feature, mix = arch_spec.HEAD_EXPAND * width, arch_spec.HEAD_MIX * width
  y = _conv(g, f'{name}/conv', x, feature)
  y = g.op(f'{name}/pool', [y], (1, 1, feature))
  y = g.op(f'{name}/mix', [y], (1, 1, mix), params=feature * mix, macs=feature * mix)
  return g.op(f'{name}/classifier', [y], (1, 1, num_classes),
              params=mix * num_classes + num_classes, macs=mix * num_classes)


def count(config: sc.SubnetConfig, variant, num_classes: int, width_multiplier: float = 1.0,
          expand_ratios: Sequence[int] = (3, 4, 6), exits: Sequence[int] = None) -> CostReport:
  """Counts the sub-network `config` of `variant` (a `Variant` or its name).

  Args:
    config: The sub-network; it runs up to `config.exit`.
    variant: Supernet variant.
    num_classes: Classifier width.
    width_multiplier: Supernet width multiplier.
    expand_ratios: The supernet's expand ratios (fix the middle widths).
    exits: For early-exit deployments, the exits whose heads are all computed (the stages run up
      to the largest); defaults to `[config.exit]`.
  """
  if isinstance(variant, str):
    variant = variants_lib.get_variant(variant)
  arch = arch_spec.build_arch_spec(width_multiplier, tuple(expand_ratios))
  exits = sorted(set(exits or [config.exit]))
  g = _GraphCounter()
  x = g.tensor((config.resolution, config.resolution, 3))
  x = _conv(g, 'stem', x, arch.stem_width, kernel=3, stride=2)
  first = arch_spec.BlockSpec(stage=-1, index=1, in_width=arch.stem_width,
                              out_width=arch.stem_width, stride=1, activation='relu',
                              use_se=False, mid_widths=(arch.stem_width,), se_widths=(0,))
  x = _mbconv(g, 'first_block', x, first, 3, arch.stem_width, 0, has_expand=False)
  for stage in range(max(exits)):
    depth = config.depth[stage]
    ys = []
    level_input = x
    for index in range(depth):
      block = stage * arch_spec.BLOCKS_PER_STAGE + index
      ys.append(_level(g, arch.block(stage, index), level_input, config, block, arch,
                       variant.parallel))
      level_input = _dense_input(g, ys, f'stage{stage + 1}_block{index + 2}_input',
                                 variant.dense)
    x = level_input
    if stage + 1 in exits:
      out = _head(g, f'exit{stage + 1}', x, arch.stage_widths[stage], num_classes)
      g.keep(out)
  params = sum(op.params for op in g.ops)
  macs = sum(op.macs for op in g.ops)
  return CostReport(params=params, macs=macs, peak_activation_elements=g.peak(),
                    ops=tuple(g.ops))


def _dense_input(g, ys, name, dense):
  """Input of the next block position: y_{k-1} (+ y_1..y_{k-3} with dense skips)."""
  y = ys[-1]
  if dense:
    for i, earlier in enumerate(ys[:-2]):
      y = g.op(f'{name}/dense_add{i + 1}', [y, earlier], y[1])
  return y
