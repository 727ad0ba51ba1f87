"""One compiled training step that serves every sub-network of a supernet.

The step takes the sub-network as int32 tensors (`supernet.arch_tensors`) and images of any size,
under a fixed input signature, so sampling a new sub-network or resolution never retraces. It counts
its traces, which tests and benchmarks assert stays at one. The full trainer (sampling several
sub-networks per step, distillation, gradient accumulation) builds on the same pattern.
"""

import tensorflow as tf
import tf_keras

from ofav2_tf import supernet as supernet_lib


class ElasticTrainStep:
  """forward -> label-smoothed cross-entropy -> gradients -> optimizer update, for any sub-network.

  Args:
    supernet: A built `OFASupernet`.
    optimizer: A `tf_keras` optimizer; SGD with momentum by default.
    label_smoothing: Label smoothing of the cross-entropy.
  """

  def __init__(self, supernet, optimizer=None, label_smoothing: float = 0.1):
    self.supernet = supernet
    self.optimizer = optimizer or tf_keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
    self.label_smoothing = label_smoothing
    self.trace_count = 0
    # Create the optimizer's slot variables now: variables created inside the first trace would
    # make tf.function trace a second time.
    self.optimizer.build(supernet.trainable_variables)
    # autograph=False: the step has no Python control flow on tensors (the supernet uses explicit
    # tf.cond), and skipping the conversion roughly halves the trace time.
    self._step = tf.function(self._train_step, autograph=False, input_signature=[
        supernet_lib.IMAGE_SIGNATURE, tf.TensorSpec([None], tf.int32),
        supernet_lib.ARCH_SIGNATURE])

  def _train_step(self, images, labels, arch):
    self.trace_count += 1  # Python side effect: runs once per trace, not per call.
    with tf.GradientTape() as tape:
      logits = self.supernet(images, arch, training=True)
      onehot = tf.one_hot(labels, self.supernet.num_classes)
      loss = tf.reduce_mean(tf_keras.losses.categorical_crossentropy(
          onehot, logits, from_logits=True, label_smoothing=self.label_smoothing))
    variables = self.supernet.trainable_variables
    gradients = tape.gradient(loss, variables)
    self.optimizer.apply_gradients(
        [(g, v) for g, v in zip(gradients, variables) if g is not None])
    return loss

  def __call__(self, images, labels, config_or_arch):
    arch = config_or_arch
    if not isinstance(arch, dict):
      arch = supernet_lib.arch_tensors(config_or_arch)
    return self._step(images, tf.cast(labels, tf.int32), arch)
