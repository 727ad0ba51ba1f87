"""Benchmark: NSGA-II wall time with the accuracy predictor, and the predictor's throughput.

Fits the default MLP predictor on a synthetic dataset (a known function of the config with noise,
`ofav2_tf.search.synthetic`; a real dataset would take hours to measure, and the predictor's speed
does not depend on what it learned), then runs NSGA-II (population x generations) with it over the
variant's full space under a budget, and prints one JSON line: search wall time, distinct networks
evaluated, front size, predictor fit time and held-out Kendall tau, and predictor evaluations per
second (batch of configs, encoding included; and on genomes, the path the search uses).

Usage: python -m benchmarks.search_bench [--variant=EE_D] [--population=100] [--generations=100]
"""

import json
import platform
import time

from absl import app
from absl import flags
import numpy as np

from ofav2_tf import subnet_config as sc
from ofav2_tf.search import nsga
from ofav2_tf.search import objectives
from ofav2_tf.search import predictor
from ofav2_tf.search import synthetic

_VARIANT = flags.DEFINE_string('variant', 'EE_D', 'Supernet variant.')
_WIDTH = flags.DEFINE_float('width_multiplier', 1.0, 'Width multiplier.', lower_bound=0.1)
_CLASSES = flags.DEFINE_integer('num_classes', 200, 'Classifier width.', lower_bound=2)
_POPULATION = flags.DEFINE_integer('population', 100, 'NSGA-II population.', lower_bound=2)
_GENERATIONS = flags.DEFINE_integer('generations', 100, 'NSGA-II generations.', lower_bound=1)
_OBJECTIVES = flags.DEFINE_list('objectives', ['macs', 'params'], 'Cost objectives.')
_BUDGETS = flags.DEFINE_string('budgets', 'macs<=30e6', 'Budgets, e.g. macs<=30e6,params<=3e6.')
_SAMPLES = flags.DEFINE_integer('samples', 1000, 'Synthetic predictor dataset size.',
                                lower_bound=10)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed.')


def _throughput(fn, batch, repeats=5):
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn(batch)
    best = min(best, time.perf_counter() - start)
  return len(batch) / best


def main(argv):
  del argv
  variant = _VARIANT.value
  space = sc.SearchSpace.for_variant(variant)
  target = synthetic.SyntheticAccuracy(space, seed=_SEED.value)
  rng = np.random.default_rng(_SEED.value)
  configs = [space.sample(rng) for _ in range(_SAMPLES.value)]
  accuracies = target.noisy(configs, rng, sigma=0.01)
  report = predictor.holdout_report(space, configs, accuracies, 'mlp', seed=_SEED.value)
  start = time.perf_counter()
  model = predictor.AccuracyPredictor(space, 'mlp', seed=_SEED.value).fit(configs, accuracies)
  fit_seconds = time.perf_counter() - start

  batch = [space.sample(rng) for _ in range(10_000)]
  genomes = model.encoder.genome.from_configs(batch)
  per_second_configs = _throughput(model.predict, batch)
  per_second_genomes = _throughput(model.predict_genomes, genomes)

  context = objectives.CostContext(variant, _CLASSES.value, _WIDTH.value)
  result = nsga.search(space, model, context, _OBJECTIVES.value,
                       objectives.parse_budgets(_BUDGETS.value), population=_POPULATION.value,
                       generations=_GENERATIONS.value, seed=_SEED.value)
  print(json.dumps({
      'variant': variant, 'width_multiplier': _WIDTH.value, 'num_classes': _CLASSES.value,
      'population': _POPULATION.value, 'generations': _GENERATIONS.value,
      'objectives': _OBJECTIVES.value, 'budgets': _BUDGETS.value,
      'nsga_seconds': round(result.seconds, 2), 'networks_evaluated': result.evaluations,
      'front_size': len(result.front),
      'predictor': {'kind': 'mlp', 'hidden': model.options['hidden'],
                    'train_samples': _SAMPLES.value, 'fit_seconds': round(fit_seconds, 2),
                    'holdout_kendall_tau': round(report.kendall_tau, 4),
                    'holdout_rmse': round(report.rmse, 4)},
      'predictions_per_second_configs': round(per_second_configs),
      'predictions_per_second_genomes': round(per_second_genomes),
      'machine': {'cpu_count': __import__('os').cpu_count(), 'python': platform.python_version()},
  }))


if __name__ == '__main__':
  app.run(main)
