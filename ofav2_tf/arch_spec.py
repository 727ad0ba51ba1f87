"""The OFA MobileNetV3 architecture as a table (DESIGN.md 2.1).

Everything that depends on the architecture's numbers (layer shapes, middle widths per expand ratio,
squeeze-excite widths, exit-head widths) is derived here from one table of stage specs and a width
multiplier, so the supernet, the extractor and the cost counter cannot disagree.
"""

import dataclasses
import functools
from typing import Tuple

BLOCKS_PER_STAGE = 4
NUM_STAGES = 5
STEM_WIDTH = 16
SE_REDUCTION = 4
HEAD_EXPAND = 6  # exit head: 1x1 conv to 6C
HEAD_MIX = 8  # exit head: 1x1 conv to 8C after pooling


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One elastic stage ("unit") of the OFA MobileNetV3 space."""

  width: int
  stride: int
  activation: str  # 'relu' or 'hswish'
  use_se: bool


# Widths 24, 40, 80, 112, 160; strides 2, 2, 2, 1, 2; SE in stages 2, 4, 5.
STAGES: Tuple[StageSpec, ...] = (
    StageSpec(width=24, stride=2, activation='relu', use_se=False),
    StageSpec(width=40, stride=2, activation='relu', use_se=True),
    StageSpec(width=80, stride=2, activation='hswish', use_se=False),
    StageSpec(width=112, stride=1, activation='hswish', use_se=True),
    StageSpec(width=160, stride=2, activation='hswish', use_se=True),
)


def make_divisible(value: float, divisor: int = 8, min_value: int = None) -> int:
  """Rounds `value` to the nearest multiple of `divisor`, never dropping more than 10%.

  This is the rounding rule of MobileNet/OFA; using the same rule keeps our layer widths (and so
  parameter and MAC counts) identical to the reference implementation.
  """
  if min_value is None:
    min_value = divisor
  new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if new_value < 0.9 * value:
    new_value += divisor
  return new_value


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """Static facts about one elastic block position (a "level" in parallel variants).

  Attributes:
    stage: Stage index (0-based).
    index: Block index inside the stage (0-based); block 0 has the stride and changes width.
    in_width: Input channels (fixed: widths are not elastic in OFA's MobileNetV3 space).
    out_width: Output channels.
    stride: Spatial stride of the depthwise conv (and of the parallel branches).
    activation: 'relu' or 'hswish'.
    use_se: Whether the block has squeeze-excite after the depthwise conv.
    mid_widths: Middle width for each expand ratio of the space, in the space's order.
    se_widths: Squeeze-excite hidden width for each expand ratio (0 without SE).
  """

  stage: int
  index: int
  in_width: int
  out_width: int
  stride: int
  activation: str
  use_se: bool
  mid_widths: Tuple[int, ...]
  se_widths: Tuple[int, ...]

  @property
  def residual(self) -> bool:
    """Blocks 2-4 of a stage keep shape and so carry an identity shortcut."""
    return self.index > 0

  @property
  def max_mid(self) -> int:
    return max(self.mid_widths)

  @property
  def max_se(self) -> int:
    return max(self.se_widths)

  @property
  def name(self) -> str:
    return f'stage{self.stage + 1}_block{self.index + 1}'


def mid_width(in_width: int, expand_ratio: float) -> int:
  return make_divisible(round(in_width * expand_ratio), 8)


def se_width(mid: int) -> int:
  return make_divisible(mid // SE_REDUCTION, 8)


@dataclasses.dataclass(frozen=True)
class ArchSpec:
  """The resolved architecture for a width multiplier and a set of expand ratios."""

  width_multiplier: float
  expand_ratios: Tuple[int, ...]
  stem_width: int
  stage_widths: Tuple[int, ...]
  blocks: Tuple[Tuple[BlockSpec, ...], ...]  # [stage][block]

  def head_widths(self, stage: int) -> Tuple[int, int]:
    """(feature width 6C, mix width 8C) of the exit head after `stage` (0-based)."""
    width = self.stage_widths[stage]
    return HEAD_EXPAND * width, HEAD_MIX * width

  def block(self, stage: int, index: int) -> BlockSpec:
    return self.blocks[stage][index]

  def all_blocks(self):
    """All block specs in execution order."""
    return [b for stage in self.blocks for b in stage]


def build_arch_spec(width_multiplier: float = 1.0,
                    expand_ratios: Tuple[int, ...] = (3, 4, 6)) -> ArchSpec:
  """Derives every layer width of the supernet from the stage table."""
  return _build_arch_spec(float(width_multiplier), tuple(expand_ratios))


@functools.lru_cache(maxsize=64)  # immutable result; cost counting asks for it once per config
def _build_arch_spec(width_multiplier: float, expand_ratios: Tuple[int, ...]) -> ArchSpec:
  stem = make_divisible(STEM_WIDTH * width_multiplier, 8)
  stage_widths = tuple(make_divisible(s.width * width_multiplier, 8) for s in STAGES)
  blocks = []
  in_width = stem
  for stage_index, (stage, width) in enumerate(zip(STAGES, stage_widths)):
    stage_blocks = []
    for block_index in range(BLOCKS_PER_STAGE):
      mids = tuple(mid_width(in_width, e) for e in expand_ratios)
      ses = tuple(se_width(m) for m in mids) if stage.use_se else tuple(0 for _ in mids)
      stage_blocks.append(
          BlockSpec(stage=stage_index, index=block_index, in_width=in_width, out_width=width,
                    stride=stage.stride if block_index == 0 else 1,
                    activation=stage.activation, use_se=stage.use_se,
                    mid_widths=mids, se_widths=ses))
      in_width = width
    blocks.append(tuple(stage_blocks))
  return ArchSpec(width_multiplier=width_multiplier, expand_ratios=tuple(expand_ratios),
                  stem_width=stem, stage_widths=stage_widths, blocks=tuple(blocks))
