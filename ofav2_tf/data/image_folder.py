"""The `image_folder` dataset: any `<root>/<split>/<class>/*.jpg|jpeg|png` tree.

This is how users bring their own data; files of other types (`.gif`, `.txt`, ...) are skipped,
with one warning per split counting them by extension, so a folder of GIFs does not silently become
a smaller dataset. Splits:
  * `train/` is required; its sorted subfolders are the classes (label k = k-th name);
  * `val/` or `validation/` is the validation set, and `test/` the test set, when both exist;
  * with `train/` + `test/` only, the validation set is a seeded 15% of `train/`;
  * with `train/` + `val/` only, `val/` is the test set and 15% of `train/` the validation set
    (the Tiny ImageNet convention: the official validation set is only reported at the end).

Before training, every image is decoded once (in parallel) by default: a corrupt file then fails
at load time with its path in the message, instead of as an anonymous decode error hours into a
run. The same pass measures the pixel mean/std and image sizes. Images are resized (shorter side,
then centre crop) to one square `native_size`, so the pipeline can batch raw images.
"""

import collections
import os
import re
from typing import Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf.data import augment
from ofav2_tf.data import registry
from ofav2_tf.data import splits as splits_lib
from ofav2_tf.data import stats as stats_lib

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
VALIDATION_NAMES = ('val', 'validation')
LAYOUT = '<root>/train/<class>/*.jpg|jpeg|png, plus optional val/ (or validation/) and test/'
# Images decoded for statistics and size when the full verification pass is switched off.
_SAMPLE_SIZE = 500
# Batches of the verification pass; a failing batch is re-checked file by file.
_PROBE_BATCH = 128
# Corrupt files listed in the error message (all are counted).
_MAX_LISTED = 10


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def _skipped_files(folder: str, names: List[str]) -> collections.Counter:
  """Counts by extension the files in `folder` that are not images and will not be read.

  Hidden files (`.DS_Store`, macOS `._*` copies) are left out: they are the file system's, not the
  user's data.
  """
  return collections.Counter(
      os.path.splitext(name)[1].lower() or '(no extension)' for name in names
      if not name.startswith('.') and not _is_image(name)
      and os.path.isfile(os.path.join(folder, name)))


def _counts(skipped: collections.Counter) -> str:
  """'3 .gif, 1 .txt': the most frequent extension first."""
  return ', '.join(f'{count} {ext}' for ext, count in
                   sorted(skipped.items(), key=lambda item: (-item[1], item[0])))


def _warn_skipped(folder: str, skipped: collections.Counter) -> None:
  if skipped:
    logging.warning('image_folder: skipped %d file(s) under %s that are not .jpg, .jpeg or .png '
                    'images: %s', sum(skipped.values()), folder, _counts(skipped))


def _subfolders(path: str) -> List[str]:
  return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith('.'))


def _split_folders(root: str) -> Dict[str, Optional[str]]:
  """Maps 'train', 'val', 'test' to their folders (None when absent)."""
  if not os.path.isdir(root):
    raise errors.DataError(f'image folder {root} does not exist; expected the layout {LAYOUT}')
  present = _subfolders(root)
  if 'train' not in present:
    raise errors.DataError(
        f'no train/ folder in image folder {root} (found: {", ".join(present) or "nothing"}); '
        f'expected the layout {LAYOUT}')
  validation = [name for name in VALIDATION_NAMES if name in present]
  if len(validation) > 1:
    raise errors.DataError(
        f'image folder {root} has both val/ and validation/; keep one of them')
  return {
      'train': os.path.join(root, 'train'),
      'val': os.path.join(root, validation[0]) if validation else None,
      'test': os.path.join(root, 'test') if 'test' in present else None,
  }


def _list_split(folder: str,
                classes: Optional[List[str]]) -> Tuple[List[str], List[int], List[str]]:
  """Lists a split's images as (paths, labels, class names); classes=None means "define them".

  Raises:
    errors.DataError: Unknown or empty class folders, images outside class folders.
  """
  defining = classes is None
  found = _subfolders(folder)
  top = os.listdir(folder)
  skipped = _skipped_files(folder, top)
  stray = sorted(name for name in top
                 if _is_image(name) and os.path.isfile(os.path.join(folder, name)))
  if stray:
    raise errors.DataError(
        f'{os.path.join(folder, stray[0])} is not inside a class folder; images must be in '
        f'{folder}/<class>/ (layout {LAYOUT})')
  if defining:
    classes = found
    if not classes:
      raise errors.DataError(f'{folder} has no class subfolders; expected the layout {LAYOUT}')
    if len(classes) < 2:
      raise errors.DataError(
          f'{folder} has one class folder ({classes[0]}); a classifier needs at least 2, one '
          f'subfolder per class (layout {LAYOUT})')
  else:
    unknown = [name for name in found if name not in classes]
    if unknown:
      raise errors.DataError(
          f'class folder {os.path.join(folder, unknown[0])} has no counterpart in train/; '
          f'classes are the subfolders of train/: {", ".join(classes[:10])}'
          f'{", ..." if len(classes) > 10 else ""}')
  paths, labels = [], []
  for label, name in enumerate(classes):
    class_dir = os.path.join(folder, name)
    if not os.path.isdir(class_dir):
      continue
    names = os.listdir(class_dir)
    others = _skipped_files(class_dir, names)
    skipped.update(others)
    files = sorted(f for f in names if _is_image(f))
    if not files and defining:
      found_instead = f' (only {_counts(others)})' if others else ''
      raise errors.DataError(
          f'class folder {class_dir} holds no .jpg, .jpeg or .png images{found_instead}; remove '
          'it or add images')
    paths.extend(os.path.join(class_dir, f) for f in files)
    labels.extend([label] * len(files))
  _warn_skipped(folder, skipped)
  if not paths:
    raise errors.DataError(f'{folder} holds no .jpg, .jpeg or .png images in class subfolders')
  return paths, labels, classes


def _decode(path: tf.Tensor) -> tf.Tensor:
  return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def _probe(path: tf.Tensor):
  image = _decode(path)
  count, total, total_sq = stats_lib.image_moments(image)
  return tf.shape(image)[:2], count, total, total_sq


def _find_corrupt(paths: List[str]) -> List[Tuple[str, str]]:
  """Decodes the given files one by one; returns (path, reason) for those that fail."""
  bad = []
  for path in paths:
    try:
      _decode(tf.constant(path))
    except tf.errors.OpError as e:
      bad.append((path, _short_reason(e)))
  return bad


def _short_reason(error: tf.errors.OpError) -> str:
  """TensorFlow's decode error without its graph-node prefix and op suffix."""
  text = (error.message or type(error).__name__).splitlines()[0]
  text = re.sub(r'\{\{[^}]*\}\}\s*', '', text)
  return re.sub(r'\s*\[Op:.*$', '', text).strip() or type(error).__name__


def probe_images(paths: List[str]):
  """Decodes every file (in parallel) and returns their (height, width) and pixel moments.

  Returns:
    `(sizes, counts, sums, sums_sq)`: arrays with one row per path.

  Raises:
    errors.DataError: Some files do not decode; the message names them.
  """
  n = len(paths)
  sizes = np.zeros((n, 2), np.int64)
  counts = np.zeros(n, np.int64)
  sums = np.zeros((n, 3), np.float64)
  sums_sq = np.zeros((n, 3), np.float64)
  bad = []
  start = 0
  while start < n:
    dataset = tf.data.Dataset.from_tensor_slices(paths[start:])
    dataset = dataset.map(_probe, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(_PROBE_BATCH)
    position = start
    try:
      for batch_sizes, batch_counts, batch_sums, batch_sq in dataset.as_numpy_iterator():
        end = position + len(batch_counts)
        sizes[position:end], counts[position:end] = batch_sizes, batch_counts
        sums[position:end], sums_sq[position:end] = batch_sums, batch_sq
        position = end
      start = n
    except tf.errors.OpError:
      # The batch at `position` holds at least one bad file: find which, then go on after it.
      end = min(position + _PROBE_BATCH, n)
      culprits = _find_corrupt(paths[position:end])
      if not culprits:
        raise  # Not a per-file problem (e.g. out of memory): keep TensorFlow's error.
      bad.extend(culprits)
      good = [i for i in range(position, end) if paths[i] not in dict(culprits)]
      if good:
        # Re-probe the healthy files of that batch, so their sizes and moments are filled.
        sub_sizes, sub_counts, sub_sums, sub_sq = probe_images([paths[i] for i in good])
        sizes[good], counts[good], sums[good], sums_sq[good] = (
            sub_sizes, sub_counts, sub_sums, sub_sq)
      start = end
  if bad:
    listed = '; '.join(f'{path} ({reason})' for path, reason in bad[:_MAX_LISTED])
    more = f' and {len(bad) - _MAX_LISTED} more' if len(bad) > _MAX_LISTED else ''
    raise errors.DataError(
        f'{len(bad)} corrupt or unreadable image file(s): {listed}{more}. Delete or replace '
        'them (or re-export the dataset).')
  return sizes, counts, sums, sums_sq


def _as_dataset(paths: List[str], labels: List[int], size: int) -> tf.data.Dataset:
  dataset = tf.data.Dataset.from_tensor_slices(
      (tf.constant(paths, tf.string), tf.constant(labels, tf.int64)))
  return dataset.map(lambda path, label: (augment.resize_to_square(_decode(path), size), label),
                     num_parallel_calls=tf.data.AUTOTUNE)


def _native_size(sizes: np.ndarray) -> int:
  """One shared square size: the common size when all images agree, else the median short side."""
  if len(np.unique(sizes, axis=0)) == 1 and sizes[0, 0] == sizes[0, 1]:
    return int(sizes[0, 0])
  return int(np.median(sizes.min(axis=1)))


@registry.register('image_folder', argument='optional')
def load(request: registry.LoadRequest) -> splits_lib.DatasetSplits:
  """Images in <root>/<split>/<class>/; options `image_size` (int) and `verify` (bool)."""
  options = request.take_options({'image_size': None, 'verify': True})
  root = request.argument or request.data_dir
  if not root:
    raise errors.ConfigError(
        'dataset image_folder needs its root folder: name it "image_folder:<root>" or pass '
        f'data_dir=<root> (layout {LAYOUT})')
  image_size = options['image_size']
  if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                 or image_size <= 0):
    raise errors.ConfigError(f'image_folder option image_size must be a positive integer, '
                             f'got {image_size!r}')
  folders = _split_folders(root)
  train_paths, train_labels, classes = _list_split(folders['train'], None)
  listed = {'train': (train_paths, train_labels)}
  for split in ('val', 'test'):
    if folders[split]:
      listed[split] = _list_split(folders[split], classes)[:2]
  if 'val' not in listed and 'test' not in listed:
    raise errors.DataError(
        f'image folder {root} has train/ but neither test/ nor val/; a held-out test set is '
        f'needed (layout {LAYOUT})')

  # Validation: the val/ folder when test/ also exists, else a seeded share of train/.
  if 'val' in listed and 'test' in listed:
    validation_paths, validation_labels = listed['val']
    test_paths, test_labels = listed['test']
    kept = np.arange(len(train_paths))
  else:
    test_paths, test_labels = listed['test'] if 'test' in listed else listed['val']
    held_out = splits_lib.holdout_mask(len(train_paths), request.validation_fraction, request.seed)
    validation_paths = [train_paths[i] for i in np.flatnonzero(held_out)]
    validation_labels = [train_labels[i] for i in np.flatnonzero(held_out)]
    kept = np.flatnonzero(~held_out)
  # Store training images in a seeded mixed order (not class by class), so a bounded shuffle
  # buffer in the pipeline still mixes classes.
  kept = kept[splits_lib.seeded_order(len(kept), request.seed, 'image-folder-train')]
  paths = [train_paths[i] for i in kept]
  labels = [train_labels[i] for i in kept]

  if options['verify']:
    separate_validation = validation_paths if 'val' in listed and 'test' in listed else []
    sizes, counts, sums, sums_sq = probe_images(train_paths + separate_validation + test_paths)
    train_rows = slice(0, len(train_paths))
  else:
    sample = [train_paths[i] for i in splits_lib.seeded_order(len(train_paths), 0)[:_SAMPLE_SIZE]]
    sizes, counts, sums, sums_sq = probe_images(sample)
    train_rows = slice(0, len(sample))
  moments = stats_lib.ChannelMoments()
  moments.add(counts[train_rows].sum(), sums[train_rows].sum(0), sums_sq[train_rows].sum(0))
  mean, std = moments.result()
  size = image_size or _native_size(sizes[train_rows])
  logging.info('image_folder %s: %d classes, %d/%d/%d train/validation/test images, size %d, '
               'mean %s, std %s', root, len(classes), len(paths), len(validation_paths),
               len(test_paths), size, mean, std)
  return splits_lib.DatasetSplits(
      name=request.name,
      train=_as_dataset(paths, labels, size),
      validation=_as_dataset(validation_paths, validation_labels, size),
      test=_as_dataset(test_paths, test_labels, size),
      num_classes=len(classes),
      class_names=tuple(classes),
      mean=mean,
      std=std,
      native_size=size,
      train_size=len(paths),
      validation_size=len(validation_paths),
      test_size=len(test_paths))
