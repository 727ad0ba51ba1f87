"""Kill -9 in the middle of a phase, start the same command again: the run finishes as planned."""
# bazel: size=enormous tags=slow

import json
import os
import signal
import subprocess
import sys
import time

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEPS = {'full': 6, 'kernel': 6, 'depth1': 4}


def _command(run_dir):
  return [sys.executable, '-m', 'ofav2_tf.main', '--mode=train', f'--run_dir={run_dir}',
          '--dataset=fashion_mnist', '--variant=SE_B', '--width_multiplier=0.25', '--dropout=0',
          '--resolutions=24,28', '--eval_resolutions=28', '--batch_size=16',
          '--phases=' + ','.join(_STEPS),
          '--phase_steps=' + ','.join(f'{k}={v}' for k, v in _STEPS.items()),
          '--checkpoint_every_steps=2', '--validation_images=32', '--calibration_images=32',
          '--eval_images=64', '--eval_max_subnets=1', '--verbose=0']


class ResumeTest(absltest.TestCase):

  def test_sigkill_mid_phase_then_resume(self):
    run_dir = os.path.join(self.create_tempdir().full_path, 'run')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=_ROOT)
    # The kernel phase (the second) has written its first checkpoint: kill the run right there,
    # in the middle of that phase.
    marker = os.path.join(run_dir, 'phases', '01_kernel', 'steps', 'step-0000002')
    with open(os.path.join(run_dir + '.first.log'), 'w') as log:
      proc = subprocess.Popen(_command(run_dir), cwd=_ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
      deadline = time.time() + 900
      while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
      proc.send_signal(signal.SIGKILL)
      proc.wait()
    self.assertTrue(os.path.exists(marker), 'the run never reached the kernel phase')
    self.assertEqual(proc.returncode, -signal.SIGKILL)
    results = os.path.join(run_dir, 'phases', '{}', 'result.json')
    self.assertTrue(os.path.exists(results.format('00_full')))
    self.assertFalse(os.path.exists(results.format('01_kernel')))
    with open(results.format('00_full')) as f:
      full_before = json.load(f)

    second = subprocess.run(_command(run_dir), cwd=_ROOT, env=env, capture_output=True, text=True,
                            timeout=900, check=False)
    self.assertEqual(second.returncode, 0, second.stdout[-3000:] + second.stderr[-3000:])
    self.assertIn('full: complete, skipped', second.stdout)
    self.assertRegex(second.stdout, r'phase kernel: resuming at step [24]/6')
    for index, (name, steps) in enumerate(_STEPS.items()):
      with open(results.format(f'{index:02d}_{name}')) as f:
        result = json.load(f)
      # The optimizer's own counter survives the restart: exactly the uninterrupted step count.
      self.assertEqual((result['phase'], result['steps'], result['optimizer_steps']),
                       (name, steps, steps))
    with open(results.format('00_full')) as f:
      self.assertEqual(json.load(f), full_before)  # a completed phase is never re-run
    with open(os.path.join(run_dir, 'metrics.json')) as f:
      self.assertEqual([p['phase'] for p in json.load(f)['phases']], list(_STEPS))


if __name__ == '__main__':
  absltest.main()
