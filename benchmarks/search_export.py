"""Benchmark: search speed with the run's real predictor, int8 vs float latency, cascade saving.

Reads a run folder after `--mode=all` (or search, export and benchmark) and prints one JSON line:

  - nsga_seconds: NSGA-II wall time, `--population` x `--generations`, with the run's fitted
    accuracy predictor (search/predictor.npz), its objectives and budgets (search/pareto.json);
    median over `--repeats` searches (target: under 60 s);
  - predictions_per_second: the predictor on a batch of 10,000 random configs (encoding included);
  - int8_vs_float_latency_ratio: median LiteRT latency of the exported float file over the int8
    file's, 1 thread, with LiteRT's default XNNPACK delegate, and `builtin_...` the same with
    TFLite's builtin kernels; the two files are measured alternately, `--latency_rounds` rounds
    of `--latency_runs` invokes each, so machine noise hits both alike (target: at least 1.5);
  - cascade_mac_saving: the early-exit cascade's mean-MAC saving at the threshold the benchmark
    mode chose (accuracy within one point of the last exit), from benchmark/early_exit.json.

Usage: python -m benchmarks.search_export --run_dir=runs/demo_fashion_mnist
"""

import json
import os
import statistics
import time

from absl import app
from absl import flags
import numpy as np

from export import litert_runner
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf.modes import common
from ofav2_tf.search import nsga
from ofav2_tf.search import objectives
from ofav2_tf.search import pareto
from ofav2_tf.search import predictor as predictor_lib

_RUN_DIR = flags.DEFINE_string('run_dir', 'runs/demo_fashion_mnist',
                               'Run folder after --mode=all.')
_POPULATION = flags.DEFINE_integer('population', 100, 'NSGA-II population.', lower_bound=2)
_GENERATIONS = flags.DEFINE_integer('generations', 100, 'NSGA-II generations.', lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Searches timed (median).', lower_bound=1)
_LATENCY_RUNS = flags.DEFINE_integer('latency_runs', 50, 'Invokes per latency round.',
                                     lower_bound=1)
_LATENCY_ROUNDS = flags.DEFINE_integer('latency_rounds', 5, 'Alternating latency rounds.',
                                       lower_bound=1)


def _need(path: str, what: str) -> str:
  if not os.path.exists(path):
    raise SystemExit(f'error: {path} is missing; run {what} on {_RUN_DIR.value} first')
  return path


def _search_figures(folder):
  config = folder.load_config()
  result = pareto.ParetoResult.load(_need(os.path.join(folder.path, 'search', 'pareto.json'),
                                          '--mode=search'))
  space = common.phase_space(config, result.settings['phase'])
  predictor = predictor_lib.AccuracyPredictor.load(
      _need(os.path.join(folder.path, 'search', 'predictor.npz'), '--mode=search'), space)
  context = objectives.CostContext(config.variant, config.num_classes, config.width_multiplier,
                                   expand_ratios=config.expand_ratios)
  budgets = objectives.parse_budgets(result.budgets)
  names = [n for n in result.objectives if n != 'latency']
  times, fronts = [], []
  for repeat in range(_REPEATS.value):
    start = time.perf_counter()
    found = nsga.search(space, predictor, context, names,
                        [b for b in budgets if b.name != 'latency'],
                        population=_POPULATION.value, generations=_GENERATIONS.value,
                        seed=repeat)
    times.append(time.perf_counter() - start)
    fronts.append(len(found.front))
  rng = np.random.default_rng(0)
  configs = [space.sample(rng) for _ in range(10000)]
  return {
      'nsga_seconds': round(statistics.median(times), 2),
      'nsga_seconds_all': [round(t, 2) for t in times],
      'nsga_front_sizes': fronts, 'objectives': names,
      'budgets': {b.name: b.limit for b in budgets if b.name != 'latency'},
      'predictor_kind': predictor.kind,
      'predictions_per_second': round(predictor_lib.predictions_per_second(predictor, configs)),
  }


def _latency_figures(folder):
  """Float over int8 median latency, 1 thread, with and without LiteRT's default XNNPACK delegate.

  The delegate is what a user gets by default; TFLite's builtin kernels are the other CPU path
  (and the one closest to what runs on a phone without a delegate). Both are reported because on
  x86 they disagree in absolute terms, while int8 loses to float under both.
  """
  summary = run_folder_lib.read_json(_need(
      os.path.join(folder.path, 'export', 'export_summary.json'), '--mode=export'))
  files = summary['files']
  paths = {kind: os.path.join(folder.path, 'export', files[key]['path'])
           for kind, key in (('float', 'float_tflite'), ('int8', 'int8_tflite'))}
  figures = {}
  for label, delegate in (('', True), ('builtin_', False)):
    medians = {'float': [], 'int8': []}
    for _ in range(_LATENCY_ROUNDS.value):
      for kind in ('float', 'int8'):
        stats = litert_runner.measure_latency(paths[kind], num_threads=(1,),
                                              runs=_LATENCY_RUNS.value, warmup=5,
                                              delegate=delegate)
        medians[kind].append(stats[1].median_ms)
    float_ms, int8_ms = statistics.median(medians['float']), statistics.median(medians['int8'])
    figures.update({f'{label}float_median_ms': round(float_ms, 4),
                    f'{label}int8_median_ms': round(int8_ms, 4),
                    f'{label}int8_vs_float_latency_ratio': round(float_ms / int8_ms, 3)})
  return figures


def _cascade_figures(folder):
  path = os.path.join(folder.path, 'benchmark', 'early_exit.json')
  if not os.path.isfile(path):
    return {'cascade_mac_saving': None}
  sweep = run_folder_lib.read_json(path)
  return {'cascade_mac_saving': sweep.get('mac_saving'),
          'cascade_threshold': sweep.get('threshold'),
          'cascade_accuracy': sweep.get('accuracy'),
          'last_exit_accuracy': sweep.get('baseline_accuracy')}


def main(argv):
  del argv
  folder = common.open_run_folder(_RUN_DIR.value)
  line = {'run_dir': folder.path}
  line.update(_search_figures(folder))
  line.update(_latency_figures(folder))
  line.update(_cascade_figures(folder))
  print(json.dumps(line))


if __name__ == '__main__':
  app.run(main)
