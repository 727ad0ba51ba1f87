"""Image transforms: OFA's train augmentation, eval resize+crop, normalisation, square resize.

Each function transforms a whole batch at once. Elastic resolution draws one size per batch, so
cropping, flipping and resizing a batch in a single `crop_and_resize` op is both what the method
needs and much cheaper on a 2-core CPU than per-image ops. All randomness is stateless and keyed
by an explicit seed, so a batch's augmentation depends only on (run seed, batch index): runs are
reproducible and independent of thread scheduling. `resize_to_square` is the per-image step
loaders use to give images of mixed sizes one native size, so that raw images can be batched.
"""

import math
from typing import Sequence, Tuple

import tensorflow as tf

# Random-resized-crop ranges of OFAv2 for Tiny ImageNet: crop area share and aspect ratio.
CROP_SCALE = (0.85, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# Eval: resize to size / 0.875, then take the centre size x size (the ImageNet convention).
EVAL_CROP_FRACTION = 0.875


def check_crop_fraction(fraction: float) -> float:
  """`fraction` if it is a valid eval centre-crop share of the image side, in (0, 1]."""
  if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
    raise ValueError(f'eval crop fraction must be in (0, 1], got {fraction!r}')
  return float(fraction)


def eval_resize_size(size: int, crop_fraction: float = EVAL_CROP_FRACTION) -> int:
  """Side the eval transform resizes to before its centre crop."""
  # round() first: 40 / 1.0 or 28 / 0.875 must not become one pixel more by float error.
  return int(math.ceil(round(size / check_crop_fraction(crop_fraction), 6)))


def normalize(images: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """Maps float pixels in [0, 255] to (x / 255 - mean) / std, per channel, as float32.

  Args:
    images: `[..., 3]` float or integer tensor in [0, 255].
    mean: Per-channel mean in [0, 1] units.
    std: Per-channel standard deviation in [0, 1] units.
  """
  images = tf.cast(images, tf.float32)
  mean = tf.constant(mean, tf.float32) * 255.0
  std = tf.constant(std, tf.float32) * 255.0
  return (images - mean) / std


def random_crop_boxes(batch_size: tf.Tensor, seed: tf.Tensor,
                      scale: Tuple[float, float] = CROP_SCALE,
                      ratio: Tuple[float, float] = CROP_RATIO) -> tf.Tensor:
  """Random-resized-crop boxes with horizontal flips, in `crop_and_resize` format.

  Each box covers a share of the image area drawn uniformly from `scale`, with an aspect ratio
  drawn log-uniformly from `ratio`; sides longer than the image are clipped to it (rather than
  re-drawn, which would need a data-dependent loop). A flipped box has its x coordinates
  swapped, which `crop_and_resize` samples mirrored, so the flip costs nothing.

  Args:
    batch_size: Number of boxes.
    seed: Stateless seed, shape `[2]`.
    scale: Range of the crop's area share.
    ratio: Range of the crop's width / height.

  Returns:
    `[batch_size, 4]` float32 normalised boxes `(y1, x1, y2, x2)`.
  """
  seeds = tf.random.experimental.stateless_split(seed, num=5)
  shape = tf.reshape(batch_size, [1])
  area = tf.random.stateless_uniform(shape, seeds[0], scale[0], scale[1])
  log_ratio = tf.random.stateless_uniform(
      shape, seeds[1], math.log(ratio[0]), math.log(ratio[1]))
  aspect = tf.exp(log_ratio)
  height = tf.minimum(tf.sqrt(area / aspect), 1.0)
  width = tf.minimum(tf.sqrt(area * aspect), 1.0)
  top = tf.random.stateless_uniform(shape, seeds[2]) * (1.0 - height)
  left = tf.random.stateless_uniform(shape, seeds[3]) * (1.0 - width)
  flip = tf.random.stateless_uniform(shape, seeds[4]) < 0.5
  x1 = tf.where(flip, left + width, left)
  x2 = tf.where(flip, left, left + width)
  return tf.stack([top, x1, top + height, x2], axis=1)


def train_transform(images: tf.Tensor, size: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Random-resized-crop + horizontal flip of a batch, resized to `size` x `size`.

  Args:
    images: `[B, H, W, 3]` uint8 batch.
    size: Scalar int32 output side (may vary per batch: elastic resolution).
    seed: Stateless seed, shape `[2]`.

  Returns:
    `[B, size, size, 3]` float32 in [0, 255] (bilinear).
  """
  batch_size = images.shape[0] or tf.shape(images)[0]  # Static when batches are full.
  boxes = random_crop_boxes(batch_size, seed)
  size = tf.cast(size, tf.int32)
  return tf.image.crop_and_resize(
      tf.cast(images, tf.float32), boxes, tf.range(batch_size), tf.stack([size, size]),
      method='bilinear')


def eval_transform(images: tf.Tensor, size: int,
                   crop_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
  """Resize to ceil(size / crop_fraction) (bilinear, antialiased), then centre-crop `size`.

  The crop share is the dataset's (`DatasetSplits.eval_crop_fraction`): ImageNet-style photos
  keep the convention's 0.875, while a dataset whose objects fill the frame, as Fashion-MNIST's
  do, is evaluated on the whole frame (1.0). Cropping such images zooms them by 1/0.875 beyond
  anything the train crops (85-100% of the area) showed the network; on the demo's supernet
  that cost 1.6 points of test accuracy (the FixRes train/test discrepancy).

  Args:
    images: `[B, H, W, 3]` uint8 batch (or a single `[H, W, 3]` image).
    size: Output side.
    crop_fraction: Share of the resized side kept by the centre crop, in (0, 1].

  Returns:
    Float32 in [0, 255] with spatial shape `size` x `size`.
  """
  resized_side = eval_resize_size(size, crop_fraction)
  input_side = images.shape[-2]
  # Antialiasing only matters when shrinking, and its kernel is several times slower than plain
  # bilinear, so it is skipped when the input is known to be at most the target size.
  antialias = input_side is None or input_side > resized_side
  resized = tf.image.resize(
      tf.cast(images, tf.float32), [resized_side, resized_side], method='bilinear',
      antialias=antialias)
  offset = (resized_side - size) // 2
  return resized[..., offset:offset + size, offset:offset + size, :]


def resize_to_square(image: tf.Tensor, size: int) -> tf.Tensor:
  """Scales the shorter side to `size` (antialiased) and centre-crops to `size` x `size`, uint8."""
  shape = tf.shape(image)
  height, width = shape[0], shape[1]

  def resized():
    scale = tf.cast(size, tf.float32) / tf.cast(tf.minimum(height, width), tf.float32)
    new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32))
    scaled = tf.image.resize(image, tf.stack([new_h, new_w]), method='bilinear', antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    cropped = scaled[top:top + size, left:left + size, :]
    return tf.cast(tf.clip_by_value(tf.round(cropped), 0, 255), tf.uint8)

  same = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
  result = tf.cond(same, lambda: image, resized)
  result.set_shape([size, size, 3])
  return result
