"""The `tiny_imagenet` dataset: prepares it with the TFDS builder once, then splits it.

Project convention (as in the OFAv2 paper): 15% of the official training set, chosen by seed, is
the validation set used to pick checkpoints; the official validation set is the test set.
"""

import os
import sys
from typing import List, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from ofav2_tf import errors
from ofav2_tf.data import registry
from ofav2_tf.data import splits as splits_lib
from ofav2_tf.data import tiny_imagenet_builder
from ofav2_tf.data import tiny_imagenet_classes

# Per-channel statistics of the official training images, in [0, 1] units.
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2770, 0.2691, 0.2821)


def default_data_dir() -> str:
  """TFDS's default data directory (honours the `TFDS_DATA_DIR` environment variable)."""
  return os.fspath(tfds.core.constants.DATA_DIR)


def prepare(data_dir: Optional[str] = None,
            manual_dir: Optional[str] = None,
            source: Optional[str] = None,
            download: bool = True) -> tfds.core.DatasetBuilder:
  """Prepares the TFDS records if needed and returns the builder.

  Args:
    data_dir: TFDS data directory for the prepared records.
    manual_dir: Where to look for the archive (default `<data_dir>/downloads/manual`).
    source: An archive or extracted folder to use instead of looking in `manual_dir`.
    download: Whether the official zip may be downloaded when no local copy is found.

  Raises:
    errors.DataError: No usable copy found (the message says where it looked and how to get one),
      or the copy is corrupt.
  """
  data_dir = data_dir or default_data_dir()
  manual_dir = manual_dir or os.path.join(data_dir, 'downloads', 'manual')
  builder = tiny_imagenet_builder.TinyImagenet(
      data_dir=data_dir, source=source, allow_download=download)
  if not builder.is_prepared():
    found, looked = tiny_imagenet_builder.find_local(source, manual_dir)
    if not found and not download:
      # Fail before TFDS creates folders and announces a preparation that cannot happen.
      raise errors.DataError(tiny_imagenet_builder.not_found_message(looked, None))
    # A failed preparation (a wrong manual_dir, a truncated archive) must not leave the empty
    # folders TFDS makes on its way in: a user would take them for a prepared dataset.
    candidates = _folders_tfds_makes(data_dir, builder)
    new = [path for path in candidates if not os.path.exists(path)]
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except BaseException:
      sys.stderr.write('\n')  # end the line of TFDS's progress bar: the error gets its own
      sys.stderr.flush()
      _remove_empty(new)
      raise
  return builder


def _folders_tfds_makes(data_dir: str, builder: tfds.core.DatasetBuilder) -> List[str]:
  """Innermost first, so that a parent is considered after its children."""
  dataset = os.path.join(data_dir, builder.name)
  downloads = os.path.join(data_dir, 'downloads')
  return [os.path.join(dataset, str(builder.version)), dataset,
          os.path.join(downloads, 'extracted'), os.path.join(downloads, 'manual'), downloads,
          data_dir]


def _remove_empty(folders: List[str]) -> None:
  """Removes each folder (and its sub-folders) if it holds no file; never removes a file."""
  for folder in folders:
    for directory, _, _ in sorted(os.walk(folder, topdown=False), key=lambda w: -len(w[0])):
      try:
        os.rmdir(directory)
      except OSError:
        pass  # not empty, or already gone


def _read_encoded(builder: tfds.core.DatasetBuilder, split: str) -> tf.data.Dataset:
  """The split's (encoded image, label) pairs in stored order, for splitting before decoding.

  No file shuffling: the hold-out selects examples by position. Decoding after the hold-out
  filter avoids decoding the 85% of images the validation set throws away (and vice versa).
  """
  dataset = builder.as_dataset(split=split, shuffle_files=False, as_supervised=True,
                               decoders={'image': tfds.decode.SkipDecoding()})
  return dataset.map(lambda image, label: (image, tf.cast(label, tf.int64)))


def _decoded(builder: tfds.core.DatasetBuilder, dataset: tf.data.Dataset) -> tf.data.Dataset:
  decode = builder.info.features['image'].decode_example
  return dataset.map(lambda image, label: (decode(image), label),
                     num_parallel_calls=tf.data.AUTOTUNE)


@registry.register('tiny_imagenet')
def load(request: registry.LoadRequest) -> splits_lib.DatasetSplits:
  """Tiny ImageNet (200 classes, 64x64) via the project's TFDS builder; option `source`."""
  options = request.take_options({'source': None})
  builder = prepare(request.data_dir, request.manual_dir, options['source'], request.download)
  num_train = builder.info.splits['train'].num_examples
  held_out = splits_lib.holdout_mask(num_train, request.validation_fraction, request.seed)
  train, validation = splits_lib.split_by_mask(_read_encoded(builder, 'train'), held_out)
  if builder.info.features['label'].names != list(tiny_imagenet_classes.WNIDS):
    raise errors.DataError(
        f'the prepared Tiny ImageNet in {builder.data_dir} has a different class list than this '
        'code; delete that folder to prepare it again')
  return splits_lib.DatasetSplits(
      name=request.name,
      train=_decoded(builder, train),
      validation=_decoded(builder, validation),
      test=_decoded(builder, _read_encoded(builder, 'test')),
      num_classes=len(tiny_imagenet_classes.WNIDS),
      class_names=tuple(tiny_imagenet_classes.WNIDS),
      mean=MEAN,
      std=STD,
      native_size=tiny_imagenet_builder.IMAGE_SIZE,
      train_size=int((~held_out).sum()),
      validation_size=int(held_out.sum()),
      test_size=builder.info.splits['test'].num_examples)
