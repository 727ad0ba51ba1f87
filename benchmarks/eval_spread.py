"""Benchmark: the evaluation's own spread, one sub-network measured over seeds of the evaluation.

A run reports each sub-network's top-1 as one figure, but that figure depends on two random draws
of the evaluation itself, not only on the weights: the training images BN is re-calibrated on
(`pipeline.calibration_images`, drawn by the evaluator's `seed`) and, for a bounded evaluation,
which test images are measured (`stratified.subset`, drawn by its `sample_seed`). Before a
difference between two sub-networks, two checkpoints or two runs is read as real, it should be
larger than what re-drawing these alone moves the same figure by. This benchmark states that:

  - which networks: the max network of the run's last trained phase at its largest resolution,
    its min network at its smallest resolution, and the uniform network in between (the middle
    kernel, expand ratio and depth of the phase, e.g. k5 e4 d3, at the last exit and the largest
    resolution); `--subnets=` replaces them with config strings of that phase's space;
  - each is measured through `phase_eval.Evaluator` exactly as the run measures it (BN
    re-calibrated on `--calibration_images` training images, top-1 on the test split), once per
    calibration seed x sample seed: one evaluator per pair, all on the one restored supernet;
  - a measurement is top-1 on a class-stratified sample of `--images` test images drawn by the
    sample seed.

Per sub-network the JSON gives all figures (`accuracy[i][j]`: calibration seed i, sample seed j)
and their spread:

  - calibration_spread: for each sample seed the max - min over calibration seeds, and the median
    of those (what re-drawing the calibration images alone moves a figure by);
  - sample_spread: the same the other way round (what re-drawing the test sample alone does);
  - range (max - min of all figures), std (sample standard deviation of all figures), mean;
  - sampling_std_expected: the standard deviation a simple random sample of `images` of the
    split's images would give at the mean accuracy (binomial, finite-population corrected), a
    yardstick for sample_spread; a stratified sample varies slightly less.

`evaluators` records, per seed pair, a digest of the calibration images and of the test sample's
image indices, so the record itself shows that the seeds drew different images (samples drawn
from the whole split are identical: `--images` at or above the split's size makes sample seeds
moot, and a warning says so). The one JSON line goes to stdout and to `<run_dir>/eval_spread.json`;
a progress line per measurement goes to stderr.

Usage:
  python -m benchmarks.eval_spread --run_dir=runs/demo_fashion_mnist
  python -m benchmarks.eval_spread --run_dir=<run> --subnets=<config> --images=2000 \
      --calibration_seeds=0,1,2,3,4
"""

import hashlib
import itertools
import json
import math
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from ofav2_tf import costs
from ofav2_tf import errors
from ofav2_tf import phase_eval
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import subnet_config as sc
from ofav2_tf.data import stratified
from ofav2_tf.modes import common


OUTPUT_FILE = 'eval_spread.json'
SPLIT = 'test'


def _progress(message: str) -> None:
  print(f'[eval_spread] {message}', file=sys.stderr, flush=True)


# -- what to measure -------------------------------------------------------------------------------


def parse_seeds(name: str, values) -> list:
  """The distinct non-negative integer seeds of flag `--name`, in the given order.

  Raises:
    ConfigError: A value is not a non-negative integer, repeats, or there is none.
  """
  seeds = []
  for value in values or ():
    try:
      seed = int(str(value).strip())
    except ValueError:
      raise errors.ConfigError(f'--{name}: {value!r} is not an integer seed') from None
    if seed < 0:
      raise errors.ConfigError(f'--{name}: seeds must be non-negative, got {seed}')
    if seed in seeds:
      raise errors.ConfigError(f'--{name}: seed {seed} is given twice')
    seeds.append(seed)
  if not seeds:
    raise errors.ConfigError(f'--{name} needs at least one seed')
  return seeds


def _middle(values):
  """The middle one of sorted values (the upper one of the two middles of an even count)."""
  return values[len(values) // 2]


def default_subnets(space: sc.SearchSpace) -> list:
  """(role, config): the phase's max, middle uniform and min networks, without repeats.

  The max and min are the ends the run's own validation watches (`Evaluator.validation_scores`);
  the middle one (middle kernel, expand ratio and depth at the last exit and the largest
  resolution) shows whether the spread of a network between the ends differs from theirs. A
  phase with one value per dimension has no middle apart from the max, and it is left out.
  """
  largest = space.max_config(max(space.resolutions))
  smallest = space.min_config(min(space.resolutions))
  branches = None
  if space.parallel:
    branches = _middle(sorted(space.uniform_branch_patterns(), key=sc.branch_count))
  middle = space.uniform(_middle(space.kernel_sizes), _middle(space.expand_ratios),
                         _middle(space.depths), max(space.exits), max(space.resolutions),
                         branches)
  chosen, seen = [], set()
  for role, config in (('max', largest), ('middle', middle), ('min', smallest)):
    if config.canonical().to_string() not in seen:
      seen.add(config.canonical().to_string())
      chosen.append((role, config))
  return chosen


def parse_subnets(texts) -> list:
  """The `--subnets` strings as configs (ConfigError naming the bad one)."""
  configs = []
  for i, text in enumerate(texts):
    try:
      configs.append(sc.SubnetConfig.parse(text))
    except errors.ConfigError as e:
      raise errors.ConfigError(f'--subnets #{i + 1} is not a sub-network config: {e}') from None
  return configs


def named_subnets(configs, space: sc.SearchSpace) -> list:
  """(role, config) for `--subnets`, each validated against the trained phase's space.

  A sub-network outside the space was never trained, so its spread would say nothing about the
  run's figures.
  """
  subnets, seen = [], {}
  for i, config in enumerate(configs):
    try:
      space.validate(config)
    except errors.ConfigError as e:
      raise errors.ConfigError(f'--subnets #{i + 1} is not a sub-network the run\'s last '
                               f'trained phase trained: {e}') from None
    key = config.canonical().to_string()
    if key in seen:
      raise errors.ConfigError(f'--subnets #{i + 1} is the same network as #{seen[key] + 1}')
    seen[key] = i
    subnets.append((f'subnet{i + 1}', config))
  return subnets


def _is_uniform(config: sc.SubnetConfig) -> bool:
  active = list(config.active_blocks())
  per_block = [config.kernel, config.expand]
  if config.branches is not None:
    per_block.append(config.branches)
  return (all(len({values[b] for b in active}) == 1 for values in per_block)
          and len(set(config.depth[:config.exit])) == 1)


def label(config: sc.SubnetConfig) -> str:
  """'k5 e4 d3 x5 r64' for a uniform network; only exit and resolution for another one."""
  if _is_uniform(config):
    return phase_eval.uniform_label(config)
  return f'non-uniform x{config.exit} r{config.resolution}'


# -- which images ----------------------------------------------------------------------------------


def sample_indices(splits, images: int, sample_seed: int, split: str = SPLIT) -> np.ndarray:
  """Indices into `split` of the images a bounded evaluation with `sample_seed` measures.

  The same draw `pipeline.eval_batches` makes (`stratified.subset`), so the record can show which
  images each sample seed measured without reading them again.
  """
  labels = stratified.split_labels(getattr(splits, split))
  return stratified.stratified_indices(labels, images, sample_seed)


def digest(array: np.ndarray) -> str:
  """A short fingerprint of an array's values (equal arrays, equal digests)."""
  array = np.ascontiguousarray(array)
  text = f'{array.dtype.str}{array.shape}'.encode() + array.tobytes()
  return hashlib.sha256(text).hexdigest()[:16]


def mean_overlap(samples) -> float:
  """Mean share of images two of the samples have in common (1.0 for a single sample)."""
  pairs = list(itertools.combinations(samples, 2))
  if not pairs:
    return 1.0
  return float(np.mean([len(np.intersect1d(a, b)) / max(len(a), 1) for a, b in pairs]))


# -- the spread ------------------------------------------------------------------------------------


def spread(accuracy, images: int, split_size: int) -> dict:
  """The spread of one sub-network's figures (see the module docstring).

  Args:
    accuracy: accuracy[i][j] measured with calibration seed i and sample seed j.
    images: Images per measurement.
    split_size: Images in the split the samples are drawn from.

  Returns:
    {'mean', 'calibration_spread', 'sample_spread', 'range', 'std', 'sampling_std_expected'}.
  """
  a = np.asarray(accuracy, np.float64)
  if a.ndim != 2 or not a.size:
    raise ValueError(f'accuracy must be a non-empty seeds x seeds matrix, got shape {a.shape}')
  mean = float(a.mean())
  # Sampling without replacement: no spread at all once the sample is the whole split.
  fpc = max(split_size - images, 0) / (split_size - 1) if split_size > 1 else 0.0
  return {
      'mean': mean,
      # Column j holds one sample seed's figures over the calibration seeds.
      'calibration_spread': float(np.median(a.max(axis=0) - a.min(axis=0))),
      'sample_spread': float(np.median(a.max(axis=1) - a.min(axis=1))),
      'range': float(a.max() - a.min()),
      'std': float(a.std(ddof=1)) if a.size > 1 else 0.0,
      'sampling_std_expected': math.sqrt(mean * (1 - mean) / images * fpc),
  }


def _rounded(values: dict, places: int = 6) -> dict:
  return {k: round(v, places) for k, v in values.items()}


# -- the benchmark ---------------------------------------------------------------------------------


def measure(run_dir: str, subnets=None, calibration_seeds=(0, 1, 2), sample_seeds=(0, 1, 2),
            images: int = 500, calibration_images=None) -> dict:
  """Measures every sub-network for every seed pair; returns the JSON record.

  Raises:
    OFAError: The run folder is missing or untrained, or a sub-network is not valid.
  """
  started = time.perf_counter()
  configs = parse_subnets(subnets) if subnets else None  # Bad strings fail before any loading.
  run = common.load_trained_run(run_dir)
  config, splits, folder = run.config, run.splits, run.folder
  chosen = named_subnets(configs, run.space) if configs else default_subnets(run.space)
  calibration_images = calibration_images or config.calibration_images
  split_size = len(stratified.split_labels(getattr(splits, SPLIT)))
  _progress(f'run {folder.path}: phase {run.plan.name}; {len(chosen)} networks x '
            f'{len(calibration_seeds)} calibration seeds x {len(sample_seeds)} sample seeds, '
            f'{min(images, split_size)} of {split_size} {SPLIT} images, {calibration_images} '
            'calibration images')
  if images >= split_size and len(sample_seeds) > 1:
    _progress(f'warning: --images={images} covers the whole {SPLIT} split ({split_size}); '
              'every sample seed measures the same images')

  samples = {s: sample_indices(splits, images, s) for s in sample_seeds}
  accuracy = {role: np.zeros((len(calibration_seeds), len(sample_seeds))) for role, _ in chosen}
  evaluators, durations, first, seen = [], [], None, None
  total = len(chosen) * len(calibration_seeds) * len(sample_seeds)
  for (i, c_seed), (j, s_seed) in itertools.product(enumerate(calibration_seeds),
                                                    enumerate(sample_seeds)):
    if first is None:
      first = evaluator = phase_eval.Evaluator(
          run.supernet, splits, calibration_images, c_seed, config.validation_images,
          eval_images=images, eval_split=SPLIT, sample_seed=s_seed)
    else:
      evaluator = first.reseeded(c_seed, s_seed)  # shares the traced inference
    evaluators.append({
        'calibration_seed': c_seed, 'sample_seed': evaluator.sample_seed,
        'calibration_images': int(len(evaluator.calibration)),
        'calibration_digest': digest(evaluator.calibration),
        'sample_digest': digest(sample_indices(splits, images, evaluator.sample_seed)),
    })
    for role, subnet in chosen:
      before = time.perf_counter()
      result = evaluator.evaluate(subnet, SPLIT, images)
      durations.append(time.perf_counter() - before)
      accuracy[role][i, j], seen = result.accuracy, result.images
      _progress(f'{len(durations)}/{total} {role} {label(subnet)}, calibration seed {c_seed}, '
                f'sample seed {s_seed}: top-1 {result.accuracy:.4f} ({durations[-1]:.1f} s)')

  networks = []
  for role, subnet in chosen:
    figures = _rounded(spread(accuracy[role], seen, split_size))
    _progress(f'{role} {label(subnet)}: mean {figures["mean"]:.4f}, calibration spread '
              f'{figures["calibration_spread"]:.4f}, sample spread {figures["sample_spread"]:.4f}'
              f', range {figures["range"]:.4f}, std {figures["std"]:.4f} (sampling alone '
              f'~{figures["sampling_std_expected"]:.4f})')
    networks.append({
        'role': role, 'config': subnet.to_string(), 'label': label(subnet),
        'resolution': subnet.resolution,
        'macs': costs.count(subnet, config.variant, config.num_classes,
                            config.width_multiplier, expand_ratios=config.expand_ratios).macs,
        'accuracy': [[round(float(v), 6) for v in row] for row in accuracy[role]],
        **figures,
    })
  return {
      'benchmark': 'eval_spread', 'run_dir': folder.path, 'variant': config.variant,
      'dataset': config.dataset, 'phase': run.plan.name, 'split': SPLIT,
      'split_images': split_size, 'images': seen, 'images_requested': images,
      'calibration_images': evaluators[0]['calibration_images'],
      'calibration_seeds': list(calibration_seeds), 'sample_seeds': list(sample_seeds),
      'sample_overlap': round(mean_overlap(list(samples.values())), 4),
      'evaluators': evaluators, 'subnets': networks,
      'largest_range': max(n['range'] for n in networks),
      'seconds': round(time.perf_counter() - started, 1),
      'median_measurement_seconds': round(statistics.median(durations), 3),
  }


def define_flags() -> None:
  """Defines the command line, only when this module runs as a program.

  `ofav2_tf/flag_defs.py` and the other benchmarks define flags of the same names (`--run_dir`,
  `--subnets`), and the test suite imports several of them into one process.
  """
  flags.DEFINE_string('run_dir', None, 'Folder of a finished training run.')
  flags.DEFINE_list('subnets', None, 'Sub-network config strings to measure instead of the max, '
                    'middle and min uniform networks (each in the run\'s last trained phase\'s '
                    'space).')
  flags.DEFINE_list('calibration_seeds', ['0', '1', '2'],
                    'Seeds of the BN-calibration image draw.')
  flags.DEFINE_list('sample_seeds', ['0', '1', '2'], 'Seeds of the stratified test-image sample.')
  flags.DEFINE_integer('images', 500, 'Test images per measurement (a stratified sample drawn by '
                       'the sample seed).', lower_bound=1)
  flags.DEFINE_integer('calibration_images', None, 'Training images per BN re-calibration; '
                       'default: the run\'s.', lower_bound=1)


def main(argv):
  del argv
  # TensorFlow's INFO lines (checkpoint reading, ...) would drown the progress lines.
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel('ERROR')
  load_before = os.getloadavg()
  try:
    args = flags.FLAGS
    if not args.run_dir:
      raise errors.ConfigError('--run_dir is required: the folder of a finished training run')
    result = measure(args.run_dir, args.subnets,
                     parse_seeds('calibration_seeds', args.calibration_seeds),
                     parse_seeds('sample_seeds', args.sample_seeds), args.images,
                     args.calibration_images)
  except errors.OFAError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  # The machine may be shared: a busy one slows measurements but does not change a figure.
  result['load_average_start'] = [round(x, 2) for x in load_before]
  result['load_average_end'] = [round(x, 2) for x in os.getloadavg()]
  run_folder_lib.write_json_atomic(os.path.join(result['run_dir'], OUTPUT_FILE), result)
  print(json.dumps(result))


if __name__ == '__main__':
  define_flags()
  app.run(main)
