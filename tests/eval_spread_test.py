"""`python -m benchmarks.eval_spread`: one sub-network of a tiny run measured over seed pairs."""
# bazel: size=large tags=slow

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from absl.testing import absltest

from benchmarks import eval_spread
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import subnet_config as sc
from ofav2_tf.data import pipeline
from ofav2_tf.modes import common
from tests import run_fixture

IMAGES = 40
CALIBRATION_IMAGES = 32
SEEDS = (0, 1)


def run_benchmark(*args):
  """Runs the benchmark in a subprocess: (exit code, stderr lines without TF noise, stdout)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=run_fixture.ROOT)
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.eval_spread', *args],
                        cwd=run_fixture.ROOT, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  lines = [line for line in proc.stderr.splitlines()
           if line.strip() and not line.startswith(run_fixture.NOISE)]
  return proc.returncode, lines, proc.stdout


def json_line(stdout):
  lines = [line for line in stdout.splitlines() if line.strip()]
  assert len(lines) == 1, stdout
  return json.loads(lines[0])


class EvalSpreadTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='eval-spread-test-')
    cls.run_dir = run_fixture.trained_run(cls.root)  # The shared tiny run (full 4, kernel 2).
    cls.config = run_folder_lib.RunFolder(cls.run_dir).load_config()
    cls.space = common.phase_space(cls.config, 'kernel')
    cls.subnet = cls.space.min_config(min(cls.space.resolutions)).to_string()
    seeds = ','.join(map(str, SEEDS))
    cls.args = (f'--run_dir={cls.run_dir}', f'--images={IMAGES}',
                f'--calibration_images={CALIBRATION_IMAGES}', f'--calibration_seeds={seeds}',
                f'--sample_seeds={seeds}', f'--subnets={cls.subnet}')
    cls.first = run_benchmark(*cls.args)
    with open(os.path.join(cls.run_dir, eval_spread.OUTPUT_FILE)) as f:
      cls.first_file = json.load(f)
    cls.second = run_benchmark(*cls.args)  # The same seeds again.

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def result(self, outcome):
    code, lines, stdout = outcome
    self.assertEqual(code, 0, '\n'.join(lines[-30:]))
    return json_line(stdout)

  def test_one_entry_per_subnet_with_every_seed_pair(self):
    result = self.result(self.first)
    self.assertEqual(result, self.first_file)
    self.assertEqual((result['images'], result['calibration_images']),
                     (IMAGES, CALIBRATION_IMAGES))
    self.assertEqual(result['calibration_seeds'], list(SEEDS))
    self.assertEqual(result['sample_seeds'], list(SEEDS))
    self.assertEqual(result['phase'], 'kernel')
    (network,) = result['subnets']
    self.assertEqual((network['role'], network['config']), ('subnet1', self.subnet))
    accuracy = np.array(network['accuracy'])
    self.assertEqual(accuracy.shape, (len(SEEDS), len(SEEDS)))
    for value in accuracy.flat:
      self.assertBetween(value, 0.0, 1.0)
      self.assertAlmostEqual(value * IMAGES, round(value * IMAGES), places=3)  # k of 40 right.
    expected = eval_spread.spread(accuracy, IMAGES, result['split_images'])
    for key, value in expected.items():
      self.assertAlmostEqual(network[key], value, places=5, msg=key)
    self.assertEqual(result['largest_range'], network['range'])
    progress = [line for line in self.first[1] if line.startswith('[eval_spread] ')
                and 'calibration seed' in line and 'top-1' in line]
    self.assertLen(progress, len(SEEDS) ** 2)

  def test_seeds_draw_different_images(self):
    evaluators = self.result(self.first)['evaluators']
    self.assertEqual([(e['calibration_seed'], e['sample_seed']) for e in evaluators],
                     [(c, s) for c in SEEDS for s in SEEDS])
    by_pair = {(e['calibration_seed'], e['sample_seed']): e for e in evaluators}
    for seed in SEEDS:  # Each draw follows its own seed and only that one.
      self.assertEqual(by_pair[0, seed]['sample_digest'], by_pair[1, seed]['sample_digest'])
      self.assertEqual(by_pair[seed, 0]['calibration_digest'],
                       by_pair[seed, 1]['calibration_digest'])
    self.assertNotEqual(by_pair[0, 0]['sample_digest'], by_pair[0, 1]['sample_digest'])
    self.assertNotEqual(by_pair[0, 0]['calibration_digest'], by_pair[1, 0]['calibration_digest'])

    # The digests are of the images a bounded evaluation with that sample seed really measures.
    splits = common.load_dataset(self.config)
    labels = np.concatenate([y for _, y in splits.test.batch(4096).as_numpy_iterator()])
    measured = {}
    for seed in SEEDS:
      indices = eval_spread.sample_indices(splits, IMAGES, seed)
      self.assertLen(indices, IMAGES)
      self.assertEqual(by_pair[0, seed]['sample_digest'], eval_spread.digest(indices))
      measured[seed] = np.concatenate([y for _, y in pipeline.eval_batches(
          splits, 250, 24, split='test', images=IMAGES, sample_seed=seed).as_numpy_iterator()])
      np.testing.assert_array_equal(measured[seed], labels[indices])
    self.assertFalse(np.array_equal(*(eval_spread.sample_indices(splits, IMAGES, s)
                                      for s in SEEDS)))
    self.assertFalse(np.array_equal(measured[0], measured[1]))
    self.assertLess(self.result(self.first)['sample_overlap'], 1.0)

  def test_same_seeds_give_the_same_figures(self):
    first, second = self.result(self.first), self.result(self.second)
    self.assertEqual(first['subnets'][0]['accuracy'], second['subnets'][0]['accuracy'])
    self.assertEqual(first['evaluators'], second['evaluators'])

  def test_spread_definitions(self):
    accuracy = [[0.50, 0.60, 0.70],   # calibration seed 0 over sample seeds 0, 1, 2
                [0.52, 0.60, 0.90],
                [0.50, 0.61, 0.70]]
    figures = eval_spread.spread(accuracy, 100, 10000)
    self.assertAlmostEqual(figures['calibration_spread'], 0.02)  # median of .02, .01, .20
    self.assertAlmostEqual(figures['sample_spread'], 0.20)  # median of .20, .38, .20
    self.assertAlmostEqual(figures['range'], 0.40)
    self.assertAlmostEqual(figures['std'], float(np.std(accuracy, ddof=1)))
    self.assertAlmostEqual(figures['mean'], float(np.mean(accuracy)))
    self.assertBetween(figures['sampling_std_expected'], 0.04, 0.06)
    self.assertEqual(eval_spread.spread(accuracy, 10000, 10000)['sampling_std_expected'], 0.0)

  def test_default_subnets(self):
    roles = [(role, eval_spread.label(c)) for role, c in eval_spread.default_subnets(self.space)]
    self.assertEqual(roles, [('max', 'k7 e6 d4 x5 r28'), ('middle', 'k5 e6 d4 x5 r28'),
                             ('min', 'k3 e6 d4 x5 r24')])
    full = sc.SearchSpace.for_variant('EE_D', (48, 64))
    roles = [(role, eval_spread.label(c)) for role, c in eval_spread.default_subnets(full)]
    self.assertEqual(roles, [('max', 'k7 e6 d4 x5 r64'), ('middle', 'k5 e4 d3 x5 r64'),
                             ('min', 'k3 e3 d2 x1 r48')])
    parallel = sc.SearchSpace.for_variant('EE_P', (48, 64))
    self.assertEqual([eval_spread.label(c)[-2:] for _, c in eval_spread.default_subnets(parallel)],
                     ['b3', 'b2', 'b1'])

  def test_bad_input_is_one_error_line(self):
    untrained = os.path.join(self.root, 'untrained')
    os.makedirs(untrained, exist_ok=True)
    shutil.copy(os.path.join(self.run_dir, 'config.json'), untrained)
    outside = self.space.uniform(3, 6, 4).replace(expand=(3,) * sc.NUM_BLOCKS).to_string()
    cases = (
        ((f'--run_dir={self.run_dir}', '--subnets=r24-x5-bogus'), '--subnets #1'),
        ((f'--run_dir={self.run_dir}', f'--subnets={outside}'), 'trained phase trained'),
        ((f'--run_dir={self.run_dir}', '--sample_seeds=0,x'), '--sample_seeds'),
        ((f'--run_dir={os.path.join(self.root, "nothing")}',), 'holds no run'),
        ((f'--run_dir={untrained}',), 'no trained phase'),
    )
    for args, words in cases:
      code, lines, stdout = run_benchmark(*args)
      self.assertEqual(code, 2, (args, lines))
      self.assertEqual(stdout, '')
      self.assertLen(lines, 1, lines)
      self.assertStartsWith(lines[0], 'error: ')
      self.assertIn(words, lines[0])


if __name__ == '__main__':
  absltest.main()
