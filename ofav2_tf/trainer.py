"""The phase trainer: a Keras model whose `train_step` runs one step of progressive shrinking.

A step takes a batch (one resolution) and the n sub-networks sampled for it, runs the teacher once,
then for each sub-network a forward and backward pass, sums the gradients, adds weight decay (not on
BN parameters and biases) and applies one SGD update (DESIGN.md 2.3).

Two compiled functions do the heavy work and are shared by every phase of a run:
`SubnetGradients.elastic` (one sub-network's loss and gradients, taking the sub-network and the
teacher's target as tensors) and `SubnetGradients.all_exits` (the early-exit full phase). They are
traced once per run (once per local device under a `MirroredStrategy`, which places a copy of the
graph on every device), however many phases, sub-networks and resolutions follow; `train_step`
itself runs eagerly (`compile` defaults to `run_eagerly=True`) and only loops over the n
sub-networks, then hands their gradients to one traced update (sum, weight decay, SGD) per
trainer.

Distribution (`ofav2_tf.distribute`): build everything and compile inside `strategy.scope()`.
`fit` gives every replica its shard of the global batch and the full arch arrays of the step;
each replica's gradient is the mean over its shard, and the optimizer sums over replicas, so the
step divides by the number of replicas (weight decay included, so that it is added once). Batch
norm uses each replica's shard statistics; the moving statistics are averaged across replicas
after every step.

Sub-networks come with the data: `ArchSampler` draws them from the phase's space with a numpy
generator seeded by (seed, phase, step), so a resumed run samples exactly what an uninterrupted run
would have sampled at the same step.
"""

from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import distribute
from ofav2_tf import losses
from ofav2_tf import subnet_config as sc
from ofav2_tf import supernet as supernet_lib


def decays(variable) -> bool:
  """Weight decay applies to conv/dense kernels and kernel transforms, not BN or biases (OFA)."""
  name = variable.name
  return not any(key in name for key in ('gamma', 'beta', 'bias'))


class SubnetGradients:
  """Compiled loss-and-gradient functions of one supernet, traced once per run."""

  def __init__(self, supernet, label_smoothing: float = 0.1):
    self.supernet = supernet
    self.label_smoothing = label_smoothing
    self.trace_count = 0
    num_classes = supernet.num_classes
    label_spec = tf.TensorSpec([None], tf.int32)
    self.elastic = tf.function(self._elastic, autograph=False, input_signature=[
        supernet_lib.IMAGE_SIGNATURE, label_spec, supernet_lib.ARCH_SIGNATURE,
        tf.TensorSpec([None, num_classes], tf.float32), tf.TensorSpec([], tf.float32)])
    self.all_exits = tf.function(self._all_exits, autograph=False, input_signature=[
        supernet_lib.IMAGE_SIGNATURE, label_spec, supernet_lib.ARCH_SIGNATURE])

  def _gradients(self, tape, loss):
    variables = self.supernet.trainable_variables
    grads = tape.gradient(loss, variables)
    return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, variables)]

  def _elastic(self, images, labels, arch, target_probs, kd_weight):
    self.trace_count += 1
    with tf.GradientTape() as tape:
      logits = self.supernet(images, arch, training=True)
      loss = losses.distillation_loss(logits, labels, target_probs, kd_weight,
                                      self.label_smoothing)
    return loss, logits, self._gradients(tape, loss)

  def _all_exits(self, images, labels, arch):
    self.trace_count += 1
    with tf.GradientTape() as tape:
      exit_logits = self.supernet(images, arch, training=True, all_exits=True)
      loss = losses.multi_exit_loss(exit_logits, labels, smoothing=self.label_smoothing)
    return loss, losses.ensemble_logits(exit_logits), self._gradients(tape, loss)


class CosineWithWarmup(tf_keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from ~0 to `base_lr`, then cosine decay to 0 at `total_steps`."""

  def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0):
    self.base_lr, self.total_steps, self.warmup_steps = base_lr, total_steps, warmup_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = tf.cast(self.warmup_steps, tf.float32)
    decay_steps = tf.maximum(tf.cast(self.total_steps, tf.float32) - warmup, 1.0)
    cosine = 0.5 * self.base_lr * (1.0 + tf.cos(np.pi * tf.clip_by_value(
        (step - warmup) / decay_steps, 0.0, 1.0)))
    ramp = self.base_lr * (step + 1.0) / tf.maximum(warmup, 1.0)
    return tf.where(step < warmup, ramp, cosine)

  def get_config(self):
    return {'base_lr': self.base_lr, 'total_steps': self.total_steps,
            'warmup_steps': self.warmup_steps}


class ArchSampler:
  """Seeded sampler of the n sub-networks of each step, as stacked int32 arrays.

  With `sandwich`, a step of n >= 2 sub-networks trains the phase's max network in its first slot
  and, from n >= 3, the phase's min network in its second; the others are random. With n = 1,
  every even step trains the max network. Uniform sampling alone leaves the max network, which
  every later phase's teacher and every large sub-network inherit, to chance, and later phases
  then pull it down (the README's recipe table shows by how much).
  """

  def __init__(self, space: sc.SearchSpace, subnets_per_step: int, seed: int, phase_index: int,
               fixed: Optional[sc.SubnetConfig] = None, sandwich: bool = False):
    self.space, self.n, self.seed, self.phase_index = space, subnets_per_step, seed, phase_index
    self.fixed = fixed
    self.sandwich = sandwich

  def configs(self, step: int):
    if self.fixed is not None:
      return [self.fixed] * self.n
    rng = np.random.default_rng([self.seed, self.phase_index, step])
    configs = [self.space.sample(rng) for _ in range(self.n)]
    if self.sandwich and (self.n >= 2 or step % 2 == 0):
      # Resolution is the batch's, not the arch's: any resolution gives the same arrays.
      configs[0] = self.space.max_config()
      if self.n >= 3:
        configs[1] = self.space.min_config()
    return configs

  def arrays(self, step: int) -> dict:
    configs = self.configs(step)
    stacked = {key: np.stack([supernet_lib.arch_arrays(c)[key] for c in configs])
               for key in supernet_lib.ARCH_SIGNATURE}
    return stacked

  def signature(self) -> dict:
    return {key: tf.TensorSpec([self.n] + list(spec.shape), spec.dtype)
            for key, spec in supernet_lib.ARCH_SIGNATURE.items()}

  def dataset(self, start_step: int = 0) -> tf.data.Dataset:
    """Endless dataset of per-step sub-network arrays, from `start_step` on."""

    def generate():
      step = start_step
      while True:
        yield self.arrays(step)
        step += 1

    return tf.data.Dataset.from_generator(generate, output_signature=self.signature())


class ElasticTrainer(tf_keras.Model):
  """Runs one phase: `fit` on batches of ((images, labels), archs).

  Under a distribution strategy, build the supernet, teacher, gradients and this trainer, and
  call `compile`, inside `strategy.scope()`.

  Args:
    supernet: The `OFASupernet` being trained (its weights are updated in place).
    gradients: The run's `SubnetGradients` for that supernet.
    all_exits_loss: Train every exit at once (early-exit full phase).
    teacher: Optional frozen Keras model mapping images to logits (or a list of exit logits for
      ENS-KD); None trains on the labels alone.
    kd_weight: Weight of the distillation term.
    weight_decay: L2 coefficient added to the gradients of decaying variables.
  """

  def __init__(self, supernet, gradients: SubnetGradients, all_exits_loss: bool = False,
               teacher=None, kd_weight: float = 1.0, weight_decay: float = 3e-5, **kwargs):
    super().__init__(**kwargs)
    strategy = tf.distribute.get_strategy()
    distribute.check_created_in_scope(strategy, supernet.variables, 'supernet')
    if teacher is not None:
      distribute.check_created_in_scope(strategy, teacher.variables, 'teacher')
    self.supernet = supernet
    self.gradients = gradients
    self.all_exits_loss = all_exits_loss
    self.teacher = teacher
    self.kd_weight = float(kd_weight) if teacher is not None else 0.0
    self.weight_decay = float(weight_decay)
    self._decay_mask = [decays(v) for v in supernet.trainable_variables]
    # Per-replica BN statistics, averaged across replicas after each distributed step.
    self._replica_statistics = [
        v for v in supernet.non_trainable_variables
        if v.synchronization == tf.VariableSynchronization.ON_READ]
    self.loss_tracker = tf_keras.metrics.Mean(name='loss')
    self.accuracy = tf_keras.metrics.SparseCategoricalAccuracy(name='accuracy')
    # One trace for every batch resolution (the teacher is extracted with any_resolution=True);
    # a trace per size cost seconds per phase, three sizes, ten phases.
    self._teacher_fn = tf.function(
        lambda x: teacher(x, training=False), autograph=False,
        input_signature=[supernet_lib.IMAGE_SIGNATURE]) if teacher else None
    self._compiled_update = None

  @property
  def metrics(self):
    return [self.loss_tracker, self.accuracy]

  def compile(self, optimizer='sgd', *args, run_eagerly: bool = True, **kwargs):
    """Keras `compile`, eager by default.

    Eagerly, `train_step` calls the compiled gradient functions, whose optimised graphs are
    cached for the run. Traced into Keras' train function instead, those calls make one large
    graph that TensorFlow optimises again for every new trainer, i.e. every phase (measured: 2.5
    minutes per phase for a width-0.25 SE_B on a loaded 2-core machine, against a few
    milliseconds of Python per step). Both modes compute the same step, with or without a
    distribution strategy.
    """
    super().compile(optimizer, *args, run_eagerly=run_eagerly, **kwargs)

  def call(self, inputs, training=None):
    return self.supernet(inputs, training=training)

  def fit(self, x=None, y=None, *args, **kwargs):
    """Keras `fit`; with several replicas, each gets its batch shard and the step's full archs."""
    return super().fit(distribute.per_replica_steps(self.distribute_strategy, x), y, *args,
                       **kwargs)

  def teacher_target(self, images):
    if self._teacher_fn is None:
      return tf.zeros([tf.shape(images)[0], self.supernet.num_classes])
    return losses.teacher_probs(self._teacher_fn(images))

  def train_step(self, data):
    (images, labels), archs = data
    labels = tf.cast(labels, tf.int32)
    n = int(archs['exit'].shape[0])
    replica = tf.distribute.get_replica_context()
    replicas = replica.num_replicas_in_sync if replica is not None else 1
    if replicas > 1:
      self._check_same_archs(replica, archs)
    per_subnet = []
    target = None if self.all_exits_loss else self.teacher_target(images)
    for i in range(n):
      arch = {key: value[i] for key, value in archs.items()}
      if self.all_exits_loss:
        loss, logits, grads = self.gradients.all_exits(images, labels, arch)
      else:
        loss, logits, grads = self.gradients.elastic(images, labels, arch, target,
                                                     tf.constant(self.kd_weight))
      per_subnet.append(grads)
      self.loss_tracker.update_state(loss)
      self.accuracy.update_state(labels, logits)
    if replicas > 1:
      self._apply_update(per_subnet, replicas)
      self._average_statistics(replica)
    else:
      if self._compiled_update is None:
        self._compiled_update = tf.function(self._apply_update, autograph=False)
      self._compiled_update(per_subnet, 1)
    return {m.name: m.result() for m in self.metrics}

  def _apply_update(self, per_subnet, replicas: int):
    """Sums the sub-networks' gradients, adds weight decay and applies one update.

    On one replica this runs as one traced function per trainer: eagerly, the ~300 variables'
    decay and SGD updates were one Python-dispatched op each, about 1.5 s per step for EE_D
    against 0.2 s traced (measured). Under a distribution strategy it stays eager, where the
    optimizer's cross-replica merge is well defined.
    """
    variables = self.supernet.trainable_variables
    total = [tf.add_n(list(grads)) for grads in zip(*per_subnet)]
    if self.weight_decay:
      total = [g + self.weight_decay * v if decay else g
               for g, v, decay in zip(total, variables, self._decay_mask)]
    if replicas > 1:
      # Each replica's gradient is the mean over its shard and the optimizer sums over replicas:
      # divide, so the update is the mean over the global batch and weight decay counts once.
      total = [g / replicas for g in total]
    self.optimizer.apply_gradients(zip(total, variables))

  def _check_same_archs(self, replica, archs):
    """Fails the step if replicas were given different sub-networks (workers out of step)."""
    mine = tf.concat([tf.reshape(tf.cast(archs[key], tf.float32), [-1]) for key in sorted(archs)],
                     0)
    total = replica.all_reduce(tf.distribute.ReduceOp.SUM, mine)
    tf.debugging.assert_equal(
        total, mine * replica.num_replicas_in_sync,
        message='replicas got different sub-networks for the same step: every worker must build '
                'the same arch stream (same seed, phase and start step)')

  def _average_statistics(self, replica):
    """Makes every replica's BN moving statistics the mean over replicas."""
    if not self._replica_statistics:
      return
    means = replica.all_reduce(tf.distribute.ReduceOp.MEAN,
                               [tf.identity(v) for v in self._replica_statistics])
    for variable, mean in zip(self._replica_statistics, means):
      variable.assign(mean)
