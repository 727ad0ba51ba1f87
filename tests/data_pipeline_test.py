"""Input pipeline: elastic resolution, determinism, augmentation geometry, normalisation.

Runs on real Fashion-MNIST (Debian's IDX files) where data matters, and on seeded synthetic
images where the exact pixels must be known.
"""
# bazel: size=medium

import dataclasses
import os

import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import data
from ofav2_tf.data import augment
from ofav2_tf.data import fashion_mnist
from ofav2_tf.data import pipeline
from ofav2_tf.data import splits as splits_lib

_INSTALLED = all(
    os.path.isfile(os.path.join(fashion_mnist.DEFAULT_DIR, name)) for name in fashion_mnist.FILES)
_SIZES = (20, 24, 28, 32)


def _synthetic_splits(count=64, size=16, seed=0):
  """Seeded random images with labels = index, for tests that need to know every pixel."""
  images = np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
  dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(count, dtype=np.int64)))
  return splits_lib.DatasetSplits(
      name='synthetic', train=dataset, validation=dataset, test=dataset, num_classes=count,
      class_names=tuple(str(i) for i in range(count)), mean=(0.5, 0.5, 0.5),
      std=(0.25, 0.25, 0.25), native_size=size, train_size=count, validation_size=count,
      test_size=count), images


class FashionPipelineTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.splits = data.load('fashion_mnist', seed=0) if _INSTALLED else None

  def setUp(self):
    super().setUp()
    if self.splits is None:
      self.skipTest(f'Fashion-MNIST not installed in {fashion_mnist.DEFAULT_DIR} '
                    '(apt-get install dataset-fashion-mnist)')

  def test_each_batch_has_one_allowed_size_and_all_sizes_occur(self):
    batches = pipeline.train_batches(self.splits, 16, _SIZES, seed=7, take=40)
    self.assertEqual(batches.element_spec[0].shape.as_list(), [16, None, None, 3])
    seen = []
    for images, labels in batches:
      self.assertEqual(images.dtype, tf.float32)
      self.assertEqual(images.shape[0], 16)
      self.assertEqual(images.shape[1], images.shape[2])
      self.assertIn(images.shape[1], _SIZES)
      self.assertEqual(labels.shape, (16,))
      seen.append(images.shape[1])
    self.assertLen(seen, 40)
    self.assertCountEqual(set(seen), _SIZES)

  def test_same_seed_same_batches_other_seed_other_batches(self):
    def first_batches(seed, epoch=0):
      batches = pipeline.train_batches(self.splits, 32, _SIZES, seed=seed, epoch=epoch, take=3)
      return [(x.numpy(), y.numpy()) for x, y in batches]

    reference = first_batches(5)
    for (x1, y1), (x2, y2) in zip(reference, first_batches(5)):
      self.assertAllEqual(x1, x2)
      self.assertAllEqual(y1, y2)
    for other in (first_batches(6), first_batches(5, epoch=1)):
      self.assertFalse(all(np.array_equal(y1, y2) for (_, y1), (_, y2) in zip(reference, other)))

  def test_repeat_reshuffles_each_pass(self):
    splits = dataclasses.replace(self.splits, train=self.splits.train.take(64), train_size=64)
    passes = lambda: [y.numpy() for _, y in pipeline.train_batches(splits, 64, [28], seed=1,
                                                                   take=3)]
    labels = passes()
    self.assertLen(labels, 3)
    self.assertAllEqual(np.sort(labels[0]), np.sort(labels[1]))  # Same images each pass...
    self.assertFalse(np.array_equal(labels[0], labels[1]))  # ...in another order...
    self.assertAllEqual(labels, passes())  # ...which is itself reproducible.

  def test_normalised_training_batches_are_roughly_standardised(self):
    means, stds = [], []
    for images, _ in pipeline.train_batches(self.splits, 256, [28], seed=0, take=10):
      means.append(float(tf.reduce_mean(images)))
      stds.append(float(tf.math.reduce_std(images)))
    # The crops keep 85-100% of the area, so slightly more of the (bright) centre than the
    # statistics of full images: a mean a little above 0 is expected.
    self.assertBetween(np.mean(means), -0.1, 0.25)
    self.assertBetween(np.mean(stds), 0.85, 1.15)

  def test_eval_batches_are_deterministic_with_exact_shape(self):
    # Without `images` the whole split is evaluated in its stored order; the first two batches
    # are enough to check.
    batches = pipeline.eval_batches(self.splits, 100, 24, split='test').take(2)
    first = [(x.numpy(), y.numpy()) for x, y in batches]
    second = [(x.numpy(), y.numpy()) for x, y in batches]
    self.assertLen(first, 2)
    for (x1, y1), (x2, y2) in zip(first, second):
      self.assertEqual(x1.shape, (100, 24, 24, 3))
      self.assertAllEqual(x1, x2)
      self.assertAllEqual(y1, y2)
    _, raw_labels = next(iter(self.splits.test.batch(100)))
    self.assertAllEqual(first[0][1], raw_labels)  # Eval keeps the stored order.

  def test_calibration_images_and_batches_are_fixed(self):
    images = pipeline.calibration_images(self.splits, num_images=300, seed=2)
    self.assertEqual(images.shape, (300, 28, 28, 3))
    self.assertEqual(images.dtype, np.uint8)
    self.assertAllEqual(images, pipeline.calibration_images(self.splits, num_images=300, seed=2))
    self.assertNotAllEqual(images, pipeline.calibration_images(self.splits, 300, seed=3))
    batches = [b.numpy() for b in pipeline.calibration_batches(self.splits, images, 24,
                                                                batch_size=128)]
    self.assertEqual([b.shape for b in batches],
                     [(128, 24, 24, 3), (128, 24, 24, 3), (44, 24, 24, 3)])
    again = [b.numpy() for b in pipeline.calibration_batches(self.splits, images, 24,
                                                              batch_size=128)]
    for b1, b2 in zip(batches, again):
      self.assertAllEqual(b1, b2)


class AugmentationTest(tf.test.TestCase):

  def test_crop_boxes_follow_the_scale_and_ratio_ranges_and_flip_half(self):
    boxes = augment.random_crop_boxes(tf.constant(4000), tf.constant([3, 4], tf.int64)).numpy()
    height = boxes[:, 2] - boxes[:, 0]
    width = np.abs(boxes[:, 3] - boxes[:, 1])
    area = height * width
    self.assertGreaterEqual(area.min(), 0.85 * 0.75 - 1e-6)  # Clipping a side may shrink it.
    self.assertLessEqual(area.max(), 1.0 + 1e-6)
    unclipped = (height < 1) & (width < 1)
    self.assertAllInRange(area[unclipped], 0.85 - 1e-5, 1.0 + 1e-5)
    self.assertAllInRange(width[unclipped] / height[unclipped], 0.75 - 1e-5, 4 / 3 + 1e-5)
    self.assertAllInRange(boxes, 0.0, 1.0)
    flipped = boxes[:, 3] < boxes[:, 1]
    self.assertBetween(flipped.mean(), 0.45, 0.55)

  def test_train_transform_is_a_crop_and_flip_of_the_input(self):
    # A horizontal ramp: any crop of it is monotonic along x, increasing or (flipped) decreasing.
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, [64, 1, 3])
    batch = tf.constant(np.stack([ramp] * 64))
    out = augment.train_transform(batch, tf.constant(48), tf.constant([1, 2], tf.int64)).numpy()
    self.assertEqual(out.shape, (64, 48, 48, 3))
    rows = out[:, 24, :, 0]
    increasing = np.all(np.diff(rows, axis=1) >= -1e-3, axis=1)
    decreasing = np.all(np.diff(rows, axis=1) <= 1e-3, axis=1)
    self.assertTrue(np.all(increasing | decreasing))
    self.assertTrue(increasing.any() and decreasing.any())
    # Crops keep >= 85% of the area, so each row spans most of the ramp's range.
    self.assertGreater(np.min(np.abs(rows[:, -1] - rows[:, 0])), 0.6 * 252)

  def test_eval_transform_resizes_then_centre_crops(self):
    self.assertEqual(augment.eval_resize_size(64), 74)
    self.assertEqual(augment.eval_resize_size(48), 55)
    _, images = _synthetic_splits(count=4, size=64)
    out = augment.eval_transform(tf.constant(images), 48).numpy()
    resized = tf.image.resize(tf.constant(images, tf.float32), [55, 55], antialias=True).numpy()
    self.assertAllClose(out, resized[:, 3:51, 3:51, :])

  def test_whole_frame_eval_crop_only_resizes(self):
    self.assertEqual(augment.eval_resize_size(28), 32)
    self.assertEqual(augment.eval_resize_size(28, 1.0), 28)
    self.assertEqual(augment.eval_resize_size(40, 1.0), 40)
    _, images = _synthetic_splits(count=4, size=16)
    out = augment.eval_transform(tf.constant(images), 24, crop_fraction=1.0).numpy()
    resized = tf.image.resize(tf.constant(images, tf.float32), [24, 24]).numpy()
    self.assertAllClose(out, resized)
    for bad in (0.0, 1.5, -0.2):
      with self.assertRaisesRegex(ValueError, r'eval crop fraction must be in \(0, 1\]'):
        augment.eval_resize_size(24, bad)

  def test_eval_batches_use_the_datasets_crop_fraction(self):
    splits, images = _synthetic_splits(count=8, size=16)
    whole = dataclasses.replace(splits, eval_crop_fraction=1.0)
    cropped, = [x for x, _ in pipeline.eval_batches(splits, 8, 16, split='test')]
    full, = [x for x, _ in pipeline.eval_batches(whole, 8, 16, split='test')]
    expected = augment.normalize(tf.constant(images), splits.mean, splits.std).numpy()
    self.assertAllClose(full, expected, atol=1e-5)  # 16 -> 16: the images themselves
    self.assertGreater(float(np.abs(cropped.numpy() - expected).max()), 0.1)

  def test_normalize_uses_mean_and_std_per_channel(self):
    pixel = tf.constant([[[[255.0, 0.0, 127.5]]]])
    out = augment.normalize(pixel, (0.5, 0.5, 0.5), (0.5, 0.25, 0.5)).numpy()
    self.assertAllClose(out.ravel(), [1.0, -2.0, 0.0])

  def test_square_resize_of_odd_shapes(self):
    image = tf.zeros([30, 50, 3], tf.uint8)
    self.assertEqual(augment.resize_to_square(image, 20).shape, (20, 20, 3))
    same = tf.constant(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    self.assertAllEqual(augment.resize_to_square(same, 16), same)


class PipelineArgumentsTest(tf.test.TestCase):

  def test_resolution_range(self):
    self.assertEqual(pipeline.resolution_range(48, 64, 4), (48, 52, 56, 60, 64))
    with self.assertRaises(errors.ConfigError):
      pipeline.resolution_range(48, 64, 5)

  def test_bad_arguments_are_config_errors(self):
    splits, _ = _synthetic_splits()
    for kwargs in ({'resolutions': []}, {'resolutions': [0, 16]}, {'resolutions': [16, 16]},
                   {'batch_size': 0}, {'take': -1}):
      args = {'batch_size': 8, 'resolutions': [16], 'seed': 0, **kwargs}
      with self.assertRaises(errors.ConfigError, msg=str(kwargs)):
        pipeline.train_batches(splits, **args)
    with self.assertRaisesRegex(errors.ConfigError, 'split must be one of'):
      pipeline.eval_batches(splits, 8, 16, split='val')

  def test_steps_per_epoch(self):
    splits, _ = _synthetic_splits(count=64)
    self.assertEqual(pipeline.steps_per_epoch(splits, 10), 6)
    with self.assertRaises(errors.ConfigError):
      pipeline.steps_per_epoch(splits, 65)

  def test_train_batches_see_every_image_once_per_pass(self):
    splits, _ = _synthetic_splits(count=64)
    labels = [y.numpy() for _, y in pipeline.train_batches(splits, 16, [16], seed=0, take=4)]
    self.assertCountEqual(np.concatenate(labels), range(64))


if __name__ == '__main__':
  tf.test.main()
