"""The `tfds:<name>` datasets: image classification datasets of the TFDS catalog (cifar10, ...).

For users with internet: TFDS downloads and prepares the dataset once into its data directory.
The project split convention applies (15% of `train` held out by seed for validation; `test`, or
else `validation`, as the test set). Normalisation statistics are measured on training images,
since the catalog does not publish them.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

from ofav2_tf import errors
from ofav2_tf.data import augment
from ofav2_tf.data import registry
from ofav2_tf.data import splits as splits_lib
from ofav2_tf.data import stats as stats_lib

CATALOG_URL = 'https://www.tensorflow.org/datasets/catalog/overview'


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _builder(name: str, data_dir):
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.RegistryError(
        f'unknown TFDS dataset {name!r}; see {CATALOG_URL} or tfds.list_builders() for '
        'names') from None


def _prepare(builder, name: str, request: registry.LoadRequest) -> None:
  if builder.is_prepared():
    return
  where = builder.data_dir
  if not request.download:
    raise errors.DataError(
        f'TFDS dataset {name!r} is not prepared in {where} and downloading is disabled; allow '
        'downloading, or prepare it on a machine with internet and copy that folder here')
  config = tfds.download.DownloadConfig(manual_dir=request.manual_dir)
  try:
    builder.download_and_prepare(download_config=config)
  except errors.OFAError:
    raise
  except Exception as e:  # pylint: disable=broad-except; download/prepare failures vary widely.
    raise errors.DataError(
        f'could not download and prepare TFDS dataset {name!r} into {where}: '
        f'{type(e).__name__}: {_first_line(e)}. TFDS needs internet for this (or, for datasets '
        'with manual downloads, the files in manual_dir); on an offline machine copy a prepared '
        'TFDS data directory and pass it as data_dir') from None


def _image_and_label_keys(builder, name: str):
  features = builder.info.features
  keys = builder.info.supervised_keys
  if (not keys or len(keys) != 2 or not isinstance(keys[0], str)
      or not isinstance(features[keys[0]], tfds.features.Image)
      or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
    raise errors.ConfigError(
        f'TFDS dataset {name!r} is not an image classification dataset (needs supervised keys '
        f'(image, class label)); its features are {features}')
  return keys


@registry.register('tfds', argument='required')
def load(request: registry.LoadRequest) -> splits_lib.DatasetSplits:
  """A TFDS catalog dataset, e.g. tfds:cifar10; options `image_size`, `stats_images`."""
  options = request.take_options({'image_size': None, 'stats_images': 5000})
  name = request.argument
  builder = _builder(name, request.data_dir)
  image_key, label_key = _image_and_label_keys(builder, name)
  _prepare(builder, name, request)
  available = builder.info.splits
  if 'train' not in available:
    raise errors.DataError(f'TFDS dataset {name!r} has no train split (splits: {list(available)})')
  test_split = next((s for s in ('test', 'validation') if s in available), None)
  if test_split is None:
    raise errors.DataError(
        f'TFDS dataset {name!r} has neither a test nor a validation split (splits: '
        f'{list(available)}); the project needs one as its test set')
  height, width, channels = builder.info.features[image_key].shape
  size = options['image_size'] or (height if height and height == width else None)
  if size is None:
    raise errors.ConfigError(
        f'TFDS dataset {name!r} has images of shape {(height, width)}, not one square size; '
        'pass the option image_size=<side> to resize them')
  label_names = builder.info.features[label_key].names

  decode_image = builder.info.features[image_key].decode_example

  def read_encoded(split: str) -> tf.data.Dataset:
    # Images stay encoded until after the hold-out filter, so discarded ones are never decoded.
    return builder.as_dataset(split=split, shuffle_files=False, as_supervised=True,
                              decoders={image_key: tfds.decode.SkipDecoding()})

  def decoded(dataset: tf.data.Dataset) -> tf.data.Dataset:
    def standardise(encoded, label):
      image = decode_image(encoded)
      if channels == 1:
        image = tf.image.grayscale_to_rgb(image)
      if (height, width) != (size, size):
        image = augment.resize_to_square(image, size)
      return image, tf.cast(label, tf.int64)

    return dataset.map(standardise, num_parallel_calls=tf.data.AUTOTUNE)

  num_train = available['train'].num_examples
  held_out = splits_lib.holdout_mask(num_train, request.validation_fraction, request.seed)
  train, validation = (decoded(d) for d in
                       splits_lib.split_by_mask(read_encoded('train'), held_out))
  mean, std = stats_lib.dataset_stats(train.map(lambda image, _: image), options['stats_images'])
  return splits_lib.DatasetSplits(
      name=request.name,
      train=train,
      validation=validation,
      test=decoded(read_encoded(test_split)),
      num_classes=len(label_names),
      class_names=tuple(label_names),
      mean=mean,
      std=std,
      native_size=int(size),
      train_size=int((~held_out).sum()),
      validation_size=int(held_out.sum()),
      test_size=available[test_split].num_examples)
