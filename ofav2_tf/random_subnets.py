"""Random sub-networks of the whole trained space, as a result of their own.

The uniform grid shows a phase's corners and diagonal; a once-for-all network is judged by what any
sub-network gets, so this measures `count` random sub-networks of a phase's space (by default the
last trained phase's, every dimension elastic) whose exit is at least `min_exit`, each BN
re-calibrated and scored on the evaluation split, and puts each against the max network of the
space. The headline figures are the median and the worst accuracy and their gaps to the max
network, overall and per exit.

Each measurement costs one BN re-calibration and one pass over the images (a few seconds on all
10,000 Fashion-MNIST test images), so hundreds take a while. Results are cached as they complete in
`random_subnets_cache/` of the run folder, with `predictor_data`'s append-and-fsync cache (the same
draw: seeded, distinct networks, a prefix sequence, so asking for more later reuses the first
ones), and an interrupted evaluation continues where it stopped. The cache's metadata (phase,
split, image counts, seed) is checked on resume, so figures measured another way are never mixed.

Files in the run folder:
  random_subnets.json   every sub-network (config, exit, resolution, MACs, accuracy) and the
                        summary (`summarize`);
  random_subnets.png    accuracy against MACs, coloured by exit, the max network marked;
  random_subnets_cache/ predictor_data.jsonl, meta.json and max_network.json.
"""

import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from export import atomic_write
from ofav2_tf import costs
from ofav2_tf import errors
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import subnet_config as sc
from ofav2_tf.search import predictor_data

RESULT_FILE = 'random_subnets.json'
PLOT_FILE = 'random_subnets.png'
CACHE_DIR = 'random_subnets_cache'
MAX_NETWORK_FILE = 'max_network.json'


def restrict_exits(space: sc.SearchSpace, min_exit: int) -> sc.SearchSpace:
  """`space` with only the exits >= `min_exit`.

  Raises:
    ConfigError: The space has no such exit.
  """
  exits = tuple(x for x in space.exits if x >= min_exit)
  if not exits:
    raise errors.ConfigError(f'--random_min_exit={min_exit}: the space has exits '
                             f'{",".join(map(str, space.exits))} only; pick one of them')
  return space.restrict(exits=exits)


def record(config: sc.SubnetConfig, accuracy: float, variant, num_classes: int,
           width_multiplier: float) -> dict:
  """One sub-network's entry of random_subnets.json."""
  report = costs.count(config, variant, num_classes, width_multiplier)
  return {'config': config.to_string(), 'exit': int(config.exit),
          'resolution': int(config.resolution), 'macs': int(report.macs),
          'params': int(report.params), 'accuracy': float(accuracy)}


def summarize(records: Sequence[dict], max_network: dict) -> dict:
  """Max network, median and worst, their gaps to the max network, overall and per exit.

  Gaps are the max network's accuracy minus the other figure (positive: below the max network).
  """
  accuracies = np.array([r['accuracy'] for r in records], np.float64)
  top = float(max_network['accuracy'])
  worst = records[int(np.argmin(accuracies))]
  best = records[int(np.argmax(accuracies))]
  median = float(np.median(accuracies))
  per_exit = {}
  for k in sorted({r['exit'] for r in records}):
    values = np.array([r['accuracy'] for r in records if r['exit'] == k], np.float64)
    per_exit[str(k)] = {'count': int(values.size), 'median': float(np.median(values)),
                        'min': float(values.min()), 'max': float(values.max()),
                        'median_gap': top - float(np.median(values))}
  return {'count': len(records), 'max_network_accuracy': top, 'median': median,
          'mean': float(accuracies.mean()), 'worst': float(worst['accuracy']),
          'worst_config': worst['config'], 'best': float(best['accuracy']),
          'best_config': best['config'], 'median_gap': top - median,
          'worst_gap': top - float(worst['accuracy']),
          'above_max_network': int((accuracies > top).sum()), 'per_exit': per_exit}


def _max_network(folder: str, config: sc.SubnetConfig, measure: Callable[[sc.SubnetConfig], float],
                 metadata: dict) -> float:
  """The max network's accuracy, cached next to the random ones (same metadata)."""
  path = os.path.join(folder, MAX_NETWORK_FILE)
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      stored = json.load(f)
    if stored.get('config') == config.to_string() and stored.get('metadata') == metadata:
      return float(stored['accuracy'])
  accuracy = float(measure(config))
  atomic_write.write_text(path, json.dumps({'config': config.to_string(), 'accuracy': accuracy,
                                            'metadata': metadata}, indent=1) + '\n')
  return accuracy


def evaluate(measure: Callable[[sc.SubnetConfig], float], space: sc.SearchSpace, count: int,
             min_exit: int, run_dir: str, seed: int, network: Dict[str, object],
             metadata: Optional[dict] = None, progress: Optional[Callable[[str], None]] = None,
             title: str = '') -> dict:
  """Measures (or reads from the cache) `count` random sub-networks and the max network.

  Args:
    measure: measure(config) -> accuracy (one BN re-calibration and one pass over the images;
      `phase_eval.Evaluator.evaluate` with `traced_calibration=True` for many sub-networks).
    space: The space to draw from (all exits; those below `min_exit` are left out).
    count: How many random sub-networks.
    min_exit: Lowest exit drawn.
    run_dir: The run folder (cache, JSON and plot go there).
    seed: Seeds the draw.
    network: {'variant', 'num_classes', 'width_multiplier'} of the supernet (for MACs).
    metadata: JSON facts the accuracies depend on (phase, split, image counts), stored in the
      result and checked on resume.
    progress: Called with a line every 10 sub-networks measured in this session.
    title: Title of the plot.

  Returns:
    The content written to random_subnets.json.

  Raises:
    ConfigError: `count` < 1 or no exit >= `min_exit`.
    DataError: The cache holds figures measured with other metadata.
  """
  if count < 1:
    raise errors.ConfigError(f'--random_subnets={count}: evaluate at least one sub-network')
  drawn_space = restrict_exits(space, min_exit)
  metadata = json.loads(json.dumps(dict(metadata or {}, min_exit=min_exit, seed=seed)))
  cache = os.path.join(run_dir, CACHE_DIR)
  counter = {'done': 0, 'start': time.perf_counter()}

  def timed(config):
    accuracy = measure(config)
    counter['done'] += 1
    if progress and counter['done'] % 10 == 0:
      elapsed = time.perf_counter() - counter['start']
      progress(f'  random sub-networks: {counter["done"]} measured this session '
               f'({elapsed / counter["done"]:.2f} s each)')
    return accuracy

  started = time.perf_counter()
  try:
    dataset = predictor_data.collect(drawn_space, timed, cache, count, seed=seed,
                                     include_uniform=False, metadata=metadata)
  except errors.DataError as e:
    raise errors.DataError(f'random sub-networks: {e} (the cache is {cache}; delete it to measure '
                           'again with these settings)') from None
  top = space.max_config(max(space.resolutions))
  top_accuracy = _max_network(cache, top, measure, metadata)
  cost = lambda c, a: record(c, a, **network)  # noqa: E731
  records = [cost(c, a) for c, a in zip(dataset.configs, dataset.accuracies)]
  max_record = cost(top, top_accuracy)
  result = {'metadata': metadata, 'space': drawn_space.to_dict(), 'max_network': max_record,
            'summary': summarize(records, max_record),
            'measured_this_session': counter['done'],
            'seconds_this_session': round(time.perf_counter() - started, 1),
            'subnets': records}
  result = json.loads(json.dumps(result))
  run_folder_lib.write_json_atomic(os.path.join(run_dir, RESULT_FILE), result)
  plot(records, os.path.join(run_dir, PLOT_FILE), title or f'{count} random sub-networks, exit '
       f'>= {min_exit}', max_record)
  return result


def plot(records: Sequence[dict], path: str, title: str, max_network: Optional[dict] = None,
         ylabel: str = 'top-1') -> None:
  """Accuracy against MACs (log scale), one colour per exit, the max network marked.

  Takes plain records ({'macs', 'accuracy', 'exit'}), so any set of measured sub-networks (the
  search's predictor data, say) plots the same way.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  colours = plt.get_cmap('viridis')
  exits: List[int] = sorted({int(r['exit']) for r in records})
  for i, k in enumerate(exits):
    mine = [r for r in records if int(r['exit']) == k]
    ax.scatter([r['macs'] for r in mine], [r['accuracy'] for r in mine], s=14, alpha=0.75,
               color=colours(i / max(1, len(exits) - 1)), label=f'exit {k} ({len(mine)})')
  if max_network is not None:
    ax.scatter([max_network['macs']], [max_network['accuracy']], marker='*', s=180,
               color='tab:red', edgecolor='black', zorder=3, label='max network')
    ax.axhline(max_network['accuracy'], color='tab:red', alpha=0.3, linestyle='--')
  ax.set_xscale('log')
  ax.set_xlabel('MACs')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='lower right')
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
