"""Benchmark: OFA's central claim on this data, sub-networks of the supernet vs. trained alone.

Once-for-all claims that a sub-network taken from the trained supernet (weights shared, BN
re-calibrated) is as accurate as the same architecture trained from scratch with the same budget.
Given a finished training run, this trains three of its sub-networks alone and compares them with
what the supernet gives for the same architectures:

  - which networks: the last phase's max network, its smallest uniform one (at the smallest
    resolution) and the uniform one whose MACs are closest to the geometric mean of those two, on
    a log scale (`--subnets=` replaces them with config strings of the last phase's space);
  - each is the extracted architecture (`extraction.extract`) of a freshly built supernet,
    seeded like the run, so the max network starts exactly where the run's full phase started and
    the others from the same initialisers sliced to their size; no teacher;
  - for as many optimizer steps as the whole schedule took (the sum of `optimizer_steps` in every
    phase's result.json; `--steps` overrides, for tests), on the run's data, batch size,
    resolutions and augmentation (`pipeline.train_batches`, one resolution per batch, seeded like
    the run's full phase: with the default checkpoint interval, which is the run's, the first
    chunks are the very batches the full phase saw);
  - with the run's optimizer: SGD with Nesterov momentum, weight decay on kernels only
    (`trainer.decays`), label-smoothed CE on the network's one exit, cosine schedule with linear
    warm-up (`trainer.CosineWithWarmup`). The peak learning rate is the full phase's, as planned
    by the run (`--lr` overrides): the full phase is the part of the schedule that trains a
    network from random weights without a teacher, which is what happens here, while the later
    phases' learning rates are for fine-tuning an already trained supernet. The warm-up keeps the
    full phase's share of its steps.

Accuracies are top-1 on `--eval_images` test images (0 = all) at the sub-network's resolution,
with the eval transform of `pipeline.eval_batches`:

  - supernet: the last phase's best checkpoint (`common.load_trained_run`), through
    `phase_eval.Evaluator` with BN re-calibrated, as the run reports its sub-networks;
  - scratch: the trained model with its own BN statistics, and again after BN re-calibration on
    the same calibration images as the supernet's (`scratch_accuracy_recalibrated`);
  - difference: supernet minus the better of the two scratch figures, so no choice of BN
    statistics tips the comparison towards the supernet. `goal_met` is every difference >= -1
    point (-0.01).

Training is resumable: each network keeps its latest checkpoint (weights, optimizer, steps done,
training seconds) every `--checkpoint_every` steps in `<run_dir>/from_scratch/<role>-<key>/`,
where the key hashes everything the training depends on; running the same command again continues
where it stopped, and a finished network is only evaluated again. A progress line goes to stderr
every `--progress_every` steps; the one JSON line goes to stdout and to
`<run_dir>/from_scratch/from_scratch.json`.

Usage:
  python -m benchmarks.from_scratch --run_dir=runs/demo_fashion_mnist
  python -m benchmarks.from_scratch --run_dir=<run> --subnets=<config>,<config> --lr=0.1
"""

import hashlib
import json
import math
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf
import tf_keras

from ofav2_tf import bn_calibration
from ofav2_tf import costs
from ofav2_tf import errors
from ofav2_tf import evaluation
from ofav2_tf import extraction
from ofav2_tf import losses
from ofav2_tf import phase_eval
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import subnet_config as sc
from ofav2_tf import supernet as supernet_lib
from ofav2_tf import trainer as trainer_lib
from ofav2_tf.data import pipeline
from ofav2_tf.modes import common


OUTPUT_DIR = 'from_scratch'
OUTPUT_FILE = 'from_scratch.json'
GOAL_POINTS = 1.0  # The supernet's sub-network may trail the scratch one by at most this.


def _progress(message: str) -> None:
  print(f'[from_scratch] {message}', file=sys.stderr, flush=True)


# -- what to train ---------------------------------------------------------------------------------


def total_optimizer_steps(folder: run_folder_lib.RunFolder, plans) -> int:
  """Optimizer steps of the whole schedule, from every phase's result.json.

  Raises:
    ConfigError: A phase of the run's plan has no result yet (the run is not finished).
  """
  missing = [p.folder_name for p in plans if folder.phase_result(p) is None]
  if missing:
    raise errors.ConfigError(
        f'run {folder.path} is not finished: phases {", ".join(missing)} have no result.json; '
        f'finish it with --mode=train --run_dir={folder.path}')
  return sum(int(folder.phase_result(p)['optimizer_steps']) for p in plans)


def _macs(config: sc.SubnetConfig, run_config) -> int:
  return costs.count(config, run_config.variant, run_config.num_classes,
                     run_config.width_multiplier, expand_ratios=run_config.expand_ratios).macs


def default_subnets(space: sc.SearchSpace, run_config) -> list:
  """(role, config): the max, the middle (geometric mean of MACs) and the smallest uniform one.

  The middle one is chosen on a log scale because MACs span orders of magnitude between the two
  ends; an arithmetic mean would pick a network close to the max. It must differ from both ends
  in more than its resolution: trained alone on the run's mix of resolutions, a network that
  differs only in its input size is the same model, and would repeat an end's training.

  Raises:
    ConfigError: The space has no uniform network between the two ends.
  """
  largest = space.max_config(max(space.resolutions))
  smallest = space.min_config(min(space.resolutions))
  ends = {_architecture(largest), _architecture(smallest)}
  low, high = _macs(smallest, run_config), _macs(largest, run_config)
  target = 0.5 * (math.log(low) + math.log(high))
  between = [(abs(math.log(m) - target), c.to_string(), c)
             for c in space.uniform_grid() for m in [_macs(c, run_config)]
             if low < m < high and _architecture(c) not in ends]
  if not between:
    raise errors.ConfigError(
        'the last phase\'s space has no uniform sub-network between its smallest and its max '
        '(other than in resolution); name the networks with --subnets')
  middle = min(between, key=lambda t: t[:2])[2]
  return [('max', largest), ('middle', middle), ('min', smallest)]


def _architecture(config: sc.SubnetConfig) -> str:
  """The config without its input size (what the weights depend on)."""
  return config.replace(resolution=0).to_string()


def named_subnets(texts, space: sc.SearchSpace) -> list:
  """(role, config) for `--subnets`, each validated against the trained space."""
  subnets = []
  for i, text in enumerate(texts):
    config = sc.SubnetConfig.parse(text)
    try:
      space.validate(config)
    except errors.ConfigError as e:
      raise errors.ConfigError(f'--subnets #{i + 1} is not a sub-network the run\'s last phase '
                               f'trained: {e}') from None
    subnets.append((f'subnet{i + 1}', config))
  return subnets


def fresh_models(run_config, configs) -> list:
  """The architectures of `configs` as tf_keras models with fresh weights (any input size).

  They come from a supernet built afresh with the run's seed: the max network then starts from
  the very weights the run's full phase started from, and the others from the same
  initialisers, sliced to their size. Nothing is read from the trained supernet.
  """
  tf_keras.utils.set_random_seed(run_config.seed)
  net = supernet_lib.build_supernet(run_config.variant, run_config.num_classes,
                                    **run_config.supernet_kwargs())
  return [extraction.extract(net, config, name=f'scratch_{i}', any_resolution=True)
          for i, config in enumerate(configs)]


# -- training --------------------------------------------------------------------------------------


class _Settings:
  """What one network's training depends on (the checkpoint folder's key)."""

  def __init__(self, run_config, config, steps, lr, warmup, interval, phase0_index):
    self.config = config
    self.steps, self.lr, self.warmup, self.interval = steps, lr, warmup, interval
    self.values = {
        'config': config.to_string(), 'steps': steps, 'lr': lr, 'warmup_steps': warmup,
        'checkpoint_every': interval, 'batch_size': run_config.batch_size,
        'resolutions': list(run_config.resolutions), 'seed': run_config.seed,
        'momentum': run_config.momentum, 'weight_decay': run_config.weight_decay,
        'label_smoothing': run_config.label_smoothing, 'dataset': run_config.dataset,
        'data_seed_phase': phase0_index,
    }

  def key(self) -> str:
    text = json.dumps(self.values, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _train_step_fn(model, optimizer, weight_decay: float, label_smoothing: float):
  """One traced SGD step for every batch resolution: loss, gradients, weight decay, update.

  Weight decay is added to the gradients of kernels only, as the phase trainer does
  (`trainer.decays`), so the two optimise the same objective.
  """
  variables = model.trainable_variables
  decay = [trainer_lib.decays(v) for v in variables]

  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = losses.label_smoothed_ce(logits, labels, label_smoothing)
    grads = tape.gradient(loss, variables)
    grads = [g + weight_decay * v if d else g for g, v, d in zip(grads, variables, decay)]
    optimizer.apply_gradients(zip(grads, variables))
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.int32))
    return loss, correct

  return tf.function(step, autograph=False, input_signature=[
      supernet_lib.IMAGE_SIGNATURE, tf.TensorSpec([None], tf.int64)])


def train(model, role: str, settings: _Settings, run_config, splits, folder, directory,
          progress_every: int = 50) -> dict:
  """Trains `model` for `settings.steps` steps, resuming from `directory`'s checkpoint.

  A progress line goes to stderr every `progress_every` steps.

  Returns:
    steps, resumed_at_step, train_seconds (wall time of every start, trace included),
    seconds_per_step (median step of this start, trace excluded; of the start that trained it
    when nothing was left to train) and first_step_seconds (trace).
  """
  schedule = trainer_lib.CosineWithWarmup(settings.lr, settings.steps, settings.warmup)
  optimizer = tf_keras.optimizers.SGD(schedule, momentum=run_config.momentum, nesterov=True)
  optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  step, train_seconds, timing = 0, 0.0, {}
  if os.path.exists(os.path.join(directory, run_folder_lib.PROGRESS_FILE)):
    checkpoint.read(folder.checkpoint_prefix(directory)).assert_existing_objects_matched()
    progress = folder.read_progress(directory)
    step, train_seconds, timing = progress['step'], progress['train_seconds'], progress['timing']
    _progress(f'{role}: resuming at step {step}/{settings.steps}')
  resumed_at = step
  if step < settings.steps:
    train_step = _train_step_fn(model, optimizer, run_config.weight_decay,
                                run_config.label_smoothing)
    data_seed = pipeline.derive_seed(run_config.seed, 'phase', settings.values['data_seed_phase'])
    durations, window_steps, window_loss, window_correct, window_images = [], 0, 0.0, 0, 0
    started = time.perf_counter()
    while step < settings.steps:
      chunk = step // settings.interval
      end = min(settings.steps, (chunk + 1) * settings.interval)
      # A new pass per chunk, as the run driver does: a resumed start sees the same batches.
      batches = pipeline.train_batches(splits, run_config.batch_size, run_config.resolutions,
                                       data_seed, epoch=chunk, take=end - step)
      for images, labels in batches:
        before = time.perf_counter()
        loss, correct = train_step(images, labels)
        window_loss += float(loss)
        durations.append(time.perf_counter() - before)
        window_correct += int(correct)
        window_images += int(labels.shape[0])
        window_steps += 1
        step += 1
        if step % progress_every == 0 or step == settings.steps:
          recent = durations[-window_steps:]
          _progress(f'{role} step {step}/{settings.steps}: loss {window_loss / window_steps:.4f} '
                    f'train acc {window_correct / window_images:.4f} '
                    f'lr {float(schedule(step - 1)):.4g} {statistics.median(recent):.3f} s/step')
          window_steps, window_loss, window_correct, window_images = 0, 0.0, 0, 0
      timing = {'first_step_seconds': round(durations[0], 3),
                'seconds_per_step': round(statistics.median(durations[1:] or durations), 4)}
      folder.save_checkpoint(directory, checkpoint, {
          'step': step, 'train_seconds': train_seconds + time.perf_counter() - started,
          'timing': timing, 'settings': settings.values})
    train_seconds = folder.read_progress(directory)['train_seconds']
  return {'steps': step, 'resumed_at_step': resumed_at, 'train_seconds': round(train_seconds, 1),
          **timing}


# -- evaluation ------------------------------------------------------------------------------------


def _test_batches(splits, resolution: int, images: int):
  """The first `images` test images (all when 0) with the eval transform, as the Evaluator's."""
  yield from pipeline.eval_batches(splits, phase_eval.EVAL_BATCH, resolution, split='test',
                                   images=images or None)


def model_accuracy(model, splits, resolution: int, images: int) -> float:
  """Top-1 of a single-output model on the test images (inference mode, its own BN)."""
  return evaluation.accuracy(model, _test_batches(splits, resolution, images))[0]


# -- the benchmark ---------------------------------------------------------------------------------


def measure(run_dir: str, subnets=None, steps: int = 0, lr: float = 0.0, eval_images: int = 0,
            checkpoint_every: int = 0, progress_every: int = 50) -> dict:
  """Trains and evaluates the networks; returns the JSON record (see the module docstring)."""
  run = common.load_trained_run(run_dir)
  config, splits, folder = run.config, run.splits, run.folder
  plans = config.plan(splits.train_size)
  schedule_steps = total_optimizer_steps(folder, plans)
  full = plans[0]
  steps = steps or schedule_steps
  lr = lr or full.lr
  warmup = min(int(round(steps * full.warmup_steps / full.steps)), steps - 1)
  interval = checkpoint_every or config.checkpoint_interval(splits.train_size)
  chosen = named_subnets(subnets, run.space) if subnets else default_subnets(run.space, config)
  _progress(f'run {folder.path}: last phase {run.plan.name}, schedule {schedule_steps} optimizer '
            f'steps; training {len(chosen)} networks for {steps} steps each, lr {lr:g}, '
            f'warm-up {warmup}, batch {config.batch_size}, resolutions '
            f'{list(config.resolutions)}')

  evaluator = phase_eval.Evaluator(run.supernet, splits, config.calibration_images, config.seed,
                                   config.validation_images, eval_images, 'test')
  supernet_accuracy, evaluated = {}, 0
  for role, subnet in chosen:
    result = evaluator.evaluate(subnet, 'test', eval_images)
    supernet_accuracy[role], evaluated = result.accuracy, result.images
    _progress(f'{role} {phase_eval.uniform_label(subnet)}: supernet top-1 '
              f'{supernet_accuracy[role]:.4f}')

  root = os.path.join(folder.path, OUTPUT_DIR)
  models = fresh_models(config, [c for _, c in chosen])
  networks = []
  for (role, subnet), model in zip(chosen, models):
    settings = _Settings(config, subnet, steps, lr, warmup, interval, full.index)
    directory = os.path.join(root, f'{role}-{settings.key()}')
    trained = train(model, role, settings, config, splits, folder, directory, progress_every)
    own = model_accuracy(model, splits, subnet.resolution, eval_images)
    bn_calibration.recalibrate(model, evaluator.calibration_batches(subnet.resolution))
    recalibrated = model_accuracy(model, splits, subnet.resolution, eval_images)
    scratch = max(own, recalibrated)
    difference = supernet_accuracy[role] - scratch
    _progress(f'{role}: scratch top-1 {own:.4f} (re-calibrated {recalibrated:.4f}), supernet '
              f'{supernet_accuracy[role]:.4f}, difference {difference:+.4f}')
    networks.append({
        'role': role, 'config': subnet.to_string(), 'label': phase_eval.uniform_label(subnet),
        'resolution': subnet.resolution, 'macs': _macs(subnet, config),
        'supernet_accuracy': round(supernet_accuracy[role], 4),
        'scratch_accuracy': round(own, 4),
        'scratch_accuracy_recalibrated': round(recalibrated, 4),
        'difference': round(difference, 4),
        'checkpoint': os.path.relpath(directory, folder.path),
        **trained,
    })
  return {
      'benchmark': 'from_scratch', 'run_dir': folder.path, 'variant': config.variant,
      'dataset': config.dataset, 'last_phase': run.plan.name,
      'schedule_optimizer_steps': schedule_steps, 'steps': steps, 'lr': lr,
      'warmup_steps': warmup, 'batch_size': config.batch_size,
      'resolutions': list(config.resolutions), 'eval_images': evaluated,
      'calibration_images': int(len(evaluator.calibration)),
      'networks': networks,
      'goal': f'supernet >= scratch - {GOAL_POINTS:g} point for every network',
      'goal_met': all(n['difference'] >= -GOAL_POINTS / 100 for n in networks),
  }


def define_flags() -> None:
  """Defines the command line, only when this module runs as a program.

  `ofav2_tf/flag_defs.py` and the other benchmarks define flags of the same names (`--run_dir`,
  `--subnets`), and the test suite imports several of them into one process.
  """
  flags.DEFINE_string('run_dir', None, 'Folder of a finished training run.')
  flags.DEFINE_list('subnets', None, 'Sub-network config strings to train instead of the max, '
                    'middle and smallest uniform networks (each in the last phase\'s space).')
  flags.DEFINE_integer('steps', 0, 'Optimizer steps per network; 0 = as many as the whole '
                       'schedule took.', lower_bound=0)
  flags.DEFINE_float('lr', 0.0, 'Peak learning rate; 0 = the run\'s full-phase lr.',
                     lower_bound=0.0)
  flags.DEFINE_integer('eval_images', 0, 'Test images evaluated (0 = all).', lower_bound=0)
  flags.DEFINE_integer('checkpoint_every', 0, 'Steps between checkpoints of a network; 0 = the '
                       'run\'s interval.', lower_bound=0)
  flags.DEFINE_integer('progress_every', 50, 'Steps between progress lines (stderr).',
                       lower_bound=1)


def main(argv):
  del argv
  # TensorFlow's INFO lines (checkpoint sharding, ...) would drown the progress lines.
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel('ERROR')
  load_before = os.getloadavg()
  try:
    args = flags.FLAGS
    if not args.run_dir:
      raise errors.ConfigError('--run_dir is required: the folder of a finished training run')
    result = measure(args.run_dir, args.subnets, args.steps, args.lr, args.eval_images,
                     args.checkpoint_every, args.progress_every)
  except errors.OFAError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  result['load_average_start'] = [round(x, 2) for x in load_before]
  result['load_average_end'] = [round(x, 2) for x in os.getloadavg()]
  run_folder_lib.write_json_atomic(os.path.join(result['run_dir'], OUTPUT_DIR, OUTPUT_FILE),
                                   result)
  print(json.dumps(result))


if __name__ == '__main__':
  define_flags()
  app.run(main)
