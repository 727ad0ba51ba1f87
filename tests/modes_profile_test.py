"""`python -m ofav2_tf.main --mode=profile`: a run's latency lookup table, measured here."""
# bazel: size=large tags=slow

import json
import os
import re
import shutil
import tempfile

import numpy as np
from absl.testing import absltest

from ofav2_tf import latency_table
from ofav2_tf import run_config as run_config_lib
from ofav2_tf import subnet_config as sc
from tests import run_fixture

# One training phase, one resolution, one kernel size and expand ratio: the space keeps every
# block kind (stem, MBConv shapes, dense additions, five heads) in a few dozen block models.
SMALL_SPACE = ('--phases=full', '--phase_steps=full=2', '--resolutions=28', '--kernel_sizes=3',
               '--expand_ratios=3')
CALIBRATIONS = 3
PROFILE_FLAGS = ('--latency_runs=3', f'--latency_calibration_subnets={CALIBRATIONS}')
CHECKS = 3


def load_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


class ProfileModeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='modes-profile-test-')
    cls.run_dir = run_fixture.trained_run(cls.root, *SMALL_SPACE)
    cls.config = run_config_lib.RunConfig.from_dict(
        load_json(os.path.join(cls.run_dir, 'config.json')))
    cls.code, cls.lines, cls.stdout = run_fixture.run_main(
        '--mode=profile', f'--run_dir={cls.run_dir}', *PROFILE_FLAGS,
        f'--latency_check_subnets={CHECKS}')
    cls.table_path = os.path.join(cls.run_dir, 'latency', 'latency_table.json')
    cls.check_path = os.path.join(cls.run_dir, 'latency', 'latency_check.json')

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def space(self):
    c = self.config
    return sc.SearchSpace.for_variant(c.variant, c.resolutions, c.kernel_sizes, c.expand_ratios,
                                      c.depths)

  def assert_ran(self, code, lines, stdout):
    self.assertEqual(code, 0, msg='\n'.join(lines[-30:]) + stdout[-3000:])

  def test_table_predicts_every_subnetwork(self):
    self.assert_ran(self.code, self.lines, self.stdout)
    table = latency_table.LatencyTable.load(self.table_path)
    settings = table.settings
    self.assertEqual((settings['variant'], settings['num_classes'], settings['width_multiplier']),
                     (self.config.variant, self.config.num_classes,
                      self.config.width_multiplier))
    self.assertEqual(settings['dtype'], 'int8')  # The flag's default: what ships.
    self.assertEqual(settings['runs'], 3)
    self.assertEqual(settings['num_threads'], 1)
    self.assertEqual(settings['resolutions'], [28])
    self.assertIn('phase full', settings['weights'])  # The trained checkpoint was restored.
    self.assertLen(table.calibration, CALIBRATIONS)
    self.assertIn(table.correction['name'], latency_table.CORRECTIONS)
    self.assertIn(f"correction {table.correction['name']!r}", self.stdout)
    self.assertTrue(all(v > 0 for v in table.entries.values()))
    rng = np.random.default_rng(3)
    space = self.space()
    configs = [space.sample(rng) for _ in range(10)] + [space.max_config(), space.min_config()]
    predictions = []
    for config in configs:
      self.assertEmpty(table.missing(config), msg=str(config))
      predictions.append(table.predict(config))
    self.assertTrue(all(p > 0 for p in predictions), msg=predictions)
    # A deeper network runs more blocks: the table must say it is slower.
    self.assertGreater(table.predict(space.max_config()), table.predict(space.min_config()))

  def test_progress_counts_every_block(self):
    self.assert_ran(self.code, self.lines, self.stdout)
    table = latency_table.LatencyTable.load(self.table_path)
    counters = re.findall(r'block (\d+)/(\d+) ', self.stdout)
    self.assertLen(counters, len(table.entries))
    self.assertEqual([int(done) for done, _ in counters], list(range(1, len(table.entries) + 1)))
    self.assertEqual({int(total) for _, total in counters}, {len(table.entries)})

  def test_check_file_reports_the_error(self):
    self.assert_ran(self.code, self.lines, self.stdout)
    check = load_json(self.check_path)
    self.assertEqual(check['latency_table'], os.path.abspath(self.table_path))
    self.assertLen(check['configs'], CHECKS)
    self.assertLen(check['measured_ms'], CHECKS)
    self.assertTrue(all(m > 0 for m in check['measured_ms']))
    table = latency_table.LatencyTable.load(self.table_path)
    for text, predicted in zip(check['configs'], check['predicted_ms']):  # The saved table's.
      self.assertAlmostEqual(table.predict(sc.SubnetConfig.from_string(text)), predicted)
    errors = [(p - m) / m for p, m in zip(check['predicted_ms'], check['measured_ms'])]
    np.testing.assert_allclose(check['relative_errors'], errors, rtol=1e-9)
    mare = check['mean_abs_relative_error']
    self.assertAlmostEqual(mare, float(np.mean(np.abs(errors))))
    self.assertIn(f'MARE) {100 * mare:.1f}%', self.stdout)
    print(f'profile MARE on {CHECKS} sub-networks: {100 * mare:.1f}% '
          f'(measured {check["measured_ms"]}, predicted {check["predicted_ms"]})')

  def test_run_without_checkpoint_custom_path_and_no_check(self):
    # A run folder holding only config.json (e.g. copied to the device) profiles the freshly built
    # supernet. Another variant (single exit, one depth) keeps this second profile short.
    bare = os.path.join(self.root, 'bare')
    os.makedirs(os.path.join(bare, 'latency'))
    config = dict(load_json(os.path.join(self.run_dir, 'config.json')), variant='SE_B',
                  depths=[2])
    with open(os.path.join(bare, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(config, f)
    stale = os.path.join(bare, 'latency', 'latency_check.json')
    with open(stale, 'w', encoding='utf-8') as f:
      f.write('{"from": "an older table"}\n')
    custom = os.path.join(self.root, 'tables', 'device.json')
    code, lines, stdout = run_fixture.run_main(
        '--mode=profile', f'--run_dir={bare}', *PROFILE_FLAGS, '--latency_check_subnets=0',
        '--latency_dtype=float32', f'--latency_table={custom}')
    self.assert_ran(code, lines, stdout)
    self.assertIn('freshly built supernet', stdout)
    table = latency_table.LatencyTable.load(custom)
    self.assertEqual((table.settings['variant'], table.settings['dtype']), ('SE_B', 'float32'))
    self.assertIn('freshly built', table.settings['weights'])
    space = sc.SearchSpace.for_variant('SE_B', (28,), (3,), (3,), (2,))
    for config in (space.max_config(), space.sample(np.random.default_rng(0))):
      self.assertEmpty(table.missing(config))
      self.assertGreater(table.predict(config), 0)
    self.assertFalse(os.path.exists(os.path.join(bare, 'latency', 'latency_table.json')))
    self.assertFalse(os.path.exists(stale))  # Not left to be read as this table's check.
    self.assertEqual(os.listdir(os.path.dirname(custom)), ['device.json'])

  def test_folder_without_run_is_one_error_line(self):
    empty = tempfile.mkdtemp(dir=self.root)
    code, lines, _ = run_fixture.run_main('--mode=profile', f'--run_dir={empty}')
    self.assertEqual(code, 2)
    self.assertNotIn('Traceback', '\n'.join(lines))
    errors = [line for line in lines if line.startswith('error:')]
    self.assertLen(errors, 1, msg='\n'.join(lines))
    self.assertIn('no config.json', errors[0])
    self.assertEqual(os.listdir(empty), [])


if __name__ == '__main__':
  absltest.main()
