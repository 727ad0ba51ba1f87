"""Seeded, class-stratified subsets of an evaluation split.

A bounded evaluation (`--validation_images`, `--eval_images`, the search's
`--predictor_validation_images`, the benchmark's and the exporter's image counts) must measure a
sample that looks like the whole split. Taking the first N images does not: image folders and Tiny
ImageNet's validation split come in class order, so the first 500 images of a 10-class folder are
one class, and the same sub-network of the same checkpoint measured 68.6% on the first 500 test
images and 50.6% on the first 2000. Fashion-MNIST's test split happens to be mixed, but nothing
promised it.

So a bounded split is a stratified sample: each class gets its share of the N images by largest
remainder (the class histogram matches the split's to within one image per class), the images of
each class are chosen by a seeded permutation, and the chosen images keep the split's order, so the
sample is a deterministic function of (split, N, seed) and reads the split once.

The split's labels are read once per split object (a pass over the labels; for image folders, the
images are decoded on the way, a few seconds for 10,000 JPEGs) and cached for the process.
"""

from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from ofav2_tf import errors

_LABELS: Dict[int, Tuple[tf.data.Dataset, np.ndarray]] = {}


def split_labels(dataset: tf.data.Dataset) -> np.ndarray:
  """The int64 labels of an unbatched `(image, label)` dataset, in order (cached per object)."""
  key = id(dataset)
  cached = _LABELS.get(key)
  if cached is not None and cached[0] is dataset:
    return cached[1]
  labels = np.fromiter((int(y) for y in dataset.map(lambda _, label: label).batch(4096)
                        .unbatch().as_numpy_iterator()), dtype=np.int64)
  _LABELS[key] = (dataset, labels)  # the dataset is kept, so its id is never reused
  return labels


def class_quotas(labels: np.ndarray, count: int) -> Dict[int, int]:
  """{class: images} summing to `count`, proportional to the classes' shares (largest remainder)."""
  classes, sizes = np.unique(labels, return_counts=True)
  exact = sizes * (count / len(labels))
  quotas = np.floor(exact).astype(np.int64)
  # Ties go to the larger class, then the lower label: deterministic.
  order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - quotas[i]), -sizes[i], i))
  for i in order[:count - int(quotas.sum())]:
    quotas[i] += 1
  return {int(c): int(q) for c, q in zip(classes, quotas)}


def stratified_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
  """Sorted indices of `count` examples whose class histogram is the split's, drawn by `seed`.

  Raises:
    ConfigError: `count` is not positive.
  """
  if count < 1:
    raise errors.ConfigError(f'a bounded evaluation needs at least one image, got {count}')
  labels = np.asarray(labels)
  if count >= len(labels):
    return np.arange(len(labels))
  rng = np.random.default_rng([int(seed) & 0x7FFFFFFF, count])
  picked = []
  for label, quota in class_quotas(labels, count).items():
    members = np.flatnonzero(labels == label)
    picked.append(members[rng.permutation(len(members))[:quota]])
  return np.sort(np.concatenate(picked))


def subset(dataset: tf.data.Dataset, count: int, seed: int) -> tf.data.Dataset:
  """The stratified `count`-image subset of an unbatched `(image, label)` dataset, in its order."""
  labels = split_labels(dataset)
  if count >= len(labels):
    return dataset
  keep = np.zeros(len(labels), bool)
  keep[stratified_indices(labels, count, seed)] = True
  mask = tf.constant(keep)
  last = int(np.flatnonzero(keep)[-1])
  return (dataset.take(last + 1).enumerate()
          .filter(lambda index, _: mask[index])
          .map(lambda _, example: example))
