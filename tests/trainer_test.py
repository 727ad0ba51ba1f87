"""The phase trainer: accumulation over sub-networks, distillation, weight decay, seeded sampling."""
# bazel: size=enormous tags=slow

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import phases
from ofav2_tf import supernet as supernet_lib
from ofav2_tf import trainer as trainer_lib
from tests import testutil


class TrainerTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # No dropout: gradients of repeated steps must be comparable.
    cls.net = testutil.perturbed_supernet('EE_B', num_classes=4, seed=0, width_multiplier=0.25,
                                          dropout=0.0)
    cls.gradients = trainer_lib.SubnetGradients(cls.net)  # traced once for the whole class
    cls.images = testutil.images(4, 32, seed=1)
    cls.labels = tf.constant([0, 1, 2, 3])

  def _step(self, archs, teacher=None, weight_decay=0.0, lr=0.1):
    trainer = trainer_lib.ElasticTrainer(self.net, self.gradients, teacher=teacher,
                                         weight_decay=weight_decay)
    trainer.compile(optimizer=tf_keras.optimizers.SGD(lr), run_eagerly=True)
    before = [v.numpy().copy() for v in self.net.trainable_variables]
    trainer.train_step(((self.images, self.labels), archs))
    after = [v.numpy().copy() for v in self.net.trainable_variables]
    for v, b in zip(self.net.trainable_variables, before):  # restore for the next case
      v.assign(b)
    return [(a - b) / -lr for a, b in zip(after, before)]  # the applied gradient

  def _sampler(self, n, seed=0):
    space = phases.PHASES.get('height4').space(self.net.search_space(resolutions=(32,)))
    return trainer_lib.ArchSampler(space, n, seed, phase_index=3)

  def test_gradients_of_n_subnets_are_summed(self):
    sampler = self._sampler(2)
    archs = {k: tf.constant(v) for k, v in sampler.arrays(0).items()}
    both = self._step(archs)
    singles = [self._step({k: v[i:i + 1] for k, v in archs.items()}) for i in range(2)]
    for g, a, b in zip(both, singles[0], singles[1]):
      self.assertAllClose(g, a + b, atol=1e-4)
    self.assertEqual(self.gradients.trace_count, 1)

  def test_teacher_changes_the_gradient_and_weight_decay_skips_bn(self):
    archs = {k: tf.constant(v) for k, v in self._sampler(1).arrays(5).items()}
    teacher_in = tf_keras.Input((32, 32, 3))
    teacher = tf_keras.Model(teacher_in, tf_keras.layers.Dense(4)(
        tf_keras.layers.GlobalAveragePooling2D()(teacher_in)))
    plain = self._step(archs)
    distilled = self._step(archs, teacher=teacher)
    self.assertGreater(max(float(np.abs(a - b).max()) for a, b in zip(plain, distilled)), 1e-6)
    decayed = self._step(archs, weight_decay=0.5)
    for v, g0, g1 in zip(self.net.trainable_variables, plain, decayed):
      if trainer_lib.decays(v):
        self.assertAllClose(g1 - g0, 0.5 * v.numpy(), atol=1e-4, msg=v.name)
      else:
        self.assertAllClose(g1, g0, atol=1e-6, msg=v.name)

  def test_sampler_is_seeded_per_step(self):
    a, b = self._sampler(2, seed=3), self._sampler(2, seed=3)
    self.assertEqual(a.configs(17), b.configs(17))
    self.assertNotEqual(a.configs(17), a.configs(18))
    first = next(iter(a.dataset(start_step=17)))
    np.testing.assert_array_equal(first['kernel'].numpy(), a.arrays(17)['kernel'])

  def test_sandwich_puts_max_and_min_first_and_keeps_the_random_rest(self):
    space = self._sampler(1).space
    for n in (1, 2, 4):
      plain = trainer_lib.ArchSampler(space, n, 3, phase_index=3)
      sandwich = trainer_lib.ArchSampler(space, n, 3, phase_index=3, sandwich=True)
      for step in (10, 11):
        got, random = sandwich.configs(step), plain.configs(step)
        self.assertLen(got, n)
        if n == 1 and step % 2:  # n = 1: the max network on even steps only
          self.assertEqual(got, random)
          continue
        arrays = lambda c: {k: v.tolist() for k, v in supernet_lib.arch_arrays(c).items()}
        self.assertEqual(arrays(got[0]), arrays(space.max_config()))
        if n >= 3:
          self.assertEqual(arrays(got[1]), arrays(space.min_config()))
          self.assertEqual(space.min_config().exit, 1)  # height4 unlocks every exit
        self.assertEqual(got[2 if n >= 3 else 1:], random[2 if n >= 3 else 1:])


if __name__ == '__main__':
  tf.test.main()
