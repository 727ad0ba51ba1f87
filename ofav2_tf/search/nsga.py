"""Multi-objective search with NSGA-II (pymoo): predicted accuracy against costs, under budgets.

Decision variables are the genome (`genome.Genome`): one integer per choice of the space (kernel
and expand index per block, depth per stage, branch pattern per level for parallel spaces, exit,
resolution). pymoo runs NSGA-II with a seeded initial population (random genomes plus the cheapest
sub-network of each budget, so a tight budget starts with something feasible), uniform crossover
and a random-reset mutation (each gene redrawn with `mutation_prob`, as in OFA's evolution).
Duplicates are detected on canonical genomes (genes of skipped blocks zeroed), so two individuals
that are the same network are one.

Objectives, all minimised by pymoo: -predicted accuracy and each named cost. Budgets are inequality
constraints cost / limit - 1 <= 0 (relative, so budgets of different units weigh alike). Before
searching, every budget is checked against the cheapest sub-network it allows; an impossible one
raises `ConfigError` naming the smallest achievable cost.

The result is the non-dominated feasible set of every network evaluated during the run (not only
the last population: a point dropped by crowding is still a valid trade-off).
"""

import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.callback import Callback
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.operators.crossover.ux import UX
from pymoo.optimize import minimize
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from ofav2_tf import errors
from ofav2_tf import subnet_config as sc
from ofav2_tf.search import genome as genome_lib
from ofav2_tf.search import objectives as objectives_lib
from ofav2_tf.search import pareto


def accuracy_on_genomes(accuracy, genome: genome_lib.Genome) -> Callable[[np.ndarray],
                                                                           np.ndarray]:
  """genomes -> accuracies for `accuracy`, using its batch genome path when it has one.

  `accuracy` is an `AccuracyPredictor`, a `SyntheticAccuracy`, or any callable on a list of
  configs. Genomes are only shared when the predictor was built for this very space.
  """
  if getattr(accuracy, 'space', None) == genome.space and hasattr(accuracy, 'predict_genomes'):
    return lambda genomes: np.asarray(accuracy.predict_genomes(genomes), np.float64)
  return lambda genomes: np.asarray(accuracy([genome.to_config(g) for g in genomes]), np.float64)


class ResetMutation(Mutation):
  """Redraws each gene uniformly from its allowed values with probability `prob_gene`."""

  def __init__(self, upper: np.ndarray, prob_gene: float):
    super().__init__(prob=1.0)
    self.upper = np.asarray(upper, np.int64)
    self.prob_gene = float(prob_gene)

  def _do(self, problem, X, *args, random_state=None, **kwargs):
    X = np.round(X).astype(np.int64)
    redraw = random_state.random(X.shape) < self.prob_gene
    fresh = random_state.integers(0, self.upper + 1, size=X.shape)
    X[redraw] = fresh[redraw]
    return X


class _Problem(Problem):
  """Evaluates genomes; keeps every evaluated network in an archive."""

  def __init__(self, genome, accuracy_fn, context, names, budgets):
    super().__init__(n_var=genome.size, n_obj=1 + len(names), n_ieq_constr=len(budgets), xl=0,
                     xu=genome.upper, vtype=int)
    self.genome = genome
    self.accuracy_fn = accuracy_fn
    self.context = context
    self.names = list(names)
    self.budgets = list(budgets)
    # All costs needed once: objectives first, then budget-only costs.
    self.cost_names = self.names + [b.name for b in budgets if b.name not in self.names]
    self.limits = np.array([b.limit for b in budgets], np.float64)
    self.budget_columns = [self.cost_names.index(b.name) for b in budgets]
    self.archive: Dict[tuple, tuple] = {}  # canonical genome -> (accuracy, costs)

  def _evaluate(self, X, out, *args, **kwargs):
    genomes = self.genome.canonical(np.round(X).astype(np.int64))
    accuracy = self.accuracy_fn(genomes)
    configs = [self.genome.to_config(g) for g in genomes]
    costs = objectives_lib.evaluate(self.context, self.cost_names, configs)
    out['F'] = np.column_stack([-accuracy, costs[:, :len(self.names)]])
    if self.budgets:
      out['G'] = costs[:, self.budget_columns] / self.limits[None, :] - 1.0
    for g, a, c in zip(genomes, accuracy, costs):
      self.archive.setdefault(tuple(g), (float(a), c))


@dataclasses.dataclass
class SearchResult:
  """NSGA-II's output.

  Attributes:
    front: Non-dominated feasible candidates, by increasing first cost (label 'pareto').
    evaluations: Distinct networks evaluated.
    seconds: Wall time of the search (feasibility check included).
    settings: population, generations, seed, mutation_prob, objectives, budgets.
  """

  front: List[pareto.Candidate]
  evaluations: int
  seconds: float
  settings: dict


class _GenerationCallback(Callback):
  """Tells `report` how many generations pymoo has finished."""

  def __init__(self, report: Callable[[int], None]):
    super().__init__()
    self.report = report

  def notify(self, algorithm) -> None:
    self.report(int(algorithm.n_gen))


def search(space: sc.SearchSpace, accuracy, context: objectives_lib.CostContext,
           objectives: Sequence[str] = ('macs',),
           budgets: Sequence[objectives_lib.Budget] = (), population: int = 100,
           generations: int = 100, seed: int = 0, mutation_prob: float = 0.1,
           verbose: bool = False,
           on_generation: Optional[Callable[[int], None]] = None) -> SearchResult:
  """Runs NSGA-II over `space` and returns the Pareto set.

  Args:
    space: The space to search (the supernet's, or a restriction such as one resolution).
    accuracy: The predictor: an `AccuracyPredictor` (fast genome path when fitted on `space`) or
      any callable mapping a list of configs to accuracies.
    context: Cost context of the supernet.
    objectives: Cost objective names to minimise (see `objectives.OBJECTIVES`).
    budgets: Hard upper bounds (on any objective, also ones not minimised).
    population: NSGA-II population size.
    generations: Generations to run.
    seed: Seeds the initial population and every operator.
    mutation_prob: Per-gene redraw probability.
    verbose: Print pymoo's per-generation table.
    on_generation: Called with the number of finished generations after each (progress display).

  Raises:
    ConfigError: a budget is impossible, or no network satisfying all budgets together was found.
    RegistryError: an unknown objective name.
  """
  start = time.perf_counter()
  names = list(objectives)
  for name in names:
    objectives_lib.get_objective(name)
  if len(set(names)) != len(names):
    raise errors.ConfigError(f'objectives {names} name one cost twice')
  if population < 2 or generations < 1 or not 0 <= mutation_prob <= 1:
    raise errors.ConfigError(f'population={population}, generations={generations}, '
                             f'mutation_prob={mutation_prob}: need population >= 2, '
                             'generations >= 1, 0 <= mutation_prob <= 1')
  budgets = list(budgets)
  cheapest = objectives_lib.check_feasible(context, space, budgets)
  genome = genome_lib.Genome(space)
  problem = _Problem(genome, accuracy_on_genomes(accuracy, genome), context, names, budgets)

  rng = np.random.default_rng(seed)
  seeds = [genome.from_config(config) for config, _ in cheapest.values()]
  initial = np.concatenate([np.array(seeds, np.int64).reshape(-1, genome.size),
                            genome.random(rng, population)])[:population]
  algorithm = NSGA2(pop_size=population, sampling=initial, crossover=UX(),
                    mutation=ResetMutation(genome.upper, mutation_prob),
                    eliminate_duplicates=DefaultDuplicateElimination(
                        func=lambda pop: genome.canonical(np.round(pop.get('X')).astype(np.int64))))
  extra = {'callback': _GenerationCallback(on_generation)} if on_generation else {}
  minimize(problem, algorithm, ('n_gen', int(generations)), seed=int(seed), verbose=verbose,
           **extra)

  front = _front(problem, budgets)
  if not front:
    raise errors.ConfigError(
        f'no sub-network satisfying all budgets together ({", ".join(map(str, budgets))}) was '
        f'found in {len(problem.archive)} evaluated; each alone is achievable: relax one')
  seconds = time.perf_counter() - start
  logging.info('NSGA-II: %d networks evaluated in %.1f s, %d on the Pareto front',
               len(problem.archive), seconds, len(front))
  settings = {'algorithm': 'nsga2', 'population': int(population),
              'generations': int(generations), 'seed': int(seed),
              'mutation_prob': float(mutation_prob), 'objectives': names,
              'budgets': {b.name: b.limit for b in budgets}}
  return SearchResult(front=front, evaluations=len(problem.archive), seconds=seconds,
                      settings=settings)


def _front(problem: _Problem, budgets) -> List[pareto.Candidate]:
  """Non-dominated feasible networks of the archive."""
  keys = list(problem.archive)
  if not keys:
    return []
  accuracy = np.array([problem.archive[k][0] for k in keys])
  costs = np.array([problem.archive[k][1] for k in keys])
  feasible = np.ones(len(keys), bool)
  for budget in budgets:
    feasible &= costs[:, problem.cost_names.index(budget.name)] <= budget.limit
  idx = np.flatnonzero(feasible)
  if not len(idx):
    return []
  f = np.column_stack([-accuracy[idx], costs[idx, :len(problem.names)]])
  nondominated = idx[NonDominatedSorting().do(f, only_non_dominated_front=True)]
  front = []
  for i in nondominated:
    config = problem.genome.to_config(np.array(keys[i]))
    front.append(pareto.Candidate(
        config=config, predicted_accuracy=float(accuracy[i]),
        costs={n: float(costs[i, j]) for j, n in enumerate(problem.cost_names)}, label='pareto'))
  first = problem.names[0] if problem.names else None
  front.sort(key=lambda c: (c.costs[first] if first else 0.0, -c.predicted_accuracy))
  return front
