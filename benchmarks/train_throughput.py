"""Benchmark: images/s of the phase trainer's `fit` against a plain Keras `fit` of the static max net.

The issue's goal: the trainer's cost per sub-network stays within 1.2x of a plain `fit` of the
same static network, and the input pipeline is not the bottleneck. In one run, on the same batches
(the run driver's `pipeline.train_batches` at one resolution, zipped with the phase's
`ArchSampler` stream as `training_run` does), it times:

  - pipeline:      iterating the trainer's input alone (decode, shuffle, augment, normalise, archs);
  - static_max:    the extracted max sub-network (last exit only) with `compile(SGD, sparse CE)` and
                   `fit` (plain Keras, traced train function);
  - trainer_max:   `ElasticTrainer` on the max sub-network fixed (`ArchSampler(fixed=max)`), n=1,
                   with the ENS-KD teacher a real run has (the same sub-network as static_max);
  - trainer_max_no_kd: the same without a teacher (the trainer's own overhead, KD excluded);
  - trainer_max_n4: the max sub-network fixed, n=4, KD (the expand phase's cost shape, same net);
  - trainer_kernel: the kernel phase as run (sampled kernels, n=1, KD);
  - trainer_expand: the expand2 phase as run (everything elastic, n=4, KD).

The teacher is extracted (all five exits, BN re-calibrated) from the same supernet, as the run
driver does at the start of a phase. The trainer is compiled like the run driver compiles it
(`run_eagerly=True` by default; `--norun_eagerly` measures Keras' traced `train_step` instead).

Each measurement is one `fit` call (or one pass of the pipeline) of `--warmup_steps` untimed steps
(a fresh iterator fills its shuffle buffer) and `--steps_per_chunk` timed steps; a repeat runs
every contestant once, in an order rotated each repeat, so machine noise (the machine is shared)
hits all of them alike. Tracing happens in an untimed first fit of each contestant. Medians over
the repeats give images/s; the cost ratios are seconds per image per sub-network of a trainer over
seconds per image of static_max (the goal is <= 1.2 for the same sub-network). The sampled
sub-networks of the kernel and expand phases are smaller than the max on average, so their ratios
come with the mean MACs of the timed sub-networks relative to the max.

Prints one JSON line.

Usage:
  python -m benchmarks.train_throughput [--data=tiny_imagenet] [--data_dir=...] [--resolution=64]
      [--batch=64] [--variant=EE_D] [--width_multiplier=1.0] [--repeats=5] [--steps_per_chunk=8]
  Quick smoke run: python -m benchmarks.train_throughput --data=fashion_mnist --resolution=32
      --repeats=1
"""

import json
import os
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import costs
from ofav2_tf import data
from ofav2_tf import errors
from ofav2_tf import extraction
from ofav2_tf import phases
from ofav2_tf import run_config as run_config_lib
from ofav2_tf import supernet as supernet_lib
from ofav2_tf import teacher as teacher_lib
from ofav2_tf import trainer as trainer_lib
from ofav2_tf.data import pipeline

# Where the project keeps the real Tiny ImageNet archive (../shared/data, see its README).
_SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
                            'data')

_DATA = flags.DEFINE_string('data', 'tiny_imagenet',
                            'Dataset name (tiny_imagenet; fashion_mnist for a quick smoke run).')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Dataset folder as `data.load` reads it (tiny_imagenet: the TFDS data_dir '
    'where it is prepared on first use, about a minute; default TFDS\' own).')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder holding tiny-imagenet-200.tar.gz/.zip (default: the project\'s '
    '../shared/data when it exists).')
_VARIANT = flags.DEFINE_string('variant', 'EE_D', 'Supernet variant.')
_WIDTH = flags.DEFINE_float('width_multiplier', 1.0, 'Width multiplier.', lower_bound=0.1)
_RESOLUTION = flags.DEFINE_integer('resolution', 64, 'Input resolution of every batch.',
                                   lower_bound=32)
_BATCH = flags.DEFINE_integer('batch', 64, 'Batch size.', lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed chunks per contestant (median taken).',
                                lower_bound=1)
_STEPS = flags.DEFINE_integer('steps_per_chunk', 8, 'Timed steps per chunk.', lower_bound=1)
_WARMUP = flags.DEFINE_integer('warmup_steps', 1,
                               'Untimed steps at the start of every chunk (iterator start-up).',
                               lower_bound=1)
_CALIBRATION = flags.DEFINE_integer('calibration_images', 256,
                                    'Images for the teacher\'s BN re-calibration.', lower_bound=1)
_RUN_EAGERLY = flags.DEFINE_bool('run_eagerly', True,
                                 'Compile the trainer with run_eagerly (as the run driver does).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the data, sampler and weights.')

_SUBNETS_MAX_N4 = 4


class _ChunkTimer(tf_keras.callbacks.Callback):
  """Seconds from the end of the last warm-up step to the end of the last step of one `fit`."""

  def __init__(self, warmup_steps: int):
    super().__init__()
    self._supports_tf_logs = True  # No per-step conversion of the logs to numpy.
    self.warmup_steps = warmup_steps
    self.start = self.end = None

  def on_train_batch_end(self, batch, logs=None):
    now = time.perf_counter()
    if batch == self.warmup_steps - 1:
      self.start = now
    self.end = now

  @property
  def seconds(self) -> float:
    return self.end - self.start


class _Contestant:
  """One model fitted on `make_data(chunk)`; `run` returns the timed seconds of one chunk."""

  def __init__(self, name, model, make_data, subnets_per_step=1, sampler=None):
    self.name, self.model, self.make_data = name, model, make_data
    self.subnets_per_step, self.sampler = subnets_per_step, sampler

  def run(self, chunk: int, warmup: int, steps: int) -> float:
    timer = _ChunkTimer(warmup)
    self.model.fit(self.make_data(chunk), epochs=1, steps_per_epoch=warmup + steps,
                   callbacks=[timer], verbose=0)
    return timer.seconds


def _pipeline_seconds(dataset, warmup: int, steps: int) -> float:
  iterator = iter(dataset)
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  return time.perf_counter() - start


def _load_splits():
  manual_dir = _MANUAL_DIR.value
  if manual_dir is None and _DATA.value.partition(':')[0] == 'tiny_imagenet' and os.path.isdir(
      _SHARED_DATA):
    manual_dir = os.path.normpath(_SHARED_DATA)
  kwargs = {'seed': _SEED.value, 'download': False}
  if _DATA_DIR.value is not None:
    kwargs['data_dir'] = _DATA_DIR.value
  if manual_dir is not None:
    kwargs['manual_dir'] = manual_dir
  return data.load(_DATA.value, **kwargs)


def _phase(variant: str, name: str):
  """The phase spec and its index in the variant's schedule (the sampler's seed uses it)."""
  schedule = phases.schedule(variant)
  for index, spec in enumerate(schedule):
    if spec.name == name:
      return spec, index
  raise errors.ConfigError(f'phase {name!r} does not apply to variant {variant}')


def _mean_macs(sampler, chunk_steps, repeats, warmup, variant, num_classes, width):
  """Mean MACs of the sub-networks of the timed steps (the chunks' own start steps)."""
  macs = []
  for chunk in range(1, repeats + 1):
    for step in range(chunk * chunk_steps + warmup, (chunk + 1) * chunk_steps):
      for config in sampler.configs(step):
        macs.append(costs.count(config, variant, num_classes, width).macs)
  return float(np.mean(macs))


def measure(splits) -> dict:
  """Builds every contestant, warms each up (tracing), then times interleaved chunks."""
  defaults = run_config_lib.RunConfig()
  variant, resolution, batch = _VARIANT.value, _RESOLUTION.value, _BATCH.value
  warmup, steps, repeats = _WARMUP.value, _STEPS.value, _REPEATS.value
  chunk_steps = warmup + steps
  num_classes = splits.num_classes
  tf_keras.utils.set_random_seed(_SEED.value)
  supernet = supernet_lib.build_supernet(variant, num_classes, width_multiplier=_WIDTH.value)
  full = supernet.search_space(resolutions=(resolution,))
  max_config = full.max_config(resolution)
  gradients = trainer_lib.SubnetGradients(supernet, defaults.label_smoothing)

  calibration = pipeline.calibration_batches(
      splits, pipeline.calibration_images(splits, _CALIBRATION.value, _SEED.value), resolution)
  teacher = teacher_lib.extract_teacher(supernet, max_config, calibration)
  static = extraction.extract(supernet, max_config, name='static_max')

  def batches(chunk, phase_index):
    return pipeline.train_batches(splits, batch, (resolution,),
                                  pipeline.derive_seed(_SEED.value, 'phase', phase_index),
                                  epoch=chunk)

  kernel_spec, kernel_index = _phase(variant, 'kernel')
  expand_spec, expand_index = _phase(variant, 'expand2')

  def trainer(name, spec, index, n, fixed=None, with_teacher=True):
    sampler = trainer_lib.ArchSampler(spec.space(full), n, _SEED.value, index, fixed=fixed)
    model = trainer_lib.ElasticTrainer(
        supernet, gradients, teacher=teacher if with_teacher else None,
        kd_weight=defaults.kd_weight, weight_decay=defaults.weight_decay)
    optimizer = tf_keras.optimizers.SGD(
        trainer_lib.CosineWithWarmup(spec.reference_lr, 100000), momentum=defaults.momentum,
        nesterov=True)
    model.compile(optimizer=optimizer, run_eagerly=_RUN_EAGERLY.value)
    # Every chunk draws fresh sub-networks (start step = chunk * chunk_steps), like a run does.
    make_data = lambda chunk: tf.data.Dataset.zip(
        (batches(chunk, index), sampler.dataset(start_step=chunk * chunk_steps)))
    return _Contestant(name, model, make_data, n, sampler)

  static.compile(
      optimizer=tf_keras.optimizers.SGD(kernel_spec.reference_lr, momentum=defaults.momentum,
                                        nesterov=True),
      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy'])
  contestants = [
      _Contestant('static_max', static, lambda chunk: batches(chunk, kernel_index)),
      trainer('trainer_max', kernel_spec, kernel_index, 1, fixed=max_config),
      trainer('trainer_max_no_kd', kernel_spec, kernel_index, 1, fixed=max_config,
              with_teacher=False),
      trainer('trainer_max_n4', expand_spec, expand_index, _SUBNETS_MAX_N4, fixed=max_config),
      trainer('trainer_kernel', kernel_spec, kernel_index, kernel_spec.subnets_per_step),
      trainer('trainer_expand', expand_spec, expand_index, expand_spec.subnets_per_step),
  ]
  expand = contestants[-1]
  # The trainer's whole input (batches and the expand phase's 4 sub-networks per step).
  pipeline_data = expand.make_data

  first_fit_seconds = {}
  for contestant in contestants:  # Chunk 0: tracing and first-call costs, untimed.
    start = time.perf_counter()
    contestant.run(0, warmup, 1)
    first_fit_seconds[contestant.name] = round(time.perf_counter() - start, 1)
  _pipeline_seconds(pipeline_data(0), warmup, steps)

  names = ['pipeline'] + [c.name for c in contestants]
  runners = {'pipeline': lambda chunk: _pipeline_seconds(pipeline_data(chunk), warmup, steps)}
  runners.update({c.name: (lambda chunk, c=c: c.run(chunk, warmup, steps)) for c in contestants})
  times = {name: [] for name in names}
  for repeat in range(repeats):
    chunk = repeat + 1
    shift = repeat % len(names)
    for name in names[shift:] + names[:shift]:
      times[name].append(runners[name](chunk))

  images = batch * steps
  median = {name: statistics.median(values) for name, values in times.items()}
  per_s = {name: images / seconds for name, seconds in median.items()}
  n = {c.name: c.subnets_per_step for c in contestants}
  per_subnet = {c.name: per_s[c.name] * n[c.name] for c in contestants}
  static_per_s = per_s['static_max']
  max_macs = costs.count(max_config, variant, num_classes, _WIDTH.value).macs
  by_name = {c.name: c for c in contestants}
  mean_macs = {name: _mean_macs(by_name[name].sampler, chunk_steps, repeats, warmup, variant,
                                num_classes, _WIDTH.value) / max_macs
               for name in ('trainer_kernel', 'trainer_expand')}
  trainers = [c.name for c in contestants[1:]]
  return {
      'images_per_s': {name: round(value, 1) for name, value in per_s.items()},
      'subnet_images_per_s': {name: round(per_subnet[name], 1) for name in trainers},
      'subnets_per_step': {name: n[name] for name in trainers},
      'median_chunk_seconds': {name: round(value, 3) for name, value in median.items()},
      # Seconds per image per sub-network, trainer over static_max: the goal is <= 1.2
      # for the same sub-network (trainer_max*, whose sub-network is static_max's).
      'cost_ratio_over_static': {name: round(static_per_s / per_subnet[name], 3)
                                 for name in trainers},
      'target_cost_ratio': 1.2,
      'sampled_mean_macs_over_max': {name: round(value, 3) for name, value in mean_macs.items()},
      # The pipeline's own speed over what each consumer takes (> 1: not the bottleneck).
      'pipeline_over_consumer': {name: round(per_s['pipeline'] / per_s[name], 2)
                                 for name in names[1:]},
      'first_fit_seconds': first_fit_seconds,
      'trace_count': gradients.trace_count,
  }


def main(argv):
  del argv
  load_before = os.getloadavg()
  splits = _load_splits()
  result = measure(splits)
  print(json.dumps({
      'benchmark': 'train_throughput', 'data': _DATA.value, 'variant': _VARIANT.value,
      'width_multiplier': _WIDTH.value, 'num_classes': splits.num_classes,
      'resolution': _RESOLUTION.value, 'batch': _BATCH.value, 'repeats': _REPEATS.value,
      'steps_per_chunk': _STEPS.value, 'warmup_steps': _WARMUP.value,
      'run_eagerly': _RUN_EAGERLY.value,
      'threads': tf.config.threading.get_intra_op_parallelism_threads() or 'default',
      'load_average_start': [round(x, 2) for x in load_before],
      'load_average_end': [round(x, 2) for x in os.getloadavg()],
      **result}))


if __name__ == '__main__':
  app.run(main)
