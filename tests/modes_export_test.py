"""`--mode=export`: a trained run's sub-network as checked files, or one clear error, no files."""
# bazel: size=enormous tags=slow

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
from absl.testing import absltest
import tf_keras

from export import exporter
from ofav2_tf import bn_calibration
from ofav2_tf import errors
from ofav2_tf import subnet_config as sc
from ofav2_tf import supernet as supernet_lib
from ofav2_tf.data import splits as splits_lib
from ofav2_tf.modes import common
from ofav2_tf.modes import export as export_mode
from ofav2_tf.search import objectives
from ofav2_tf.search import pareto
from tests import run_fixture

REPRESENTATIVE = '--representative_images=48'


def snapshot(folder):
  """{relative path: sha256} of every file under `folder`; None when it does not exist."""
  if not os.path.isdir(folder):
    return None
  files = {}
  for directory, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return files


def leftovers(run_dir):
  """Temporary folders an export may have left next to `<run_dir>/export`."""
  return [n for n in os.listdir(run_dir) if '.tmp-' in n or '.old-' in n]


def copy_run(run_dir, dest):
  """A copy of a run folder with its trained checkpoints, without its export or search."""
  shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns(
      'export', 'search', 'tensorboard', '.export*'))
  return dest


def config_string(space, resolution, kernels):
  """A config of `space` whose kernels follow `kernels` block by block (so blocks differ)."""
  return sc.SubnetConfig(
      kernel=[kernels[b % len(kernels)] for b in range(sc.NUM_BLOCKS)],
      expand=[max(space.expand_ratios)] * sc.NUM_BLOCKS, depth=[max(space.depths)] * 5,
      exit=max(space.exits), resolution=resolution).to_string()


class ExportModeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='modes-export-test-')
    cls.run_dir = run_fixture.trained_run(cls.root)
    cls.pareto_run = copy_run(cls.run_dir, os.path.join(cls.root, 'pareto_run'))
    cls.trained = common.load_trained_run(cls.run_dir)
    cls.trained_bn = [(l.moving_mean.numpy(), l.moving_variance.numpy())
                      for l in bn_calibration.batch_norm_layers(cls.trained.supernet)]
    space = cls.trained.space
    cls.config = config_string(space, min(space.resolutions), (3, 7, 5))

    # The search's result, as --mode=search saves it: three candidates, the second the most
    # accurate by prediction, the third measured (a measured accuracy outranks predicted ones).
    configs = [sc.SubnetConfig.parse(config_string(space, max(space.resolutions), ks))
               for ks in ((5, 3), (7,), (3,))]
    run_config = cls.trained.config
    context = objectives.CostContext(run_config.variant, run_config.num_classes,
                                     run_config.width_multiplier, run_config.expand_ratios)
    front = pareto.make_candidates(configs, lambda cs: [0.31, 0.52, 0.40], context,
                                   ['macs', 'params'], label='pareto')
    front[2].measured_accuracy = 0.38
    cls.front = front
    os.makedirs(os.path.join(cls.pareto_run, 'search'))
    pareto.ParetoResult(run_config.variant, ['macs', 'params'], {}, front).save(
        export_mode.pareto_path(cls.pareto_run))

    # The export by config string, shared by the tests that check it and by the bad-input tests,
    # which must leave it unchanged.
    cls.result = run_fixture.run_main('--mode=export', f'--run_dir={cls.run_dir}',
                                      f'--export_subnet={cls.config}', REPRESENTATIVE)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  # -- helpers ---------------------------------------------------------------------------------

  def assert_succeeded(self, result):
    code, lines, _ = result
    self.assertEqual(code, 0, msg='\n'.join(lines[-30:]))

  def load_summary(self, run_dir):
    with open(os.path.join(run_dir, 'export', exporter.SUMMARY_NAME)) as f:
      return json.load(f)

  def assert_export_files(self, run_dir, config):
    out = os.path.join(run_dir, 'export')
    self.assertContainsSubset(['model.keras', 'model_keras3.keras', 'model_int8.tflite',
                               'model_float.tflite', 'saved_model', exporter.SUMMARY_NAME],
                              os.listdir(out))
    exits = list(range(1, config.exit + 1))
    with open(os.path.join(out, 'early_exit', 'manifest.json')) as f:
      manifest = json.load(f)
    self.assertEqual(manifest['exits'], exits)
    self.assertEqual(sc.SubnetConfig.from_dict(manifest['config']), config)
    for segment in manifest['segments']:
      self.assertTrue(os.path.isfile(os.path.join(out, 'early_exit', segment['file'])))
    summary = self.load_summary(run_dir)
    self.assertEqual(summary['model']['input_shape'], [1, config.resolution, config.resolution, 3])
    self.assertEqual(summary['files']['int8_tflite']['inputs'][0]['dtype'], 'int8')
    self.assertEqual(sc.SubnetConfig.from_dict(summary['source']['config']), config)
    # Agreement measured on held-out test images, not on the calibration set.
    self.assertEqual(summary['check_images'], export_mode.CHECK_IMAGES)
    self.assertEqual(summary['metadata']['check_split'], 'test')
    self.assertGreater(summary['files']['int8_tflite']['tflm_arena_bytes'], 0)
    self.assertEmpty(leftovers(run_dir))
    return summary

  def assert_keras_matches_supernet(self, run_dir, config):
    """The exported .keras file computes what the re-calibrated supernet computes for `config`."""
    model = tf_keras.models.load_model(os.path.join(run_dir, 'export', 'model.keras'),
                                       safe_mode=True)
    net = self.trained.supernet
    for layer, (mean, variance) in zip(bn_calibration.batch_norm_layers(net), self.trained_bn):
      layer.moving_mean.assign(mean)
      layer.moving_variance.assign(variance)
    images = export_mode.check_images(self.trained.splits, config.resolution, 8)
    arch = supernet_lib.arch_tensors(config)
    stale = net(images, arch, training=False).numpy()
    export_mode.recalibrate(net, self.trained.splits, config,
                            self.trained.config.calibration_images, self.trained.config.seed)
    want = net(images, arch, training=False).numpy()
    got = np.asarray(model(images, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The comparison can fail: the checkpoint's own BN statistics give other logits.
    self.assertGreater(float(np.max(np.abs(stale - got))), 1e-3)

  def assert_one_line_error(self, result, *needles):
    code, lines, _ = result
    self.assertEqual(code, 2, msg='\n'.join(lines))
    text = '\n'.join(lines)
    self.assertNotIn('Traceback', text)
    error_lines = [line for line in lines if line.startswith('error:')]
    self.assertLen(error_lines, 1, msg=text)
    for needle in needles:
      self.assertIn(needle, error_lines[0])

  def export_on(self, run_dir, *flags):
    return run_fixture.run_main('--mode=export', f'--run_dir={run_dir}', REPRESENTATIVE, *flags)

  # -- successful exports --------------------------------------------------------------------------

  def test_export_by_config_string(self):
    self.assert_succeeded(self.result)
    config = sc.SubnetConfig.parse(self.config)
    summary = self.assert_export_files(self.run_dir, config)
    choice = summary['metadata']['choice']
    self.assertEqual(choice['source'], 'config')
    self.assertEqual(choice['config'], self.config)
    self.assertNotIn('costs', choice)
    self.assertEqual(summary['metadata']['phase'], self.trained.plan.name)
    _, _, stdout = self.result
    self.assertIn(self.config, stdout)
    self.assertIn('top-1 agreement with float', stdout)
    self.assertRegex(stdout, r'model_int8\.tflite .* TFLite Micro arena [\d,]+ B')
    self.assertRegex(stdout, r'segment5_exit5\.tflite .* TFLite Micro arena [\d,]+ B')
    self.assert_keras_matches_supernet(self.run_dir, config)

  def test_export_pareto_index(self):
    arena = 4 << 20  # a device arena the files fit in: checked on every file a device runs
    result = self.export_on(self.pareto_run, '--export_subnet=pareto:0',
                            f'--tflm_arena_bytes={arena}')
    self.assert_succeeded(result)
    wanted = self.front[0]
    summary = self.assert_export_files(self.pareto_run, wanted.config)
    device_files = [summary['files']['int8_tflite']] + [
        f for f in summary['files']['early_exit']['files'] if 'segment' in f['path']]
    self.assertLen(device_files, 1 + wanted.config.exit)
    for entry in device_files:
      self.assertEqual(entry['tflm_arena_checked_bytes'], arena, msg=entry['path'])
      self.assertLessEqual(entry['tflm_arena_bytes'], arena)
    choice = summary['metadata']['choice']
    self.assertEqual(choice['source'], 'pareto_index')
    self.assertEqual(choice['pareto_index'], 0)
    self.assertEqual(choice['config'], wanted.config.to_string())
    self.assertEqual(choice['pareto_file'], export_mode.pareto_path(self.pareto_run))
    self.assertEqual(choice['costs'], wanted.costs)
    self.assertAlmostEqual(choice['predicted_accuracy'], wanted.predicted_accuracy)
    self.assertIsNone(choice['measured_accuracy'])
    self.assert_keras_matches_supernet(self.pareto_run, wanted.config)

  # -- choosing the sub-network (no TensorFlow run needed) -------------------------------------

  def test_default_is_the_most_accurate_pareto_candidate(self):
    choice = export_mode.choose(None, self.pareto_run)
    # Candidate 2's measured 0.38 outranks candidate 1's predicted 0.52.
    self.assertEqual((choice.source, choice.index), ('pareto_most_accurate', 2))
    self.assertEqual(choice.config, self.front[2].config)
    self.assertEqual(choice.as_dict()['accuracy'], 0.38)
    predicted_only = [pareto.Candidate(c.config, c.predicted_accuracy, c.costs)
                      for c in self.front]
    self.assertEqual(export_mode.most_accurate(predicted_only), 1)

  def test_choice_mistakes_name_what_is_valid(self):
    with self.assertRaisesRegex(errors.ConfigError, r'pareto:x.*whole number'):
      export_mode.choose('pareto:x', self.pareto_run)
    with self.assertRaisesRegex(errors.ConfigError, r'pareto:-1.*whole number'):
      export_mode.choose('pareto:-1', self.pareto_run)
    with self.assertRaisesRegex(errors.ConfigError, r'--export_subnet=r24-x5: .*dash-separated'):
      export_mode.choose('r24-x5', self.pareto_run)
    with self.assertRaisesRegex(errors.ConfigError, r'pareto:0.*no search result.*--mode=search'):
      export_mode.choose('pareto:0', self.run_dir)
    empty = self.create_tempdir().full_path
    os.makedirs(os.path.join(empty, 'search'))
    pareto.ParetoResult('EE_D', ['macs'], {}, []).save(export_mode.pareto_path(empty))
    with self.assertRaisesRegex(errors.ConfigError, 'empty Pareto front'):
      export_mode.choose(None, empty)

  def test_empty_training_split_is_a_data_error(self):
    splits = self.trained.splits
    empty = splits_lib.DatasetSplits(
        name='empty', train=splits.train.take(0), validation=splits.validation,
        test=splits.test, num_classes=splits.num_classes, class_names=splits.class_names,
        mean=splits.mean, std=splits.std, native_size=splits.native_size)
    with self.assertRaisesRegex(errors.DataError, 'train split of empty.*--representative_images'):
      export_mode.representative_images(empty, 24, 10)
    self.assertLen(export_mode.representative_images(splits, 24, 10), 10)

  # -- bad input: one error line, the previous export untouched ---------------------------------

  def assert_unchanged(self, run_dir, before):
    self.assertEqual(snapshot(os.path.join(run_dir, 'export')), before)
    self.assertEmpty(leftovers(run_dir))

  def test_config_outside_the_space(self):
    before = snapshot(os.path.join(self.run_dir, 'export'))
    config = sc.SubnetConfig.parse(self.config)
    expand = list(config.expand)
    expand[6] = 3  # the kernel phase trains expand ratio 6 only
    result = self.export_on(self.run_dir,
                            f'--export_subnet={config.replace(expand=expand).to_string()}')
    self.assert_one_line_error(result, '--export_subnet', 'phase kernel', 'expand[6]', '= 3',
                               'valid values: 6')
    self.assert_unchanged(self.run_dir, before)

  def test_run_without_a_trained_phase(self):
    run_dir = self.create_tempdir().full_path
    shutil.copy(os.path.join(self.run_dir, 'config.json'), run_dir)
    result = self.export_on(run_dir, f'--export_subnet={self.config}')
    self.assert_one_line_error(result, 'no trained phase', '--mode=train')
    self.assertFalse(os.path.exists(os.path.join(run_dir, 'export')))
    self.assertEmpty(leftovers(run_dir))

  def test_no_pareto_file_and_no_subnet(self):
    before = snapshot(os.path.join(self.run_dir, 'export'))
    result = self.export_on(self.run_dir)
    self.assert_one_line_error(result, '--mode=search', '--export_subnet')
    self.assert_unchanged(self.run_dir, before)

  def test_pareto_index_out_of_range(self):
    before = snapshot(os.path.join(self.pareto_run, 'export'))
    result = self.export_on(self.pareto_run, '--export_subnet=pareto:7')
    self.assert_one_line_error(result, 'pareto:7', '3 sub-network(s)', '0..2')
    self.assert_unchanged(self.pareto_run, before)

  def test_too_small_tflm_arena(self):
    self.assert_succeeded(self.result)
    before = snapshot(os.path.join(self.run_dir, 'export'))
    # Half of what the same sub-network's int8 file was measured to need.
    needed = self.load_summary(self.run_dir)['files']['int8_tflite']['tflm_arena_bytes']
    arena = needed // 2
    result = self.export_on(self.run_dir, f'--export_subnet={self.config}',
                            f'--tflm_arena_bytes={arena}')
    self.assert_one_line_error(result, f'--tflm_arena_bytes={arena}', 'too small',
                               'model_int8.tflite', 'needs')
    self.assert_unchanged(self.run_dir, before)

  def test_missing_dataset(self):
    run_dir = copy_run(self.run_dir, os.path.join(self.create_tempdir().full_path, 'run'))
    missing = os.path.join(self.create_tempdir().full_path, 'data_gone')
    path = os.path.join(run_dir, 'config.json')
    with open(path) as f:
      config = json.load(f)
    config['data_dir'] = missing
    with open(path, 'w') as f:
      json.dump(config, f)
    result = self.export_on(run_dir, f'--export_subnet={self.config}')
    self.assert_one_line_error(result, missing)
    self.assertFalse(os.path.exists(os.path.join(run_dir, 'export')))
    self.assertEmpty(leftovers(run_dir))


if __name__ == '__main__':
  absltest.main()
