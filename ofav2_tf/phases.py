"""Extended progressive shrinking: the phase table of OFAv2 (DESIGN.md 2.3) as a registry.

Each phase names the sub-space it samples from (by restricting the supernet's full space), how
many sub-networks it trains per step, and the paper's reference budget. A dimension not yet unlocked
stays at its maximum; once unlocked it stays elastic. Level phases apply only to parallel variants,
Height phases only to early-exit variants; `schedule(variant)` returns the phases that apply, in
order. Run budgets are scaled by flags (see `PhaseBudget`), never by editing this table.
"""

import dataclasses
from typing import Callable, Tuple

from ofav2_tf import registry
from ofav2_tf import subnet_config as sc
from ofav2_tf import variants as variants_lib


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
  """One phase of progressive shrinking.

  Attributes:
    name: Registry name ('full', 'kernel', 'level1', ...).
    kernels: Unlocked kernel sizes: 'max' or 'all'.
    min_branches: Fewest active branches per level (3 = all, i.e. locked).
    lowest_exit: Lowest exit sampled (5 = last exit only).
    depths: Number of smallest depths unlocked beyond the max (0 = max only).
    expands: Number of smallest expand ratios unlocked beyond the max.
    subnets_per_step: Sub-networks sampled, run and accumulated per optimizer step.
    reference_epochs: Epochs of the paper's reference run (without warm-up).
    warmup_epochs: Linear warm-up epochs of the reference run.
    reference_lr: Base learning rate of the reference run (batch 64).
    applies: Which variants run this phase.
  """

  name: str
  kernels: str
  min_branches: int
  lowest_exit: int
  depths: int
  expands: int
  subnets_per_step: int
  reference_epochs: int
  warmup_epochs: int
  reference_lr: float
  applies: Callable[[variants_lib.Variant], bool]

  @property
  def is_full(self) -> bool:
    return self.name == 'full'

  @property
  def unlocks_expand(self) -> bool:
    """Channel sorting runs before the phases that first shrink the expand ratio."""
    return self.expands > 0

  def space(self, full: sc.SearchSpace) -> sc.SearchSpace:
    """This phase's sub-space of the supernet's full space."""
    kernels = full.kernel_sizes if self.kernels == 'all' else (max(full.kernel_sizes),)
    depths = full.depths[len(full.depths) - 1 - self.depths:]
    expands = full.expand_ratios[len(full.expand_ratios) - 1 - self.expands:]
    exits = tuple(x for x in full.exits if x >= self.lowest_exit) or (max(full.exits),)
    branches = None
    if full.parallel:
      branches = tuple(p for p in full.branch_patterns if sc.branch_count(p) >= self.min_branches)
    return full.restrict(kernel_sizes=kernels, depths=depths, expand_ratios=expands, exits=exits,
                         branch_patterns=branches)


PHASES = registry.Registry[PhaseSpec]('phase')

_ALL = lambda v: True  # noqa: E731
_PARALLEL = lambda v: v.parallel  # noqa: E731
_EARLY_EXITS = lambda v: v.early_exits  # noqa: E731

# name, kernels, min branches, lowest exit, depths, expands, n, epochs, warm-up, lr, applies
_TABLE = (
    ('full', 'max', 3, 5, 0, 0, 1, 180, 0, 0.08, _ALL),
    ('kernel', 'all', 3, 5, 0, 0, 1, 120, 5, 0.03, _ALL),
    ('level1', 'all', 2, 5, 0, 0, 2, 25, 0, 0.0025, _PARALLEL),
    ('level2', 'all', 1, 5, 0, 0, 2, 120, 5, 0.0075, _PARALLEL),
    ('height1', 'all', 1, 4, 0, 0, 2, 25, 0, 0.001875, _EARLY_EXITS),
    ('height2', 'all', 1, 3, 0, 0, 2, 60, 5, 0.00375, _EARLY_EXITS),
    ('height3', 'all', 1, 2, 0, 0, 2, 90, 5, 0.0075, _EARLY_EXITS),
    ('height4', 'all', 1, 1, 0, 0, 2, 120, 5, 0.015, _EARLY_EXITS),
    ('depth1', 'all', 1, 1, 1, 0, 2, 25, 0, 0.0025, _ALL),
    ('depth2', 'all', 1, 1, 2, 0, 2, 120, 5, 0.0075, _ALL),
    ('expand1', 'all', 1, 1, 2, 1, 4, 25, 0, 0.0025, _ALL),
    ('expand2', 'all', 1, 1, 2, 2, 4, 120, 5, 0.0075, _ALL),
)
for _row in _TABLE:
  PHASES.add(_row[0], PhaseSpec(*_row))


def schedule(variant) -> Tuple[PhaseSpec, ...]:
  """The phases that apply to `variant` (a `Variant` or its name), in training order."""
  if isinstance(variant, str):
    variant = variants_lib.get_variant(variant)
  return tuple(PHASES.get(name) for name in PHASES.names() if PHASES.get(name).applies(variant))
