"""`python -m benchmarks.from_scratch`: sub-networks of a tiny finished run trained alone."""
# bazel: size=large tags=slow

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from absl.testing import absltest

from benchmarks import from_scratch
from ofav2_tf import extraction
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import subnet_config as sc
from ofav2_tf.modes import common
from tests import run_fixture

EVAL_IMAGES = 100


def run_benchmark(*args):
  """Runs the benchmark in a subprocess: (exit code, stderr lines without TF noise, stdout)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=run_fixture.ROOT)
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.from_scratch', *args],
                        cwd=run_fixture.ROOT, env=env, capture_output=True, text=True,
                        timeout=900, check=False)
  lines = [line for line in proc.stderr.splitlines()
           if line.strip() and not line.startswith(run_fixture.NOISE)]
  return proc.returncode, lines, proc.stdout


def json_line(stdout):
  lines = [line for line in stdout.splitlines() if line.strip()]
  assert len(lines) == 1, stdout
  return json.loads(lines[0])


class FromScratchTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='from-scratch-test-')
    cls.run_dir = run_fixture.trained_run(cls.root)  # The shared tiny run (full 4, kernel 2).
    folder = run_folder_lib.RunFolder(cls.run_dir)
    cls.schedule_steps = sum(
        run_folder_lib.read_json(os.path.join(folder.path, 'phases', name, 'result.json'))
        ['optimizer_steps'] for name in folder.completed_phases())
    cls.args = (f'--run_dir={cls.run_dir}', f'--eval_images={EVAL_IMAGES}', '--progress_every=2')
    cls.first = run_benchmark(*cls.args)
    cls.second = run_benchmark(*cls.args)  # Same command: everything is already trained.

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def result(self, outcome):
    code, lines, stdout = outcome
    self.assertEqual(code, 0, '\n'.join(lines[-30:]))
    return json_line(stdout)

  def test_three_networks_trained_for_the_whole_schedule(self):
    result = self.result(self.first)
    networks = result['networks']
    self.assertEqual([n['role'] for n in networks], ['max', 'middle', 'min'])
    macs = [n['macs'] for n in networks]
    self.assertEqual(macs, sorted(macs, reverse=True))
    self.assertLen(set(macs), 3)
    self.assertEqual(result['schedule_optimizer_steps'], self.schedule_steps)
    self.assertEqual(result['steps'], self.schedule_steps)
    self.assertEqual(result['eval_images'], EVAL_IMAGES)
    for n in networks:
      self.assertEqual(n['steps'], self.schedule_steps)
      self.assertEqual(n['resumed_at_step'], 0)
      self.assertGreater(n['train_seconds'], 0)
      self.assertGreater(n['seconds_per_step'], 0)
      for key in ('supernet_accuracy', 'scratch_accuracy', 'scratch_accuracy_recalibrated'):
        self.assertBetween(n[key], 0.0, 1.0)
      self.assertAlmostEqual(
          n['difference'],
          n['supernet_accuracy'] - max(n['scratch_accuracy'], n['scratch_accuracy_recalibrated']),
          places=3)
      sc.SubnetConfig.from_string(n['config'])
      self.assertTrue(os.path.isdir(os.path.join(self.run_dir, n['checkpoint'])))
    self.assertEqual(result['goal_met'], all(n['difference'] >= -0.01 for n in networks))
    with open(os.path.join(self.run_dir, 'from_scratch', 'from_scratch.json')) as f:
      self.assertIn(json.load(f)['networks'][0]['config'], [n['config'] for n in networks])
    # The middle network differs from both ends in more than its input size.
    architectures = {n['config'].split('-', 1)[1] for n in networks}
    self.assertLen(architectures, 3)
    progress = [line for line in self.first[1] if line.startswith('[from_scratch] max step')]
    self.assertNotEmpty(progress)

  def test_same_command_resumes_without_training(self):
    first, second = self.result(self.first), self.result(self.second)
    for a, b in zip(first['networks'], second['networks']):
      self.assertEqual(b['resumed_at_step'], b['steps'])
      self.assertEqual(a['checkpoint'], b['checkpoint'])
      self.assertEqual(a['scratch_accuracy'], b['scratch_accuracy'])
      self.assertEqual(a['supernet_accuracy'], b['supernet_accuracy'])
    self.assertFalse(any(' step ' in line and 'resuming' not in line for line in self.second[1]))

  def test_fresh_weights_not_the_supernets(self):
    configs = [sc.SubnetConfig.from_string(n['config'])
               for n in self.result(self.first)['networks']]
    run = common.load_trained_run(self.run_dir)
    for config, fresh in zip(configs, from_scratch.fresh_models(run.config, configs)):
      trained = extraction.extract(run.supernet, config)
      pairs = [(a, b) for a, b in zip(fresh.weights, trained.weights)
               if 'kernel' in a.name]
      self.assertNotEmpty(pairs)
      for a, b in pairs:
        self.assertEqual(a.shape, b.shape)
        self.assertFalse(np.allclose(a.numpy(), b.numpy()), a.name)

  def test_steps_and_subnets_flags(self):
    config = self.result(self.first)['networks'][2]['config']
    code, lines, stdout = run_benchmark(*self.args, '--steps=2', f'--subnets={config}')
    self.assertEqual(code, 0, '\n'.join(lines[-30:]))
    result = json_line(stdout)
    self.assertEqual(result['steps'], 2)
    self.assertEqual(result['schedule_optimizer_steps'], self.schedule_steps)
    self.assertEqual([(n['role'], n['config'], n['steps']) for n in result['networks']],
                     [('subnet1', config, 2)])

  def test_unfinished_or_missing_run_is_one_error_line(self):
    unfinished = os.path.join(self.root, 'unfinished')
    shutil.copytree(self.run_dir, unfinished, ignore=shutil.ignore_patterns('from_scratch'))
    kernel = [n for n in os.listdir(os.path.join(unfinished, 'phases')) if n.endswith('kernel')]
    os.remove(os.path.join(unfinished, 'phases', kernel[0], 'result.json'))
    for run_dir, words in ((unfinished, 'not finished'),
                           (os.path.join(self.root, 'nothing'), 'holds no run')):
      code, lines, stdout = run_benchmark(f'--run_dir={run_dir}')
      self.assertEqual(code, 2, lines)
      self.assertEqual(stdout, '')
      self.assertLen(lines, 1, lines)
      self.assertStartsWith(lines[0], 'error: ')
      self.assertIn(words, lines[0])


if __name__ == '__main__':
  absltest.main()
