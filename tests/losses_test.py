"""Losses against hand-computed values on fixed logits (ENS-KD, OFA KD, multi-exit loss)."""
# bazel: size=small

import numpy as np
import tensorflow as tf

from ofav2_tf import losses


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


class LossesTest(tf.test.TestCase):

  def test_label_smoothed_ce_by_hand(self):
    logits = np.array([[2.0, 0.0, -1.0]], np.float32)
    expected = -(0.9 + 0.1 / 3) * _log_softmax(logits)[0, 0] - (0.1 / 3) * (
        _log_softmax(logits)[0, 1] + _log_softmax(logits)[0, 2])
    self.assertAllClose(losses.label_smoothed_ce(logits, [0], 0.1), expected, rtol=1e-6)

  def test_ens_kd_mixes_teacher_exits_before_the_softmax(self):
    teacher = [np.array([[float(i), -float(i), 0.5 * i]], np.float32) for i in range(5)]
    mixed = sum(w * z for w, z in zip(losses.EXIT_WEIGHTS, teacher))
    expected = np.exp(_log_softmax(mixed))
    self.assertAllClose(losses.teacher_probs(teacher), expected, rtol=1e-6)
    # Averaging the exits' softmaxes (mixing after the softmax) gives something else.
    after = sum(w * np.exp(_log_softmax(z)) for w, z in zip(losses.EXIT_WEIGHTS, teacher))
    self.assertNotAllClose(losses.teacher_probs(teacher), after / sum(losses.EXIT_WEIGHTS))

  def test_student_loss_uses_the_teacher(self):
    student = np.array([[1.0, 0.2, -0.3], [0.0, 0.5, 0.1]], np.float32)
    labels = [0, 2]
    target = np.array([[0.2, 0.7, 0.1], [0.6, 0.2, 0.2]], np.float32)
    ce = np.mean([-(0.9 + 0.1 / 3) * _log_softmax(student)[i, y]
                  - sum(0.1 / 3 * _log_softmax(student)[i, c] for c in range(3) if c != y)
                  for i, y in enumerate(labels)])
    kd = np.mean(-(target * _log_softmax(student)).sum(-1))
    self.assertAllClose(losses.distillation_loss(student, labels, target, 1.0), ce + kd,
                        rtol=1e-6)
    other_target = target[::-1].copy()
    self.assertNotAllClose(losses.distillation_loss(student, labels, target, 1.0),
                           losses.distillation_loss(student, labels, other_target, 1.0))
    self.assertAllClose(losses.distillation_loss(student, labels, target, 0.0), ce, rtol=1e-6)

  def test_multi_exit_loss_weights(self):
    exits = [np.array([[float(i), 0.0]], np.float32) for i in range(5)]
    expected = sum(w * float(losses.label_smoothed_ce(z, [1])) for w, z in
                   zip(losses.EXIT_WEIGHTS, exits))
    self.assertAllClose(losses.multi_exit_loss(exits, [1]), expected, rtol=1e-6)
    with self.assertRaisesRegex(ValueError, '4 exit outputs but 5 exit weights'):
      losses.multi_exit_loss(exits[:4], [1])


if __name__ == '__main__':
  tf.test.main()
