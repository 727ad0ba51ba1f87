"""Distributed phase training: MirroredStrategy and MultiWorkerMirroredStrategy equal one device."""
# bazel: size=enormous tags=slow

# The strategies need device or cluster setup before TensorFlow initialises, so every training run
# is a child process (tests/distributed_child.py): a single-device reference, a MirroredStrategy
# run over 2 logical CPUs, and a 2-worker MultiWorkerMirroredStrategy cluster on localhost. They
# start together in setUpClass (tracing is single-threaded Python, so 2 cores trace two runs at
# once); each test waits for its runs with a deadline and kills every child on failure, so CI
# cannot hang.
#
# The reference step is the mean of the two single-device steps on the two halves of the global
# batch, taken from the same state: with per-replica batch norm, that is what 2-replica data
# parallelism must compute. The runs must agree on every weight and BN moving statistic, without
# and with distillation.

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import tensorflow as tf

from ofav2_tf import distribute
from ofav2_tf import errors
from tests import distributed_child as child

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Generous for a loaded 2-core machine; a healthy run takes a few minutes at most.
_DEADLINE_SECONDS = 1200
# Allowed difference, relative to each variable's scale (its largest magnitude, at least 1). The
# float round-off of the different reduction orders reaches 1e-5 (BN moving variances of the
# 1x1 stage-5 maps); a step scaled by the replica count moves trainable weights by about 1e-2,
# and weight decay added by both replicas by about 1e-3.
_TOLERANCE = 1e-4


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


class _Child:
  """A child run in its own process group (so that a kill also stops its threads/children)."""

  def __init__(self, workdir, name, mode, env=None, nice=0):
    self.name = name
    self.out = os.path.join(workdir, f'{name}.npz')
    self.log_path = os.path.join(workdir, f'{name}.log')
    self.started = time.time()
    self.seconds = None  # wall time to exit, for the report
    with open(self.log_path, 'w') as log:
      self.process = subprocess.Popen(
          [sys.executable, '-m', 'tests.distributed_child', f'--mode={mode}',
           f'--init={os.path.join(workdir, "init.npz")}', f'--out={self.out}'],
          cwd=_ROOT, env={**os.environ, 'PYTHONPATH': _ROOT, **(env or {})},
          stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
          preexec_fn=(lambda: os.nice(nice)) if nice else None)
    threading.Thread(target=self._time, daemon=True).start()

  def _time(self):
    self.process.wait()
    self.seconds = time.time() - self.started

  def wait(self, deadline):
    try:
      code = self.process.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      self.kill()
      return f'{self.name} did not finish within {_DEADLINE_SECONDS} s'
    if code != 0 or not os.path.exists(self.out):
      with open(self.log_path) as log:
        tail = "".join(log.readlines()[-60:])
      return f'{self.name} failed with exit code {code}:\n{tail}'
    return None

  def kill(self):
    if self.process.poll() is None:
      try:
        os.killpg(self.process.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      self.process.wait()


class DistributedTrainingTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = tempfile.mkdtemp(prefix='ofa_distributed_')
    net, _ = child.build_models()
    cls.names = [w.name for w in net.weights]
    cls.trainable = [w.trainable for w in net.weights]
    np.savez(os.path.join(cls.workdir, 'init.npz'), **child.initial_weights(net))
    cls.deadline = time.time() + _DEADLINE_SECONDS
    # The mirrored run traces once per device, one after the other: the longest run, so the
    # others yield the CPU to it.
    cls.children = {'mirrored': _Child(cls.workdir, 'mirrored', 'mirrored'),
                    'reference': _Child(cls.workdir, 'reference', 'reference', nice=5)}
    workers = [f'localhost:{port}' for port in _free_ports(child.REPLICAS)]
    for index in range(child.REPLICAS):
      tf_config = {'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': index}}
      cls.children[f'worker{index}'] = _Child(cls.workdir, f'worker{index}', 'multi_worker',
                                              env={'TF_CONFIG': json.dumps(tf_config)}, nice=5)

  @classmethod
  def tearDownClass(cls):
    for run in cls.children.values():
      run.kill()
    for run in cls.children.values():
      if run.seconds is not None:
        print(f'{run.name}: {run.seconds:.0f} s', file=sys.stderr)
    shutil.rmtree(cls.workdir, ignore_errors=True)
    super().tearDownClass()

  def _results(self, *names):
    for name in names:
      problem = self.children[name].wait(self.deadline)
      if problem:
        for run in self.children.values():  # one failed run can leave its peers blocked
          run.kill()
        self.fail(problem)
    return [dict(np.load(self.children[name].out)) for name in names]

  def _assert_same_weights(self, actual, expected, initial, kd):
    moves, differences = [], []
    for i, (name, trainable) in enumerate(zip(self.names, self.trainable)):
      want, got = expected[f'kd{kd}_net{i}'], actual[f'kd{kd}_net{i}']
      scale = max(1.0, float(np.abs(want).max()))
      self.assertAllClose(got, want, rtol=0, atol=_TOLERANCE * scale, msg=f'{name} (kd={kd})')
      differences.append(float(np.abs(got - want).max()) / scale)
      if trainable:
        moves.append(float(np.abs(want - initial[f'net{i}']).max()) / scale)
    print(f'kd={kd}: largest difference {max(differences):.1e}, largest move of a trainable '
          f'weight {max(moves):.1e} (relative to the variable scale)', file=sys.stderr)
    # Not vacuous: training moved the weights far beyond the tolerance.
    self.assertGreater(max(moves), 30 * _TOLERANCE)

  def _check_run(self, result, reference):
    initial = np.load(os.path.join(self.workdir, 'init.npz'))
    self.assertEqual(int(result['replicas']), child.REPLICAS)
    for kd in (0, 1):
      self._assert_same_weights(result, reference, initial, kd)
    # Distillation changed the result (the teacher target reached every replica).
    self.assertGreater(max(float(np.abs(reference[f'kd0_net{i}'] - reference[f'kd1_net{i}']).max())
                           for i in range(len(self.names))), 30 * _TOLERANCE)

  def test_mirrored_strategy_equals_single_device(self):
    reference, mirrored = self._results('reference', 'mirrored')
    self._check_run(mirrored, reference)
    for kd in (0, 1):  # the copies on the two devices, BN statistics included, are identical
      self.assertEqual(float(mirrored[f'kd{kd}_spread']), 0.0)
    # One trace per device for the whole run (both trainers), none per step or sub-network.
    self.assertEqual(int(mirrored['trace_count']), child.REPLICAS)
    self.assertEqual(int(reference['trace_count']), 1)

  def test_multi_worker_strategy_equals_single_device(self):
    reference, chief, worker = self._results('reference', 'worker0', 'worker1')
    self._check_run(chief, reference)
    for kd in (0, 1):  # both workers hold the same weights and statistics
      for i, name in enumerate(self.names):
        np.testing.assert_array_equal(worker[f'kd{kd}_net{i}'], chief[f'kd{kd}_net{i}'],
                                      err_msg=name)
    self.assertEqual(int(chief['trace_count']), 1)


class StrategyRegistryTest(tf.test.TestCase):

  def test_unknown_name_lists_the_strategies(self):
    with self.assertRaisesRegex(errors.RegistryError, 'default, mirrored, multi_worker'):
      distribute.get_strategy('horovod')

  def test_default_strategy_has_one_replica(self):
    self.assertEqual(distribute.get_strategy('default').num_replicas_in_sync, 1)

  def test_multi_worker_needs_a_valid_tf_config(self):
    saved = os.environ.pop('TF_CONFIG', None)
    try:
      with self.assertRaisesRegex(errors.ConfigError, 'TF_CONFIG'):
        distribute.get_strategy('multi_worker')
    finally:
      if saved is not None:
        os.environ['TF_CONFIG'] = saved
    for bad, message in [('{not json', 'not valid JSON'),
                         ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
                         ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps"}}', 'task'),
                         ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                          '"index": 3}}', 'index 3')]:
      with self.assertRaisesRegex(errors.ConfigError, message):
        distribute.check_tf_config(bad)
    config = distribute.check_tf_config(
        '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')
    self.assertEqual(config['task']['index'], 1)

  def test_split_cpu_after_initialisation_is_a_clear_error(self):
    tf.constant(1.0)  # devices are initialised now
    with self.assertRaisesRegex(errors.ConfigError, 'before TensorFlow initialises'):
      distribute.split_cpu(2)
    with self.assertRaisesRegex(errors.ConfigError, 'positive'):
      distribute.split_cpu(0)

  def test_global_batch_must_split_evenly(self):

    class TwoReplicas:
      num_replicas_in_sync = 2

    archs = {'exit': np.zeros([3, 2], np.int32)}
    dataset = tf.data.Dataset.from_tensor_slices(
        ((np.zeros([3, 5, 8, 8, 3], np.float32), np.zeros([3, 5], np.int32)), archs))
    with self.assertRaisesRegex(errors.ConfigError, 'batch size 5 is not divisible by the 2'):
      distribute.per_replica_steps(TwoReplicas(), dataset)
    single = distribute.get_strategy('default')
    self.assertIs(distribute.per_replica_steps(single, dataset), dataset)


if __name__ == '__main__':
  tf.test.main()
