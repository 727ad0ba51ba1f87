"""Evaluation during a run: through the supernet, equal to the extracted model, training stats kept."""
# bazel: size=large

import numpy as np
import tensorflow as tf

from ofav2_tf import bn_calibration
from ofav2_tf import costs
from ofav2_tf import data
from ofav2_tf import evaluation
from ofav2_tf import phase_eval
from ofav2_tf import phases
from ofav2_tf import subnet_config as sc
from ofav2_tf import supernet as supernet_lib
from tests import testutil


class PhaseEvalTest(tf.test.TestCase):

  def test_supernet_evaluation_matches_extraction_and_keeps_training_statistics(self):
    splits = data.load('fashion_mnist', seed=0)
    net = testutil.perturbed_supernet('EE_D', num_classes=10, seed=2, width_multiplier=0.25)
    evaluator = phase_eval.Evaluator(net, splits, calibration_images=128, seed=0,
                                     validation_images=256, eval_images=256)
    space = phases.PHASES.get('expand2').space(net.search_space(resolutions=(24, 28)))
    before = [layer.moving_mean.numpy().copy() for layer in bn_calibration.batch_norm_layers(net)]
    rng = np.random.default_rng(0)
    for config in [space.max_config(28), space.min_config(24), space.sample(rng)]:
      ours = evaluator.evaluate(config, 'test', 256)
      reference = evaluation.evaluate_subnet(
          net, config, evaluator.calibration_batches(config.resolution),
          evaluator._batches(config.resolution, 'test', 256))  # pylint: disable=protected-access
      self.assertEqual(ours.images, 256)
      # Same predictions up to float round-off on a borderline image or two.
      self.assertAllClose(ours.accuracy, reference.accuracy, atol=2.5 / 256, msg=str(config))
    after = [layer.moving_mean.numpy() for layer in bn_calibration.batch_norm_layers(net)]
    for a, b in zip(before, after):
      self.assertAllEqual(a, b)
    per_exit = evaluator.evaluate(space.max_config(28), 'test', 256, exits='all')
    self.assertEqual(sorted(per_exit.exit_accuracy), [1, 2, 3, 4, 5])
    self.assertEqual(per_exit.accuracy, per_exit.exit_accuracy[5])

    # Batches are read once and reused: a fresh evaluator that keeps none gives the same scores.
    cached_keys = set(evaluator._batch_cache)  # pylint: disable=protected-access
    self.assertIn(('calibration', 28), cached_keys)
    self.assertIn(('test', 24, 256), cached_keys)
    config = space.sample(rng)
    cached = evaluator.evaluate(config, 'validation', 200)
    try:
      saved, phase_eval.BATCH_CACHE_BYTES = phase_eval.BATCH_CACHE_BYTES, 0
      fresh = phase_eval.Evaluator(net, splits, calibration_images=128, seed=0,
                                   validation_images=256, eval_images=256)
      uncached = fresh.evaluate(config, 'validation', 200)
      self.assertEmpty(fresh._batch_cache)  # pylint: disable=protected-access
    finally:
      phase_eval.BATCH_CACHE_BYTES = saved
    self.assertEqual(cached.images, 200)
    self.assertAllClose(cached.accuracy, uncached.accuracy, atol=1.5 / 200)

  def test_traced_calibration_equals_eager_and_traces_once(self):
    splits = data.load('fashion_mnist', seed=0)
    net = testutil.perturbed_supernet('EE_D', num_classes=10, seed=3, width_multiplier=0.25)
    space = phases.PHASES.get('expand2').space(net.search_space(resolutions=(24, 28)))
    kwargs = dict(calibration_images=128, seed=0, validation_images=200, eval_images=200)
    eager = phase_eval.Evaluator(net, splits, **kwargs)
    traced = phase_eval.Evaluator(net, splits, traced_calibration=True, **kwargs)
    layers = bn_calibration.batch_norm_layers(net)
    momenta = [layer.momentum for layer in layers]
    rng = np.random.default_rng(1)
    for config in [space.max_config(28), space.min_config(24), space.sample(rng)]:
      want = eager.evaluate(config, 'validation', 200).accuracy
      got = traced.evaluate(config, 'validation', 200).accuracy
      self.assertAllClose(got, want, atol=1.5 / 200, msg=str(config))
    # One trace served every sub-network and both resolutions; the momenta are back.
    self.assertEqual(traced._supernet_fn(True, False).experimental_get_tracing_count(), 1)  # pylint: disable=protected-access
    self.assertEqual([layer.momentum for layer in layers], momenta)

    # The trace keeps momentum 0 whoever calls it: one call outside `recalibrate` sets the
    # statistics to that batch's, as an eager one-batch re-calibration does.
    config = space.sample(rng)
    arch = supernet_lib.arch_tensors(config)
    images = traced.calibration_batches(config.resolution)[0]
    traced._supernet_fn(True, False)(images, arch)  # pylint: disable=protected-access
    got = [layer.moving_variance.numpy().copy() for layer in layers]
    bn_calibration.recalibrate(net, [images],
                               lambda x: net(x, arch, training=True, all_exits=False))
    want = [layer.moving_variance.numpy() for layer in layers]
    for a, b in zip(got, want):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-5)

  def test_thin_grid_keeps_cheapest_and_largest(self):
    net_space = phases.PHASES.get('expand2').space(
        sc.SearchSpace.for_variant('SE_B', resolutions=(28,)))
    grid = evaluation.uniform_grid(net_space, (28,))
    picked = phase_eval.thin_grid(grid, 3, 'SE_B', 10, 0.5)
    macs = lambda c: costs.count(c, 'SE_B', 10, 0.5).macs  # noqa: E731
    self.assertLen(picked, 3)
    self.assertEqual(min(map(macs, picked)), min(map(macs, grid)))
    self.assertEqual(max(map(macs, picked)), max(map(macs, grid)))
    self.assertLen(phase_eval.thin_grid(grid, 0, 'SE_B', 10, 0.5), len(grid))

  def test_thin_grid_spreads_over_every_unlocked_dimension(self):
    # The demo's last phase at its two extreme resolutions: 270 uniform sub-networks.
    space = phases.PHASES.get('expand2').space(
        sc.SearchSpace.for_variant('EE_D', resolutions=(32, 36, 40)))
    grid = evaluation.uniform_grid(space, (32, 40))
    top = space.max_config(40)
    free = [top.replace(exit=k) for k in space.exits]
    picked = phase_eval.thin_grid(grid, 12, 'EE_D', 10, 0.5, free=free)
    keys = [c.to_string() for c in picked]
    self.assertLen(set(keys), len(keys))
    self.assertLen(picked, 12 + len(free))  # 12 with a pass of their own, the exits for free.
    self.assertContainsSubset([c.to_string() for c in free], keys)
    macs = lambda c: costs.count(c, 'EE_D', 10, 0.5).macs  # noqa: E731
    self.assertEqual(list(map(macs, picked)), sorted(map(macs, picked)))
    self.assertEqual(macs(picked[0]), min(map(macs, grid)))
    self.assertEqual(picked[-1].to_string(), top.to_string())
    self.assertEqual(phase_eval.unlocked_dimensions(grid),
                     {'kernel': [3, 5, 7], 'expand': [3, 4, 6], 'depth': [2, 3, 4],
                      'exit': [1, 2, 3, 4, 5], 'resolution': [32, 40]})
    # Every value of every unlocked dimension is measured, and not only at the max network's
    # k7 e6 d4: the sub-networks with a pass of their own cover each exit and resolution too.
    self.assertEqual(phase_eval.unlocked_dimensions(picked), phase_eval.unlocked_dimensions(grid))
    paid = [c for c in picked if c.to_string() not in {f.to_string() for f in free}]
    self.assertEqual(phase_eval.unlocked_dimensions(paid), phase_eval.unlocked_dimensions(grid))
    # A mix, not one value per dimension: every exit appears with at least two kernels.
    for k in space.exits:
      self.assertGreaterEqual(len({c.kernel[0] for c in picked if c.exit == k}), 2, f'exit {k}')
    self.assertEqual(keys, [c.to_string() for c in
                            phase_eval.thin_grid(grid, 12, 'EE_D', 10, 0.5, free=free)])
    # A phase with a small space is evaluated whole.
    small = phases.PHASES.get('height4').space(
        sc.SearchSpace.for_variant('EE_D', resolutions=(40,)))
    small_grid = evaluation.uniform_grid(small, (40,))
    self.assertLen(small_grid, 3 * 5)  # kernels x exits: 10 with a pass of their own.
    small_free = [small.max_config(40).replace(exit=k) for k in small.exits]
    self.assertLen(phase_eval.thin_grid(small_grid, 12, 'EE_D', 10, 0.5, free=small_free), 15)

  def test_evaluate_phase_reports_max_network_and_spread(self):
    splits = data.load('fashion_mnist', seed=0)
    net = testutil.perturbed_supernet('EE_D', num_classes=10, seed=4, width_multiplier=0.25)
    evaluator = phase_eval.Evaluator(net, splits, calibration_images=64, seed=0,
                                     validation_images=64, eval_images=64)
    space = phases.PHASES.get('height2').space(net.search_space(resolutions=(24, 28)))
    summary = evaluator.evaluate_phase(space, (28,), max_subnets=3)
    rows = {r['config']: r for r in summary['uniform']}
    self.assertEqual(summary['uniform_grid_size'], 3 * 3)  # kernels x exits 3-5
    self.assertLen(rows, 3 + 3)  # 3 with their own pass, the max network at exits 3, 4, 5.
    top = space.max_config(28)
    self.assertEqual(summary['uniform_max']['config'], top.to_string())
    self.assertEqual(summary['uniform_max']['accuracy'], summary['exit_accuracy']['5'])
    for k in (3, 4):
      self.assertEqual(rows[top.replace(exit=k).to_string()]['accuracy'],
                       summary['exit_accuracy'][str(k)])
    self.assertEqual({r['label'].split()[0] for r in rows.values()}, {'k3', 'k5', 'k7'})
    accuracies = [r['accuracy'] for r in rows.values()]
    self.assertEqual(summary['uniform_best'], max(accuracies))
    self.assertEqual(summary['uniform_min'], min(accuracies))
    self.assertAllClose(summary['uniform_mean'], np.mean(accuracies))
    # The max network measured alone agrees with its all-exit pass.
    alone = evaluator.evaluate(top, 'test', 64).accuracy
    self.assertAllClose(alone, summary['uniform_max']['accuracy'], atol=1.5 / 64)


if __name__ == '__main__':
  tf.test.main()
