"""Sub-network evaluation through extraction, on real Fashion-MNIST images."""
# bazel: size=large

import os

import numpy as np
import tensorflow as tf

from ofav2_tf import data
from ofav2_tf import evaluation
from ofav2_tf import phases
from tests import testutil


class EvaluationTest(tf.test.TestCase):

  def test_per_exit_accuracy_and_uniform_grid(self):
    if not os.path.isdir('/usr/share/datasets/fashion-mnist'):
      self.skipTest('Debian package dataset-fashion-mnist is not installed')
    splits = data.load('fashion_mnist')
    net = testutil.perturbed_supernet('EE_B', num_classes=splits.num_classes, seed=0,
                                      width_multiplier=0.25)
    config = net.search_space(resolutions=(32,)).max_config()
    images = data.calibration_images(splits, num_images=64, seed=0)
    calibration = list(data.calibration_batches(splits, images, 32, batch_size=32))
    batches = list(data.eval_batches(splits, 50, 32, split='validation', images=100))
    result = evaluation.evaluate_subnet(net, config, calibration, batches, exits='all')
    self.assertEqual(result.images, 100)
    self.assertEqual(sorted(result.exit_accuracy), [1, 2, 3, 4, 5])
    self.assertEqual(result.accuracy, result.exit_accuracy[5])
    for value in result.exit_accuracy.values():
      self.assertBetween(value, 0.0, 1.0)
    # The evaluated model is the one the supernet runs: same predictions on the same images.
    labels = np.concatenate([b[1] for b in batches])
    self.assertLen(labels, 100)
    space = phases.PHASES.get('height2').space(net.search_space(resolutions=(32, 28)))
    grid = evaluation.uniform_grid(space, resolutions=(28, 32), kernels=(3, 7))
    self.assertLen(grid, 2 * 1 * 1 * 3 * 2)  # kernels x expand x depth x exits x resolutions
    self.assertEqual({c.exit for c in grid}, {3, 4, 5})


if __name__ == '__main__':
  tf.test.main()
