"""Child process of tests/distributed_test.py: trains a tiny supernet for a few steps and saves it.

Each mode runs in its own process because the device setup (logical CPUs, a multi-worker cluster)
must happen before TensorFlow initialises, which pytest's shared process cannot guarantee:
- `reference`: one device, no strategy. A step is the mean of R single-device steps on the R shards
  of the global batch, all taken from the same state: what data parallelism over R replicas must
  compute (exactly, for SGD with momentum, whose update is linear in the gradient);
- `mirrored`: `split_cpu(R)` and the 'mirrored' strategy, trained with `ElasticTrainer.fit`;
- `multi_worker`: the 'multi_worker' strategy from TF_CONFIG (set by the test), one process per
  worker, trained with `ElasticTrainer.fit`.
Each mode trains once without and once with distillation from a small fixed teacher, from the
initial weights in --init, and writes to --out the final weights (BN moving statistics included),
the largest difference between the replica copies of any variable, and the trace count.

Usage: python -m tests.distributed_child --mode=mirrored --init=init.npz --out=out.npz
"""

import argparse
import os
import sys

import numpy as np

REPLICAS = 2
STEPS = 3
GLOBAL_BATCH = 16  # 8 per replica: BN over fewer samples makes the trajectory chaotic
SUBNETS_PER_STEP = 2
RESOLUTION = 32
NUM_CLASSES = 4
# Small enough that 3 steps stay near-linear (float round-off is not amplified), large enough
# that a wrongly scaled step moves the weights far beyond the test's tolerance.
LEARNING_RATE = 0.002
# Far above the default, so that weight decay added by every replica (twice) would show.
WEIGHT_DECAY = 0.2
VARIANT = 'SE_B'
# Elastic expand ratios and depths (slices and conds, the same for every replica) but a single
# kernel size and two depths: the gradient graph traces in half the time of the full space.
NET_KWARGS = dict(width_multiplier=0.25, dropout=0.0, kernel_sizes=(3,), expand_ratios=(3, 6),
                  depths=(3, 4))


def build_models():
  """The supernet and the teacher (weights are then set by `load_initial`)."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  from tests import testutil  # pylint: disable=g-import-not-at-top
  net = testutil.perturbed_supernet(VARIANT, num_classes=NUM_CLASSES, seed=0, **NET_KWARGS)
  inputs = tf_keras.Input((RESOLUTION, RESOLUTION, 3))
  teacher = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(
      tf_keras.layers.GlobalAveragePooling2D()(inputs)))
  return net, teacher


def initial_weights(net) -> dict:
  """The weights every mode starts from: the supernet's and a confident, fixed teacher's."""
  rng = np.random.default_rng(5)
  weights = {f'net{i}': w for i, w in enumerate(net.get_weights())}
  weights['teacher_kernel'] = rng.normal(0, 3.0, (3, NUM_CLASSES)).astype(np.float32)
  weights['teacher_bias'] = rng.normal(0, 1.0, (NUM_CLASSES,)).astype(np.float32)
  return weights


def load_initial(net, teacher, init):
  net.set_weights([init[f'net{i}'] for i in range(len(net.weights))])
  teacher.set_weights([init['teacher_kernel'], init['teacher_bias']])


def steps_data(net):
  """Per step: global-batch images [B, 32, 32, 3], labels [B], the n sub-networks' arrays."""
  from ofav2_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  from tests import testutil  # pylint: disable=g-import-not-at-top
  sampler = trainer_lib.ArchSampler(net.search_space(resolutions=(RESOLUTION,)),
                                    SUBNETS_PER_STEP, seed=7, phase_index=0)
  rng = np.random.default_rng(3)
  return [(testutil.images(GLOBAL_BATCH, RESOLUTION, seed=100 + step).numpy(),
           rng.integers(0, NUM_CLASSES, GLOBAL_BATCH).astype(np.int32),
           sampler.arrays(step)) for step in range(STEPS)]


def make_optimizer():
  import tf_keras  # pylint: disable=g-import-not-at-top
  from ofav2_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  schedule = trainer_lib.CosineWithWarmup(LEARNING_RATE, total_steps=STEPS + 1, warmup_steps=1)
  return tf_keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)


def make_trainer(net, gradients, teacher, kd, optimizer):
  from ofav2_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  trainer = trainer_lib.ElasticTrainer(net, gradients, teacher=teacher if kd else None,
                                       weight_decay=WEIGHT_DECAY)
  trainer.compile(optimizer=optimizer)
  return trainer


def run_reference(net, teacher, gradients, kd):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  trainer = make_trainer(net, gradients, teacher, kd, make_optimizer())
  trainer.optimizer.build(net.trainable_variables)
  state = list(net.weights) + list(trainer.optimizer.variables)
  shard = GLOBAL_BATCH // REPLICAS
  for images, labels, archs in steps_data(net):
    start = [v.numpy() for v in state]
    results = []
    for r in range(REPLICAS):
      for v, value in zip(state, start):
        v.assign(value)
      part = slice(r * shard, (r + 1) * shard)
      trainer.train_step(((tf.constant(images[part]), tf.constant(labels[part])),
                          {key: tf.constant(a) for key, a in archs.items()}))
      results.append([v.numpy() for v in state])
    for i, v in enumerate(state):
      v.assign(np.mean([result[i] for result in results], axis=0).astype(start[i].dtype))


def run_distributed(strategy, net, teacher, gradients, kd):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = steps_data(net)
  images = np.stack([d[0] for d in data])
  labels = np.stack([d[1] for d in data])
  archs = {key: np.stack([d[2][key] for d in data]) for key in data[0][2]}
  dataset = tf.data.Dataset.from_tensor_slices(((images, labels), archs)).repeat()
  # The run driver creates the optimizer outside the strategy's scope; cover both ways.
  optimizer = make_optimizer() if kd else None
  with strategy.scope():
    trainer = make_trainer(net, gradients, teacher, kd, optimizer or make_optimizer())
  # One step per epoch: the step stream must continue across epochs, not restart.
  trainer.fit(dataset, epochs=STEPS, steps_per_epoch=1, verbose=0)


def replica_spread(variables) -> float:
  """Largest difference between the per-replica copies of any variable (0 without copies)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spread = 0.0
  for v in variables:
    if isinstance(v, tf.distribute.DistributedValues):
      copies = [c.numpy() for c in v.values]
      spread = max([spread] + [float(np.abs(c - copies[0]).max()) for c in copies])
  return spread


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--mode', choices=('reference', 'mirrored', 'multi_worker'), required=True)
  parser.add_argument('--init', required=True)
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)

  from ofav2_tf import distribute  # pylint: disable=g-import-not-at-top
  if args.mode == 'mirrored':
    distribute.split_cpu(REPLICAS)
  # The strategy comes first: multi_worker must configure collectives before any TF work.
  strategy = distribute.get_strategy('default' if args.mode == 'reference' else args.mode)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ofav2_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  init = np.load(args.init)
  with strategy.scope():
    net, teacher = build_models()
    gradients = trainer_lib.SubnetGradients(net)
  out = {'replicas': strategy.num_replicas_in_sync}
  for kd in (0, 1):
    load_initial(net, teacher, init)
    if args.mode == 'reference':
      run_reference(net, teacher, gradients, kd)
    else:
      run_distributed(strategy, net, teacher, gradients, kd)
    for i, w in enumerate(net.get_weights()):
      out[f'kd{kd}_net{i}'] = w
    out[f'kd{kd}_spread'] = replica_spread(net.weights)
  out['trace_count'] = gradients.trace_count
  if args.mode == 'multi_worker':  # leave together: a worker that exits early looks failed
    strategy.run(lambda: tf.distribute.get_replica_context().all_reduce('sum', tf.ones([])))
  tmp = args.out + '.tmp.npz'  # the test waits for --out: write it whole or not at all
  np.savez(tmp, **out)
  os.replace(tmp, args.out)


if __name__ == '__main__':
  main(sys.argv[1:])
