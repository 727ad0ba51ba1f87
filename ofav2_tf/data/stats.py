"""Per-channel pixel mean and standard deviation of a set of images.

Datasets without published normalisation constants (a user's image folder, most TFDS datasets)
get them measured on their training images at load time, so the network always sees inputs of
roughly zero mean and unit variance, whatever the data.
"""

from typing import Tuple

import numpy as np
import tensorflow as tf

Stats = Tuple[Tuple[float, float, float], Tuple[float, float, float]]


class ChannelMoments:
  """Accumulates per-channel sums of pixels and squared pixels (in [0, 1] units), in float64."""

  def __init__(self):
    self.count = 0
    self.total = np.zeros(3, np.float64)
    self.total_sq = np.zeros(3, np.float64)

  def add(self, pixel_count, channel_sum, channel_sum_sq) -> None:
    """Adds sums over `pixel_count` pixels (values in [0, 255] units)."""
    self.count += int(pixel_count)
    self.total += np.asarray(channel_sum, np.float64) / 255.0
    self.total_sq += np.asarray(channel_sum_sq, np.float64) / (255.0 * 255.0)

  def result(self) -> Stats:
    """(mean, std) per channel; std is floored so normalising never divides by zero."""
    if not self.count:
      raise ValueError('no pixels were added')
    mean = self.total / self.count
    var = np.maximum(self.total_sq / self.count - mean * mean, 0.0)
    std = np.maximum(np.sqrt(var), 1e-3)
    return (tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std))


def image_moments(image: tf.Tensor):
  """Per-image (pixel count, channel sums, channel sums of squares) of a `[H, W, 3]` image.

  Computed in float64 inside `tf.data`, so a parallel pass over the files collects statistics as
  a by-product of decoding them.
  """
  pixels = tf.reshape(tf.cast(image, tf.float64), [-1, 3])
  return tf.shape(pixels)[0], tf.reduce_sum(pixels, 0), tf.reduce_sum(tf.square(pixels), 0)


def dataset_stats(images: tf.data.Dataset, limit: int) -> Stats:
  """Mean and std of the first `limit` images of a dataset of `[H, W, 3]` images."""
  moments = ChannelMoments()
  batched = images.take(limit).map(image_moments, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  for count, total, total_sq in batched.as_numpy_iterator():
    moments.add(count.sum(), total.sum(0), total_sq.sum(0))
  return moments.result()
