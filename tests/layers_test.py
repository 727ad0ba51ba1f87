"""Elastic layers: config round trips, slicing semantics, kernel transforms, BN updates."""
# bazel: size=medium

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import supernet as supernet_lib
from ofav2_tf.layers import blocks
from ofav2_tf.layers import elastic_ops


def _round_trip(layer):
  """get_config -> from_config -> same weights; returns the clone."""
  clone = type(layer).from_config(layer.get_config())
  return clone


class LayersTest(tf.test.TestCase):

  def test_round_trip_of_every_layer_gives_same_outputs(self):
    x = tf.random.stateless_normal([2, 12, 12, 16], [1, 2])
    cases = [
        (elastic_ops.ElasticPointwiseConv(16, 32, use_bias=True), (x, tf.constant(24))),
        (elastic_ops.ElasticDepthwiseConv(16, (3, 5, 7), stride=2), (x, tf.constant(5))),
        (elastic_ops.ElasticBatchNorm(16, momentum=0.8), (x,)),
        (elastic_ops.ElasticSqueezeExcite(16, 8), (x, tf.constant(8))),
        (blocks.ElasticMBConv(16, 16, 1, 'hswish', True, residual=True),
         (x, tf.constant(5), tf.constant(4))),
        (blocks.ParallelLevel(16, 24, 2, 'relu', True), (x, tf.constant(3), tf.constant(6),
                                                         tf.constant(5))),
        (blocks.ExitHead(16, 10, dropout=0.2), (x,)),
    ]
    for layer, args in cases:
      expected = layer(*args)
      clone = _round_trip(layer)
      clone(*args)  # build
      clone.set_weights(layer.get_weights())
      self.assertAllClose(expected, clone(*args), atol=1e-6, msg=type(layer).__name__)
      self.assertEqual(layer.get_config(), clone.get_config())

  def test_supernet_config_round_trip(self):
    net = supernet_lib.build_supernet('EE_DP', 7, width_multiplier=0.5, dropout=0.2)
    clone = supernet_lib.OFASupernet.from_config(net.get_config()).build_weights()
    self.assertEqual(net.get_config(), clone.get_config())
    clone.set_weights(net.get_weights())
    config = net.search_space().max_config()
    x = tf.random.stateless_normal([1, 48, 48, 3], [0, 0])
    arch = supernet_lib.arch_tensors(config)
    self.assertAllClose(net(x, arch), clone(x, arch))

  def test_kernel_transforms_start_as_centre_crops_and_are_used(self):
    layer = elastic_ops.ElasticDepthwiseConv(4, (3, 5, 7))
    layer.build(None)
    full = layer.depthwise_kernel.numpy()
    self.assertAllClose(layer.kernel_for(5), full[1:6, 1:6])
    self.assertAllClose(layer.kernel_for(3), full[2:5, 2:5])
    # A non-identity 5x5 transform changes the 5x5 and (through it) the 3x3 kernel.
    layer.transforms['k5'].assign(np.roll(np.eye(25, dtype=np.float32), 1, axis=1))
    self.assertNotAllClose(layer.kernel_for(5), full[1:6, 1:6])
    self.assertNotAllClose(layer.kernel_for(3), full[2:5, 2:5])
    self.assertAllClose(layer.kernel_for(7), full)

  def test_pointwise_conv_uses_leading_channels(self):
    layer = elastic_ops.ElasticPointwiseConv(8, 16)
    x = tf.random.stateless_normal([1, 3, 3, 8], [0, 1])
    small = layer(x, tf.constant(4))
    full = layer(x)
    self.assertEqual(small.shape[-1], 4)
    self.assertAllClose(small, full[..., :4])

  def test_batch_norm_training_updates_only_active_channels(self):
    bn = elastic_ops.ElasticBatchNorm(8, momentum=0.5)
    bn.build(None)
    x = tf.random.stateless_normal([4, 5, 5, 3], [3, 4]) * 2.0 + 1.0
    y = bn(x, training=True)
    mean = bn.moving_mean.numpy()
    self.assertAllClose(mean[:3], 0.5 * np.mean(x.numpy(), axis=(0, 1, 2)), atol=1e-5)
    self.assertAllEqual(mean[3:], np.zeros(5))
    self.assertAllEqual(bn.moving_variance.numpy()[3:], np.ones(5))
    self.assertAllClose(np.mean(y.numpy(), axis=(0, 1, 2)), np.zeros(3), atol=1e-5)

  def test_batch_norm_matches_keras_batch_norm(self):
    x = tf.random.stateless_normal([4, 5, 5, 6], [5, 6]) * 3.0 - 1.0
    ours, keras_bn = elastic_ops.ElasticBatchNorm(6, 0.9, 1e-5), tf_keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5)
    ours.build(None)
    keras_bn.build(x.shape)
    for training in (True, True, False):
      self.assertAllClose(ours(x, training=training), keras_bn(x, training=training), atol=1e-5)
    self.assertAllClose(ours.moving_variance, keras_bn.moving_variance, atol=1e-6)

  def test_parallel_level_sums_the_active_branches(self):
    level = blocks.ParallelLevel(16, 24, 2, 'relu', False)
    x = tf.random.stateless_normal([2, 8, 8, 16], [7, 8])
    k, e = tf.constant(3), tf.constant(4)
    parts = [level(x, k, e, tf.constant(mask)) for mask in (1, 2, 4)]
    self.assertAllClose(level(x, k, e, tf.constant(7)), parts[0] + parts[1] + parts[2], atol=1e-5)
    self.assertAllClose(level(x, k, e, tf.constant(5)), parts[0] + parts[2], atol=1e-5)
    self.assertEqual(parts[1].shape, (2, 4, 4, 24))


if __name__ == '__main__':
  tf.test.main()
