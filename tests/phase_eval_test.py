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


if __name__ == '__main__':
  tf.test.main()
