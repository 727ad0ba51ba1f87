"""Batched, augmented, normalised `tf.data` input for training, evaluation and BN re-calibration.

Elastic resolution (one input size per training batch, drawn from a list) is done by batching the
raw uint8 images first and then transforming each whole batch at a size drawn from a stateless
RNG keyed by (seed, epoch, batch index). That makes every batch reproducible from the seed alone,
keeps the per-batch work to one crop-and-resize op, and gives the batches a `[B, None, None, 3]`
spec, so a traced training step serves every resolution without retracing.

Outputs are float32 NHWC, normalised with the dataset's mean/std; labels are int64.
"""

import hashlib
import numbers
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf.data import augment
from ofav2_tf.data import splits as splits_lib
from ofav2_tf.data import stratified

DEFAULT_SHUFFLE_BUFFER = 10000
_SPLIT_NAMES = ('train', 'validation', 'test')


def resolution_range(smallest: int, largest: int, step: int) -> Tuple[int, ...]:
  """The allowed input sizes `smallest, smallest + step, ..., largest` (e.g. 48..64 step 4)."""
  if step <= 0 or smallest <= 0 or largest < smallest or (largest - smallest) % step:
    raise errors.ConfigError(
        f'resolution range {smallest}..{largest} step {step} is not valid: need 0 < smallest '
        '<= largest and a positive step that divides largest - smallest')
  return tuple(range(smallest, largest + 1, step))


def check_resolutions(resolutions: Iterable[int]) -> Tuple[int, ...]:
  """Validates a list of input sizes (positive ints, at least one, no duplicates)."""
  values = tuple(resolutions)
  if not values or any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r <= 0
                       for r in values) or len(set(values)) != len(values):
    raise errors.ConfigError(
        f'resolutions must be a non-empty list of distinct positive integers, got {values!r}')
  return tuple(int(r) for r in values)


def _check_positive(name: str, value: Optional[int], allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise errors.ConfigError(f'{name} must be a positive integer, got {value!r}')


def _check_seed(seed: int) -> None:
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise errors.ConfigError(f'seed must be an integer, got {seed!r}')


def derive_seed(seed: int, *parts) -> int:
  """A 63-bit seed from a base seed and labels, so each random stream gets its own seed."""
  text = '/'.join(str(p) for p in (int(seed),) + parts).encode()
  return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), 'big') >> 1


def _deterministic(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Forces in-order results from parallel stages, whatever the global tf.data defaults."""
  options = tf.data.Options()
  options.deterministic = True
  return dataset.with_options(options)


def steps_per_epoch(splits: splits_lib.DatasetSplits, batch_size: int) -> int:
  """Full training batches per pass over the train split (`train_batches` drops the rest)."""
  _check_positive('batch_size', batch_size)
  if splits.train_size is None:
    raise errors.DataError(f'the size of the train split of {splits.name} is unknown')
  if splits.train_size < batch_size:
    raise errors.ConfigError(
        f'batch_size {batch_size} is larger than the {splits.train_size} training images of '
        f'{splits.name}')
  return splits.train_size // batch_size


def train_batches(splits: splits_lib.DatasetSplits,
                  batch_size: int,
                  resolutions: Sequence[int],
                  seed: int,
                  *,
                  epoch: int = 0,
                  repeat: bool = True,
                  take: Optional[int] = None,
                  shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> tf.data.Dataset:
  """Shuffled, augmented, normalised training batches with one resolution per batch.

  Args:
    splits: The loaded dataset.
    batch_size: Images per batch; the last incomplete batch of each pass is dropped so every
      batch has the same size (BatchNorm statistics and a fixed-shape training step).
    resolutions: Allowed input sizes; each batch uses one of them, drawn uniformly.
    seed: Run seed: the same seed gives the same batches, in the same order, at the same sizes.
    epoch: Pass number to start from. With `repeat=True` one dataset serves every epoch (each
      pass reshuffles); set this when resuming a run, to start from fresh randomness.
    repeat: Whether to repeat forever (use with Keras `steps_per_epoch`, see `steps_per_epoch`).
    take: If set, stop after this many batches (small runs, tests).
    shuffle_buffer: Shuffle buffer in images. Every loader stores training images in a mixed
      order, so a buffer smaller than the dataset still gives well-mixed batches.

  Returns:
    A dataset of `(images, labels)`: float32 `[batch_size, r, r, 3]` with `r` one of
    `resolutions` (static spec `[batch_size, None, None, 3]`) and int64 `[batch_size]`.
  """
  _check_seed(seed)
  _check_positive('batch_size', batch_size)
  _check_positive('shuffle_buffer', shuffle_buffer)
  _check_positive('take', take, allow_none=True)
  if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
    raise errors.ConfigError(f'epoch must be a non-negative integer, got {epoch!r}')
  sizes = tf.constant(check_resolutions(resolutions), tf.int32)
  batch_seed = derive_seed(seed, 'train-batches', epoch)
  mean, std = splits.mean, splits.std

  def transform(index, batch):
    images, labels = batch
    key = tf.stack([tf.constant(batch_seed, tf.int64), index])
    size_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(key, num=2))
    choice = tf.random.stateless_uniform(
        [], size_seed, minval=0, maxval=tf.size(sizes), dtype=tf.int32)
    images = augment.train_transform(images, sizes[choice], crop_seed)
    return augment.normalize(images, mean, std), labels

  dataset = splits.train.shuffle(
      shuffle_buffer, seed=derive_seed(seed, 'train-shuffle', epoch),
      reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.batch(batch_size, drop_remainder=True).enumerate()
  if take is not None:
    dataset = dataset.take(take)
  dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
  return _deterministic(dataset.prefetch(tf.data.AUTOTUNE))


def eval_batches(splits: splits_lib.DatasetSplits,
                 batch_size: int,
                 resolution: int,
                 *,
                 split: str = 'validation',
                 images: Optional[int] = None,
                 sample_seed: int = 0) -> tf.data.Dataset:
  """Evaluation batches: resize to ceil(resolution / f), centre crop, normalise.

  `f` is the dataset's `eval_crop_fraction` (0.875, the ImageNet convention, unless the loader
  says otherwise).

  Args:
    splits: The loaded dataset.
    batch_size: Images per batch (the last batch may be smaller: every image is evaluated).
    resolution: Input size.
    split: 'validation' (checkpoint selection) or 'test' (final report); 'train' also works.
    images: If set (and smaller than the split), a seeded class-stratified sample of this many
      images (`stratified.subset`), never the split's first images: image folders and Tiny
      ImageNet keep their evaluation splits in class order.
    sample_seed: Which sample `images` draws.

  Returns:
    A dataset of float32 `[b, resolution, resolution, 3]` images and int64 `[b]` labels.
  """
  if split not in _SPLIT_NAMES:
    raise errors.ConfigError(f'split must be one of {", ".join(_SPLIT_NAMES)}, got {split!r}')
  _check_positive('batch_size', batch_size)
  _check_positive('resolution', resolution)
  _check_positive('images', images, allow_none=True)
  _check_seed(sample_seed)
  mean, std = splits.mean, splits.std
  crop_fraction = splits.eval_crop_fraction

  def transform(images, labels):
    return augment.normalize(augment.eval_transform(images, resolution, crop_fraction), mean,
                             std), labels

  dataset = getattr(splits, split)
  if images is not None:
    dataset = stratified.subset(dataset, images, sample_seed)
  dataset = dataset.batch(batch_size).map(transform, num_parallel_calls=tf.data.AUTOTUNE)
  return _deterministic(dataset.prefetch(tf.data.AUTOTUNE))


def calibration_images(splits: splits_lib.DatasetSplits,
                       num_images: int = 2000,
                       seed: int = 0) -> np.ndarray:
  """Draws a fixed set of raw training images for BatchNorm re-calibration.

  OFA re-estimates BN statistics of each sub-network on ~2,000 training images before evaluating
  it. Drawing them once and reusing them for every sub-network makes sub-networks comparable and
  avoids re-reading the dataset for each of the hundreds of sub-networks a search evaluates. The
  images come from the train split (never validation/test, which would leak).

  Args:
    splits: The loaded dataset.
    num_images: How many images (fewer if the train split is smaller).
    seed: Which images; the same seed gives the same images.

  Returns:
    uint8 `[N, native_size, native_size, 3]` array (~24 MB for 2,000 Tiny ImageNet images).
  """
  _check_seed(seed)
  _check_positive('num_images', num_images)
  buffer = max(4 * num_images, DEFAULT_SHUFFLE_BUFFER)
  dataset = splits.train.shuffle(
      buffer, seed=derive_seed(seed, 'calibration'), reshuffle_each_iteration=False)
  dataset = _deterministic(dataset.take(num_images).map(lambda image, _: image).batch(512))
  chunks = [chunk.numpy() for chunk in dataset]
  if not chunks:
    raise errors.DataError(f'the train split of {splits.name} is empty')
  return np.concatenate(chunks)


def calibration_batches(splits: splits_lib.DatasetSplits,
                        images: np.ndarray,
                        resolution: int,
                        *,
                        batch_size: int = 200,
                        seed: int = 0) -> tf.data.Dataset:
  """Batches of calibration images, transformed like training images, at one resolution.

  The train transform (random-resized-crop with its mild 0.85-1 scale, and flip) is used, as in
  OFA, because BN statistics should match the distribution the network was trained on; the crops
  are drawn from `seed`, so every call with the same arguments yields identical batches.

  Args:
    splits: The dataset the images came from (for mean/std).
    images: Output of `calibration_images`.
    resolution: Input size of the sub-network being calibrated.
    batch_size: Images per batch.
    seed: Seed of the crops and flips.

  Returns:
    A dataset of float32 `[b, resolution, resolution, 3]` image batches (no labels: BN
    re-calibration only needs forward passes in training mode).
  """
  _check_seed(seed)
  _check_positive('resolution', resolution)
  _check_positive('batch_size', batch_size)
  base_seed = derive_seed(seed, 'calibration-crops')
  mean, std = splits.mean, splits.std

  def transform(index, batch):
    key = tf.stack([tf.constant(base_seed, tf.int64), index])
    images = augment.normalize(augment.train_transform(batch, resolution, key), mean, std)
    images.set_shape([None, resolution, resolution, 3])
    return images

  dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).enumerate()
  dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
  return _deterministic(dataset.prefetch(tf.data.AUTOTUNE))
