"""`python -m ofav2_tf.main` under faults: a read-only folder, a full disk, a bug, a refused run.

Each case runs the real command line in a subprocess (through tests/fault_injection.py where the
fault cannot be made for real without root) and checks the user sees one `error:` line with the
documented exit status, and that nothing is left half-written: no run folder for a refused run, no
temporary checkpoint after a failed write, and a resume from the last complete checkpoint.
"""
# bazel: size=large

import glob
import os
import subprocess
import sys

import numpy as np
from absl.testing import absltest

from ofav2_tf import cli
from tests import run_fixture

# A run short enough for a test: one phase of 4 steps, a checkpoint every 2.
_SHORT_TRAIN = tuple(f for f in run_fixture.TINY_TRAIN_FLAGS
                     if not f.startswith(('--phases', '--phase_steps'))) + (
                         '--phases=full', '--phase_steps=full=4', '--checkpoint_every_steps=2')


def run_with_fault(fault, folder, *args):
  """Like run_fixture.run_main, with `fault` injected for writes under `folder`."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=run_fixture.ROOT)
  proc = subprocess.run([sys.executable, '-m', 'tests.fault_injection', fault, folder, *args],
                        cwd=run_fixture.ROOT, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  lines = [line for line in proc.stderr.splitlines()
           if line.strip() and not line.startswith(run_fixture.NOISE)]
  return proc.returncode, lines, proc.stdout


def _snapshot(folder):
  """Every path under `folder` with its size and modification time."""
  result = {}
  for directory, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(directory, name)
      result[os.path.relpath(path, folder)] = (os.path.getsize(path), os.path.getmtime(path))
  return result


class FaultsTest(absltest.TestCase):

  def assert_one_error_line(self, code, lines, expected_code, *needles):
    text = '\n'.join(lines)
    self.assertEqual(code, expected_code, msg=text)
    self.assertNotIn('Traceback', text)
    errors = [line for line in lines if line.startswith('error:')]
    self.assertLen(errors, 1, msg=text)
    for needle in needles:
      self.assertIn(needle, errors[0])
    return errors[0]

  def test_read_only_run_folder(self):
    # Before: a raw `OSError: [Errno 30]` traceback from appending to log.txt.
    run_dir = run_fixture.trained_run(self.create_tempdir().full_path)
    before = _snapshot(run_dir)
    for mode in ('evaluate', 'train'):
      code, lines, _ = run_with_fault('read_only', run_dir, f'--mode={mode}',
                                      f'--run_dir={run_dir}', *run_fixture.TINY_TRAIN_FLAGS)
      self.assert_one_error_line(code, lines, cli.EXIT_STORAGE, 'Read-only file system',
                                 run_dir, 'writable')
    self.assertEqual(_snapshot(run_dir), before)

  def test_disk_full_keeps_the_previous_checkpoint_and_resumes_from_it(self):
    # Before: a raw ResourceExhaustedError traceback, and a partial best.tmp/ left behind.
    run_dir = os.path.join(self.create_tempdir().full_path, 'run')
    code, lines, _ = run_with_fault('disk_full:2', run_dir, f'--run_dir={run_dir}',
                                    *_SHORT_TRAIN)
    line = self.assert_one_error_line(code, lines, cli.EXIT_STORAGE, 'No space left on device',
                                      'intact', 'run the same command again to resume')
    phase = glob.glob(os.path.join(run_dir, 'phases', '*'))[0]
    self.assertEqual(sorted(os.listdir(os.path.join(phase, 'steps'))), ['step-0000002'])
    self.assertEqual(sorted(os.listdir(phase)), ['best', 'steps'])  # no best.tmp, no result
    with open(os.path.join(run_dir, 'log.txt')) as f:
      self.assertTrue(f.read().rstrip().endswith(line), msg='the error line is not in log.txt')

    code, lines, stdout = run_fixture.run_main(f'--run_dir={run_dir}', *_SHORT_TRAIN)
    self.assertEqual(code, 0, msg='\n'.join(lines))
    self.assertIn('resuming at step 2/4', stdout)
    self.assertTrue(os.path.exists(os.path.join(phase, 'result.json')))

  def test_leftovers_of_a_killed_write_are_removed_on_the_next_start(self):
    run_dir = run_fixture.trained_run(self.create_tempdir().full_path)
    phase = sorted(glob.glob(os.path.join(run_dir, 'phases', '*')))[-1]
    os.makedirs(os.path.join(phase, 'best.tmp'))
    os.makedirs(os.path.join(phase, 'steps', 'step-0000099.tmp'))
    stale_json = os.path.join(phase, '.result.json.tmp-999999999-abc')
    open(stale_json, 'w').close()
    code, lines, stdout = run_fixture.run_main(f'--run_dir={run_dir}',
                                               *run_fixture.TINY_TRAIN_FLAGS)
    self.assertEqual(code, 0, msg='\n'.join(lines))
    self.assertIn('Removed 3 leftover(s) of an interrupted write', stdout)
    self.assertFalse(os.path.exists(os.path.join(phase, 'best.tmp')))
    self.assertFalse(os.path.exists(stale_json))

  def test_a_bug_is_one_line_naming_the_log_with_its_traceback(self):
    run_dir = run_fixture.trained_run(self.create_tempdir().full_path)
    code, lines, _ = run_with_fault('bug', run_dir, '--mode=evaluate', f'--run_dir={run_dir}')
    log = os.path.join(run_dir, 'log.txt')
    self.assert_one_error_line(code, lines, cli.EXIT_BUG, 'RuntimeError: injected bug', log,
                               '--traceback')
    with open(log) as f:
      self.assertIn("raise RuntimeError('injected bug')", f.read())
    code, lines, _ = run_with_fault('bug', run_dir, '--mode=evaluate', f'--run_dir={run_dir}',
                                    '--traceback')
    self.assertEqual(code, cli.EXIT_BUG)
    self.assertIn('Traceback (most recent call last):', lines)

  def test_refused_runs_leave_no_run_folder(self):
    # Before: each wrote config.json, provenance.json and log.txt, and a later --mode=evaluate on
    # the folder repeated the training error instead of saying the run has no trained phase.
    root = self.create_tempdir().full_path
    one_class = os.path.join(root, 'one_class')
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    for split in ('train', 'test'):
      os.makedirs(os.path.join(one_class, split, 'cat'))
      for i in range(3):
        tf.io.write_file(os.path.join(one_class, split, 'cat', f'{i}.png'),
                         tf.io.encode_png(np.full((8, 8, 3), 9 * i, np.uint8)))
    cases = [
        (['--dataset=fashion_mnist', '--epoch_scale=0', '--phases=full'],
         ['phase full gets 0 steps', '--epoch_scale']),
        ([f'--dataset=image_folder:{one_class}'], ['one class folder (cat)', 'at least 2']),
    ]
    for flags, needles in cases:
      run_dir = os.path.join(root, 'run')
      code, lines, _ = run_fixture.run_main(f'--run_dir={run_dir}', *flags)
      self.assert_one_error_line(code, lines, cli.EXIT_USAGE, *needles)
      self.assertEqual(sorted(os.listdir(root)), ['one_class'], msg=flags)


if __name__ == '__main__':
  absltest.main()
