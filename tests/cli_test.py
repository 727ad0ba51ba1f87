"""`ofav2_tf.cli`: the one-line `error:` exit, and no CUDA probe on machines without a GPU."""
# bazel: size=medium

import contextlib
import glob
import io
import os
import subprocess
import sys

from absl.testing import absltest

from ofav2_tf import cli
from ofav2_tf import errors

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_main_raw(*args, **env):
  """Runs `python -m ofav2_tf.main` with TensorFlow's own log level; returns (code, stderr)."""
  base = {k: v for k, v in os.environ.items()
          if k not in ('TF_CPP_MIN_LOG_LEVEL', cli.DEVICE_TYPES_VARIABLE)}
  proc = subprocess.run([sys.executable, '-m', 'ofav2_tf.main', *args], cwd=_ROOT,
                        env=dict(base, PYTHONPATH=_ROOT, **env), capture_output=True, text=True,
                        timeout=300, check=False)
  return proc.returncode, proc.stderr


class FailTest(absltest.TestCase):

  def test_prints_one_line_and_exits_with_2(self):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit) as raised:
      cli.fail('first line\n  second line\n')
    self.assertEqual(raised.exception.code, 2)
    self.assertEqual(stderr.getvalue(), 'error: first line; second line\n')


class ReportFailureTest(absltest.TestCase):
  """Every exception kind ends as one line with its documented exit status."""

  def report(self, error, run_dir=None, show_traceback=False):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit) as raised:
      try:
        raise error
      except Exception as e:  # pylint: disable=broad-except
        cli.report_failure(e, run_dir=run_dir, show_traceback=show_traceback)
    return raised.exception.code, stderr.getvalue().splitlines()

  def test_a_mistake_is_status_2(self):
    code, lines = self.report(errors.ConfigError('--x must be 1 or 2'))
    self.assertEqual((code, lines), (cli.EXIT_USAGE, ['error: --x must be 1 or 2']))

  def test_storage_errors_are_status_3_with_what_to_do(self):
    cases = [
        (OSError(28, 'No space left on device', '/r/metrics.json'), 'free some space'),
        (PermissionError(13, 'Permission denied', '/r/log.txt'), 'make the folder writable'),
        (OSError(30, 'Read-only file system', '/r/log.txt'), 'read-only file system'),
        (errors.StorageError('cannot write the checkpoint /r/best'), '/r/best'),
    ]
    for error, needle in cases:
      code, lines = self.report(error)
      self.assertEqual(code, cli.EXIT_STORAGE, msg=lines)
      self.assertLen(lines, 1)
      self.assertIn(needle, lines[0])

  def test_tensorflow_disk_full_is_a_storage_error(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    error = tf.errors.ResourceExhaustedError(None, None, '/r/x.tempstate; No space left on device')
    code, lines = self.report(error)
    self.assertEqual(code, cli.EXIT_STORAGE)
    self.assertIn('No space left on device', lines[0])
    self.assertIn('resumes from its last complete checkpoint', lines[0])

  def test_a_bug_keeps_its_traceback_in_the_runs_log(self):
    run_dir = self.create_tempdir().full_path
    log = os.path.join(run_dir, 'log.txt')
    with open(log, 'w') as f:
      f.write('12:00:00 phase full step 4/8\n')
    code, lines = self.report(KeyError('boom'), run_dir=run_dir)
    self.assertEqual(code, cli.EXIT_BUG)
    self.assertLen(lines, 1)
    self.assertIn("KeyError: 'boom'", lines[0])
    self.assertIn(log, lines[0])
    with open(log) as f:
      text = f.read()
    self.assertIn('Traceback (most recent call last)', text)
    self.assertTrue(text.rstrip().splitlines()[-1].endswith(lines[0]), msg=text)

  def test_a_bug_without_a_run_folder_writes_a_temporary_file(self):
    code, lines = self.report(RuntimeError('boom'), run_dir='/no/such/run')
    self.assertEqual(code, cli.EXIT_BUG)
    path = lines[0].split('which is in ')[1].split(';')[0]
    self.addCleanup(os.unlink, path)
    with open(path) as f:
      self.assertIn('RuntimeError: boom', f.read())

  def test_traceback_flag_prints_it_above_the_line(self):
    code, lines = self.report(errors.ConfigError('bad'), show_traceback=True)
    self.assertEqual(code, cli.EXIT_USAGE)
    self.assertEqual(lines[0], 'Traceback (most recent call last):')
    self.assertEqual(lines[-1], 'error: bad')
    self.assertLen([line for line in lines if line.startswith('error:')], 1)


class QuietCudaProbeTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dev = self.create_tempdir().full_path

  def test_no_gpu_device_node_restricts_tensorflow_to_cpu(self):
    environ = {}
    self.assertTrue(cli.quiet_cuda_probe(environ, [os.path.join(self.dev, 'nvidia*')]))
    self.assertEqual(environ, {'TF_ENABLED_DEVICE_TYPES': 'CPU', 'TF_CPP_MIN_LOG_LEVEL': '1'})

  def test_user_log_level_is_kept(self):
    environ = {'TF_CPP_MIN_LOG_LEVEL': '0'}
    self.assertTrue(cli.quiet_cuda_probe(environ, [os.path.join(self.dev, 'nvidia*')]))
    self.assertEqual(environ['TF_CPP_MIN_LOG_LEVEL'], '0')

  def test_a_gpu_device_node_leaves_the_environment_alone(self):
    open(os.path.join(self.dev, 'nvidia0'), 'w').close()
    environ = {}
    self.assertFalse(cli.quiet_cuda_probe(environ, [os.path.join(self.dev, 'nvidia*')]))
    self.assertEqual(environ, {})

  def test_the_users_setting_wins_even_when_empty(self):
    for value in ('', 'CPU,GPU'):
      environ = {'TF_ENABLED_DEVICE_TYPES': value}
      self.assertFalse(cli.quiet_cuda_probe(environ, [os.path.join(self.dev, 'nvidia*')]))
      self.assertEqual(environ, {'TF_ENABLED_DEVICE_TYPES': value})


class EntryPointTest(absltest.TestCase):

  def test_main_does_not_log_the_failed_cuinit(self):
    if any(glob.glob(pattern) for pattern in cli.GPU_DEVICE_NODES):
      self.skipTest('this machine has a GPU device node: the probe is meant to run')
    # An unknown dataset fails after TensorFlow has created its devices, and writes nothing.
    argv = ('--dataset=fashion_mnst', f'--run_dir={self.create_tempdir().full_path}/run')
    code, stderr = _run_main_raw(*argv)
    self.assertEqual(code, 2, msg=stderr)
    self.assertNotIn('cuInit', stderr)
    self.assertIn("error: unknown dataset 'fashion_mnst'", stderr)
    # The override: a user's TF_ENABLED_DEVICE_TYPES, even empty, brings the probe back.
    code, stderr = _run_main_raw(*argv, TF_ENABLED_DEVICE_TYPES='')
    self.assertEqual(code, 2, msg=stderr)
    if 'cuda' not in stderr.lower():
      self.skipTest('this TensorFlow build does not probe CUDA: nothing to quiet')
    self.assertIn('failed call to cuInit', stderr)


if __name__ == '__main__':
  absltest.main()
