"""The deployed blocks of a sub-network and their shapes, read from a `SubnetConfig` alone.

The latency table and the flash/arena models predict a network's cost as a sum over its blocks, for
tens of thousands of configs during search, so they need the block list without building a model.
A block here is what the latency table measures as one unit: the stem, an MBConv block (the fixed
first block included), a parallel level's 1x1 conv branch or transformation op, an addition (a
parallel level's branch sum or a dense skip), or an exit head.

Each block carries a `key` naming its shape only (input resolution, widths, stride, kernel, middle
width, squeeze-excite width, activation, shortcut), not its position: blocks 2-4 of a stage with the
same choices compute the same thing and share one latency-table entry. It also carries the
`scope` under which extraction names its layers (`stage{s}_block{b}[_branch]`, `exit{k}`, ...), so
the profiler can cut the block out of an extracted model.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

from ofav2_tf import arch_spec
from ofav2_tf import subnet_config as sc
from ofav2_tf import variants as variants_lib

KINDS = ('stem', 'mbconv', 'conv1x1', 'transform', 'add', 'head')
# The fields that make up each kind's key, in key order.
_KEY_FIELDS = {
    'stem': ('resolution', 'in_width', 'out_width', 'stride', 'kernel', 'activation'),
    'mbconv': ('resolution', 'in_width', 'out_width', 'stride', 'kernel', 'mid', 'se',
               'activation', 'residual', 'expand'),
    'conv1x1': ('resolution', 'in_width', 'out_width', 'stride', 'activation'),
    'transform': ('resolution', 'in_width', 'out_width', 'stride', 'activation'),
    'add': ('resolution', 'out_width', 'inputs'),
    'head': ('resolution', 'in_width', 'classes'),
}
_SHORT = {'resolution': 'r', 'in_width': 'in', 'out_width': 'out', 'stride': 's', 'kernel': 'k',
          'mid': 'mid', 'se': 'se', 'activation': 'act', 'residual': 'res', 'expand': 'exp',
          'inputs': 'n', 'classes': 'cls'}


@dataclasses.dataclass(frozen=True)
class BlockShape:
  """One deployed block.

  Attributes:
    kind: One of `KINDS`.
    resolution: Spatial size (height = width) of the block's input.
    in_width: Input channels.
    out_width: Output channels.
    stride: Spatial stride.
    kernel: Depthwise kernel size (MBConv) or conv kernel size (stem); 0 otherwise.
    mid: Middle width of an MBConv block.
    se: Squeeze-excite hidden width (0 without SE).
    activation: 'relu' or 'hswish' ('' for additions and heads, whose activation is fixed).
    residual: Identity shortcut (MBConv).
    expand: Has the 1x1 expand conv (False only for the fixed first block).
    inputs: Number of summed tensors (additions).
    classes: Classifier width (heads).
    scope: Extraction's layer-name prefix for this block (not part of the key).
    reads: Positions, in the network's block list, of the blocks whose outputs this block reads
      (-1 = the image), in argument order (not part of the key).
  """

  kind: str
  resolution: int
  in_width: int
  out_width: int
  stride: int = 1
  kernel: int = 0
  mid: int = 0
  se: int = 0
  activation: str = ''
  residual: bool = False
  expand: bool = True
  inputs: int = 1
  classes: int = 0
  scope: str = dataclasses.field(default='', compare=False)
  reads: Tuple[int, ...] = dataclasses.field(default=(), compare=False)

  @property
  def key(self) -> str:
    """Shape-only identifier.

    E.g. 'mbconv|r=12,in=8,out=8,s=1,k=3,mid=24,se=0,act=relu,res=1,exp=1'.
    """
    parts = []
    for name in _KEY_FIELDS[self.kind]:
      value = getattr(self, name)
      parts.append(f'{_SHORT[name]}={int(value) if isinstance(value, bool) else value}')
    return f'{self.kind}|' + ','.join(parts)

  @property
  def weights(self) -> int:
    """Weights and biases of the deployed block (BatchNorm folded into the convs before it)."""
    if self.kind == 'stem':
      return self.kernel * self.kernel * self.in_width * self.out_width + self.out_width
    if self.kind == 'mbconv':
      count = (self.in_width + 1) * self.mid if self.expand else 0
      count += (self.kernel * self.kernel + 1) * self.mid
      if self.se:
        count += (self.mid + 1) * self.se + (self.se + 1) * self.mid
      return count + (self.mid + 1) * self.out_width
    if self.kind == 'conv1x1':
      return (self.in_width + 1) * self.out_width
    if self.kind == 'transform':
      if self.in_width != self.out_width:
        return (self.in_width + 1) * self.out_width
      return 2 * self.out_width
    if self.kind == 'head':
      feature, mix = arch_spec.HEAD_EXPAND * self.in_width, arch_spec.HEAD_MIX * self.in_width
      return (self.in_width + 1) * feature + feature * mix + (mix + 1) * self.classes
    return 0

  @property
  def out_resolution(self) -> int:
    return out_size(self.resolution, self.stride)

  def owns_layer(self, layer_name: str) -> bool:
    """Whether an extracted model's layer belongs to this block (by extraction's naming)."""
    return layer_name == self.scope or layer_name.startswith(self.scope + '_')


def out_size(size: int, stride: int) -> int:
  """Spatial size after a 'same'-padded op with `stride`."""
  return -(-size // stride)


def network_blocks(config: sc.SubnetConfig, variant, num_classes: int,
                   width_multiplier: float = 1.0, expand_ratios: Sequence[int] = (3, 4, 6),
                   exits: Optional[Sequence[int]] = None) -> List[BlockShape]:
  """The blocks the extracted model of `config` runs, in execution order.

  Args:
    config: The sub-network.
    variant: Supernet variant (a `Variant` or its name).
    num_classes: Classifier width.
    width_multiplier: Supernet width multiplier.
    expand_ratios: The supernet's expand ratios (they fix the middle widths).
    exits: Exits whose heads run (stages run up to the largest); default `[config.exit]`.

  Returns:
    A list of `BlockShape`s; each head follows the stage it reads.
  """
  if isinstance(variant, str):
    variant = variants_lib.get_variant(variant)
  arch = arch_spec.build_arch_spec(width_multiplier, tuple(expand_ratios))
  exits = sorted(set(exits or [config.exit]))
  blocks = []

  def add(block, reads):
    blocks.append(dataclasses.replace(block, reads=tuple(reads)))
    return len(blocks) - 1

  size = config.resolution
  current = add(BlockShape('stem', size, 3, arch.stem_width, stride=2, kernel=3,
                           activation='hswish', scope='stem'), [-1])
  size = out_size(size, 2)
  current = add(BlockShape('mbconv', size, arch.stem_width, arch.stem_width, kernel=3,
                           mid=arch.stem_width, activation='relu', residual=True, expand=False,
                           scope='first_block'), [current])
  for stage in range(max(exits)):
    ys = []  # positions of the level outputs y_1, y_2, ... of this stage
    for index in range(config.depth[stage]):
      spec = arch.block(stage, index)
      b = stage * arch_spec.BLOCKS_PER_STAGE + index
      e_index = arch.expand_ratios.index(config.expand[b])
      mbconv = dict(kernel=config.kernel[b], mid=spec.mid_widths[e_index],
                    se=spec.se_widths[e_index], residual=spec.residual)
      common = dict(resolution=size, in_width=spec.in_width, out_width=spec.out_width,
                    stride=spec.stride, activation=spec.activation)
      scope = spec.name
      out = out_size(size, spec.stride)
      if not variant.parallel:
        ys.append(add(BlockShape('mbconv', scope=scope, **common, **mbconv), [current]))
      else:
        pattern = config.branches[b]
        branches = []
        if pattern & sc.BRANCH_MBCONV:
          branches.append(add(BlockShape('mbconv', scope=f'{scope}_mbconv', **common, **mbconv),
                              [current]))
        if pattern & sc.BRANCH_CONV1X1:
          branches.append(add(BlockShape('conv1x1', scope=f'{scope}_conv1x1', **common),
                              [current]))
        if pattern & sc.BRANCH_TRANSFORM:
          branches.append(add(BlockShape('transform', scope=f'{scope}_transform', **common),
                              [current]))
        if len(branches) > 1:
          branches = [add(BlockShape('add', out, spec.out_width, spec.out_width,
                                     inputs=len(branches), scope=f'{scope}_sum'), branches)]
        ys.append(branches[0])
      size = out
      current = ys[-1]
      if variant.dense and index >= 2:  # y3 + y1 after block 3, y4 + y1 + y2 after block 4.
        current = add(BlockShape('add', size, spec.out_width, spec.out_width, inputs=index,
                                 scope=f'stage{stage + 1}_dense_after_block{index + 1}'),
                      [ys[-1]] + ys[:-2])
    if stage + 1 in exits:
      add(BlockShape('head', size, arch.stage_widths[stage], num_classes, classes=num_classes,
                     scope=f'exit{stage + 1}'), [current])
  return blocks
