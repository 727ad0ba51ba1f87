"""Random sub-networks against the max network: files, exits, resuming, the report's summary."""
# bazel: size=large

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from ofav2_tf import data
from ofav2_tf import errors
from ofav2_tf import phase_eval
from ofav2_tf import random_subnets
from ofav2_tf import report
from ofav2_tf import subnet_config as sc
from ofav2_tf.search import predictor_data
from tests import testutil

IMAGES = 64


class RandomSubnetsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    splits = data.load('fashion_mnist', seed=0)
    cls.net = testutil.perturbed_supernet('EE_D', num_classes=10, seed=5, width_multiplier=0.25)
    cls.evaluator = phase_eval.Evaluator(cls.net, splits, calibration_images=64, seed=0,
                                         validation_images=IMAGES, eval_images=IMAGES,
                                         traced_calibration=True)
    cls.space = cls.net.search_space(resolutions=(24, 28))
    cls.network = {'variant': cls.net.variant, 'num_classes': cls.net.num_classes,
                   'width_multiplier': cls.net.width_multiplier}

  def setUp(self):
    super().setUp()
    self.run_dir = tempfile.mkdtemp(prefix='random_subnets_test_', dir=self.get_temp_dir())
    self.measured = []

  def measure(self, config):
    self.measured.append(config.to_string())
    return self.evaluator.evaluate(config, 'test', IMAGES).accuracy

  def run_random(self, count, min_exit=3, **kwargs):
    return random_subnets.evaluate(self.measure, self.space, count, min_exit, self.run_dir, seed=1,
                                   network=self.network,
                                   metadata={'split': 'test', 'images': IMAGES, **kwargs})

  def test_writes_results_resumes_and_reports(self):
    result = self.run_random(6)
    with open(os.path.join(self.run_dir, random_subnets.RESULT_FILE)) as f:
      self.assertEqual(json.load(f), result)
    self.assertGreater(os.path.getsize(os.path.join(self.run_dir, random_subnets.PLOT_FILE)), 1000)
    subnets = result['subnets']
    self.assertLen(subnets, 6)
    self.assertLen({s['config'] for s in subnets}, 6)
    for s in subnets:
      config = self.space.validate(sc.SubnetConfig.from_string(s['config']))
      self.assertGreaterEqual(config.exit, 3)
      self.assertEqual((s['exit'], s['resolution']), (config.exit, config.resolution))
      self.assertGreater(s['macs'], 0)
      self.assertBetween(s['accuracy'], 0.0, 1.0)
    top = self.space.max_config(28)
    self.assertEqual(result['max_network']['config'], top.to_string())
    self.assertLen(self.measured, 7)  # 6 random, then the max network.
    self.assertEqual(self.measured[-1], top.to_string())
    # The figures are the evaluator's: the max network measured again gives the same accuracy.
    self.assertAllClose(result['max_network']['accuracy'],
                        self.evaluator.evaluate(top, 'test', IMAGES).accuracy, atol=1.5 / IMAGES)

    summary = result['summary']
    accuracies = [s['accuracy'] for s in subnets]
    self.assertEqual(summary['count'], 6)
    self.assertAllClose(summary['median'], np.median(accuracies))
    self.assertEqual(summary['worst'], min(accuracies))
    self.assertAllClose(summary['median_gap'],
                        result['max_network']['accuracy'] - np.median(accuracies))
    self.assertAllClose(summary['worst_gap'], result['max_network']['accuracy'] - min(accuracies))
    self.assertEqual(sum(e['count'] for e in summary['per_exit'].values()), 6)
    self.assertTrue(all(int(k) >= 3 for k in summary['per_exit']))
    for k, entry in summary['per_exit'].items():
      self.assertAllClose(entry['median'],
                          np.median([s['accuracy'] for s in subnets if s['exit'] == int(k)]))

    # Interrupted after 4 sub-networks: only the last 2 are measured again, the max network is not.
    path = os.path.join(self.run_dir, random_subnets.CACHE_DIR, predictor_data.DATA_FILE)
    with open(path) as f:
      lines = f.readlines()
    with open(path, 'w') as f:
      f.writelines(lines[:4])
    first = [s['config'] for s in subnets]
    self.measured.clear()
    resumed = self.run_random(6)
    self.assertEqual(self.measured, first[4:])
    self.assertEqual([s['config'] for s in resumed['subnets']], first)
    self.assertEqual(resumed['summary']['count'], 6)
    # Asking for more later measures only the new ones; the first 6 are the same draw.
    self.measured.clear()
    more = self.run_random(8)
    self.assertLen(self.measured, 2)
    self.assertEqual([s['config'] for s in more['subnets']][:6], first)
    self.assertEqual(more['measured_this_session'], 2)

    text = report.build(self.run_dir)
    self.assertIn('## Random sub-networks', text)
    self.assertIn('8 random sub-networks', text)
    self.assertIn(f'max network `{top.to_string()}`', text)
    self.assertIn(f'| median | {100 * more["summary"]["median"]:.2f}% | '
                  f'{100 * more["summary"]["median_gap"]:.2f}% |', text)
    self.assertIn(random_subnets.PLOT_FILE, text)

    # Figures measured another way are never mixed in.
    with self.assertRaisesRegex(errors.DataError, 'delete it'):
      self.run_random(8, calibration_images=999)

  def test_bad_requests(self):
    with self.assertRaisesRegex(errors.ConfigError, 'random_min_exit=4: .* exits 1,2,3 only'):
      random_subnets.restrict_exits(self.space.restrict(exits=(1, 2, 3)), 4)
    with self.assertRaisesRegex(errors.ConfigError, 'at least one'):
      self.run_random(0)
    self.assertEqual(random_subnets.restrict_exits(self.space, 4).exits, (4, 5))
    self.assertEmpty(self.measured)

  def test_report_without_random_subnets_has_no_section(self):
    self.assertNotIn('Random sub-networks', report.build(self.run_dir))


if __name__ == '__main__':
  tf.test.main()
