"""Cost objectives of the search (MACs, parameters, activations, flash, arena, latency) and budgets.

Each objective maps a config to one float through a `CostContext`, which knows the supernet's
shape (variant, classes, width, expand ratios) and, for latency, a latency lookup table. The
analytic counters take about a millisecond per config and a search asks for the same networks
again and again (children equal to parents, configs differing only in skipped blocks), so the
context memoises the counts per network (`SubnetConfig.canonical`). Objectives are looked up by
name in `OBJECTIVES`; a `Budget` is an upper bound on one of them ("macs<=5e6").

The costs are those of the extracted single-exit network (the sub-network's own exit head only),
which is what a search candidate is deployed as.
"""

import dataclasses
import re
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from ofav2_tf import costs
from ofav2_tf import deploy_costs
from ofav2_tf import errors
from ofav2_tf import registry
from ofav2_tf import subnet_config as sc
from ofav2_tf import variants as variants_lib
from ofav2_tf.search import genome as genome_lib


class CostContext:
  """Costs of configs of one supernet, memoised per network.

  Args:
    variant: Supernet variant (a `Variant` or its name).
    num_classes: Classifier width.
    width_multiplier: Supernet width multiplier.
    expand_ratios: The supernet's expand ratios.
    latency_table: A `latency_table.LatencyTable` profiled for this supernet (needed only for
      the 'latency' objective).

  Raises:
    ConfigError: the latency table was profiled for another supernet.
  """

  def __init__(self, variant, num_classes: int, width_multiplier: float = 1.0,
               expand_ratios: Sequence[int] = (3, 4, 6), latency_table=None):
    self.variant = variants_lib.get_variant(variant) if isinstance(variant, str) else variant
    self.num_classes = int(num_classes)
    self.width_multiplier = float(width_multiplier)
    self.expand_ratios = tuple(int(e) for e in expand_ratios)
    self.latency_table = latency_table
    if latency_table is not None:
      s = latency_table.settings
      ours = (self.variant.name, self.num_classes, self.width_multiplier, list(self.expand_ratios))
      theirs = (s['variant'], s['num_classes'], float(s['width_multiplier']),
                list(s['expand_ratios']))
      if ours != theirs:
        raise errors.ConfigError(
            f'latency table is for (variant, classes, width, expand ratios) = {theirs}; the search '
            f'is for {ours}: profile a table for this supernet')
    self._counts: Dict[sc.SubnetConfig, Tuple[int, int, int]] = {}
    self._deploy: Dict[sc.SubnetConfig, Tuple[int, int]] = {}
    self._latency: Dict[sc.SubnetConfig, float] = {}

  def counts(self, config: sc.SubnetConfig) -> Tuple[int, int, int]:
    """(params, macs, peak activation elements) of `config`."""
    key = config.canonical()
    value = self._counts.get(key)
    if value is None:
      report = costs.count(config, self.variant, self.num_classes, self.width_multiplier,
                           self.expand_ratios)
      value = self._counts[key] = (report.params, report.macs, report.peak_activation_elements)
    return value

  def deployment(self, config: sc.SubnetConfig) -> Tuple[int, int]:
    """(flash bytes, TFLite Micro arena bytes) of `config`'s int8 file."""
    key = config.canonical()
    value = self._deploy.get(key)
    if value is None:
      estimate = deploy_costs.estimate(config, self.variant, self.num_classes,
                                       self.width_multiplier, self.expand_ratios)
      value = self._deploy[key] = (estimate.flash_bytes, estimate.arena_bytes)
    return value

  def latency(self, config: sc.SubnetConfig) -> float:
    """Predicted latency (ms) from the latency table."""
    if self.latency_table is None:
      raise errors.ConfigError("objective 'latency' needs a latency table: profile one with "
                               'ofav2_tf.latency_table.profile and pass it to the search')
    key = config.canonical()
    value = self._latency.get(key)
    if value is None:
      value = self._latency[key] = float(self.latency_table.predict(config))
    return value


@dataclasses.dataclass(frozen=True)
class Objective:
  """A cost to minimise.

  Attributes:
    name: Registry name.
    unit: Unit for messages and plot axes ('MACs', 'bytes', ...).
    fn: fn(context, config) -> float.
    integer: The cost is a count (printed without decimals).
  """

  name: str
  unit: str
  fn: Callable[[CostContext, sc.SubnetConfig], float]
  integer: bool = True

  def __call__(self, context: CostContext, config: sc.SubnetConfig) -> float:
    return float(self.fn(context, config))

  def format(self, value: float) -> str:
    """'4,180,000 MACs', '1.250 ms'."""
    return f'{value:,.0f} {self.unit}' if self.integer else f'{value:,.3f} {self.unit}'


OBJECTIVES = registry.Registry[Objective]('cost objective')
OBJECTIVES.add('macs', Objective('macs', 'MACs', lambda ctx, c: ctx.counts(c)[1]))
OBJECTIVES.add('params', Objective('params', 'parameters', lambda ctx, c: ctx.counts(c)[0]))
OBJECTIVES.add('peak_activation', Objective('peak_activation', 'activation elements',
                                            lambda ctx, c: ctx.counts(c)[2]))
OBJECTIVES.add('flash', Objective('flash', 'bytes of flash', lambda ctx, c: ctx.deployment(c)[0]))
OBJECTIVES.add('arena', Objective('arena', 'bytes of arena', lambda ctx, c: ctx.deployment(c)[1]))
OBJECTIVES.add('latency', Objective('latency', 'ms', lambda ctx, c: ctx.latency(c),
                                    integer=False))


def get_objective(name: str) -> Objective:
  """Looks an objective up by name (RegistryError lists the valid names)."""
  return OBJECTIVES.get(name)


def evaluate(context: CostContext, names: Sequence[str],
             configs: Sequence[sc.SubnetConfig]) -> np.ndarray:
  """(N, len(names)) float64 costs of `configs`."""
  objectives = [get_objective(n) for n in names]
  out = np.zeros((len(configs), len(objectives)), np.float64)
  for i, config in enumerate(configs):
    for j, objective in enumerate(objectives):
      out[i, j] = objective(context, config)
  return out


def cost_dict(context: CostContext, names: Sequence[str], config: sc.SubnetConfig) -> dict:
  """{name: cost} of one config."""
  return {n: get_objective(n)(context, config) for n in names}


# ---- budgets ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Budget:
  """A hard upper bound on one objective.

  Attributes:
    name: Objective name.
    limit: Largest allowed value (inclusive).
  """

  name: str
  limit: float

  def __post_init__(self):
    get_objective(self.name)
    if not np.isfinite(self.limit) or self.limit <= 0:
      raise errors.ConfigError(f'budget {self.name}<={self.limit:g}: the limit must be a positive '
                               'number (<objective><=<limit>, e.g. flash<=262144 or macs<=5e6)')

  def __str__(self):
    return f'{self.name}<={self.limit:g}'

  def satisfied(self, context: CostContext, config: sc.SubnetConfig) -> bool:
    return get_objective(self.name)(context, config) <= self.limit


def parse_budgets(spec) -> List[Budget]:
  """Budgets from 'macs<=5e6,flash<=1000000', a {name: limit} dict, or a list of either form.

  Raises:
    ConfigError: a malformed entry; RegistryError: an unknown objective.
  """
  if spec is None:
    return []
  if isinstance(spec, dict):
    return [Budget(str(n), float(v)) for n, v in spec.items()]
  if isinstance(spec, str):
    spec = [part for part in spec.split(',') if part.strip()]
  budgets = []
  for item in spec:
    if isinstance(item, Budget):
      budgets.append(item)
      continue
    # A sign belongs to the number, so that a negative limit is refused by `Budget` as a value that
    # must be positive, not as a malformed entry.
    m = re.fullmatch(r'\s*([a-z_]+)\s*<=\s*([-+0-9.eE_]+)\s*', str(item))
    if not m:
      raise errors.ConfigError(f'budget {item!r} must look like <objective><=<limit>, e.g. '
                               f'macs<=5e6; objectives: {", ".join(OBJECTIVES.names())}')
    try:
      limit = float(m.group(2).replace('_', ''))
    except ValueError:
      raise errors.ConfigError(f'budget {item!r}: {m.group(2)!r} is not a number') from None
    budgets.append(Budget(m.group(1), limit))
  names = [b.name for b in budgets]
  duplicated = sorted({n for n in names if names.count(n) > 1})
  if duplicated:
    raise errors.ConfigError(f'budget(s) {duplicated} given more than once; give one limit each')
  return budgets


# ---- the smallest achievable cost -------------------------------------------------------------


def smallest(context: CostContext, space: sc.SearchSpace, name: str
             ) -> Tuple[sc.SubnetConfig, float]:
  """The cheapest sub-network of `space` found for objective `name`, and its cost.

  Starts from the uniform minimal networks (every exit, every uniform branch pattern) and changes
  one choice at a time (any block's kernel, expand ratio or branches, any stage's depth, the exit,
  the resolution) while that lowers the cost. Exact for costs that add up over blocks (MACs,
  parameters, flash), and robust to measured costs that are not monotone in a choice (a latency
  table where a 3x3 kernel timed slower than a 5x5 one).
  """
  objective = get_objective(name)
  genome = genome_lib.Genome(space)
  patterns = space.branch_patterns if space.parallel else (None,)
  best, best_cost = None, float('inf')
  for exit_number in space.exits:
    for pattern in patterns:
      config = space.uniform(min(space.kernel_sizes), min(space.expand_ratios), min(space.depths),
                             exit_number, min(space.resolutions), pattern)
      cost = objective(context, config)
      if cost < best_cost:
        best, best_cost = config, cost
  best_genome = genome.canonical(genome.from_config(best))[0]
  improved = True
  while improved:
    improved = False
    for gene in range(genome.size):
      for value in range(genome.upper[gene] + 1):
        if value == best_genome[gene]:
          continue
        candidate = best_genome.copy()
        candidate[gene] = value
        config = genome.to_config(candidate)
        cost = objective(context, config)
        if cost < best_cost:
          best, best_cost, best_genome, improved = config, cost, candidate, True
  return best, best_cost


def check_feasible(context: CostContext, space: sc.SearchSpace,
                   budgets: Sequence[Budget]) -> Dict[str, Tuple[sc.SubnetConfig, float]]:
  """Raises `ConfigError` for the first budget even the cheapest sub-network exceeds.

  Returns:
    {budget name: (cheapest config, its cost)} for the budgets.
  """
  result = {}
  for budget in budgets:
    config, cost = smallest(context, space, budget.name)
    if cost > budget.limit:
      objective = get_objective(budget.name)
      raise errors.ConfigError(
          f'budget {budget} is impossible: the smallest sub-network needs '
          f'{objective.format(cost)} ({config.to_string()})')
    result[budget.name] = (config, cost)
  return result


def budget_violations(context: CostContext, budgets: Sequence[Budget],
                      configs: Sequence[sc.SubnetConfig]) -> np.ndarray:
  """(N, len(budgets)) relative violations cost / limit - 1 (<= 0 where satisfied)."""
  if not budgets:
    return np.zeros((len(configs), 0))
  values = evaluate(context, [b.name for b in budgets], configs)
  return values / np.array([b.limit for b in budgets])[None, :] - 1.0
