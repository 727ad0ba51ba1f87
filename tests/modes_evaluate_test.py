"""`--mode=evaluate` on a tiny trained run: the uniform spread, random sub-networks, bad input."""
# bazel: size=enormous tags=slow

import json
import os
import shutil
import tempfile

from absl.testing import absltest

from ofav2_tf import random_subnets
from tests import run_fixture

_EVAL_FLAGS = ('--eval_images=48', '--calibration_images=32')


def _load(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


class EvaluateModeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='modes_evaluate_test_')
    cls.run_dir = run_fixture.trained_run(cls.root)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_uniform_spread_has_the_max_network(self):
    code, lines, _ = run_fixture.run_main('--mode=evaluate', f'--run_dir={self.run_dir}',
                                          '--eval_max_subnets=2', *_EVAL_FLAGS)
    self.assertEqual(code, 0, '\n'.join(lines[-20:]))
    summary = _load(os.path.join(self.run_dir, 'evaluation_01_kernel.json'))
    self.assertEqual(summary['phase'], 'kernel')
    self.assertEqual(summary['uniform_grid_size'], 3)  # kernels 3, 5, 7 at 28 px, exit 5.
    self.assertLen(summary['uniform'], 3)  # The max network for free, two with their own pass.
    self.assertEqual(summary['uniform_max']['label'], 'k7 e6 d4 x5 r28')
    self.assertEqual(summary['uniform_max']['accuracy'], summary['exit_accuracy']['5'])

  def test_random_subnets_then_report(self):
    code, lines, _ = run_fixture.run_main(
        '--mode=evaluate', f'--run_dir={self.run_dir}', '--random_subnets=3',
        '--random_min_exit=3', '--random_images=48', *_EVAL_FLAGS)
    self.assertEqual(code, 0, '\n'.join(lines[-20:]))
    result = _load(os.path.join(self.run_dir, random_subnets.RESULT_FILE))
    self.assertLen(result['subnets'], 3)
    self.assertEqual(result['metadata']['phase'], 'kernel')
    self.assertEqual(result['metadata']['images'], 48)
    self.assertEqual(result['metadata']['calibration_images'], 32)
    self.assertTrue(all(s['exit'] >= 3 for s in result['subnets']))
    self.assertTrue(os.path.isfile(os.path.join(self.run_dir, random_subnets.PLOT_FILE)))
    code, lines, _ = run_fixture.run_main('--mode=report', f'--run_dir={self.run_dir}')
    self.assertEqual(code, 0, '\n'.join(lines[-20:]))
    with open(os.path.join(self.run_dir, 'report.md'), encoding='utf-8') as f:
      text = f.read()
    self.assertIn('## Random sub-networks', text)
    self.assertIn('3 random sub-networks of phase kernel', text)

  def test_subnets_and_random_subnets_together_is_one_error(self):
    code, lines, _ = run_fixture.run_main(
        '--mode=evaluate', f'--run_dir={self.run_dir}', '--random_subnets=3',
        '--subnets=r28-x5-d4:k7e6')
    self.assertEqual(code, 2, '\n'.join(lines))
    errors = [line for line in lines if line.startswith('error:')]
    self.assertLen(errors, 1, '\n'.join(lines))
    self.assertIn('--random_subnets', errors[0])


if __name__ == '__main__':
  absltest.main()
