"""`python -m ofav2_tf.data.prepare` on bad input: one `error:` line, no flag help, exit status 2."""
# bazel: size=medium

import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from tests import run_fixture


def _run_prepare(*args):
  """Returns (exit code, stderr lines without TensorFlow's start-up noise, stdout)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=run_fixture.ROOT)
  proc = subprocess.run([sys.executable, '-m', 'ofav2_tf.data.prepare', *args],
                        cwd=run_fixture.ROOT, env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  lines = [line for line in proc.stderr.splitlines()
           if line.strip() and not line.startswith(run_fixture.NOISE)]
  return proc.returncode, lines, proc.stdout


class PrepareBadInputTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # absl's UsageError printed the module's docstring and every flag above this line.
      ('missing_folder', '--dataset=image_folder:{missing}',
       'error: image folder {missing} does not exist; expected the layout <root>/train/<class>/'),
      ('unknown_dataset', '--dataset=fashion_mnst',
       "error: unknown dataset 'fashion_mnst'; valid datasets: fashion_mnist, image_folder,"),
      # absl's flag parser printed `FATAL Flags parsing error` and exited with status 1.
      ('bad_flag_value', '--batch_size=0',
       'error: flag --batch_size=0: 0 is not a positive integer'),
  )
  def test_one_error_line(self, arg, expected_start):
    missing = os.path.join(self.create_tempdir().full_path, 'no_such_folder')
    code, lines, stdout = _run_prepare(arg.format(missing=missing), '--benchmark_batches=0')
    self.assertLen(lines, 1, msg='\n'.join(lines))
    self.assertStartsWith(lines[0], expected_start.format(missing=missing))
    self.assertEqual((code, stdout), (2, ''))


if __name__ == '__main__':
  absltest.main()
