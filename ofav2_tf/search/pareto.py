"""Search results as a file and a plot: the Pareto front, the uniform sub-networks, the baseline.

A result holds candidates (config, predicted accuracy, costs, and the measured accuracy once the
chosen configs have been evaluated for real), so reports can show how far prediction and
measurement agree. The JSON stores each config both as its compact string (for people and flags)
and as a dict (for programs). The plot draws accuracy against each cost, one panel per cost: the
front as a line, the uniform sub-networks (the paper's protocol) as crosses, the single-objective
baseline's pick as a star. Both files are written atomically (temporary name, then rename).
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from export import atomic_write
from ofav2_tf import errors
from ofav2_tf import subnet_config as sc
from ofav2_tf.search import objectives as objectives_lib

FORMAT = 'ofav2-pareto'
VERSION = 1


@dataclasses.dataclass
class Candidate:
  """One sub-network found or compared by a search.

  Attributes:
    config: The sub-network.
    predicted_accuracy: The predictor's accuracy.
    costs: {objective name: cost}.
    measured_accuracy: Accuracy measured after the search, on the split the choice is made on
      (validation; None until then).
    label: What it is ('pareto', 'uniform', 'evolution', ...).
    test_accuracy: Accuracy on the test split, measured for the report only (never used to
      choose).
  """

  config: sc.SubnetConfig
  predicted_accuracy: float
  costs: Dict[str, float]
  measured_accuracy: Optional[float] = None
  label: str = ''
  test_accuracy: Optional[float] = None

  @property
  def accuracy(self) -> float:
    """The measured accuracy when known, else the predicted one."""
    return self.predicted_accuracy if self.measured_accuracy is None else self.measured_accuracy

  def to_dict(self) -> dict:
    return {'config': self.config.to_string(), 'config_dict': self.config.to_dict(),
            'predicted_accuracy': float(self.predicted_accuracy),
            'measured_accuracy': (None if self.measured_accuracy is None
                                  else float(self.measured_accuracy)),
            'costs': {k: float(v) for k, v in self.costs.items()}, 'label': self.label,
            'test_accuracy': None if self.test_accuracy is None else float(self.test_accuracy)}

  @classmethod
  def from_dict(cls, data: dict) -> 'Candidate':
    return cls(config=sc.SubnetConfig.from_dict(data['config_dict']),
               predicted_accuracy=float(data['predicted_accuracy']),
               costs={k: float(v) for k, v in data['costs'].items()},
               measured_accuracy=data.get('measured_accuracy'), label=data.get('label', ''),
               test_accuracy=data.get('test_accuracy'))


def make_candidates(configs: Sequence[sc.SubnetConfig], accuracy, context, names: Sequence[str],
                    label: str = '') -> List[Candidate]:
  """Candidates for configs scored by `accuracy(configs) -> array` with costs `names`."""
  configs = list(configs)
  if not configs:
    return []
  predicted = np.asarray(accuracy(configs), np.float64)
  return [Candidate(config, float(p), objectives_lib.cost_dict(context, names, config), label=label)
          for config, p in zip(configs, predicted)]


def spread(candidates: Sequence[Candidate], count: int, cost: str) -> List[Candidate]:
  """At most `count` candidates evenly spaced along `cost` (cheapest and dearest included).

  A front over thousands of evaluated networks has hundreds of points; measuring each for real
  costs minutes, so reports measure an even selection.
  """
  ordered = sorted(candidates, key=lambda c: c.costs[cost])
  if count <= 0 or not ordered:
    return []
  if len(ordered) <= count:
    return ordered
  picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, count)).astype(int))
  return [ordered[i] for i in picks]


@dataclasses.dataclass
class ParetoResult:
  """A search's output.

  Attributes:
    variant: Supernet variant name.
    objectives: Cost objective names (accuracy is always maximised besides them).
    budgets: {objective name: limit}.
    front: The non-dominated feasible candidates, by increasing first cost.
    uniform: Uniform sub-networks for comparison.
    baseline: The single-objective baseline's pick (OFA's evolution), if run.
    settings: How the search ran (population, generations, seed, predictor, wall time...).
  """

  variant: str
  objectives: List[str]
  budgets: Dict[str, float]
  front: List[Candidate]
  uniform: List[Candidate] = dataclasses.field(default_factory=list)
  baseline: Optional[Candidate] = None
  settings: dict = dataclasses.field(default_factory=dict)

  def candidates(self) -> List[Candidate]:
    """Every candidate of the result (front, uniform, baseline)."""
    return self.front + self.uniform + ([self.baseline] if self.baseline else [])

  def set_measured(self, config: sc.SubnetConfig, accuracy: float,
                   test_accuracy: Optional[float] = None) -> int:
    """Records measured accuracies on every candidate that is `config`'s network; returns how many.

    Raises:
      ConfigError: no candidate is that network.
    """
    key = config.canonical()
    hits = [c for c in self.candidates() if c.config.canonical() == key]
    if not hits:
      raise errors.ConfigError(f'sub-network {config.to_string()} is not in the search result')
    for candidate in hits:
      candidate.measured_accuracy = float(accuracy)
      if test_accuracy is not None:
        candidate.test_accuracy = float(test_accuracy)
    return len(hits)

  def to_dict(self) -> dict:
    return {'format': FORMAT, 'version': VERSION, 'variant': self.variant,
            'objectives': list(self.objectives), 'budgets': dict(self.budgets),
            'settings': self.settings, 'front': [c.to_dict() for c in self.front],
            'uniform': [c.to_dict() for c in self.uniform],
            'baseline': self.baseline.to_dict() if self.baseline else None}

  @classmethod
  def from_dict(cls, data: dict, source: str = '<dict>') -> 'ParetoResult':
    if not isinstance(data, dict) or data.get('format') != FORMAT:
      raise errors.ConfigError(f'{source} is not a Pareto result (format {FORMAT!r} expected)')
    if data.get('version') != VERSION:
      raise errors.ConfigError(f'{source} has Pareto result version {data.get("version")}; this '
                               f'code reads version {VERSION}')
    return cls(variant=data['variant'], objectives=list(data['objectives']),
               budgets={k: float(v) for k, v in data['budgets'].items()},
               front=[Candidate.from_dict(c) for c in data['front']],
               uniform=[Candidate.from_dict(c) for c in data.get('uniform', [])],
               baseline=(Candidate.from_dict(data['baseline']) if data.get('baseline')
                         else None),
               settings=data.get('settings', {}))

  def save(self, path) -> str:
    """Writes the result as JSON atomically; returns the path."""
    return atomic_write.write_text(path, json.dumps(self.to_dict(), indent=1) + '\n')

  @classmethod
  def load(cls, path) -> 'ParetoResult':
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise errors.ConfigError(f'Pareto result {path} does not exist')
    with open(path, encoding='utf-8') as f:
      try:
        data = json.load(f)
      except json.JSONDecodeError as e:
        raise errors.ConfigError(f'Pareto result {path} is not valid JSON: {e}') from None
    return cls.from_dict(data, path)


def plot(result: ParetoResult, path, cost_names: Optional[Sequence[str]] = None,
         title: Optional[str] = None) -> str:
  """Accuracy against each cost (one panel per cost), written atomically to `path` (.png, .svg).

  A front over several costs is not monotone against any one of them, so each panel draws every
  front member as a small predicted point and the line is that panel's own staircase (the members
  no other beats on both this cost and predicted accuracy). Measured accuracies are filled markers
  joined to their prediction by a thin line, so the predictor's error is visible; uniform
  sub-networks and the baseline show their measured accuracy where known, hollow otherwise.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg', force=False)
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  path = os.fspath(path)
  names = list(cost_names or result.objectives or ['macs'])
  missing = [n for n in names if any(n not in c.costs for c in result.candidates())]
  if missing:
    raise errors.ConfigError(f'cannot plot cost(s) {missing}: the result has costs '
                             f'{sorted(result.front[0].costs) if result.front else []}')
  fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
  for ax, name in zip(axes[0], names):
    unit = objectives_lib.get_objective(name).unit
    front = sorted(result.front, key=lambda c: (c.costs[name], -c.predicted_accuracy))
    if front:
      ax.scatter([c.costs[name] for c in front], [c.predicted_accuracy for c in front], s=10,
                 color='tab:blue', alpha=0.5, label='Pareto set (predicted)')
      stairs, best = [], -1.0
      for c in front:
        if c.predicted_accuracy > best:
          stairs.append(c)
          best = c.predicted_accuracy
      ax.step([c.costs[name] for c in stairs], [c.predicted_accuracy for c in stairs],
              where='post', color='tab:blue', lw=1)
      measured = [c for c in front if c.measured_accuracy is not None]
      for c in measured:
        ax.plot([c.costs[name]] * 2, [c.predicted_accuracy, c.measured_accuracy],
                color='tab:blue', lw=0.8, alpha=0.6)
      if measured:
        ax.scatter([c.costs[name] for c in measured], [c.measured_accuracy for c in measured],
                   s=30, color='tab:blue', zorder=4, label='Pareto, measured (validation)')
    for group, style in ((result.uniform, dict(marker='x', s=30, color='tab:gray',
                                               label='uniform sub-networks')),
                         ([result.baseline] if result.baseline else [],
                          dict(marker='*', s=180, color='tab:red', zorder=5,
                               label='evolution baseline'))):
      known = [c for c in group if c.measured_accuracy is not None]
      guessed = [c for c in group if c.measured_accuracy is None]
      if known:
        ax.scatter([c.costs[name] for c in known], [c.measured_accuracy for c in known], **style)
      if guessed:
        hollow = dict(style, label=style['label'] + ' (predicted)', alpha=0.35)
        ax.scatter([c.costs[name] for c in guessed], [c.predicted_accuracy for c in guessed],
                   **hollow)
    if name in result.budgets:
      ax.axvline(result.budgets[name], color='tab:red', ls='--', lw=1, label=f'budget ({name})')
    ax.set_xlabel(f'{name} ({unit})')
    ax.set_ylabel('accuracy')
    ax.grid(alpha=0.3)
  axes[0][0].legend(loc='lower right', fontsize=7)
  measured = any(c.measured_accuracy is not None for c in result.candidates())
  fig.suptitle(title or f'{result.variant}: {"measured" if measured else "predicted"} accuracy '
               'against cost')
  fig.tight_layout()
  suffix = os.path.splitext(path)[1] or '.png'
  with atomic_write.atomic_path(path, suffix=suffix) as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)
  return path
