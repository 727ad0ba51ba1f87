"""Training losses of OFA and OFAv2 (DESIGN.md 2.3).

- Label-smoothed cross-entropy for the hard labels.
- OFA knowledge distillation: soft cross-entropy of the student against the teacher's softmax
  (temperature 1), weighted by `kd_weight` (1.0 in OFA).
- ENS-KD (OFAv2, early-exit variants): the teacher's five exits are mixed *as logits* with the exit
  weights before the softmax, and every student, whatever its exit, learns that one target.
- The early-exit full phase trains all exits at once with the weighted sum of their losses; its
  prediction is the argmax of the same weighted sum of exit logits.
"""

from typing import Sequence

import tensorflow as tf

EXIT_WEIGHTS = (0.06, 0.13, 0.20, 0.27, 0.34)


def label_smoothed_ce(logits, labels, smoothing: float = 0.1):
  """Mean cross-entropy against one-hot labels smoothed towards the uniform distribution."""
  num_classes = tf.shape(logits)[-1]
  onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=logits.dtype)
  target = onehot * (1.0 - smoothing) + smoothing / tf.cast(num_classes, logits.dtype)
  return soft_ce(logits, target)


def soft_ce(logits, target_probs):
  """Mean over the batch of -sum_c p_c log softmax(z)_c."""
  return tf.reduce_mean(-tf.reduce_sum(target_probs * tf.nn.log_softmax(logits, axis=-1), -1))


def ensemble_logits(exit_logits: Sequence, weights: Sequence[float] = EXIT_WEIGHTS):
  """sum_i w_i z_i over the exits (the EE network's prediction and ENS-KD's teacher logits)."""
  if len(exit_logits) != len(weights):
    raise ValueError(f'{len(exit_logits)} exit outputs but {len(weights)} exit weights')
  return tf.add_n([w * z for w, z in zip(weights, exit_logits)])


def teacher_probs(teacher_outputs, weights: Sequence[float] = EXIT_WEIGHTS):
  """Soft target of a teacher: its softmax, or for an all-exits teacher the ENS-KD mixture."""
  if isinstance(teacher_outputs, (list, tuple)):
    return tf.nn.softmax(ensemble_logits(teacher_outputs, weights), axis=-1)
  return tf.nn.softmax(teacher_outputs, axis=-1)


def distillation_loss(student_logits, labels, target_probs, kd_weight, smoothing: float = 0.1):
  """CE_ls(z, y) + kd_weight * softCE(z, target); kd_weight 0 turns distillation off."""
  return (label_smoothed_ce(student_logits, labels, smoothing)
          + kd_weight * soft_ce(student_logits, target_probs))


def multi_exit_loss(exit_logits: Sequence, labels, weights: Sequence[float] = EXIT_WEIGHTS,
                    smoothing: float = 0.1):
  """sum_i beta_i CE_ls(z_i, y): the early-exit full phase's loss."""
  if len(exit_logits) != len(weights):
    raise ValueError(f'{len(exit_logits)} exit outputs but {len(weights)} exit weights')
  return tf.add_n([w * label_smoothed_ce(z, labels, smoothing)
                   for w, z in zip(weights, exit_logits)])
