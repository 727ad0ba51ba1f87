"""Channel sorting keeps the maximal network's function and puts important channels first."""
# bazel: size=medium

import numpy as np
import tensorflow as tf

from ofav2_tf import channel_sort
from ofav2_tf import extraction
from ofav2_tf import supernet as supernet_lib
from tests import testutil


class ChannelSortTest(tf.test.TestCase):

  def _check(self, variant):
    net = testutil.perturbed_supernet(variant, num_classes=6, seed=3, width_multiplier=0.5)
    space = net.search_space()
    max_config = space.max_config(48)
    testutil.calibrate(net, max_config, all_exits=net.variant.early_exits)
    x = testutil.images(2, 48, seed=9)
    arch = supernet_lib.arch_tensors(max_config)
    smaller = supernet_lib.arch_tensors(space.uniform(7, 3, 4, resolution=48))
    before = net(x, arch, training=False)
    before_small = net(x, smaller, training=False)
    exits = 'all' if net.variant.early_exits else None
    before64 = testutil.as_float64(extraction.extract(net, max_config, exits=exits))
    channel_sort.sort_channels(net)
    # The permutation is exact: in float64 the maximal network is unchanged to round-off ...
    after64 = testutil.as_float64(extraction.extract(net, max_config, exits=exits))
    x64 = tf.cast(x, tf.float64)
    self.assertAllClose(before64(x64), after64(x64), atol=1e-9, rtol=0)
    # ... and in float32 only the order of sums changes (oneDNN round-off, amplified by depth).
    after = net(x, arch, training=False)
    self.assertAllClose(before, after, atol=1e-4, rtol=0)
    self.assertAllClose(tf.nn.softmax(before), tf.nn.softmax(after), atol=1e-5, rtol=0)
    # A smaller expand ratio now keeps other (more important) channels.
    self.assertNotAllClose(before_small, net(x, smaller, training=False), atol=1e-5)
    for block in channel_sort.elastic_blocks(net):
      importance = np.abs(block.project_conv.kernel.numpy()).sum(axis=(0, 1, 3))
      self.assertTrue(np.all(np.diff(importance) <= 1e-7), block.name)
      if block.use_se:
        hidden = np.abs(block.se.expand_kernel.numpy()).sum(axis=1)
        self.assertTrue(np.all(np.diff(hidden) <= 1e-7), block.name)

  def test_se_b(self):
    self._check('SE_B')

  def test_ee_dp(self):
    self._check('EE_DP')

  def test_sorting_twice_is_a_no_op(self):
    net = testutil.perturbed_supernet('SE_B', num_classes=6, seed=1, width_multiplier=0.5)
    channel_sort.sort_channels(net)
    weights = [w.numpy() for w in net.weights]
    channel_sort.sort_channels(net)
    for a, b in zip(weights, net.weights):
      self.assertAllEqual(a, b.numpy())


if __name__ == '__main__':
  tf.test.main()
