"""A tiny trained run folder for the tests of the modes that start from one (search, export, ...).

`trained_run(root)` returns `<root>/run`, a copy of a run folder of EE_D at width 0.25 trained on
Fashion-MNIST for a few steps of the full and kernel phases with `python -m ofav2_tf.main
--mode=train` (made the way a user makes one). The training happens once per machine and fixture
definition: the run is cached in the temporary directory under a name derived from its flags, behind
a file lock (Bazel runs test modules in parallel), and every caller gets its own copy, so a test
that writes into its run (search, export) cannot affect another. Accuracies are near chance; the
tests that use it check plumbing, files and equivalences, not learning.

`run_main(*args)` runs the driver in a subprocess and returns (exit code, stderr lines without
TensorFlow's start-up noise, stdout).
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

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


def _cached_run(extra_flags) -> str:
  """The shared trained run for these flags (trained on first use, keyed by the flags)."""
  flags = TINY_TRAIN_FLAGS + tuple(extra_flags)
  key = hashlib.sha256(' '.join(flags).encode()).hexdigest()[:12]
  cache = os.path.join(tempfile.gettempdir(), f'ofav2_tiny_run_{key}')
  os.makedirs(cache, exist_ok=True)
  run_dir = os.path.join(cache, 'run')
  done = os.path.join(cache, 'trained')
  with open(os.path.join(cache, 'lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(done):
      shutil.rmtree(run_dir, ignore_errors=True)
      code, lines, _ = run_main('--mode=train', f'--run_dir={run_dir}', *flags)
      if code != 0:
        raise RuntimeError('tiny training run failed:\n' + '\n'.join(lines[-30:]))
      with open(done, 'w') as f:
        f.write(' '.join(flags) + '\n')
  return run_dir


def trained_run(root: str, *extra_flags: str) -> str:
  """A private copy in `<root>/run` of the tiny run trained with the fixture's flags + extras.

  Later flags override earlier ones (absl), so `extra_flags` can change the fixture's (e.g.
  `--phases=full`). The copy is made once per root.
  """
  run_dir = os.path.join(root, 'run')
  if not os.path.exists(run_dir):
    shutil.copytree(_cached_run(extra_flags), run_dir)
  return run_dir
