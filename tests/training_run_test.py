"""A real (tiny) run of the schedule on Fashion-MNIST: teachers per phase, outputs, no re-runs."""
# bazel: size=enormous tags=slow

import json
import os

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import data
from ofav2_tf import run_config as rc
from ofav2_tf import run_folder as rf
from ofav2_tf import subnet_config as sc
from ofav2_tf import training_run


class _TeacherWatch(tf_keras.callbacks.Callback):
  """Records a fingerprint of the phase's teacher weights after every step."""

  def __init__(self, plan, trainer, log):
    super().__init__()
    self.plan, self.trainer, self.log = plan, trainer, log

  def on_train_batch_end(self, batch, logs=None):
    teacher = self.trainer.teacher
    value = None if teacher is None else float(
        sum(np.abs(w).sum() for w in teacher.get_weights()))
    self.log.setdefault(self.plan.name, []).append(value)


def _config(variant, phases, teacher, steps):
  return rc.RunConfig(
      dataset='fashion_mnist', variant=variant, width_multiplier=0.25, dropout=0.0,
      resolutions=(24, 28), eval_resolutions=(28,), batch_size=16, seed=3,
      phases=phases, teacher=teacher, phase_steps={name: steps for name in phases},
      checkpoint_every_steps=2, validation_images=64, calibration_images=64, eval_images=128,
      eval_max_subnets=2, verbose=0)


class TrainingRunTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.splits = data.load('fashion_mnist', seed=0)

  def _run(self, config):
    config.num_classes = self.splits.num_classes
    config.validate()
    folder = rf.RunFolder(os.path.join(self.create_tempdir().full_path, 'run'))
    folder.open_for(config)
    log = {}
    factory = lambda plan, trainer: [_TeacherWatch(plan, trainer, log)]  # noqa: E731
    run = training_run.TrainingRun(config, folder, self.splits, callbacks_factory=factory)
    return run, folder, run.run(), log

  def test_pet_teacher_is_refreshed_at_each_phase_boundary_only(self):
    run, folder, results, log = self._run(
        _config('EE_B', ('full', 'kernel', 'height1'), 'pet', steps=4))
    self.assertEqual([r['phase'] for r in results], ['full', 'kernel', 'height1'])
    self.assertEqual([len(log[name]) for name in ('full', 'kernel', 'height1')], [4, 4, 4])
    self.assertEqual(set(log['full']), {None})  # the full phase trains on labels only
    for name in ('kernel', 'height1'):
      self.assertLen(set(log[name]), 1, msg=f'teacher changed within phase {name}')
    self.assertNotEqual(log['kernel'][0], log['height1'][0])
    self.assertEqual(results[1]['teacher_fingerprint'], log['kernel'][0])
    self.assertEqual([r['teacher'] for r in results], [None, 'pet', 'pet'])
    # Teachers of early-exit variants return all five exits (ENS-KD).
    self.assertLen(run.teacher.outputs, 5)

    # The run folder holds what the README promises.
    for name in ('config.json', 'provenance.json', 'log.txt', 'metrics.json', 'phases.png'):
      self.assertTrue(os.path.exists(folder.file(name)), name)
    self.assertNotEmpty(tf.io.gfile.glob(folder.file('tensorboard', 'events.out.tfevents.*')))
    with open(folder.file('metrics.json')) as f:
      metrics = json.load(f)
    last = metrics['phases'][-1]
    self.assertEqual(sorted(last['exit_accuracy']), ['1', '2', '3', '4', '5'])
    # The thinned grid (2 sub-networks with a pass of their own) and the maximal network at every
    # exit the phase allows: those were measured by the one all-exit pass, count for the best
    # uniform and not against the 2; rows come in order of MACs.
    space = run.schedule[-1].space(run.full_space)
    top = space.max_config(max(run.config.eval_resolutions))
    free = {top.replace(exit=k).to_string() for k in space.exits}
    rows = last['uniform']
    self.assertLen(rows, 2 + len(free))
    self.assertEqual([r['macs'] for r in rows], sorted(r['macs'] for r in rows))
    for row in rows:
      if row['config'] in free:
        exit_ = str(sc.SubnetConfig.from_string(row['config']).exit)
        self.assertEqual(row['accuracy'], last['exit_accuracy'][exit_])
    self.assertContainsSubset(free, {r['config'] for r in rows})
    self.assertEqual(last['uniform_best'], max(r['accuracy'] for r in last['uniform']))
    for plan in run.plans:
      self.assertTrue(folder.has_best(plan))
      self.assertEqual(folder.read_progress(folder.latest_step(plan))['step'], 4)

    # Starting the completed run again trains nothing and returns the same results.
    log.clear()
    again = training_run.TrainingRun(run.config, folder, self.splits,
                                     callbacks_factory=lambda p, t: self.fail('re-ran ' + p.name))
    self.assertEqual(again.run(), results)

  def test_fixed_teacher_is_the_full_phase_network_throughout(self):
    # SE_B: the OFA baseline's setting, and a cheaper trace than an early-exit supernet.
    _, _, results, log = self._run(_config('SE_B', ('full', 'kernel', 'depth1'), 'fixed',
                                           steps=2))
    self.assertEqual(log['kernel'][0], log['depth1'][0])
    self.assertLen(set(log['kernel'] + log['depth1']), 1)
    self.assertEqual(results[1]['teacher_fingerprint'], results[2]['teacher_fingerprint'])
    self.assertEqual([r['teacher'] for r in results], [None, 'fixed', 'fixed'])


if __name__ == '__main__':
  tf.test.main()
