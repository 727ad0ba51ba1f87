"""Datasets and input pipelines for OFAv2 training, evaluation and search.

Typical use by the trainer:

    splits = data.load('tiny_imagenet', data_dir=..., manual_dir=..., seed=0)
    train = data.train_batches(splits, 64, data.resolution_range(48, 64, 4), seed=0)
    val = data.eval_batches(splits, 256, 64, split='validation')

`load` returns a `DatasetSplits` of unbatched uint8 images; `pipeline` batches, augments and
normalises them. Importing this package registers every dataset in `registry.DATASETS`.
"""

# Loader modules register themselves on import.
from ofav2_tf.data import fashion_mnist  # pylint: disable=unused-import
from ofav2_tf.data import image_folder  # pylint: disable=unused-import
from ofav2_tf.data import tfds_catalog  # pylint: disable=unused-import
from ofav2_tf.data import tiny_imagenet  # pylint: disable=unused-import
from ofav2_tf.data.pipeline import calibration_batches
from ofav2_tf.data.pipeline import calibration_images
from ofav2_tf.data.pipeline import eval_batches
from ofav2_tf.data.pipeline import resolution_range
from ofav2_tf.data.pipeline import steps_per_epoch
from ofav2_tf.data.pipeline import train_batches
from ofav2_tf.data.registry import DATASETS
from ofav2_tf.data.registry import load
from ofav2_tf.data.registry import names
from ofav2_tf.data.splits import DatasetSplits

__all__ = [
    'DATASETS', 'DatasetSplits', 'calibration_batches', 'calibration_images', 'eval_batches',
    'load', 'names', 'resolution_range', 'steps_per_epoch', 'train_batches',
]
