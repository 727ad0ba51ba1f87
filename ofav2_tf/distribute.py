"""Distribution strategies by name, and the per-replica split of the trainer's step stream.

`get_strategy(name)` returns one of:
- 'default': no distribution (TensorFlow's default strategy, one device);
- 'mirrored': `MirroredStrategy` over this machine's GPUs, or over its logical CPU devices when it
  has none (call `split_cpu(n)` first, before TensorFlow touches any device, to get n of them);
- 'multi_worker': `MultiWorkerMirroredStrategy` over the cluster described by `TF_CONFIG`. Every
  worker runs the same program; create the strategy before any other TensorFlow work.

Build the supernet, the teacher, `SubnetGradients` and `ElasticTrainer` and call `compile` inside
`strategy.scope()`; `ElasticTrainer.fit` then calls `per_replica_steps` on its dataset.

Semantics of a distributed step (data parallelism, as in OFA's own Horovod training): each replica
runs every sub-network of the step on its shard of the global batch, with batch-norm statistics of
that shard; the gradients are averaged over replicas, so with R replicas the update equals the
mean of R single-device steps on the R shards (tests/distributed_test.py checks exactly that).
It equals one step on the whole global batch only up to BN's batch statistics, which are
per-shard (synchronised BN would need collectives inside the supernet's conds and nested
functions, which MirroredStrategy does not support). BN moving statistics are averaged across
replicas after every step, so every replica, and a checkpoint, holds the same values.

The trainer's step runs eagerly under a strategy too (see `ElasticTrainer.compile`); the compiled
gradient functions are traced once per local device (MirroredStrategy keeps one graph per
device), i.e. once per run on each worker of a multi-worker cluster with one device per worker.
"""

import json
import os
from typing import Callable

import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import registry

STRATEGIES = registry.Registry[Callable[[], tf.distribute.Strategy]]('distribution')


@STRATEGIES.register('default')
def _default_strategy() -> tf.distribute.Strategy:
  return tf.distribute.get_strategy()


@STRATEGIES.register('mirrored')
def _mirrored_strategy() -> tf.distribute.Strategy:
  # MirroredStrategy() alone takes every GPU, or only CPU:0 on a machine without GPUs; list the
  # logical CPUs explicitly so that `split_cpu` devices are used.
  if tf.config.list_logical_devices('GPU'):
    return tf.distribute.MirroredStrategy()
  return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices('CPU')])


@STRATEGIES.register('multi_worker')
def _multi_worker_strategy() -> tf.distribute.Strategy:
  check_tf_config(os.environ.get('TF_CONFIG'))
  try:
    return tf.distribute.MultiWorkerMirroredStrategy()
  except RuntimeError as e:  # collective ops can only be configured before TF initialises
    raise errors.ConfigError(
        f'cannot start the multi_worker strategy ({e}); create it before any other TensorFlow '
        'work (first thing in the program)') from None


def get_strategy(name: str) -> tf.distribute.Strategy:
  """The strategy registered as `name` ('default', 'mirrored', 'multi_worker')."""
  return STRATEGIES.get(name)()


def check_tf_config(tf_config) -> dict:
  """Parses and validates a TF_CONFIG string; raises ConfigError naming what is wrong."""
  example = ('{"cluster": {"worker": ["host1:port", "host2:port"]}, '
             '"task": {"type": "worker", "index": 0}}')
  if not tf_config:
    raise errors.ConfigError(f'the multi_worker strategy needs the TF_CONFIG environment variable, '
                             f'e.g. TF_CONFIG=\'{example}\'')
  try:
    config = json.loads(tf_config)
  except json.JSONDecodeError as e:
    raise errors.ConfigError(f'TF_CONFIG is not valid JSON ({e}); expected e.g. {example}') from None
  cluster = config.get('cluster') if isinstance(config, dict) else None
  task = config.get('task') if isinstance(config, dict) else None
  if not isinstance(cluster, dict) or not any(
      isinstance(cluster.get(job), list) and cluster.get(job) for job in ('chief', 'worker')):
    raise errors.ConfigError(f'TF_CONFIG has no "cluster" with a non-empty "worker" or "chief" '
                             f'address list: {tf_config!r}; expected e.g. {example}')
  if not isinstance(task, dict) or task.get('type') not in cluster:
    raise errors.ConfigError(f'TF_CONFIG "task" must name a job of the cluster '
                             f'({", ".join(cluster)}): got {task!r}')
  index = task.get('index', 0)
  if not isinstance(index, int) or not 0 <= index < len(cluster[task['type']]):
    raise errors.ConfigError(f'TF_CONFIG task index {index!r} is outside 0..'
                             f'{len(cluster[task["type"]]) - 1} of job {task["type"]!r}')
  return config


def split_cpu(n: int) -> None:
  """Splits the CPU into `n` logical devices (for the 'mirrored' strategy without GPUs).

  TensorFlow fixes its devices the first time it runs anything, so this must be called before
  any other TensorFlow work; later calls raise ConfigError instead of silently doing nothing.
  """
  if not isinstance(n, int) or n < 1:
    raise errors.ConfigError(f'split_cpu needs a positive number of devices, got {n!r}')
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
  except RuntimeError:
    raise errors.ConfigError(
        f'split_cpu({n}) must run before TensorFlow initialises its devices (before any tensor, '
        'model or strategy is created)') from None


def num_replicas(strategy=None) -> int:
  """Replicas in sync of `strategy` (the current one if None)."""
  return (strategy or tf.distribute.get_strategy()).num_replicas_in_sync


def check_created_in_scope(strategy, variables, what: str) -> None:
  """Raises ConfigError unless every variable belongs to `strategy` (built in its scope)."""
  if num_replicas(strategy) == 1 and not any(
      isinstance(v, tf.distribute.DistributedValues) for v in variables):
    return
  if not all(strategy.extended.variable_created_in_scope(v) for v in variables):
    raise errors.ConfigError(
        f'the {what} was not built inside the scope of the trainer\'s distribution strategy; '
        'build the supernet, teacher, SubnetGradients and ElasticTrainer (and compile) inside '
        '`with strategy.scope():`')


def per_replica_steps(strategy: tf.distribute.Strategy,
                      dataset: tf.data.Dataset):
  """Distributes a dataset of ((images, labels), archs) steps over the replicas of `strategy`.

  Every element is one step: a global batch and the arrays of that step's n sub-networks. Keras'
  own distribution would split *every* component along its first axis, cutting the arch arrays
  (whose first axis is n, not the batch) between replicas. Here each replica gets its 1/R shard of
  the images and labels and the full arch arrays, so every replica trains the same sub-networks.
  Each worker reads the whole stream and keeps its own replicas' shards, so every worker must
  build the same stream (same seeds, phase and start step); the trainer checks the arch arrays
  agree at every step.

  Returns the dataset unchanged when there is only one replica.
  """
  replicas = strategy.num_replicas_in_sync
  if replicas == 1 or isinstance(dataset, tf.distribute.DistributedDataset):
    return dataset
  if not isinstance(dataset, tf.data.Dataset):
    raise errors.ConfigError(
        f'with {replicas} replicas, fit needs a tf.data.Dataset of ((images, labels), archs), '
        f'got {type(dataset).__name__}')
  spec = dataset.element_spec
  if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], tuple)
          and len(spec[0]) == 2 and isinstance(spec[1], dict)):
    raise errors.ConfigError(
        f'fit needs elements ((images, labels), archs) with archs a dict of arrays; got {spec}')
  batch = spec[0][0].shape[0]
  if batch is not None and batch % replicas:
    raise errors.ConfigError(
        f'the global batch size {batch} is not divisible by the {replicas} replicas')

  def for_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
    local = replicas // context.num_input_pipelines
    first = context.input_pipeline_id * local

    def shard(batch_pair, archs):
      images, labels = batch_pair
      size = tf.shape(images)[0]
      tf.debugging.assert_equal(
          size % replicas, 0,
          message=f'the global batch size must be divisible by the {replicas} replicas')
      per_replica = size // replicas

      def mine(x):  # [B, ...] -> [local, B / R, ...]: this worker's replicas' shards
        x = tf.reshape(x, tf.concat([[replicas, per_replica], tf.shape(x)[1:]], 0))
        return x[first:first + local]

      same = {key: tf.repeat(value[None], local, axis=0) for key, value in archs.items()}
      return (mine(images), mine(labels)), same

    # unbatch() turns each step into `local` consecutive elements; the strategy hands consecutive
    # elements to this worker's replicas in order.
    return dataset.map(shard).unbatch()

  return strategy.distribute_datasets_from_function(for_pipeline)
