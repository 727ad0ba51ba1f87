"""`python -m ofav2_tf.main --mode=benchmark`: device checks of a run's exported sub-network."""
# bazel: size=large tags=slow

import json
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
from absl.testing import absltest

from export import cascade as cascade_lib
from export import exporter
from export import keras_portability
from export import litert_runner
from export import manifest as manifest_lib
from ofav2_tf import bn_calibration
from ofav2_tf import supernet as supernet_lib
from ofav2_tf.data import pipeline
from ofav2_tf.modes import common
from tests import run_fixture

RES = 28
EXIT = 3
IMAGES = 100
BENCH_FLAGS = (f'--benchmark_images={IMAGES}', '--benchmark_runs=5')


def load_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _save_without_load_checks(model, directory, basename='model', **unused_kwargs):
  """`keras_portability.save_and_check` without its fresh-process loads (see setUpClass)."""
  path = os.path.join(directory, basename + '.keras')
  keras_portability.save_tf_keras(model, path)
  return keras_portability.PortabilityReport(tf_keras_path=path, keras3_path=path, checks=(),
                                             keras3_direct_error=None)


def leftovers(run_dir):
  return [n for n in os.listdir(run_dir) if n.startswith('.benchmark.')]


class BenchmarkModeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='modes-benchmark-test-')
    cls.run_dir = run_dir = run_fixture.trained_run(cls.root)  # The shared (cached) tiny run.
    cls.no_export = run_fixture.run_main('--mode=benchmark', f'--run_dir={run_dir}')
    cls.no_export_listing = os.listdir(run_dir)

    # The export, made here with the library so this test does not depend on --mode=export.
    run = common.load_trained_run(run_dir)
    cls.splits = run.splits
    net = run.supernet
    cls.config = config = net.search_space(resolutions=(RES,)).max_config(RES).replace(exit=EXIT)
    calibration = pipeline.calibration_images(run.splits, 64, seed=0)
    batches = [b.numpy() for b in pipeline.calibration_batches(run.splits, calibration, RES,
                                                               batch_size=32)]
    arch = supernet_lib.arch_tensors(config)
    bn_calibration.recalibrate(net, batches,
                               lambda x: net(x, arch, training=True, all_exits=True))
    cls.export_dir = os.path.join(run_dir, 'export')
    # The .keras files' fresh-process load checks (three TensorFlow start-ups, about a minute
    # here) belong to the export's own test; the benchmark reads only the .tflite files. Likewise
    # the export's own TFLite Micro run (check_tflm), which the benchmark repeats.
    with mock.patch.object(keras_portability, 'save_and_check', _save_without_load_checks):
      exporter.export_subnet(net, cls.export_dir, np.concatenate(batches), config=config,
                             check_tflm=False)
    cls.manifest_path = os.path.join(cls.export_dir, 'early_exit', 'manifest.json')

    cls.small_arena = run_fixture.run_main('--mode=benchmark', f'--run_dir={run_dir}',
                                           *BENCH_FLAGS, '--tflm_arena_bytes=1024')
    cls.small_arena_listing = os.listdir(run_dir)
    cls.manifest_after_error = manifest_lib.Manifest.load(cls.manifest_path)

    cls.code, cls.lines, cls.stdout = run_fixture.run_main(
        '--mode=benchmark', f'--run_dir={run_dir}', *BENCH_FLAGS)
    cls.out = os.path.join(run_dir, 'benchmark')
    cls.report = None
    if cls.code == 0:
      cls.report = load_json(os.path.join(cls.out, 'benchmark.json'))
      print(json.dumps({k: v for k, v in cls.report.items() if k not in ('files', 'machine')},
                       indent=1))
      print(json.dumps({k: {'accuracy': v.get('accuracy'), 'latency': v['latency'],
                            'tflm': v.get('tflm')} for k, v in cls.report['files'].items()},
                       indent=1))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def require_report(self):
    self.assertEqual(self.code, 0, msg='\n'.join(self.lines[-30:]) + self.stdout[-3000:])
    return self.report

  def assert_one_error_line(self, result, *needles):
    code, lines, _ = result
    self.assertEqual(code, 2, msg='\n'.join(lines))
    self.assertNotIn('Traceback', '\n'.join(lines))
    errors = [line for line in lines if line.startswith('error:')]
    self.assertLen(errors, 1, msg='\n'.join(lines))
    for needle in needles:
      self.assertIn(needle, errors[0])

  def test_missing_export_is_one_error_line(self):
    self.assert_one_error_line(self.no_export, 'run --mode=export first')
    self.assertNotIn('benchmark', self.no_export_listing)

  def test_too_small_arena_is_one_error_and_leaves_nothing(self):
    self.assert_one_error_line(self.small_arena, '--tflm_arena_bytes=1024', 'arena', 'needs')
    self.assertNotIn('benchmark', self.small_arena_listing)
    self.assertEmpty([n for n in self.small_arena_listing if n.startswith('.benchmark.')])
    self.assertIsNone(self.manifest_after_error.sweep)  # The export is not touched either.

  def test_files_written(self):
    self.require_report()
    self.assertCountEqual(os.listdir(self.out), [
        'benchmark.json', 'device_table.md', 'early_exit.json', 'early_exit.png',
        'litert_benchmark'])
    self.assertEmpty(leftovers(self.run_dir))
    # float, int8, the multi-output early-exit file and the three segments.
    files = self.report['files']
    self.assertCountEqual(files, ['float_tflite', 'int8_tflite', 'multi_exit_tflite',
                                  'segment1_exit1', 'segment2_exit2', 'segment3_exit3'])
    for key, entry in files.items():
      tool = entry['litert_benchmark']
      self.assertEqual(tool['json'], f'litert_benchmark/{key}.json')
      data = load_json(os.path.join(self.out, tool['json']))
      self.assertEqual(os.path.abspath(data['model']),
                       os.path.abspath(os.path.join(self.export_dir, entry['path'])))
      self.assertGreater(data['latency']['median_ms'], 0)
      self.assertEqual(os.path.getsize(os.path.join(self.export_dir, entry['path'])),
                       entry['size_bytes'])
    with open(os.path.join(self.out, 'early_exit.png'), 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')

  def test_accuracy_is_measured_on_test_images(self):
    self.require_report()
    files = self.report['files']
    self.assertEqual(self.report['images'], IMAGES)
    for key in ('float_tflite', 'int8_tflite', 'multi_exit_tflite'):
      accuracy = files[key]['accuracy']
      self.assertEqual(accuracy['images'], IMAGES)
      self.assertBetween(accuracy['accuracy'], 0.0, 1.0)
    exits = files['multi_exit_tflite']['accuracy']['exit_accuracy']
    self.assertCountEqual(exits, [f'exit{k}' for k in range(1, EXIT + 1)])
    for value in exits.values():
      self.assertBetween(value, 0.0, 1.0)
    # The same figure, recomputed here on the benchmark's stratified sample of test images.
    images, labels = next(iter(pipeline.eval_batches(self.splits, IMAGES, RES, split='test',
                                                         images=IMAGES)))
    runner = litert_runner.LiteRTModel(os.path.join(self.export_dir, 'model_float.tflite'))
    predictions = [int(np.argmax(runner.run(image[np.newaxis].numpy())[f'exit{EXIT}']))
                   for image in images]
    want = float(np.mean(np.array(predictions) == labels.numpy()))
    self.assertAlmostEqual(files['float_tflite']['accuracy']['accuracy'], want, delta=2 / IMAGES)

  def test_tflite_micro_matches_litert(self):
    self.require_report()
    checked = {k: e['tflm'] for k, e in self.report['files'].items() if 'tflm' in e}
    self.assertCountEqual(checked, ['int8_tflite', 'multi_exit_tflite', 'segment1_exit1',
                                    'segment2_exit2', 'segment3_exit3'])
    for key, tflm in checked.items():
      self.assertNotIn('skipped', tflm, msg=key)
      self.assertGreater(tflm['arena_bytes'], 0)
      self.assertGreater(tflm['arena_used_bytes'], 0)
      self.assertLessEqual(tflm['max_step_diff_vs_litert'], 1, msg=key)
    self.assertEqual(self.report['tflm_max_arena_bytes'],
                     max(t['arena_bytes'] for t in checked.values()))

  def test_latency_figures(self):
    self.require_report()
    files = self.report['files']
    for key, entry in files.items():
      for threads in ('1', '2'):
        stats = entry['latency'][threads]
        self.assertGreater(stats['median_ms'], 0, msg=key)
        self.assertGreaterEqual(stats['p90_ms'], stats['median_ms'], msg=key)
        self.assertEqual(stats['runs'], 5)
    ratio = self.report['int8_vs_float_latency_ratio_1thread']
    self.assertAlmostEqual(ratio, files['float_tflite']['latency']['1']['median_ms'] /
                           files['int8_tflite']['latency']['1']['median_ms'])

  def test_thresholds_written_and_mac_saving_is_the_cascades(self):
    self.require_report()
    early = load_json(os.path.join(self.out, 'early_exit.json'))
    manifest = manifest_lib.Manifest.load(self.manifest_path)
    self.assertIsNotNone(manifest.sweep)
    self.assertEqual(manifest.sweep['threshold'], early['threshold'])
    self.assertEqual(manifest.sweep['images'], IMAGES)
    self.assertEqual([s.threshold for s in manifest.segments],
                     [early['threshold']] * (EXIT - 1) + [None])
    saving = self.report['early_exit_mac_saving']
    self.assertEqual(saving, early['mac_saving'])
    self.assertEqual(self.report['early_exit']['mac_saving'], saving)
    self.assertLen(early['rows'], len(cascade_lib.DEFAULT_THRESHOLDS))
    # Running the cascade with the written thresholds spends what the report says it saves.
    images, _ = next(iter(pipeline.eval_batches(self.splits, IMAGES, RES, split='test',
                                                         images=IMAGES)))
    cascade = cascade_lib.Cascade(self.manifest_path)
    macs = [cascade.run(image.numpy()).macs for image in images]
    baseline = manifest.segments[-1].cumulative_macs
    self.assertAlmostEqual(saving, 1.0 - float(np.mean(macs)) / baseline, places=9)
    self.assertIn('MAC saving', self.stdout)

  def test_device_table(self):
    self.require_report()
    with open(os.path.join(self.out, 'device_table.md'), encoding='utf-8') as f:
      text = f.read()
    rows = [line for line in text.splitlines() if line.startswith('| ') and
            not line.startswith('| file')]
    self.assertLen(rows, len(self.report['files']))
    for entry, row in zip(self.report['files'].values(), rows):
      cells = [c.strip() for c in row.strip('|').split('|')]
      self.assertLen(cells, 8)
      self.assertEqual(cells[0], entry['path'])
      self.assertEqual(cells[3], f'{entry["latency"]["1"]["median_ms"]:.3f}')
    self.assertIn('int8 vs float latency', text)


if __name__ == '__main__':
  absltest.main()
