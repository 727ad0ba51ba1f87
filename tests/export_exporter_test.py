"""Tests for export.exporter.export_subnet: every file, its summary, and nothing half-written."""
# bazel: size=enormous tags=slow

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from export import exporter
from export import litert_runner
from export import manifest as manifest_lib
from export import tflite_inspect
from export import toy_model
from export.errors import ExportError
from tests import testutil

RES = 32
NUM_CLASSES = 4


def leftovers(parent):
  """Temporary folders an export may have left next to its output."""
  return [n for n in os.listdir(parent) if '.tmp-' in n or '.old-' in n]


class ExportSubnetTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.parent = tempfile.mkdtemp(prefix='export-subnet-test-')
    cls.net = testutil.perturbed_supernet('EE_D', num_classes=NUM_CLASSES, seed=1,
                                          width_multiplier=0.25)
    cls.config = cls.net.search_space(resolutions=(RES,)).uniform(3, 3, 2, exit=2)
    testutil.calibrate(cls.net, cls.config, all_exits=True)
    cls.representative = toy_model.synthetic_images(48, RES, seed=5)
    labels = np.arange(48) % NUM_CLASSES
    train = tf.data.Dataset.from_tensor_slices((cls.representative, labels)).batch(16).repeat()
    cls.out_dir = os.path.join(cls.parent, 'subnet')
    cls.result = exporter.export_subnet(
        cls.net, cls.out_dir, cls.representative, config=cls.config, exits=[1, 2],
        qat=exporter.QATOptions(train, steps=2, learning_rate=1e-4))
    cls.summary = cls.result.summary
    print(json.dumps(cls.summary['checks'], indent=1))

  def test_files_present(self):
    self.assertCountEqual(os.listdir(self.out_dir), [
        'model.keras', 'model_keras3.keras', 'saved_model', 'model_float.tflite',
        'model_int8.tflite', 'model_qat_int8.tflite', 'early_exit', exporter.SUMMARY_NAME])
    self.assertCountEqual(os.listdir(os.path.join(self.out_dir, 'early_exit')), [
        'manifest.json', 'segment1_exit1.tflite', 'segment2_exit2.tflite'])
    self.assertEmpty(leftovers(self.parent))

  def test_summary_matches_the_files(self):
    with open(self.result.summary_path) as f:
      self.assertEqual(json.load(f), self.summary)
    self.assertEqual(self.summary['model']['outputs'], ['exit1', 'exit2'])
    self.assertEqual(self.summary['model']['input_shape'], [1, RES, RES, 3])
    self.assertEqual(self.summary['source']['config'], self.config.to_dict())
    self.assertEqual(self.summary['source']['variant'], 'EE_D')
    self.assertEqual(self.summary['calibration_images'], 48)
    files = self.summary['files']
    for key in ('keras', 'keras3', 'float_tflite', 'int8_tflite', 'qat_int8_tflite'):
      path = self.result.path(key)
      self.assertEqual(files[key]['size_bytes'], os.path.getsize(path), key)
    self.assertGreater(files['saved_model']['size_bytes'], 1000)
    for key in ('float_tflite', 'int8_tflite', 'qat_int8_tflite'):
      info = tflite_inspect.inspect_tflite(self.result.path(key))
      entry = files[key]
      self.assertEqual(entry['ops'], dict(info.op_counts), key)
      self.assertTrue(entry['builtin_only'])
      self.assertIs(entry['deployable'], True)
      self.assertEqual([o['name'] for o in entry['outputs']], list(info.output_names))
      self.assertCountEqual([o['name'] for o in entry['outputs']], ['exit1', 'exit2'])
      self.assertEqual(entry['inputs'][0]['shape'], [1, RES, RES, 3])
    self.assertEqual(files['float_tflite']['inputs'][0]['dtype'], 'float32')
    self.assertIn('non-integer', files['float_tflite']['tflm_runnable'])  # floats: phones only
    for key in ('int8_tflite', 'qat_int8_tflite'):
      self.assertEqual(files[key]['inputs'][0]['dtype'], 'int8')
      self.assertIs(files[key]['tflm_runnable'], True)
      self.assertGreater(files[key]['tflm_arena_bytes'], 1000)
      self.assertLessEqual(files[key]['tflm_max_step_diff'], 1)
    with self.assertRaisesRegex(ExportError, 'no .nope.'):
      self.result.path('nope')

  def test_equivalence_checks(self):
    checks = self.summary['checks']
    for key in ('saved_model', 'float_tflite'):
      self.assertTrue(checks[key]['ok'])
      for error in checks[key]['max_relative_error'].values():
        self.assertLessEqual(error, 1e-4)
    for key, groups in (('int8_tflite', ('vs_float',)),
                        ('qat_int8_tflite', ('vs_float', 'vs_qat_model'))):
      for group in groups:
        for exit_name, figures in checks[key][group].items():
          self.assertBetween(figures['top1_agreement'], 0.0, 1.0)
          self.assertLess(figures['rms_error_over_spread'], 0.5, f'{key} {group} {exit_name}')
    self.assertEqual(checks['qat_int8_tflite']['steps'], 2)
    self.assertTrue(checks['keras_portability']['ok'])
    self.assertEqual([c['flavour'] for c in checks['keras_portability']['fresh_process_loads']],
                     ['tf_keras', 'keras3'])

  def test_reported_agreement_is_what_the_file_does(self):
    images = self.representative[:exporter.DEFAULT_CHECK_IMAGES]
    runner = litert_runner.LiteRTModel(self.result.path('int8_tflite'))
    want = [np.asarray(o) for o in self.result.model(images, training=False)]
    for k, name in enumerate(('exit1', 'exit2')):
      got = np.concatenate([runner.run(image[np.newaxis])[name] for image in images])
      agreement = float(np.mean(np.argmax(got, 1) == np.argmax(want[k], 1)))
      self.assertAlmostEqual(
          agreement, self.summary['checks']['int8_tflite']['vs_float'][name]['top1_agreement'])

  def test_saved_model_serves_any_batch(self):
    loaded = tf.saved_model.load(os.path.join(self.out_dir, 'saved_model'))
    serve = loaded.signatures['serving_default']
    images = self.representative[:3]
    outputs = serve(image=tf.constant(images))
    want = self.result.model(images, training=False)
    self.assertCountEqual(outputs, ['exit1', 'exit2'])
    self.assertAllClose(outputs['exit2'], want[1], atol=1e-5, rtol=1e-5)

  def test_early_exit_files_follow_the_manifest(self):
    entry = self.summary['files']['early_exit']
    manifest = manifest_lib.Manifest.load(os.path.join(self.out_dir, entry['manifest']))
    self.assertEqual(list(manifest.exits), entry['exits'])
    self.assertEqual(entry['exits'], [1, 2])
    self.assertEqual(entry['arena_bytes'], [s.arena_bytes for s in manifest.segments])
    # The main int8 file has both exits as outputs: it is the multi-output file.
    self.assertEqual(entry['multi_output'], 'model_int8.tflite')
    self.assertIsNone(manifest.multi_output)
    for item in entry['files']:
      self.assertEqual(item['size_bytes'], os.path.getsize(os.path.join(self.out_dir,
                                                                        item['path'])))
      self.assertIs(item['deployable'], True)

  def test_missing_representative_data_is_an_error_and_writes_nothing(self):
    for bad, message in ((None, 'representative dataset'), ([], 'empty'),
                         (np.zeros((0, RES, RES, 3), np.float32), 'empty')):
      out_dir = os.path.join(self.parent, 'missing')
      with self.assertRaisesRegex(ExportError, message) as raised:
        exporter.export_subnet(self.result.model, out_dir, bad)
      self.assertNotIn('\n', str(raised.exception))
      self.assertFalse(os.path.exists(out_dir))
      self.assertEmpty(leftovers(self.parent))

  def test_failed_check_leaves_no_partial_export(self):
    """rtol 0 fails a float check (SavedModel or float TFLite) after files were written."""
    out_dir = os.path.join(self.parent, 'failed')
    with self.assertRaisesRegex(ExportError, 'differs from the Keras model .*allowed 0'):
      exporter.export_subnet(self.result.model, out_dir, self.representative, float_rtol=0.0)
    self.assertFalse(os.path.exists(out_dir))
    self.assertEmpty(leftovers(self.parent))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ExportError, 'needs the sub-network'):
      exporter.export_subnet(self.net, os.path.join(self.parent, 'x'), self.representative)
    with self.assertRaisesRegex(ExportError, 'already extracted'):
      exporter.export_subnet(self.result.model, os.path.join(self.parent, 'x'),
                             self.representative, config=self.config)
    with self.assertRaisesRegex(ExportError, 'not empty'):
      exporter.export_subnet(self.result.model, self.out_dir, self.representative)
    with self.assertRaisesRegex(ExportError, 'cannot export a str'):
      exporter.export_subnet('model.keras', os.path.join(self.parent, 'x'), self.representative)
    with self.assertRaisesRegex(ExportError, 'float_rtol'):
      exporter.export_subnet(self.result.model, os.path.join(self.parent, 'x'),
                             self.representative, float_rtol=-1)
    self.assertFalse(os.path.exists(os.path.join(self.parent, 'x')))

  def test_publish_replaces_an_old_export_whole(self):
    parent = tempfile.mkdtemp(prefix='export-publish-test-')
    out_dir = os.path.join(parent, 'out')
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, 'stale.tflite'), 'w') as f:
      f.write('old')
    new = tempfile.mkdtemp(dir=parent, prefix='.out.tmp-')
    with open(os.path.join(new, 'fresh.tflite'), 'w') as f:
      f.write('new')
    exporter._publish(new, out_dir)  # pylint: disable=protected-access
    self.assertEqual(os.listdir(out_dir), ['fresh.tflite'])
    self.assertEqual(os.listdir(parent), ['out'])


if __name__ == '__main__':
  tf.test.main()
