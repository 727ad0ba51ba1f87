"""Search: encoding, predictor data cache, predictor, objectives, NSGA-II, evolution, results."""
# bazel: size=medium

import json
import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ofav2_tf import arch_spec
from ofav2_tf import costs
from ofav2_tf import errors
from ofav2_tf import subnet_config as sc
from ofav2_tf.search import encoding
from ofav2_tf.search import evolution
from ofav2_tf.search import nsga
from ofav2_tf.search import objectives
from ofav2_tf.search import pareto
from ofav2_tf.search import predictor
from ofav2_tf.search import predictor_data
from ofav2_tf.search import synthetic

WIDTH = 0.5
CLASSES = 10
PER = arch_spec.BLOCKS_PER_STAGE


def _full_config(space, rng):
  """A random config that runs every block (depth 4, last exit), so every choice is live."""
  config = space.sample(rng)
  return config.replace(depth=(4,) * 5, exit=max(space.exits))


def _other(values, current):
  return next(v for v in values if v != current)


def _set(values, index, value):
  values = list(values)
  values[index] = value
  return tuple(values)


class EncodingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(('SE_B', 'SE_B'), ('EE_D', 'EE_D'), ('EE_DP', 'EE_DP'))
  def test_changing_any_single_dimension_changes_the_encoding(self, variant):
    space = sc.SearchSpace.for_variant(variant)
    encoder = encoding.Encoder(space)
    config = _full_config(space, np.random.default_rng(0))
    base = encoder.encode([config])[0]
    self.assertLen(base, len(encoder.feature_names))
    changed = []
    for b in range(sc.NUM_BLOCKS):
      changed.append(config.replace(
          kernel=_set(config.kernel, b, _other(space.kernel_sizes, config.kernel[b]))))
      changed.append(config.replace(
          expand=_set(config.expand, b, _other(space.expand_ratios, config.expand[b]))))
      if space.parallel:
        changed.append(config.replace(
            branches=_set(config.branches, b, _other(space.branch_patterns, config.branches[b]))))
    for s in range(5):
      changed.append(config.replace(depth=_set(config.depth, s, 3)))
    if len(space.exits) > 1:
      changed.append(config.replace(exit=3))
    changed.append(config.replace(resolution=_other(space.resolutions, config.resolution)))
    expected = 2 * sc.NUM_BLOCKS + (sc.NUM_BLOCKS if space.parallel else 0) + 5 + (
        len(space.exits) > 1) + 1
    self.assertLen(changed, expected)
    encoded = encoder.encode(changed)
    for config_changed, row in zip(changed, encoded):
      self.assertTrue(np.any(row != base), f'{config_changed} encodes like {config}')
    # All variations are distinct from each other too.
    self.assertLen({row.tobytes() for row in encoded}, len(changed))

  @parameterized.named_parameters(('EE_D', 'EE_D'), ('EE_DP', 'EE_DP'))
  def test_blocks_that_do_not_run_do_not_matter(self, variant):
    space = sc.SearchSpace.for_variant(variant)
    encoder = encoding.Encoder(space)
    config = _full_config(space, np.random.default_rng(1)).replace(
        depth=(4, 2, 3, 4, 4), exit=3)
    base = encoder.encode([config])[0]
    skipped = [1 * PER + 2, 1 * PER + 3, 2 * PER + 3] + list(range(3 * PER, 5 * PER))
    for b in skipped:
      self.assertFalse(config.is_active(b))
      variants = [config.replace(kernel=_set(config.kernel, b, _other(space.kernel_sizes,
                                                                        config.kernel[b]))),
                  config.replace(expand=_set(config.expand, b, _other(space.expand_ratios,
                                                                        config.expand[b])))]
      if space.parallel:
        variants.append(config.replace(branches=_set(
            config.branches, b, _other(space.branch_patterns, config.branches[b]))))
      for other in variants:
        self.assertAllEqual(encoder.encode([other])[0], base)
    dropped_stage_depth = config.replace(depth=(4, 2, 3, 2, 3))  # stages 4, 5 are dropped
    self.assertAllEqual(encoder.encode([dropped_stage_depth])[0], base)
    # Searches encode raw genomes, whose genes of skipped blocks hold arbitrary values.
    genome = encoder.genome
    raw = genome.random(np.random.default_rng(2), 30)
    live = np.zeros(genome.size, bool)
    live[[genome.exit, genome.resolution]] = True
    live[genome.depth.start:genome.depth.start + config.exit] = True
    for b in config.active_blocks():
      live[[genome.kernel.start + b, genome.expand.start + b]] = True
      if genome.branches is not None:
        live[genome.branches.start + b] = True
    raw[:, live] = genome.from_config(config)[live]
    self.assertGreater(len({row.tobytes() for row in raw}), 1)
    self.assertAllEqual(encoder.encode_genomes(raw), np.repeat(base[None], 30, axis=0))

  def test_genome_and_config_paths_agree(self):
    space = sc.SearchSpace.for_variant('EE_DP')
    encoder = encoding.Encoder(space)
    rng = np.random.default_rng(2)
    configs = [space.sample(rng) for _ in range(50)]
    genomes = encoder.genome.from_configs(configs)
    self.assertAllEqual(encoder.encode(configs), encoder.encode_genomes(genomes))
    for config, g in zip(configs, genomes):
      self.assertEqual(encoder.genome.to_config(g).canonical(), config.canonical())


class PredictorDataTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.space = sc.SearchSpace.for_variant('EE_D').restrict(
        kernel_sizes=(3, 7), expand_ratios=(3, 6), depths=(2, 4), exits=(2, 5))
    self.target = synthetic.SyntheticAccuracy(self.space)
    self.calls = []

  def evaluate(self, config):
    self.calls.append(config)
    return float(self.target([config])[0])

  def test_resumes_without_re_evaluating(self):
    folder = self.create_tempdir().full_path
    plan = predictor_data.collection_plan(self.space, 12, seed=3)
    self.assertLen(plan, 2 * 2 * 2 * 2 * 2 + 12)  # uniform grid at 2 resolutions + samples

    def interrupted(config):
      if len(self.calls) == 10:
        raise KeyboardInterrupt
      return self.evaluate(config)

    with self.assertRaises(KeyboardInterrupt):
      predictor_data.collect(self.space, interrupted, folder, 12, seed=3)
    self.assertLen(self.calls, 10)
    data = predictor_data.collect(self.space, self.evaluate, folder, 12, seed=3)
    self.assertLen(self.calls, len(plan))  # 10 before, the rest now: none twice
    self.assertLen({c.canonical() for c in self.calls}, len(plan))
    self.assertAllClose(data.accuracies, self.target(data.configs))
    predictor_data.collect(self.space, self.evaluate, folder, 12, seed=3)
    self.assertLen(self.calls, len(plan))
    # Asking for more samples later only evaluates the new ones.
    predictor_data.collect(self.space, self.evaluate, folder, 15, seed=3)
    self.assertLen(self.calls, len(plan) + 3)

  def test_partial_last_line_is_dropped_and_re_evaluated(self):
    folder = self.create_tempdir().full_path
    predictor_data.collect(self.space, self.evaluate, folder, 4, seed=0, include_uniform=False)
    path = os.path.join(folder, predictor_data.DATA_FILE)
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
    with open(path, 'w', encoding='utf-8') as f:  # The last record was cut mid-write.
      f.write('\n'.join(lines[:-1]) + '\n' + lines[-1][:25])
    data = predictor_data.collect(self.space, self.evaluate, folder, 4, seed=0,
                                  include_uniform=False)
    self.assertLen(self.calls, 5)
    self.assertEqual(self.calls[-1], data.configs[-1])
    with open(path, encoding='utf-8') as f:
      records = [json.loads(line) for line in f.read().splitlines()]
    self.assertLen(records, 4)
    self.assertLen(predictor_data.load(folder), 4)

  def test_corrupt_middle_line_and_other_metadata_are_errors(self):
    folder = self.create_tempdir().full_path
    predictor_data.collect(self.space, self.evaluate, folder, 3, seed=0, include_uniform=False,
                           metadata={'checkpoint': 'a'})
    with self.assertRaisesRegex(errors.DataError, 'use another folder'):
      predictor_data.collect(self.space, self.evaluate, folder, 3, seed=0,
                             include_uniform=False, metadata={'checkpoint': 'b'})
    path = os.path.join(folder, predictor_data.DATA_FILE)
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
    lines[0] = lines[0][:10]
    with open(path, 'w', encoding='utf-8') as f:
      f.write('\n'.join(lines) + '\n')
    with self.assertRaisesRegex(errors.DataError, 'line 1 is corrupt'):
      predictor_data.load(folder)


class PredictorTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.space = sc.SearchSpace.for_variant('EE_D')
    cls.target = synthetic.SyntheticAccuracy(cls.space, seed=4)
    rng = np.random.default_rng(5)
    cls.configs = [cls.space.sample(rng) for _ in range(500)]
    cls.accuracies = cls.target.noisy(cls.configs, rng, sigma=0.01)
    cls.predictor, cls.reports = predictor.select_and_fit(
        cls.space, cls.configs, cls.accuracies, seed=0, options={'mlp': {'epochs': 80}})

  def test_learns_a_synthetic_target(self):
    for kind in predictor.KINDS:
      report = self.reports[kind]
      self.assertEqual(report.holdout_size, 500)
      self.assertEqual(report.folds, predictor.DEFAULT_FOLDS)
      self.assertGreaterEqual(report.kendall_tau, 0.7, report)
      self.assertLess(report.rmse, np.std(self.accuracies) / 2, report)
      self.assertLessEqual(report.mae, report.rmse)
    best = max(self.reports.values(), key=lambda r: r.kendall_tau)
    self.assertEqual(self.predictor.kind, best.kind)
    # Fresh configs, never seen: still ranked right.
    rng = np.random.default_rng(6)
    fresh = [self.space.sample(rng) for _ in range(200)]
    from scipy import stats  # pylint: disable=g-import-not-at-top
    tau = stats.kendalltau(self.predictor.predict(fresh), self.target(fresh)).statistic
    self.assertGreaterEqual(tau, 0.7)

  def test_ridge_penalty_is_chosen_from_the_grid_or_given(self):
    chosen = predictor.AccuracyPredictor(self.space, 'ridge').fit(self.configs[:200],
                                                                  self.accuracies[:200])
    self.assertIn(chosen.fitted_ridge_alpha, predictor.RIDGE_ALPHAS)
    given = predictor.AccuracyPredictor(self.space, 'ridge', ridge_alpha=5.0).fit(
        self.configs[:200], self.accuracies[:200])
    self.assertEqual(given.fitted_ridge_alpha, 5.0)
    with self.assertRaisesRegex(errors.ConfigError, 'ridge_alpha=0'):
      predictor.AccuracyPredictor(self.space, 'ridge', ridge_alpha=0)

  def test_folds_partition_the_configs(self):
    parts = predictor.fold_indices(23, folds=5, seed=3)
    self.assertLen(parts, 5)
    self.assertCountEqual(np.concatenate(parts), range(23))
    self.assertLessEqual(max(map(len, parts)) - min(map(len, parts)), 1)
    with self.assertRaisesRegex(errors.DataError, 'at least 10'):
      predictor.fold_indices(9, folds=5)

  def test_ignores_values_of_blocks_that_do_not_run(self):
    config = self.configs[0].replace(exit=2)
    other = config.replace(kernel=_set(config.kernel, 19, _other((3, 5, 7), config.kernel[19])))
    self.assertAllEqual(self.predictor.predict([config]), self.predictor.predict([other]))

  def test_save_load_round_trip_and_space_check(self):
    path = os.path.join(self.create_tempdir().full_path, 'predictor.npz')
    mlp = predictor.AccuracyPredictor(self.space, 'mlp', hidden=(32, 32), epochs=5).fit(
        self.configs[:100], self.accuracies[:100])
    for model in (mlp, self.predictor):
      model.save(path)
      loaded = predictor.AccuracyPredictor.load(path, self.space)
      self.assertEqual(loaded.kind, model.kind)
      self.assertAllClose(loaded.predict(self.configs[:50]), model.predict(self.configs[:50]))
    self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ['predictor.npz'])
    with self.assertRaisesRegex(errors.ArchitectureMismatchError, 'refit'):
      predictor.AccuracyPredictor.load(path, sc.SearchSpace.for_variant('EE_DP'))
    with self.assertRaisesRegex(errors.ArchitectureMismatchError, 'refit'):
      predictor.AccuracyPredictor.load(path, self.space.restrict(resolutions=(48, 64)))

  def test_genome_batch_path_matches(self):
    genomes = self.predictor.encoder.genome.from_configs(self.configs[:64])
    self.assertAllClose(self.predictor.predict_genomes(genomes),
                        self.predictor.predict(self.configs[:64]))


class _StubTable:
  """Stands in for a LatencyTable: same settings fields, latency = 0.01 ms per active block."""

  settings = {'variant': 'EE_D', 'num_classes': CLASSES, 'width_multiplier': WIDTH,
              'expand_ratios': [3, 4, 6]}

  def predict(self, config):
    return 0.5 + 0.01 * len(list(config.active_blocks())) + config.resolution / 1000


class ObjectivesTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.space = sc.SearchSpace.for_variant('EE_D')
    self.context = objectives.CostContext('EE_D', CLASSES, WIDTH, latency_table=_StubTable())

  def test_costs_match_the_counters(self):
    config = self.space.sample(np.random.default_rng(0))
    report = costs.count(config, 'EE_D', CLASSES, WIDTH)
    values = objectives.cost_dict(self.context, objectives.OBJECTIVES.names(), config)
    self.assertEqual(values['macs'], report.macs)
    self.assertEqual(values['params'], report.params)
    self.assertEqual(values['peak_activation'], report.peak_activation_elements)
    self.assertEqual(values['latency'], _StubTable().predict(config))
    self.assertGreater(values['flash'], report.params)  # int8 weights plus the file's structure
    self.assertGreater(values['arena'], 0)

  def test_budgets_parse_and_fail_loudly(self):
    budgets = objectives.parse_budgets('macs<=5e6, flash<=1_000_000')
    self.assertEqual([(b.name, b.limit) for b in budgets], [('macs', 5e6), ('flash', 1e6)])
    self.assertEqual(objectives.parse_budgets({'params': 10}), [objectives.Budget('params', 10)])
    with self.assertRaisesRegex(errors.RegistryError, 'valid cost objectives: macs'):
      objectives.parse_budgets('flops<=5')
    with self.assertRaisesRegex(errors.ConfigError, 'must look like'):
      objectives.parse_budgets('macs<5')
    # A negative limit is a bad value, not bad syntax; a negative exponent is fine.
    with self.assertRaisesRegex(errors.ConfigError, r'flash<=-5: the limit must be a positive '
                                r'number \(<objective><=<limit>, e\.g\. flash<=262144'):
      objectives.parse_budgets('flash<=-5')
    self.assertEqual(objectives.parse_budgets('latency<=5e-1')[0].limit, 0.5)
    with self.assertRaisesRegex(errors.ConfigError, 'more than once'):
      objectives.parse_budgets('macs<=5,macs<=6')
    with self.assertRaisesRegex(errors.ConfigError, 'positive'):
      objectives.Budget('macs', 0)
    no_table = objectives.CostContext('EE_D', CLASSES, WIDTH)
    with self.assertRaisesRegex(errors.ConfigError, 'needs a latency table'):
      objectives.get_objective('latency')(no_table, self.space.max_config())
    with self.assertRaisesRegex(errors.ConfigError, 'profile a table for this supernet'):
      objectives.CostContext('EE_B', CLASSES, WIDTH, latency_table=_StubTable())

  def test_smallest_is_no_larger_than_the_minimal_config(self):
    for name in ('macs', 'params', 'flash', 'arena', 'latency'):
      config, cost = objectives.smallest(self.context, self.space, name)
      self.assertTrue(self.space.contains(config))
      self.assertLessEqual(cost, objectives.get_objective(name)(self.context,
                                                                self.space.min_config()))
    # MACs add up over blocks: the minimal config (exit 1, smallest everything) is the exact min.
    _, macs = objectives.smallest(self.context, self.space, 'macs')
    self.assertEqual(macs, costs.count(self.space.min_config(), 'EE_D', CLASSES, WIDTH).macs)


def _dominates(a, b):
  return np.all(a <= b) and np.any(a < b)


class NsgaTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(('EE_D', 'EE_D', 4e6, 300_000), ('EE_DP', 'EE_DP', 3e6, 200_000))
  def test_front_is_feasible_non_dominated_and_inside_the_space(self, variant, macs, params):
    space = sc.SearchSpace.for_variant(variant)
    context = objectives.CostContext(variant, CLASSES, WIDTH)
    budgets = objectives.parse_budgets({'macs': macs, 'params': params})
    result = nsga.search(space, synthetic.SyntheticAccuracy(space), context,
                         objectives=('macs', 'params'), budgets=budgets, population=40,
                         generations=15, seed=0)
    front = result.front
    self.assertGreaterEqual(len(front), 5)
    self.assertLen({c.config.canonical() for c in front}, len(front))
    points = []
    for candidate in front:
      self.assertTrue(space.contains(candidate.config), candidate.config)
      report = costs.count(candidate.config, variant, CLASSES, WIDTH)
      self.assertEqual(candidate.costs['macs'], report.macs)
      self.assertEqual(candidate.costs['params'], report.params)
      self.assertLessEqual(report.macs, macs)
      self.assertLessEqual(report.params, params)
      self.assertAllClose(candidate.predicted_accuracy,
                          synthetic.SyntheticAccuracy(space)([candidate.config])[0])
      points.append([-candidate.predicted_accuracy, report.macs, report.params])
    points = np.array(points)
    for i, a in enumerate(points):
      for j, b in enumerate(points):
        if i != j:
          self.assertFalse(_dominates(a, b), f'{front[i].config} dominates {front[j].config}')
    # The front spans a real trade-off: its most accurate point costs more than its cheapest.
    self.assertGreater(max(c.predicted_accuracy for c in front),
                       min(c.predicted_accuracy for c in front) + 0.1)

  def test_seeded(self):
    space = sc.SearchSpace.for_variant('EE_D')
    context = objectives.CostContext('EE_D', CLASSES, WIDTH)
    runs = [nsga.search(space, synthetic.SyntheticAccuracy(space), context, ('macs',),
                        population=20, generations=5, seed=7) for _ in range(2)]
    self.assertEqual([str(c.config) for c in runs[0].front], [str(c.config) for c in runs[1].front])
    finished = []  # the progress display's hook sees every generation and changes nothing
    watched = nsga.search(space, synthetic.SyntheticAccuracy(space), context, ('macs',),
                          population=20, generations=5, seed=7, on_generation=finished.append)
    self.assertEqual(finished, [1, 2, 3, 4, 5])
    self.assertEqual([str(c.config) for c in watched.front], [str(c.config) for c in runs[0].front])

  def test_impossible_budget_names_the_smallest_cost(self):
    space = sc.SearchSpace.for_variant('EE_D')
    context = objectives.CostContext('EE_D', CLASSES, WIDTH)
    smallest = costs.count(space.min_config(), 'EE_D', CLASSES, WIDTH).macs
    with self.assertRaisesRegex(errors.ConfigError,
                                rf'budget macs<=1000 is impossible: the smallest sub-network '
                                rf'needs {smallest:,} MACs'):
      nsga.search(space, synthetic.SyntheticAccuracy(space), context, ('macs',),
                  objectives.parse_budgets('macs<=1000'), population=10, generations=2)
    with self.assertRaisesRegex(errors.ConfigError, 'budget params<=10 is impossible'):
      evolution.search(space, synthetic.SyntheticAccuracy(space), context,
                       objectives.Budget('params', 10), population=10, generations=2)


class EvolutionTest(tf.test.TestCase):

  def test_respects_its_budget_and_beats_random_sampling(self):
    space = sc.SearchSpace.for_variant('EE_D')
    context = objectives.CostContext('EE_D', CLASSES, WIDTH)
    target = synthetic.SyntheticAccuracy(space, seed=1)
    budget = objectives.Budget('macs', 4e6)
    result = evolution.search(space, target, context, budget, population=50, generations=30,
                              seed=0, report_costs=['params'])
    best = result.best
    self.assertTrue(space.contains(best.config))
    self.assertLessEqual(costs.count(best.config, 'EE_D', CLASSES, WIDTH).macs, 4e6)
    self.assertEqual(set(best.costs), {'macs', 'params'})
    self.assertAllClose(best.predicted_accuracy, target([best.config])[0])
    self.assertEqual(result.evaluations, 50 * 31)
    self.assertEqual(result.history, sorted(result.history))  # the best never gets worse
    # Random sampling with as many feasible networks scored does worse.
    rng = np.random.default_rng(0)
    feasible = []
    while len(feasible) < result.evaluations:
      config = space.sample(rng)
      if budget.satisfied(context, config):
        feasible.append(config)
    self.assertGreater(best.predicted_accuracy, np.max(target(feasible)))


class ParetoResultTest(tf.test.TestCase):

  def test_json_round_trip_measured_accuracy_and_plot(self):
    space = sc.SearchSpace.for_variant('EE_D')
    context = objectives.CostContext('EE_D', CLASSES, WIDTH)
    target = synthetic.SyntheticAccuracy(space)
    budgets = objectives.parse_budgets('macs<=5e6')
    found = nsga.search(space, target, context, ('macs', 'params'), budgets, population=20,
                        generations=5, seed=1)
    uniform = pareto.make_candidates(list(space.uniform_grid((48,)))[:6], target, context,
                                     ['macs', 'params'], label='uniform')
    baseline = evolution.search(space, target, context, budgets, population=10,
                                generations=3, report_costs=['params']).best
    result = pareto.ParetoResult('EE_D', ['macs', 'params'], {'macs': 5e6}, found.front, uniform,
                                 baseline, settings=found.settings)
    self.assertGreaterEqual(result.set_measured(found.front[0].config, 0.5), 1)
    with self.assertRaisesRegex(errors.ConfigError, 'not in the search result'):
      result.set_measured(space.max_config(), 0.9)
    folder = self.create_tempdir().full_path
    path = result.save(os.path.join(folder, 'pareto.json'))
    loaded = pareto.ParetoResult.load(path)
    self.assertEqual(loaded.to_dict(), result.to_dict())
    self.assertEqual(loaded.front[0].measured_accuracy, 0.5)
    with open(path, encoding='utf-8') as f:
      raw = json.load(f)
    self.assertEqual(sc.SubnetConfig.from_string(raw['front'][0]['config']),
                     sc.SubnetConfig.from_dict(raw['front'][0]['config_dict']))
    plot_path = pareto.plot(result, os.path.join(folder, 'pareto.png'))
    with open(plot_path, 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    self.assertGreater(os.path.getsize(plot_path), 10_000)
    self.assertEqual(sorted(os.listdir(folder)), ['pareto.json', 'pareto.png'])


if __name__ == '__main__':
  tf.test.main()
