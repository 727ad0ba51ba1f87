"""Supernet weights round-trip with their architecture; mismatches are refused by name."""
# bazel: size=medium

import os

import tensorflow as tf

from ofav2_tf import checkpoints
from ofav2_tf import errors
from ofav2_tf import supernet as supernet_lib
from tests import testutil


class CheckpointsTest(tf.test.TestCase):

  def test_round_trip(self):
    net = testutil.perturbed_supernet('EE_B', num_classes=4, seed=1, width_multiplier=0.25)
    directory = os.path.join(self.get_temp_dir(), 'ckpt')
    checkpoints.save_weights(net, directory)
    other = supernet_lib.build_supernet('EE_B', 4, width_multiplier=0.25)
    checkpoints.load_weights(other, directory)
    for a, b in zip(net.weights, other.weights):
      self.assertAllEqual(a, b)

  def test_mismatched_classes_and_variant_are_named(self):
    net = supernet_lib.build_supernet('SE_B', 10, width_multiplier=0.25)
    directory = os.path.join(self.get_temp_dir(), 'ckpt10')
    checkpoints.save_weights(net, directory)
    with self.assertRaisesRegex(errors.ArchitectureMismatchError,
                                r'num_classes: checkpoint .* has 10, expected 200'):
      checkpoints.load_weights(supernet_lib.build_supernet('SE_B', 200, width_multiplier=0.25),
                               directory)
    with self.assertRaisesRegex(errors.ArchitectureMismatchError,
                                r"variant: checkpoint .* has 'SE_B', expected 'SE_D'"):
      checkpoints.load_weights(supernet_lib.build_supernet('SE_D', 10, width_multiplier=0.25),
                               directory)

  def test_missing_checkpoint_folder(self):
    net = supernet_lib.build_supernet('SE_B', 3, width_multiplier=0.25)
    with self.assertRaisesRegex(errors.ArchitectureMismatchError, 'not a supernet checkpoint'):
      checkpoints.load_weights(net, self.get_temp_dir())

  def test_unknown_variant_lists_valid_names(self):
    with self.assertRaisesRegex(errors.RegistryError,
                                "unknown variant 'SE_X'; valid variants: SE_B, SE_D, SE_P, SE_DP"):
      supernet_lib.build_supernet('SE_X', 3)


if __name__ == '__main__':
  tf.test.main()
