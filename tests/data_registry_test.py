"""Dataset registry and `load`: loud errors for bad names and options; a stable hold-out split."""
# bazel: size=medium

import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import data
from ofav2_tf.data import registry
from ofav2_tf.data import splits as splits_lib


class RegistryTest(tf.test.TestCase):

  def test_all_datasets_are_registered(self):
    self.assertCountEqual(data.names(), ['fashion_mnist', 'image_folder', 'tfds', 'tiny_imagenet'])
    self.assertIn('tiny_imagenet:', registry.describe())

  def test_unknown_name_lists_the_valid_ones(self):
    with self.assertRaises(errors.RegistryError) as raised:
      data.load('tiny_imagnet')
    message = str(raised.exception)
    self.assertIn("'tiny_imagnet'", message)
    for name in data.names():
      self.assertIn(name, message)

  def test_bad_arguments_and_options_are_config_errors(self):
    with self.assertRaisesRegex(errors.ConfigError, 'takes no ":argument"'):
      data.load('fashion_mnist:extra')
    with self.assertRaisesRegex(errors.ConfigError, 'needs an argument'):
      data.load('tfds')
    with self.assertRaisesRegex(errors.ConfigError, 'does not take option.*colour.*valid options'):
      data.load('tiny_imagenet', colour=True)
    with self.assertRaisesRegex(errors.ConfigError, 'validation_fraction'):
      data.load('fashion_mnist', validation_fraction=1.5)
    with self.assertRaisesRegex(errors.ConfigError, 'seed'):
      data.load('fashion_mnist', seed='0')
    with self.assertRaisesRegex(errors.ConfigError, 'image_folder needs its root folder'):
      data.load('image_folder')

  def test_unknown_tfds_dataset_is_a_registry_error(self):
    with self.assertRaisesRegex(errors.RegistryError, "unknown TFDS dataset 'no_such_set_xyz'"):
      data.load('tfds:no_such_set_xyz')

  def test_unprepared_tfds_dataset_without_download_says_where(self):
    folder = self.create_tempdir().full_path
    with self.assertRaises(errors.DataError) as raised:
      data.load('tfds:mnist', data_dir=folder, download=False)
    self.assertIn(folder, str(raised.exception))
    self.assertIn('downloading is disabled', str(raised.exception))


class HoldoutTest(tf.test.TestCase):

  def test_exact_size_and_seed_dependence(self):
    mask = splits_lib.holdout_mask(1000, 0.15, seed=0)
    self.assertEqual(mask.dtype, bool)
    self.assertEqual(mask.sum(), 150)
    self.assertAllEqual(mask, splits_lib.holdout_mask(1000, 0.15, seed=0))
    other = splits_lib.holdout_mask(1000, 0.15, seed=1)
    self.assertBetween((mask & other).sum(), 5, 50)  # Unrelated subsets overlap by chance only.

  def test_choice_is_pinned_across_versions(self):
    # The hold-out must never change under a run's feet (library upgrades included): these
    # indices were produced by the BLAKE2b ranking when it was written.
    held_out = np.flatnonzero(splits_lib.holdout_mask(20, 0.25, seed=0)).tolist()
    self.assertEqual(held_out, _PINNED_HOLDOUT)

  def test_split_by_mask_keeps_order_and_partitions(self):
    mask = np.array([i % 3 == 0 for i in range(10)])
    kept, held = splits_lib.split_by_mask(tf.data.Dataset.range(10), mask)
    self.assertEqual(list(kept.as_numpy_iterator()), [1, 2, 4, 5, 7, 8])
    self.assertEqual(list(held.as_numpy_iterator()), [0, 3, 6, 9])

  def test_too_small_training_set(self):
    with self.assertRaises(errors.DataError):
      splits_lib.holdout_mask(1, 0.15, seed=0)


_PINNED_HOLDOUT = [4, 6, 8, 9, 14]


if __name__ == '__main__':
  tf.test.main()
