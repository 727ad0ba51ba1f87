"""The loaded-dataset record and the seeded train/validation hold-out shared by every dataset.

Every phase of progressive shrinking keeps the checkpoint that is best on a validation set carved
out of the official training set (15% by default); the official validation/test set is reported
only at the end. The carve-out must be the same on every run with the same seed, on every machine,
whatever the library versions, or phase-to-phase comparisons and resumed runs would validate on
images they trained on. So the choice is made from a cryptographic hash of (seed, example index)
rather than from a library RNG whose stream may change between releases.
"""

import dataclasses
import hashlib
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf.data import augment


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
  """A dataset ready for the input pipeline.

  The three datasets yield unbatched `(image, label)` pairs: `image` is uint8 with shape
  `(native_size, native_size, 3)` (grayscale already replicated to 3 channels), `label` an int64
  scalar in `[0, num_classes)`. They are not shuffled, augmented or normalised; `pipeline.py`
  does that, so every dataset gets the same treatment.

  Attributes:
    name: The name the dataset was loaded by (for logs and the run folder).
    train: The training examples (official train minus the validation hold-out).
    validation: The held-out examples used to pick checkpoints.
    test: The official evaluation set, reported at the end.
    num_classes: Number of classes.
    class_names: Class names in label order.
    mean: Per-channel mean of the training pixels, in [0, 1] units.
    std: Per-channel standard deviation of the training pixels, in [0, 1] units.
    native_size: Side of the square images the datasets yield.
    train_size: Number of training examples, if known.
    validation_size: Number of validation examples, if known.
    test_size: Number of test examples, if known.
    eval_crop_fraction: Share of the side the eval transform's centre crop keeps: 0.875 for
      photos (the ImageNet convention), 1.0 for images whose object fills the frame.
  """
  name: str
  train: tf.data.Dataset
  validation: tf.data.Dataset
  test: tf.data.Dataset
  num_classes: int
  class_names: Tuple[str, ...]
  mean: Tuple[float, float, float]
  std: Tuple[float, float, float]
  native_size: int
  train_size: Optional[int] = None
  validation_size: Optional[int] = None
  test_size: Optional[int] = None
  eval_crop_fraction: float = augment.EVAL_CROP_FRACTION


def check_fraction(fraction: float) -> float:
  """Validates a hold-out fraction, which must leave examples on both sides."""
  if not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
    raise errors.ConfigError(
        f'validation_fraction must be a number strictly between 0 and 1, got {fraction!r}')
  return float(fraction)


def holdout_mask(num_examples: int, fraction: float, seed: int) -> np.ndarray:
  """Chooses exactly round(fraction * num_examples) examples, by index, for the hold-out.

  Each index gets a key from BLAKE2b(seed, index); the smallest keys are held out. The result
  depends only on its three arguments (not on NumPy's or TensorFlow's RNG), and a different seed
  gives an unrelated subset.

  Args:
    num_examples: Size of the set to split.
    fraction: Share of examples to hold out, in (0, 1).
    seed: Any integer.

  Returns:
    A bool array of length `num_examples`, True for held-out examples.
  """
  fraction = check_fraction(fraction)
  if num_examples < 2:
    raise errors.DataError(
        f'cannot hold out a validation set from {num_examples} training example(s); '
        'the training set needs at least 2 images')
  count = min(max(int(round(fraction * num_examples)), 1), num_examples - 1)
  mask = np.zeros(num_examples, dtype=bool)
  mask[seeded_order(num_examples, seed, 'holdout')[:count]] = True
  return mask


def seeded_order(num_examples: int, seed: int, salt: str = 'order') -> np.ndarray:
  """A permutation of `range(num_examples)` that depends only on (seed, salt).

  Ranks indices by BLAKE2b(seed, salt, index), which no library upgrade can change; `salt` gives
  unrelated permutations for different purposes from one seed.
  """
  prefix = f'{int(seed)}/{salt}/'.encode()
  keys = np.fromiter(
      (int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), 'big')
       for i in range(num_examples)),
      dtype=np.uint64, count=num_examples)
  return np.argsort(keys, kind='stable')


def split_by_mask(dataset: tf.data.Dataset,
                  mask: Sequence[bool]) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
  """Splits a dataset with a deterministic element order into (kept, held-out) by index.

  Args:
    dataset: Examples in a fixed order; element i goes to the held-out side when `mask[i]`.
    mask: One bool per element of `dataset`.

  Returns:
    `(kept, held_out)` datasets, each preserving the original order.
  """
  mask_tensor = tf.constant(np.asarray(mask, dtype=bool))
  indexed = dataset.enumerate()

  def side(held_out: bool) -> tf.data.Dataset:
    selected = indexed.filter(lambda i, _: tf.equal(tf.gather(mask_tensor, i), held_out))
    return selected.map(lambda _, example: example)

  return side(False), side(True)
