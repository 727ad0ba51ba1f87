"""Benchmark: ofav2_tf's SE_B supernet against the official Once-for-All supernet (PyTorch).

The peer is `OFAMobileNetV3` of the `ofa` package (mit-han-lab/once-for-all, on PyPI) on the CPU
build of torch; our side is `ofav2_tf.supernet.build_supernet('SE_B', ...)`, the same space:
kernel 3/5/7, expand 3/4/6, depth 2/3/4, width 1.0, 200 classes, each side's default training
dropout (0.1 on both), batch 64, resolutions 64 and 32, SGD with Nesterov momentum 0.9 (lr 0.01)
and label-smoothed cross-entropy (0.1). A timed step is one forward, backward and update.

Two rows of cases, at every resolution:
  - single: one sub-network per step, without distillation or weight decay. Ours is
    `elastic_step.ElasticTrainStep` (one trace for every sub-network and resolution); OFA's is
    `net(images)`, `cross_entropy_with_label_smoothing`, `backward`, `optimizer.step()`. Cases
    `max`, `min` and `random`; a random sub-network is drawn inside the timed step (OFA:
    `sample_active_subnet()`; ours: `space.sample(rng)` and `supernet.arch_tensors`).
  - kd: progressive shrinking's step with n = 1, 2, 4 random sub-networks (cases `kd1`, `kd2`,
    `kd4`). Ours is `trainer.ElasticTrainer.train_step` built as `training_run` builds it
    (`SubnetGradients`, a teacher from `teacher.extract_teacher` on the max config, weight decay
    3e-5, kd weight 1.0). OFA's mirrors `train_one_epoch` of
    `ofa.imagenet_classification.elastic_nn.training.progressive_shrinking`: the teacher
    (`MobileNetV3Large` at k7/e6/d4 with dropout 0, as OFA's `train_ofa_net.py` builds it) runs once
    under `no_grad` in train mode, as `train_one_epoch` calls `teacher_model.train()`
    (`--ofa_teacher_mode=eval` for eval mode, as our teacher runs); then per sub-network: seed,
    `sample_active_subnet()`, forward, CE_ls + 1.0 * soft CE against the teacher's softmax,
    top-1/top-5 metric, `backward` (gradients accumulate); then one `optimizer.step()` of OFA's
    `build_optimizer` (weight decay 3e-5, none on 'bn' and 'bias' parameters).

Each side runs in its own long-lived worker subprocess (TensorFlow's and torch's thread pools
disturb each other in one process), both with 2 compute threads (torch.set_num_threads(2), its
inter-op pool as torch's default; TF intra-op 2, inter-op as TensorFlow's default, which ofav2_tf
does not change). The workers build and warm up one after the other (TF's traces are timed then and
reported as `trace_seconds`, outside the step times), then run rounds alternately (ofa, ours, ofa,
ours, ...) while the other waits on its stdin; every round runs, per resolution and case,
`--warmup` untimed steps and `--steps` timed ones. Medians are over all timed steps of all rounds;
`ratio` is ofav2_tf / OFA of the medians (below 1: ours is faster), `ratio_rounds` the range of the
per-round ratios.

Roofline convention: a step's FLOPs are counted analytically from `ofav2_tf.costs.count(config,
'SE_B', 200).macs` (MACs per image of one forward pass; for OFA's sampled sub-networks too, which
the setup cross-checks against OFA's own counter on the max and min networks, `macs_check`):
a trained sub-network counts 3 x its forward MACs (forward, input gradients, weight gradients), the
no-grad teacher 1 x, times 2 FLOP per MAC, times the batch. `gflops` is the median over steps of
step FLOPs / step seconds, and `fraction` is that over the machine's fp32 matmul throughput,
measured in the same run as the median GFLOP/s of a 2048x2048 fp32 `tf.linalg.matmul` with 2
threads in the TF worker (`matmul_gflops.tensorflow`; torch's `torch.mm` in the peer worker is
reported beside it, `matmul_gflops.torch`).

Peer install (a venv of its own with only numpy, torch and ofa; the TF side runs with the current
interpreter):
    python3.11 -m venv .venv-peer && .venv-peer/bin/pip install -r benchmarks/requirements-peer.txt
`ofa`'s `ofa.utils` star-imports its data loaders, which need Pillow and torchvision; nothing
here loads images, so the OFA worker puts an empty module in their place (`_import_ofa`). This
module imports only the standard library at the top, so the peer interpreter needs no absl or TF.

Usage (about 15 minutes on 2 cores at the defaults):
    python -m benchmarks.peer_ofa [--resolutions=64,32] [--rounds=5] [--steps=5] \
        [--peer_python=.venv-peer/bin/python]
"""

import argparse
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

VARIANT = 'SE_B'
NUM_BLOCKS = 20  # 5 stages x 4 block positions, stage-major, on both sides
SINGLE_CASES = ('max', 'min', 'random')
LR = 0.01
LABEL_SMOOTHING = 0.1
KD_WEIGHT = 1.0
WEIGHT_DECAY = 3e-5
SIDES = ('ofa', 'ofav2_tf')
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _int_list(text: str) -> List[int]:
  return [int(v) for v in text.split(',') if v.strip()]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """Parses the command line (argparse: the peer interpreter has no absl)."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--side', choices=('driver',) + SIDES, default='driver',
                      help='driver (default) runs both workers; ofa / ofav2_tf is one worker.')
  parser.add_argument('--resolutions', type=_int_list, default=[64, 32])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--num_classes', type=int, default=200)
  parser.add_argument('--subnets', type=_int_list, default=[1, 2, 4],
                      help='Sub-networks per step of the kd row.')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5, help='Timed steps per case and round.')
  parser.add_argument('--warmup', type=int, default=1,
                      help='Untimed steps per case and round, before the timed ones.')
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--matmul_size', type=int, default=2048)
  parser.add_argument('--matmul_repeats', type=int, default=3, help='Timed matmuls per round.')
  parser.add_argument('--ofa_teacher_mode', choices=('train', 'eval'), default='train')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--peer_python', default='',
                      help='Interpreter with torch and ofa (default .venv-peer/bin/python if it '
                           'exists, else this one).')
  args = parser.parse_args(argv)
  for name in ('batch', 'rounds', 'steps', 'threads', 'matmul_repeats'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be at least 1')
  if args.warmup < 0 or not args.resolutions or not args.subnets:
    parser.error('--warmup must be >= 0 and --resolutions, --subnets non-empty')
  return args


def case_names(subnets: Sequence[int]) -> List[str]:
  """All cases of one resolution: the single row, then the kd row."""
  return list(SINGLE_CASES) + [f'kd{n}' for n in subnets]


def worker_flags(args: argparse.Namespace) -> List[str]:
  """The command-line flags a worker needs to run the same benchmark as the driver."""
  return [f'--resolutions={",".join(map(str, args.resolutions))}', f'--batch={args.batch}',
          f'--num_classes={args.num_classes}', f'--subnets={",".join(map(str, args.subnets))}',
          f'--steps={args.steps}', f'--warmup={args.warmup}', f'--threads={args.threads}',
          f'--matmul_size={args.matmul_size}', f'--matmul_repeats={args.matmul_repeats}',
          f'--ofa_teacher_mode={args.ofa_teacher_mode}', f'--seed={args.seed}']


# ---- FLOP accounting and the summary (pure: no torch, no TensorFlow) -------------------------------

def training_step_flops(batch: int, student_macs: Sequence[int], teacher_macs: int = 0) -> int:
  """FLOPs of one step: 2 FLOP/MAC x batch x (3 x each trained network's MACs + teacher's MACs).

  Args:
    batch: Images per step.
    student_macs: Forward MACs per image of each sub-network trained in the step.
    teacher_macs: Forward MACs per image of the no-grad teacher (0 without distillation).
  """
  return 2 * batch * (3 * sum(student_macs) + teacher_macs)


@functools.lru_cache(maxsize=None)
def forward_macs(kernel: tuple, expand: tuple, depth: tuple, resolution: int,
                 num_classes: int) -> int:
  """Analytic forward MACs per image of one SE_B sub-network (`ofav2_tf.costs`)."""
  from ofav2_tf import costs  # pure Python; imported here so that the peer never needs ofav2_tf
  from ofav2_tf import subnet_config as sc
  config = sc.SubnetConfig(kernel=kernel, expand=expand, depth=depth, exit=5,
                           resolution=resolution)
  return costs.count(config, VARIANT, num_classes).macs


def _median(values):
  return statistics.median(values) if values else None


def _round(value, digits):
  return None if value is None else round(value, digits)


def summarize_case(steps_by_side: Dict[str, List[List[dict]]], resolution: int, batch: int,
                   num_classes: int, peak_gflops: float, macs=forward_macs) -> dict:
  """Medians, GFLOP/s and ratio of one case from both sides' step records.

  Args:
    steps_by_side: For 'ofa' and 'ofav2_tf', a list of rounds, each a list of step records
      `{'seconds': s, 'subnets': [[kernel, expand, depth], ...], 'teacher': bool}`.
    resolution: Image size of the case.
    batch: Images per step.
    num_classes: Classifier width.
    peak_gflops: The machine's fp32 matmul GFLOP/s that `fraction` divides by.
    macs: `macs(kernel, expand, depth, resolution, num_classes)` -> forward MACs per image.

  Returns:
    `{'ofa': {...}, 'ofav2_tf': {...}, 'ratio': ..., 'ratio_rounds': [lo, hi]}`, each side with
    its median seconds, median GFLOP/s, fraction of `peak_gflops` and mean forward MMACs of the
    trained sub-networks.
  """
  teacher_macs = macs(tuple([7] * NUM_BLOCKS), tuple([6] * NUM_BLOCKS), (4,) * 5, resolution,
                      num_classes)
  out, round_medians = {}, {}
  for side in SIDES:
    seconds, gflops, student = [], [], []
    for round_steps in steps_by_side[side]:
      for step in round_steps:
        step_macs = [macs(tuple(k), tuple(e), tuple(d), resolution, num_classes)
                     for k, e, d in step['subnets']]
        flops = training_step_flops(batch, step_macs, teacher_macs if step['teacher'] else 0)
        seconds.append(step['seconds'])
        gflops.append(flops / step['seconds'] / 1e9)
        student.extend(step_macs)
    round_medians[side] = [_median([s['seconds'] for s in r]) for r in steps_by_side[side]]
    median_gflops = _median(gflops)
    out[side] = {
        'median_s': _round(_median(seconds), 4),
        'gflops': _round(median_gflops, 2),
        'fraction': _round(median_gflops / peak_gflops if peak_gflops else None, 4),
        'mean_mmacs': _round(statistics.fmean(student) / 1e6 if student else None, 2),
    }
  ofa, ours = out['ofa']['median_s'], out['ofav2_tf']['median_s']
  out['ratio'] = _round(ours / ofa if ofa else None, 3)
  per_round = [b / a for a, b in zip(round_medians['ofa'], round_medians['ofav2_tf']) if a]
  out['ratio_rounds'] = [round(min(per_round), 3), round(max(per_round), 3)] if per_round else []
  return out


def macs_check(ofa_counts: Dict[str, dict], num_classes: int, macs=forward_macs) -> dict:
  """OFA's counter beside ours on the max and min networks and the teacher, per resolution.

  Args:
    ofa_counts: `{'<resolution>': {'max': n, 'min': n, 'teacher': n}}` from OFA's
      `count_net_flops` (forward MACs per image).
    num_classes: Classifier width.
    macs: Forward-MAC counter, see `summarize_case`.

  Returns:
    `{'<resolution>': {'max': [ofa, ours], ...}, 'match': all equal}`.
  """
  big = (tuple([7] * NUM_BLOCKS), tuple([6] * NUM_BLOCKS), (4,) * 5)
  small = (tuple([3] * NUM_BLOCKS), tuple([3] * NUM_BLOCKS), (2,) * 5)
  out, match = {}, True
  for resolution, counts in ofa_counts.items():
    ours = {name: macs(*config, int(resolution), num_classes)
            for name, config in (('max', big), ('min', small), ('teacher', big))}
    out[resolution] = {name: [counts[name], ours[name]] for name in ours}
    match = match and all(counts[name] == ours[name] for name in ours)
  out['match'] = match
  return out


def summarize(args: argparse.Namespace, ready: Dict[str, dict], rounds: Dict[str, List[dict]],
              macs=forward_macs) -> dict:
  """The benchmark's one JSON object from the workers' setup and round replies.

  Args:
    args: The driver's arguments.
    ready: Per side, the worker's setup reply (versions, threads, traces, MAC checks).
    rounds: Per side, the worker's round replies: `{'matmul_gflops': [...], 'cases':
      {'<resolution>/<case>': [step records]}}`.
    macs: Forward-MAC counter, see `summarize_case`.
  """
  matmul = {side: _median([g for r in rounds[side] for g in r['matmul_gflops']])
            for side in SIDES}
  peak = matmul['ofav2_tf']
  results = {}
  for resolution in args.resolutions:
    row = {}
    for case in case_names(args.subnets):
      key = f'{resolution}/{case}'
      row[case] = summarize_case({side: [r['cases'][key] for r in rounds[side]] for side in SIDES},
                                 resolution, args.batch, args.num_classes, peak, macs)
    results[str(resolution)] = row
  return {
      'benchmark': 'peer_ofa', 'variant': VARIANT, 'batch': args.batch,
      'macs_check': macs_check(ready['ofa']['macs_check'], args.num_classes, macs),
      'num_classes': args.num_classes, 'rounds': args.rounds, 'steps': args.steps,
      'warmup': args.warmup, 'ofa_teacher_mode': args.ofa_teacher_mode,
      'matmul_gflops': {'tensorflow': _round(matmul['ofav2_tf'], 1),
                        'torch': _round(matmul['ofa'], 1), 'size': args.matmul_size},
      'results': results,
      'setup': {side: ready[side] for side in SIDES},
  }


# ---- the workers ----------------------------------------------------------------------------------

def _timed_matmuls(run, size: int, repeats: int) -> List[float]:
  """GFLOP/s of `repeats` calls of `run()` (one size x size x size matmul each, synchronous)."""
  run()
  values = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    values.append(2 * size ** 3 / (time.perf_counter() - start) / 1e9)
  return values


def _import_ofa():
  """Imports the parts of `ofa` used here, without its image data loaders.

  `ofa/utils/__init__.py` star-imports `ofa.utils.my_dataloader`, whose transforms import Pillow
  and torchvision at import time. The networks, losses and optimizer builder used here need
  neither, so an empty module takes that name before `ofa.utils` is imported.

  Returns:
    The modules `(ofa_mbv3, mobilenet_v3, ofa.utils)`.
  """
  import types
  if 'ofa.utils.my_dataloader' not in sys.modules:
    stub = types.ModuleType('ofa.utils.my_dataloader')
    stub.__all__ = []
    sys.modules['ofa.utils.my_dataloader'] = stub
  from ofa import utils as ofa_utils
  from ofa.imagenet_classification.elastic_nn.networks import ofa_mbv3
  from ofa.imagenet_classification.networks import mobilenet_v3
  return ofa_mbv3, mobilenet_v3, ofa_utils


class _Side:
  """A worker's rounds: per resolution and case, untimed then timed steps; then matmuls."""

  def run_round(self, warmup_only: bool = False) -> dict:
    """One round (`warmup_only`: at least one untimed step per case, nothing recorded)."""
    cases = {}
    for r in self.args.resolutions:
      for case in case_names(self.args.subnets):
        for _ in range(max(self.args.warmup, 1) if warmup_only else self.args.warmup):
          self._step(case, r)
        if not warmup_only:
          cases[f'{r}/{case}'] = [self._step(case, r) for _ in range(self.args.steps)]
    return {'matmul_gflops': [] if warmup_only else self.matmuls(), 'cases': cases}


class OFAWorker(_Side):
  """The official OFA supernet's steps on torch."""

  def __init__(self, args):
    import warnings
    warnings.filterwarnings('ignore')  # e.g. nn.LogSoftmax() without dim in ofa's loss
    import numpy as np
    import torch
    from importlib import metadata
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    self.args, self.torch = args, torch
    ofa_mbv3, mobilenet_v3, self.utils = _import_ofa()
    self.net = ofa_mbv3.OFAMobileNetV3(
        n_classes=args.num_classes, bn_param=(0.1, 1e-5), dropout_rate=0.1, width_mult=1.0,
        ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    self.teacher = mobilenet_v3.MobileNetV3Large(
        n_classes=args.num_classes, bn_param=(0.1, 1e-5), dropout_rate=0, width_mult=1.0, ks=7,
        expand_ratio=6, depth_param=4)
    self.net.train()
    rng = np.random.default_rng(args.seed)
    self.data = {r: (torch.from_numpy(rng.standard_normal((args.batch, 3, r, r), np.float32)),
                     torch.from_numpy(rng.integers(0, args.num_classes, args.batch)))
                 for r in args.resolutions}
    self.single_optimizer = self.utils.build_optimizer(
        list(self.net.parameters()), 'sgd', {'momentum': 0.9, 'nesterov': True}, LR, 0, None)
    keys = ['bn', 'bias']  # OFA's no_decay_keys 'bn#bias'
    self.kd_optimizers = {n: self.utils.build_optimizer(
        [list(self.net.get_parameters(keys, mode='exclude')),
         list(self.net.get_parameters(keys, mode='include'))],
        'sgd', {'momentum': 0.9, 'nesterov': True}, LR, WEIGHT_DECAY, '#'.join(keys))
                          for n in args.subnets}
    self.step_index = 0
    self.ready = {
        'versions': {'python': sys.version.split()[0], 'torch': torch.__version__,
                     'ofa': metadata.version('ofa')},
        'threads': {'intra_op': torch.get_num_threads(),
                    'inter_op': torch.get_num_interop_threads()},
        'macs_check': self._macs_check(),
    }

    start = time.perf_counter()
    self.run_round(warmup_only=True)
    self.ready['warmup_seconds'] = round(time.perf_counter() - start, 1)

  def _macs_check(self):
    """OFA's own MAC counter on its max and min networks and teacher, per resolution."""
    checks = {}
    for r in self.args.resolutions:
      shape = (1, 3, r, r)
      self.net.set_max_net()
      max_macs = self.utils.count_net_flops(self.net.get_active_subnet(), shape)
      self.net.set_active_subnet(ks=3, e=3, d=2)
      min_macs = self.utils.count_net_flops(self.net.get_active_subnet(), shape)
      teacher_macs = self.utils.count_net_flops(self.teacher, shape)
      checks[str(r)] = {'max': int(max_macs), 'min': int(min_macs), 'teacher': int(teacher_macs)}
    self.net.set_max_net()
    return checks

  def _current(self):
    """The active sub-network as [kernel, expand, depth] lists (20, 20, 5 values)."""
    kernel = [block.conv.active_kernel_size for block in self.net.blocks[1:]]
    expand = [block.conv.active_expand_ratio for block in self.net.blocks[1:]]
    return [kernel, expand, list(self.net.runtime_depth)]

  def _single(self, case, images, labels):
    start = time.perf_counter()
    if case == 'random':
      self.net.sample_active_subnet()
    self.single_optimizer.zero_grad()
    output = self.net(images)
    loss = self.utils.cross_entropy_with_label_smoothing(output, labels, LABEL_SMOOTHING)
    loss.backward()
    self.single_optimizer.step()
    seconds = time.perf_counter() - start
    return {'seconds': seconds, 'subnets': [self._current()], 'teacher': False}

  def _kd(self, n, images, labels):
    torch = self.torch
    optimizer = self.kd_optimizers[n]
    subnets = []
    start = time.perf_counter()
    self.teacher.train(self.args.ofa_teacher_mode == 'train')
    with torch.no_grad():
      soft_label = torch.nn.functional.softmax(self.teacher(images).detach(), dim=1)
    self.net.zero_grad()
    losses = []
    for j in range(n):
      random.seed(int('%d%.3d%.3d' % (self.step_index, j, 0)))  # OFA's per-sub-network seed
      self.net.sample_active_subnet()
      subnets.append(self._current())
      output = self.net(images)
      loss = (KD_WEIGHT * self.utils.cross_entropy_loss_with_soft_target(output, soft_label)
              + self.utils.cross_entropy_with_label_smoothing(output, labels, LABEL_SMOOTHING))
      top1, top5 = self.utils.accuracy(output, labels, topk=(1, 5))
      top1.item(), top5.item()
      losses.append(loss)
      loss.backward()
    optimizer.step()
    self.utils.list_mean(losses).item()
    seconds = time.perf_counter() - start
    self.step_index += 1
    return {'seconds': seconds, 'subnets': subnets, 'teacher': True}

  def _step(self, case, resolution):
    images, labels = self.data[resolution]
    if case.startswith('kd'):
      return self._kd(int(case[2:]), images, labels)
    if case == 'max':
      self.net.set_max_net()
    elif case == 'min':
      self.net.set_active_subnet(ks=3, e=3, d=2)
    return self._single(case, images, labels)

  def matmuls(self):
    torch = self.torch
    size = self.args.matmul_size
    a, b = torch.randn(size, size), torch.randn(size, size)
    return _timed_matmuls(lambda: torch.mm(a, b), size, self.args.matmul_repeats)


class OursWorker(_Side):
  """ofav2_tf's SE_B supernet: `ElasticTrainStep` and `ElasticTrainer.train_step`."""

  def __init__(self, args):
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    import tf_keras
    from ofav2_tf import elastic_step
    from ofav2_tf import supernet as supernet_lib
    from ofav2_tf import teacher as teacher_lib
    from ofav2_tf import trainer as trainer_lib
    self.args, self.np, self.tf, self.supernet_lib = args, np, tf, supernet_lib
    tf_keras.utils.set_random_seed(args.seed)
    self.rng = np.random.default_rng(args.seed)
    net = supernet_lib.build_supernet(VARIANT, args.num_classes)
    self.net = net
    self.spaces = {r: net.search_space(resolutions=(r,)) for r in args.resolutions}
    self.data = {r: (tf.random.stateless_normal([args.batch, r, r, 3], [args.seed, r]),
                     tf.random.stateless_uniform([args.batch], [args.seed, r + 1], 0,
                                                 args.num_classes, tf.int32))
                 for r in args.resolutions}
    traces = {}
    start = time.perf_counter()
    self.single = elastic_step.ElasticTrainStep(
        net, tf_keras.optimizers.SGD(LR, momentum=0.9, nesterov=True), LABEL_SMOOTHING)
    first = args.resolutions[0]
    self.single(*self.data[first], self.spaces[first].max_config()).numpy()
    traces['elastic_step'] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    gradients = trainer_lib.SubnetGradients(net, LABEL_SMOOTHING)
    teacher_resolution = max(args.resolutions)
    teacher = teacher_lib.extract_teacher(
        net, self.spaces[teacher_resolution].max_config(),
        [self.data[teacher_resolution][0]], max_images=args.batch)
    traces['extract_teacher'] = round(time.perf_counter() - start, 1)
    self.trainers = {}
    for n in args.subnets:
      trainer = trainer_lib.ElasticTrainer(net, gradients, teacher=teacher, kd_weight=KD_WEIGHT,
                                           weight_decay=WEIGHT_DECAY)
      trainer.compile(optimizer=tf_keras.optimizers.SGD(LR, momentum=0.9, nesterov=True),
                      run_eagerly=True)
      self.trainers[n] = trainer
      start = time.perf_counter()
      self._kd(n, first)  # the first call of each trainer traces (its update; n=1 all of it)
      traces[f'trainer_kd{n}_first_step'] = round(time.perf_counter() - start, 1)
    self.gradients = gradients
    self.ready = {
        'versions': {'python': sys.version.split()[0], 'tensorflow': tf.__version__,
                     'tf_keras': tf_keras.__version__},
        'threads': {'intra_op': tf.config.threading.get_intra_op_parallelism_threads(),
                    'inter_op': tf.config.threading.get_inter_op_parallelism_threads() or
                                'default'},
        'trace_seconds': traces,
    }
    start = time.perf_counter()
    self.run_round(warmup_only=True)
    self.ready['warmup_seconds'] = round(time.perf_counter() - start, 1)
    self.ready['trace_count'] = {'elastic_step': self.single.trace_count,
                                 'subnet_gradients': gradients.trace_count}

  @staticmethod
  def _listed(config):
    return [list(config.kernel), list(config.expand), list(config.depth)]

  def _single_step(self, case, resolution):
    images, labels = self.data[resolution]
    space = self.spaces[resolution]
    config = space.max_config() if case == 'max' else space.min_config()
    start = time.perf_counter()
    if case == 'random':
      config = space.sample(self.rng)
    self.single(images, labels, self.supernet_lib.arch_tensors(config)).numpy()
    seconds = time.perf_counter() - start
    return {'seconds': seconds, 'subnets': [self._listed(config)], 'teacher': False}

  def _kd(self, n, resolution):
    np, tf, supernet_lib = self.np, self.tf, self.supernet_lib
    images, labels = self.data[resolution]
    space = self.spaces[resolution]
    start = time.perf_counter()
    configs = [space.sample(self.rng) for _ in range(n)]
    arrays = [supernet_lib.arch_arrays(c) for c in configs]
    archs = {key: tf.constant(np.stack([a[key] for a in arrays]))
             for key in supernet_lib.ARCH_SIGNATURE}
    logs = self.trainers[n].train_step(((images, labels), archs))
    float(logs['loss'])
    seconds = time.perf_counter() - start
    return {'seconds': seconds, 'subnets': [self._listed(c) for c in configs], 'teacher': True}

  def _step(self, case, resolution):
    if case.startswith('kd'):
      return self._kd(int(case[2:]), resolution)
    return self._single_step(case, resolution)

  def matmuls(self):
    tf = self.tf
    size = self.args.matmul_size
    a = tf.random.stateless_normal([size, size], [1, 2])
    b = tf.random.stateless_normal([size, size], [3, 4])
    return _timed_matmuls(lambda: tf.linalg.matmul(a, b)[0, 0].numpy(), size,
                          self.args.matmul_repeats)


def serve(args) -> int:
  """Worker main loop: sets up, replies `ready`, then one reply per `round` command on stdin.

  Replies are JSON lines on the original stdout; everything else the libraries print to stdout
  goes to stderr, so that it cannot corrupt the protocol.
  """
  protocol = os.fdopen(os.dup(1), 'w', buffering=1)
  os.dup2(2, 1)

  def reply(obj):
    protocol.write(json.dumps(obj) + '\n')
    protocol.flush()

  worker = (OFAWorker if args.side == 'ofa' else OursWorker)(args)
  reply({'ready': worker.ready})
  for line in sys.stdin:
    command = json.loads(line)
    if command['cmd'] == 'round':
      reply({'round': worker.run_round()})
    elif command['cmd'] == 'quit':
      break
  return 0


# ---- the driver -----------------------------------------------------------------------------------

class _WorkerProcess:
  """One worker subprocess, talking JSON lines over its stdin and stdout."""

  def __init__(self, side, python, args):
    self.side = side
    self.log = tempfile.NamedTemporaryFile('w+', prefix=f'peer_ofa_{side}_', suffix='.log',
                                           delete=False)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=_REPO)
    self.proc = subprocess.Popen(
        [python, '-m', 'benchmarks.peer_ofa', f'--side={side}'] + worker_flags(args),
        cwd=_REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        text=True)

  def read(self, key):
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      self.log.seek(0)
      tail = self.log.read()[-3000:]
      raise RuntimeError(f'{self.side} worker exited with {self.proc.returncode} (log '
                         f'{self.log.name}):\n{tail}')
    return json.loads(line)[key]

  def send(self, cmd):
    self.proc.stdin.write(json.dumps({'cmd': cmd}) + '\n')
    self.proc.stdin.flush()

  def close(self):
    if self.proc.poll() is None:
      try:
        self.send('quit')
        self.proc.wait(timeout=60)
      except (BrokenPipeError, subprocess.TimeoutExpired):
        self.proc.kill()
    self.log.close()
    os.unlink(self.log.name)


def default_peer_python() -> str:
  """`.venv-peer/bin/python` of the repository if it exists, else the current interpreter."""
  candidate = os.path.join(_REPO, '.venv-peer', 'bin', 'python')
  return candidate if os.path.exists(candidate) else sys.executable


def _progress(message):
  print(f'[peer_ofa {time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


def drive(args) -> dict:
  """Starts both workers (one after the other), runs the alternating rounds, summarizes."""
  pythons = {'ofa': args.peer_python or default_peer_python(), 'ofav2_tf': sys.executable}
  workers, ready = {}, {}
  rounds = {side: [] for side in SIDES}
  try:
    for side in SIDES:  # set up one at a time, so that neither disturbs the other's setup
      start = time.perf_counter()
      workers[side] = _WorkerProcess(side, pythons[side], args)
      ready[side] = workers[side].read('ready')
      ready[side]['python'] = pythons[side]
      ready[side]['setup_seconds'] = round(time.perf_counter() - start, 1)
      _progress(f'{side} ready in {ready[side]["setup_seconds"]} s')
    for index in range(args.rounds):
      for side in SIDES:
        time.sleep(0.5)  # let the other side's pool threads stop spinning
        start = time.perf_counter()
        workers[side].send('round')
        rounds[side].append(workers[side].read('round'))
        _progress(f'round {index + 1}/{args.rounds} {side}: {time.perf_counter() - start:.0f} s')
  finally:
    for worker in workers.values():
      worker.close()
  return summarize(args, ready, rounds)


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.side != 'driver':
    return serve(args)
  start = time.perf_counter()
  result = drive(args)
  result['wall_seconds'] = round(time.perf_counter() - start, 1)
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
