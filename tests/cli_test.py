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
