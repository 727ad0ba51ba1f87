"""BN re-calibration: exact averages, only active channels, same result on supernet and extraction."""
# bazel: size=medium

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import bn_calibration
from ofav2_tf import errors
from ofav2_tf import extraction
from ofav2_tf import supernet as supernet_lib
from ofav2_tf.layers import elastic_ops
from tests import testutil


class BnCalibrationTest(tf.test.TestCase):

  def test_statistics_are_batch_averages(self):
    inputs = tf_keras.Input((4, 4, 3))
    model = tf_keras.Model(inputs, tf_keras.layers.BatchNormalization(momentum=0.99)(inputs))
    batches = [tf.random.stateless_normal([8, 4, 4, 3], [i, 0]) * (i + 1) for i in range(3)]
    used = bn_calibration.recalibrate(model, batches)
    self.assertEqual(used, 24)
    bn = model.layers[1]
    means = [np.mean(b.numpy(), axis=(0, 1, 2)) for b in batches]
    # Unbiased per-batch variance, as the fused kernel reports it for the moving average.
    variances = [np.var(b.numpy(), axis=(0, 1, 2), ddof=1) for b in batches]
    self.assertAllClose(bn.moving_mean, np.mean(means, axis=0), atol=1e-5)
    self.assertAllClose(bn.moving_variance, np.mean(variances, axis=0), rtol=1e-4)
    self.assertEqual(bn.momentum, 0.99)  # restored

  def test_max_images_and_empty_input(self):
    inputs = tf_keras.Input((2, 2, 1))
    model = tf_keras.Model(inputs, tf_keras.layers.BatchNormalization()(inputs))
    batches = [tf.ones([8, 2, 2, 1])] * 5
    self.assertEqual(bn_calibration.recalibrate(model, batches, max_images=20), 20)
    with self.assertRaisesRegex(errors.DataError, 'no images'):
      bn_calibration.recalibrate(model, [])

  def test_supernet_and_extracted_model_get_the_same_statistics(self):
    net = testutil.perturbed_supernet('EE_D', num_classes=5, seed=2, width_multiplier=0.5)
    space = net.search_space()
    config = space.sample(np.random.default_rng(4))
    extracted = extraction.extract(net, config)  # copied before re-calibration
    batches = [testutil.images(8, config.resolution, seed=s) for s in range(3)]
    arch = supernet_lib.arch_tensors(config)
    untouched = net.levels[4][3].project_bn  # a BN outside most sub-networks
    untouched_before = untouched.moving_mean.numpy().copy()
    bn_calibration.recalibrate(net, batches, lambda x: net(x, arch, training=True))
    bn_calibration.recalibrate(extracted, batches)
    x = testutil.images(2, config.resolution, seed=11)
    self.assertAllClose(net(x, arch, training=False), extracted(x, training=False), atol=1e-4)
    if not config.is_active(4 * 4 + 3):
      self.assertAllEqual(untouched_before, untouched.moving_mean.numpy())

  def test_recalibration_touches_only_active_channels(self):
    bn = elastic_ops.ElasticBatchNorm(8)
    bn.build(None)
    holder = tf_keras.Sequential([tf_keras.layers.InputLayer((3, 3, 4)),
                                  tf_keras.layers.Lambda(lambda x: x)])
    holder.bn = bn
    bn_calibration.recalibrate(holder, [tf.ones([2, 3, 3, 4]) * 3.0],
                               forward=lambda x: bn(x, training=True))
    self.assertAllClose(bn.moving_mean.numpy(), [3.0] * 4 + [0.0] * 4)


if __name__ == '__main__':
  tf.test.main()
