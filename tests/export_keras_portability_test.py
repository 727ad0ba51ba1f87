"""Tests for export.keras_portability and export.keras3_config: .keras files for both Keras generations."""
# bazel: size=medium

import os
import tempfile

import tensorflow as tf
import tf_keras

from export import keras3_config
from export import keras_portability
from export import toy_model
from export.errors import ExportError


class Keras3ConfigTest(tf.test.TestCase):

  def test_rewrites_exactly_what_keras3_rejects(self):
    model = toy_model.build_toy_model(resolution=16, num_exits=2)
    config = model.get_config()
    out = keras3_config.to_keras3_config(config)
    by_class = {}
    for layer in out['layers']:
      by_class.setdefault(layer['class_name'], []).append(layer['config'])
    self.assertTrue(all(isinstance(c['axis'], int) for c in by_class['BatchNormalization']))
    self.assertTrue(all('groups' not in c for c in by_class['DepthwiseConv2D']))
    self.assertEqual(out['output_layers'], config['output_layers'])
    # The input config is left alone (it is the model's own).
    self.assertIsInstance(config['layers'][2]['config']['axis'], list)
    self.assertLessEqual(set(by_class), keras3_config.VOCABULARY)

  def test_layers_outside_the_vocabulary_are_refused(self):
    image = tf_keras.Input((8, 8, 3), name='image')
    x = tf_keras.layers.Conv2D(4, 3, name='conv')(image)
    x = tf_keras.layers.Activation('swish', name='swish_act')(x)
    model = tf_keras.Model(image, x)
    with self.assertRaisesRegex(ExportError, "layer 'swish_act' is a Activation; exported models "
                                             'may only use Add, BatchNormalization'):
      keras_portability.check_vocabulary(model)


class KerasPortabilityTest(tf.test.TestCase):

  def test_both_generations_load_in_fresh_processes(self):
    tmp = tempfile.mkdtemp(prefix='export-keras-test-')
    model = toy_model.build_toy_model(resolution=32, num_exits=3, seed=4)
    report = keras_portability.save_and_check(model, tmp, basename='subnet')
    self.assertEqual(report.tf_keras_path, os.path.join(tmp, 'subnet.keras'))
    self.assertEqual(report.keras3_path, os.path.join(tmp, 'subnet_keras3.keras'))
    self.assertCountEqual(os.listdir(tmp), ['subnet.keras', 'subnet_keras3.keras'])
    tf_check, k3_check = report.checks
    self.assertEqual((tf_check.flavour, k3_check.flavour), ('tf_keras', 'keras3'))
    self.assertTrue(tf_check.keras_version.startswith('2.'))
    self.assertTrue(k3_check.keras_version.startswith('3.'))
    self.assertFalse(k3_check.imported_tf_keras)
    for check in report.checks:
      self.assertIsNone(check.error, check.path)
      self.assertLen(check.max_abs_diff, 3)
      for diff, tol in zip(check.max_abs_diff, check.tolerance):
        self.assertLessEqual(diff, tol)
        self.assertLessEqual(tol, 1e-4)  # 1e-5 times logits of magnitude <= 10.
      self.assertTrue(check.ok)
    self.assertTrue(report.ok)
    report.raise_for_failure()
    # Recorded on every run: why the second file exists (None once Keras 3 reads tf_keras files).
    print('Keras 3 loading the tf_keras file directly:', report.keras3_direct_error)

  def test_a_mismatch_fails_the_check(self):
    bad = keras_portability.LoadCheck(flavour='keras3', path='m_keras3.keras', keras_version='3',
                                      max_abs_diff=(1e-6, 3e-3), error=None,
                                      imported_tf_keras=False, tolerance=(1e-5, 1e-5))
    self.assertFalse(bad.ok)
    leaked = keras_portability.LoadCheck(flavour='keras3', path='m_keras3.keras', keras_version='3',
                                         max_abs_diff=(0.0,), error=None, imported_tf_keras=True,
                                         tolerance=(1e-5,))
    self.assertFalse(leaked.ok)
    report = keras_portability.PortabilityReport('m.keras', 'm_keras3.keras', (bad,), None)
    with self.assertRaisesRegex(ExportError, 'm_keras3.keras does not load reproducibly in a fresh '
                                             'keras3 process: output differences'):
      report.raise_for_failure()


if __name__ == '__main__':
  tf.test.main()
