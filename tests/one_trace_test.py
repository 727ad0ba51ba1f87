"""One traced training step serves every sub-network (no retracing across elastic choices)."""
# bazel: size=large tags=slow

import numpy as np
import tensorflow as tf

from ofav2_tf import elastic_step
from tests import testutil

NUM_SUBNETS = 30


class OneTraceTest(tf.test.TestCase):

  def test_training_step_traces_once_over_every_elastic_dimension(self):
    # EE_DP has every elastic dimension: kernel, expand, depth, branches, exit, resolution.
    net = testutil.perturbed_supernet('EE_DP', num_classes=5, seed=0, width_multiplier=0.5)
    space = net.search_space()
    step = elastic_step.ElasticTrainStep(net)
    rng = np.random.default_rng(0)
    configs = [space.max_config(), space.min_config()] + [space.sample(rng)
                                                          for _ in range(NUM_SUBNETS - 2)]
    seen = {name: set() for name in ('kernel', 'expand', 'depth', 'branches', 'exit',
                                     'resolution')}
    before = [v.numpy().copy() for v in net.trainable_variables]
    for i, config in enumerate(configs):
      for name in ('kernel', 'expand', 'depth', 'branches'):
        seen[name].update(getattr(config, name))
      seen['exit'].add(config.exit)
      seen['resolution'].add(config.resolution)
      loss = step(testutil.images(2, config.resolution, seed=i), tf.constant([i % 5, 1]), config)
      self.assertTrue(np.isfinite(loss.numpy()))
    self.assertEqual(step.trace_count, 1)
    # Every value of every dimension was exercised.
    self.assertEqual(seen['kernel'], set(space.kernel_sizes))
    self.assertEqual(seen['expand'], set(space.expand_ratios))
    self.assertEqual(seen['depth'], set(space.depths))
    self.assertEqual(seen['branches'], set(space.branch_patterns))
    self.assertEqual(seen['exit'], set(space.exits))
    self.assertEqual(seen['resolution'], set(space.resolutions))
    # And the steps trained something.
    changed = sum(not np.array_equal(b, v.numpy())
                  for b, v in zip(before, net.trainable_variables))
    self.assertGreater(changed, len(before) // 2)

  def test_skipped_blocks_get_no_update_from_the_loss(self):
    net = testutil.perturbed_supernet('SE_B', num_classes=5, seed=0, width_multiplier=0.5)
    step = elastic_step.ElasticTrainStep(
        net, optimizer=__import__('tf_keras').optimizers.SGD(0.1))  # no momentum, no decay
    config = net.search_space().min_config()  # depth 2: blocks 3 and 4 of every stage skipped
    skipped = net.levels[0][3].project_conv.kernel
    used = net.levels[0][0].project_conv.kernel
    skipped_before, used_before = skipped.numpy().copy(), used.numpy().copy()
    step(testutil.images(2, 48), tf.constant([0, 1]), config)
    self.assertAllEqual(skipped_before, skipped.numpy())
    self.assertNotAllClose(used_before, used.numpy())


if __name__ == '__main__':
  tf.test.main()
