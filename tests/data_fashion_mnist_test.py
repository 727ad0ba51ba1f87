"""Fashion-MNIST from Debian's IDX files: counts, labels, the seeded split, strict file checks."""
# bazel: size=medium

import gzip
import os
import shutil

import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import data
from ofav2_tf.data import fashion_mnist
from ofav2_tf.data import splits as splits_lib
from tests import testutil

_INSTALLED = all(
    os.path.isfile(os.path.join(fashion_mnist.DEFAULT_DIR, name)) for name in fashion_mnist.FILES)


def _stack(dataset):
  images, labels = [], []
  for image, label in dataset.batch(10000).as_numpy_iterator():
    images.append(image)
    labels.append(label)
  return np.concatenate(images), np.concatenate(labels)


class FashionMnistTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    if not _INSTALLED:
      self.skipTest(f'Fashion-MNIST IDX files not in {fashion_mnist.DEFAULT_DIR} '
                    '(apt-get install dataset-fashion-mnist)')

  def test_counts_shapes_and_labels(self):
    splits = data.load('fashion_mnist', seed=0)
    self.assertEqual((splits.train_size, splits.validation_size, splits.test_size),
                     (51000, 9000, 10000))
    self.assertEqual(splits.num_classes, 10)
    self.assertLen(splits.class_names, 10)
    self.assertEqual(splits.native_size, 28)
    for split, size in (('train', 51000), ('validation', 9000), ('test', 10000)):
      images, labels = _stack(getattr(splits, split))
      self.assertEqual(images.shape, (size, 28, 28, 3), split)
      self.assertEqual(images.dtype, np.uint8)
      self.assertTrue(np.array_equal(images[..., 0], images[..., 2]))  # Grayscale replicated.
      self.assertEqual(labels.dtype, np.int64)
      self.assertBetween(labels.min(), 0, 9)
      self.assertBetween(labels.max(), 0, 9)
      self.assertLen(np.unique(labels), 10)  # Every class appears in every split.

  def test_split_is_a_disjoint_cover_of_official_train_and_deterministic(self):
    raw_images, raw_labels, _, _ = fashion_mnist.read_arrays()
    splits = data.load('fashion_mnist', seed=3)
    train_images, train_labels = _stack(splits.train)
    val_images, val_labels = _stack(splits.validation)
    held_out = splits_lib.holdout_mask(60000, 0.15, 3)
    # Validation is exactly the held-out indices and train exactly the rest, in file order.
    # (np.array_equal: tf.test's assertAllEqual is slow on 40 MB arrays.)
    self.assertTrue(np.array_equal(val_images[..., 0], raw_images[held_out]))
    self.assertTrue(np.array_equal(val_labels, raw_labels[held_out]))
    self.assertTrue(np.array_equal(train_images[..., 0], raw_images[~held_out]))
    self.assertTrue(np.array_equal(train_labels, raw_labels[~held_out]))
    # Spread over the whole file and over every class, not a block.
    positions = np.flatnonzero(held_out)
    self.assertLess(positions[0], 100)
    self.assertGreater(positions[-1], 59900)
    self.assertBetween(np.bincount(val_labels).min(), 800, 1000)
    again_images, again_labels = _stack(data.load('fashion_mnist', seed=3).validation)
    self.assertTrue(np.array_equal(again_images, val_images))
    self.assertTrue(np.array_equal(again_labels, val_labels))
    other_images, _ = _stack(data.load('fashion_mnist', seed=4).validation)
    self.assertFalse(np.array_equal(other_images, val_images))

  def test_normalisation_constants_match_the_training_images(self):
    raw_images, _, _, _ = fashion_mnist.read_arrays()
    pixels = raw_images.astype(np.float64) / 255.0
    self.assertAllClose(fashion_mnist.MEAN, [pixels.mean()] * 3, atol=1e-4)
    self.assertAllClose(fashion_mnist.STD, [pixels.std()] * 3, atol=1e-4)

  def test_missing_package_names_the_folder_and_the_install_command(self):
    empty = self.create_tempdir().full_path
    with self.assertRaises(errors.DataError) as raised:
      data.load('fashion_mnist', data_dir=empty)
    message = str(raised.exception)
    self.assertIn(empty, message)
    self.assertIn('apt-get install dataset-fashion-mnist', message)
    self.assertIn('train-images-idx3-ubyte.gz', message)

  def test_truncated_file_is_named(self):
    folder = self.create_tempdir().full_path
    for name in fashion_mnist.FILES:
      shutil.copy(os.path.join(fashion_mnist.DEFAULT_DIR, name), folder)
    target = os.path.join(folder, fashion_mnist.TEST_IMAGES)
    with open(target, 'rb') as f:
      content = f.read()
    with open(target, 'wb') as f:
      f.write(content[:len(content) // 3])
    with self.assertRaisesRegex(errors.DataError, 't10k-images-idx3-ubyte.gz.*truncated'):
      data.load('fashion_mnist', data_dir=folder)

  def test_wrong_magic_and_wrong_size_are_named(self):
    folder = self.create_tempdir().full_path
    for name in fashion_mnist.FILES:
      shutil.copy(os.path.join(fashion_mnist.DEFAULT_DIR, name), folder)
    # Labels where images belong: wrong IDX magic (1 dimension instead of 3).
    shutil.copy(os.path.join(folder, fashion_mnist.TEST_LABELS),
                os.path.join(folder, fashion_mnist.TEST_IMAGES))
    with self.assertRaisesRegex(errors.DataError, 't10k-images-idx3-ubyte.gz has IDX magic'):
      data.load('fashion_mnist', data_dir=folder)
    # A well-formed header whose declared size does not match the content.
    with gzip.open(os.path.join(folder, fashion_mnist.TEST_IMAGES), 'wb') as f:
      f.write(b'\x00\x00\x08\x03' + (10000).to_bytes(4, 'big') + (28).to_bytes(4, 'big') * 2)
      f.write(bytes(100))
    with self.assertRaisesRegex(errors.DataError, 't10k-images-idx3-ubyte.gz holds .* bytes'):
      data.load('fashion_mnist', data_dir=folder)


  def test_bounded_evaluation_is_a_stratified_seeded_sample(self):
    splits = data.load('fashion_mnist', seed=0)
    testutil.assert_stratified_sample(self, splits, 'test', 503)
    testutil.assert_stratified_sample(self, splits, 'validation', 97)


if __name__ == '__main__':
  tf.test.main()
