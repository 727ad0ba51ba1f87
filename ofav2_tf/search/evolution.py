"""OFA's single-objective evolutionary search: best predicted accuracy under one budget.

The baseline the multi-objective search is compared with, written as OFA's `EvolutionFinder`
does it: a population of random feasible sub-networks; each generation keeps the top
`parent_ratio` as parents, and adds `mutation_ratio` x population children made by mutating a
random parent (each choice redrawn with `mutate_prob`, the resolution with
`resolution_mutate_prob`) and the rest by uniform crossover of two random parents; a child that
breaks the budget is redrawn. The best predicted accuracy seen is the result.

Unlike OFA, redraws are bounded: random sampling under a budget that few networks meet falls back
to mutants of the cheapest network, and a mutation or crossover that keeps failing returns its
(feasible) first parent, so a tight budget cannot hang the search.
"""

import dataclasses
import time
from typing import Callable, List, Optional, Sequence, Union

from absl import logging
import numpy as np

from ofav2_tf import errors
from ofav2_tf import subnet_config as sc
from ofav2_tf.search import genome as genome_lib
from ofav2_tf.search import nsga
from ofav2_tf.search import objectives as objectives_lib
from ofav2_tf.search import pareto

MAX_REDRAWS = 200


@dataclasses.dataclass
class EvolutionResult:
  """The search's pick and its trace.

  Attributes:
    best: The best feasible network found (label 'evolution').
    history: Best predicted accuracy after each generation (index 0: initial population).
    evaluations: Predictor calls on networks (initial population and children).
    seconds: Wall time.
    settings: The search's parameters.
  """

  best: pareto.Candidate
  history: List[float]
  evaluations: int
  seconds: float
  settings: dict


class _Feasibility:
  """Whether a genome satisfies every budget (costs memoised by the context)."""

  def __init__(self, genome, context, budgets):
    self.genome, self.context, self.budgets = genome, context, budgets

  def __call__(self, g) -> bool:
    config = self.genome.to_config(g)
    return all(b.satisfied(self.context, config) for b in self.budgets)


def search(space: sc.SearchSpace, accuracy, context: objectives_lib.CostContext,
           budget: Union[objectives_lib.Budget, Sequence[objectives_lib.Budget]],
           population: int = 100, generations: int = 500, parent_ratio: float = 0.25,
           mutation_ratio: float = 0.5, mutate_prob: float = 0.1,
           resolution_mutate_prob: float = 0.5, seed: int = 0,
           report_costs: Sequence[str] = (),
           on_generation: Optional[Callable[[int], None]] = None) -> EvolutionResult:
  """Runs OFA's evolution (defaults are OFA's) and returns its best network.

  Args:
    space: The space to search.
    accuracy: Predictor (`AccuracyPredictor` or any callable on a list of configs).
    context: Cost context of the supernet.
    budget: The constraint (OFA's search has one; several are all enforced).
    population: Population size.
    generations: Generations (OFA's `max_time_budget`).
    parent_ratio: Share of the population kept as parents.
    mutation_ratio: Share of children made by mutation (the rest by crossover).
    mutate_prob: Per-choice redraw probability of a mutation.
    resolution_mutate_prob: Redraw probability of the resolution.
    seed: Seeds everything.
    report_costs: Extra cost names to record on the result besides the budgets'.
    on_generation: Called with the generation index as each starts (progress display).

  Raises:
    ConfigError: the budget is impossible, or a setting is out of range.
  """
  start = time.perf_counter()
  budgets = [budget] if isinstance(budget, objectives_lib.Budget) else list(budget)
  if not budgets:
    raise errors.ConfigError('the evolution baseline needs a budget (e.g. macs<=5e6)')
  if population < 4 or generations < 0 or not (0 < parent_ratio <= 1 and 0 <= mutation_ratio <= 1
                                                 and 0 <= mutate_prob <= 1):
    raise errors.ConfigError(
        f'population={population}, generations={generations}, parent_ratio={parent_ratio}, '
        f'mutation_ratio={mutation_ratio}, mutate_prob={mutate_prob}: need population >= 4, '
        'generations >= 0, parent_ratio in (0, 1], ratios and probabilities in [0, 1]')
  cheapest = objectives_lib.check_feasible(context, space, budgets)
  genome = genome_lib.Genome(space)
  predict = nsga.accuracy_on_genomes(accuracy, genome)
  feasible = _Feasibility(genome, context, budgets)
  rng = np.random.default_rng(seed)
  gene_prob = np.full(genome.size, float(mutate_prob))
  gene_prob[genome.resolution] = resolution_mutate_prob
  fallback = genome.from_config(next(iter(cheapest.values()))[0])

  def mutate(parent):
    for _ in range(MAX_REDRAWS):
      child = parent.copy()
      redraw = rng.random(genome.size) < gene_prob
      child[redraw] = rng.integers(0, genome.upper + 1)[redraw]
      if feasible(child):
        return child
    return parent.copy()

  def crossover(first, second):
    for _ in range(MAX_REDRAWS):
      child = np.where(rng.random(genome.size) < 0.5, first, second)
      if feasible(child):
        return child
    return first.copy()

  def random_feasible():
    for _ in range(MAX_REDRAWS):
      g = genome.random(rng, 1)[0]
      if feasible(g):
        return g
    return mutate(fallback)

  parents_size = max(1, int(round(parent_ratio * population)))
  mutation_count = int(round(mutation_ratio * population))
  children = np.array([random_feasible() for _ in range(population)])
  scores = predict(children)
  pool, pool_scores = children, scores
  evaluations = len(children)
  best_index = int(np.argmax(scores))
  best, best_score = children[best_index].copy(), float(scores[best_index])
  history = [best_score]
  for generation in range(generations):
    if on_generation is not None:
      on_generation(generation)
    order = np.argsort(-pool_scores, kind='stable')[:parents_size]
    parents, parent_scores = pool[order], pool_scores[order]
    kids = [mutate(parents[rng.integers(parents_size)]) for _ in range(mutation_count)]
    kids += [crossover(parents[rng.integers(parents_size)], parents[rng.integers(parents_size)])
             for _ in range(population - mutation_count)]
    kids = np.array(kids)
    kid_scores = predict(kids)
    evaluations += len(kids)
    pool = np.concatenate([parents, kids])
    pool_scores = np.concatenate([parent_scores, kid_scores])
    top = int(np.argmax(pool_scores))
    if pool_scores[top] > best_score:
      best, best_score = pool[top].copy(), float(pool_scores[top])
    history.append(best_score)
  config = genome.to_config(genome.canonical(best)[0])
  names = [b.name for b in budgets] + [n for n in report_costs
                                       if n not in {b.name for b in budgets}]
  candidate = pareto.Candidate(config=config, predicted_accuracy=best_score,
                               costs=objectives_lib.cost_dict(context, names, config),
                               label='evolution')
  seconds = time.perf_counter() - start
  logging.info('evolution: best predicted accuracy %.4f after %d generations (%d evaluations, '
               '%.1f s): %s', best_score, generations, evaluations, seconds, config)
  settings = {'algorithm': 'ofa_evolution', 'population': population,
              'generations': generations, 'parent_ratio': parent_ratio,
              'mutation_ratio': mutation_ratio, 'mutate_prob': mutate_prob,
              'resolution_mutate_prob': resolution_mutate_prob, 'seed': seed,
              'budgets': {b.name: b.limit for b in budgets}}
  return EvolutionResult(best=candidate, history=history, evaluations=evaluations,
                         seconds=seconds, settings=settings)
