"""Prepares a dataset ahead of training and reports its splits and input-pipeline speed.

    python -m ofav2_tf.data.prepare --dataset=tiny_imagenet --manual_dir=/path/to/archive_dir

Preparing Tiny ImageNet takes about a minute on 2 cores; doing it once up front keeps that out
of the first training run, and the throughput figure tells whether the input pipeline or the
model will bound training speed on this machine.

Every failure ends with one `error:` line and the exit status of its kind, as in
`python -m ofav2_tf.main` (`ofav2_tf.cli`): 2 for a mistake (an unknown dataset, a missing folder, a
bad flag), 3 for a folder that cannot be written, 1 for a bug (`--traceback` prints it). Unlike there, `cli.quiet_cuda_probe`
cannot help here: `-m` imports the package `ofav2_tf.data`, and with it TensorFlow, before this
file's first line.
"""

import time

from absl import app
from absl import flags

from ofav2_tf import cli
from ofav2_tf import data

_DATASET = flags.DEFINE_string('dataset', 'tiny_imagenet', 'Dataset name (see ofav2_tf.data).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Dataset / TFDS data directory.')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder holding downloaded archives.')
_DOWNLOAD = flags.DEFINE_bool('download', True, 'Allow downloading missing data.')
_BATCHES = flags.DEFINE_integer(
    'benchmark_batches', 50, 'Training batches to time after preparing (0: skip).', lower_bound=0)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Batch size of the timing run.',
                                   lower_bound=1)
_RESOLUTIONS = flags.DEFINE_list('resolutions', None,
                                 'Sizes of the timing run (default: the native size).')
_TRACEBACK = flags.DEFINE_boolean('traceback', False,
                                  'On a failure, print the traceback under the error: line.')
flags.register_validator(
    'resolutions', lambda v: not v or all(r.strip().isdigit() and int(r) > 0 for r in v),
    message='--resolutions must be a comma-separated list of positive integers, e.g. 56,64')


def main(argv):
  del argv  # Unused.
  try:
    _prepare_and_time()
  except Exception as e:  # pylint: disable=broad-except
    # Not app.UsageError, which would print the whole flag help above the message.
    cli.report_failure(e, show_traceback=_TRACEBACK.value)


def _prepare_and_time():
  start = time.perf_counter()
  splits = data.load(_DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
                     download=_DOWNLOAD.value)
  print(f'{splits.name}: {splits.num_classes} classes, native size {splits.native_size}, '
        f'train/validation/test = {splits.train_size}/{splits.validation_size}/'
        f'{splits.test_size}, mean {splits.mean}, std {splits.std}; ready in '
        f'{time.perf_counter() - start:.1f} s')
  if not _BATCHES.value:
    return
  resolutions = [int(r) for r in _RESOLUTIONS.value or [splits.native_size]]
  batches = data.train_batches(splits, _BATCH_SIZE.value, resolutions, seed=0,
                               take=_BATCHES.value + 5)
  iterator = iter(batches)
  for _ in range(5):  # Fill the shuffle buffer and warm up before timing.
    next(iterator)
  start, cpu_start = time.perf_counter(), time.process_time()
  count = sum(int(images.shape[0]) for images, _ in iterator)
  elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  # CPU time per image is the figure that survives a busy machine; wall rate is what you get.
  print(f'train_batches: {count / elapsed:.0f} images/s, {1000 * cpu / count:.2f} CPU-ms per '
        f'image ({_BATCHES.value} batches of {_BATCH_SIZE.value} at {resolutions})')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
