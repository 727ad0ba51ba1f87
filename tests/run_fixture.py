"""A tiny trained run folder for the tests of the modes that start from one (search, export, ...).

`trained_run(root)` trains EE_D at width 0.25 on Fashion-MNIST for a few steps of the full and
kernel phases with `python -m ofav2_tf.main --mode=train` (a real run folder, made the way a user
makes one) and returns its path. Accuracies are near chance; the tests that use it check plumbing,
files and equivalences, not learning.

`run_main(*args)` runs the driver in a subprocess and returns (exit code, stderr lines without
TensorFlow's start-up noise, stdout).
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lines TensorFlow's C++ runtime prints on import, whatever happens next.
NOISE = ('I0000', 'W0000', 'E0000', 'WARNING: All log messages')

TINY_TRAIN_FLAGS = (
    '--dataset=fashion_mnist', '--variant=EE_D', '--width_multiplier=0.25', '--dropout=0',
    '--resolutions=24,28', '--eval_resolutions=28', '--batch_size=16', '--phases=full,kernel',
    '--phase_steps=full=4,kernel=2', '--validation_images=64', '--calibration_images=64',
    '--eval_images=64', '--eval_max_subnets=1', '--verbose=0')


def run_main(*args, timeout=900):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, '-m', 'ofav2_tf.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)
  lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(NOISE)]
  return proc.returncode, lines, proc.stdout


def trained_run(root: str, *extra_flags: str) -> str:
  """Trains the tiny run into `<root>/run` (once per root) and returns the folder."""
  run_dir = os.path.join(root, 'run')
  if os.path.exists(os.path.join(run_dir, 'phases', '01_kernel', 'result.json')):
    return run_dir
  code, lines, _ = run_main('--mode=train', f'--run_dir={run_dir}', *TINY_TRAIN_FLAGS,
                            *extra_flags)
  if code != 0:
    raise RuntimeError('tiny training run failed:\n' + '\n'.join(lines[-30:]))
  return run_dir
