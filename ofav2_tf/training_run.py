"""Runs the whole progressive-shrinking schedule of one run folder, resumably (DESIGN.md 2.3).

The loop, checkpoints, logging and evaluation live here; the per-step work (sampling, distillation,
gradient accumulation) lives in `trainer.ElasticTrainer` (Model Garden's task/trainer split).

For each phase of the schedule, in order:
  1. a phase with `result.json` is complete and is skipped (never re-run);
  2. the starting weights are the phase's latest step checkpoint (a resumed phase, optimizer state
     included) or else the previous phase's best checkpoint;
  3. a phase that starts fresh and unlocks expand ratios sorts the channels first (OFA);
  4. the teacher is extracted from the best checkpoint of the phase named by the teacher mode;
  5. training runs in chunks of `checkpoint_interval` steps; after each chunk the weights and the
     optimizer are checkpointed (atomically) and the phase's max and min sub-networks are
     validated; the best validation score's weights are kept in `best/`;
  6. the best weights are evaluated with the paper's protocol and `result.json` is written.

Every chunk's data and sub-networks are derived from (seed, phase, step), so a run killed at any
moment and started again continues from its last checkpoint and runs the same number of steps as an
uninterrupted run.
"""

import math
import time
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import channel_sort
from ofav2_tf import phase_eval
from ofav2_tf import phase_report
from ofav2_tf import run_config as run_config_lib
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import supernet as supernet_lib
from ofav2_tf import teacher as teacher_lib
from ofav2_tf import trainer as trainer_lib
from ofav2_tf.data import pipeline

# Called as callbacks_factory(plan, trainer) -> list of extra Keras callbacks (tests, tools).
CallbacksFactory = Callable[[run_config_lib.PhasePlan, trainer_lib.ElasticTrainer], list]


class _ScalarLogger(tf_keras.callbacks.Callback):
  """Writes loss, accuracy and learning rate to TensorBoard with a run-wide step."""

  def __init__(self, writer, offset: int, optimizer, every: int = 10):
    super().__init__()
    self.writer, self.offset, self.optimizer, self.every = writer, offset, optimizer, every

  def on_train_batch_end(self, batch, logs=None):
    step = int(self.optimizer.iterations.numpy())
    if logs and step % self.every == 0:
      lr = self.optimizer.learning_rate
      lr = float(lr(step - 1)) if callable(lr) else float(lr)
      with self.writer.as_default(step=self.offset + step):
        tf.summary.scalar('train/loss', float(logs['loss']))
        tf.summary.scalar('train/accuracy', float(logs['accuracy']))
        tf.summary.scalar('train/learning_rate', lr)


class TrainingRun:
  """One run of the schedule on one dataset into one run folder.

  Args:
    config: The validated run configuration.
    folder: The run folder (opened for `config`).
    splits: The loaded dataset.
    strategy: tf.distribute strategy (default: the default strategy).
    callbacks_factory: Extra callbacks per phase (tests use it to watch the teacher).
  """

  def __init__(self, config: run_config_lib.RunConfig, folder: run_folder_lib.RunFolder, splits,
               strategy: Optional[tf.distribute.Strategy] = None,
               callbacks_factory: Optional[CallbacksFactory] = None):
    self.config = config
    self.folder = folder
    self.splits = splits
    self.strategy = strategy or tf.distribute.get_strategy()
    self.callbacks_factory = callbacks_factory
    self.schedule = config.schedule()
    self.plans = config.plan(splits.train_size)
    self.interval = config.checkpoint_interval(splits.train_size)
    tf_keras.utils.set_random_seed(config.seed)
    with self.strategy.scope():
      self.supernet = supernet_lib.build_supernet(config.variant, config.num_classes,
                                                  **config.supernet_kwargs())
    self.full_space = self.supernet.search_space(resolutions=config.resolutions)
    self.gradients = trainer_lib.SubnetGradients(self.supernet, config.label_smoothing)
    self.evaluator = phase_eval.Evaluator(
        self.supernet, splits, config.calibration_images, config.seed, config.validation_images,
        config.eval_images, config.eval_split)
    self.writer = tf.summary.create_file_writer(folder.file('tensorboard'))
    self.teacher = None

  # -- weights -------------------------------------------------------------------------------------

  def _load_model(self, directory: str) -> None:
    """Loads only the supernet's weights (a new phase starts with a fresh optimizer)."""
    status = tf.train.Checkpoint(model=self.supernet).read(
        self.folder.checkpoint_prefix(directory))
    status.expect_partial().assert_existing_objects_matched()

  def _space(self, index: int):
    return self.schedule[index].space(self.full_space)

  def _build_teacher(self, plan) -> Optional[tf_keras.Model]:
    source = teacher_lib.source_phase(self.config.teacher, plan.index)
    if source is None:
      return None
    self._load_model(self.folder.best_dir(self.plans[source]))
    max_config = self._space(source).max_config(max(self.config.resolutions))
    with self.strategy.scope():  # a mirrored teacher under a distribution strategy
      return teacher_lib.extract_teacher(
          self.supernet, max_config, self.evaluator.calibration_batches(max_config.resolution))

  # -- the schedule --------------------------------------------------------------------------------

  def run(self) -> List[dict]:
    total = len(self.plans)
    self.folder.log(self._plan_table())
    results = []
    for plan in self.plans:
      result = self.folder.phase_result(plan)
      if result is not None:
        self.folder.log(f'phase {plan.index + 1}/{total} {plan.name}: complete, skipped')
      else:
        result = self._run_phase(plan)
      results.append(result)
      phase_report.write(self.folder, results, self.config)
    self.folder.log(phase_report.table(results, self.supernet.variant.early_exits))
    return results

  def _plan_table(self) -> str:
    lines = [f'Schedule of {self.config.variant} (teacher {self.config.teacher}), batch '
             f'{self.config.batch_size}, resolutions {list(self.config.resolutions)}, checkpoint '
             f'every {self.interval} steps:']
    for p in self.plans:
      lines.append(f'  {p.index + 1:2d}. {p.name:8s} {p.steps:6d} steps (warm-up '
                   f'{p.warmup_steps}), lr {p.lr:.6g}, {p.subnets_per_step} sub-net(s)/step')
    return '\n'.join(lines)

  def _run_phase(self, plan) -> dict:
    spec = self.schedule[plan.index]
    space = spec.space(self.full_space)
    total = len(self.plans)
    started = time.time()
    latest = self.folder.latest_step(plan)
    self.teacher = self._build_teacher(plan)
    # Starting weights: the phase's own latest checkpoint, else the previous phase's best.
    if latest is None and plan.index > 0:
      self._load_model(self.folder.best_dir(self.plans[plan.index - 1]))
      if spec.unlocks_expand:
        channel_sort.sort_channels(self.supernet)
        self.folder.log(f'phase {plan.name}: middle channels sorted by importance')
    optimizer = tf_keras.optimizers.SGD(
        trainer_lib.CosineWithWarmup(plan.lr, plan.steps, plan.warmup_steps),
        momentum=self.config.momentum, nesterov=True)
    with self.strategy.scope():
      trainer = trainer_lib.ElasticTrainer(
          self.supernet, self.gradients, all_exits_loss=spec.is_full
          and self.supernet.variant.early_exits, teacher=self.teacher,
          kd_weight=self.config.kd_weight, weight_decay=self.config.weight_decay)
      trainer.compile(optimizer=optimizer, run_eagerly=True)
    checkpoint = tf.train.Checkpoint(model=self.supernet, optimizer=optimizer)
    step, best = 0, -1.0
    if latest is not None:
      checkpoint.read(self.folder.checkpoint_prefix(latest)).expect_partial()
      progress = self.folder.read_progress(latest)
      step, best = progress['step'], progress['best_validation']
      self.folder.log(f'phase {plan.name}: resuming at step {step}/{plan.steps}')
    self.folder.log(
        f'phase {plan.index + 1}/{total} {plan.name}: {plan.steps} steps, '
        f'{plan.subnets_per_step} sub-net(s)/step, lr {plan.lr:.6g}, teacher '
        f'{"none" if self.teacher is None else self.config.teacher}')
    sampler = trainer_lib.ArchSampler(space, plan.subnets_per_step, self.config.seed, plan.index,
                                      sandwich=self.config.sandwich)
    offset = sum(p.steps for p in self.plans[:plan.index])
    callbacks = [_ScalarLogger(self.writer, offset, optimizer)]
    if self.callbacks_factory:
      callbacks += self.callbacks_factory(plan, trainer)
    chunks = math.ceil(plan.steps / self.interval)
    while step < plan.steps:
      chunk = step // self.interval
      end = min(plan.steps, (chunk + 1) * self.interval)
      batches = pipeline.train_batches(
          self.splits, self.config.batch_size, self.config.resolutions,
          pipeline.derive_seed(self.config.seed, 'phase', plan.index), epoch=chunk)
      data = tf.data.Dataset.zip((batches, sampler.dataset(start_step=step)))
      if self.config.verbose:
        print(f'phase {plan.index + 1}/{total} {plan.name}, chunk {chunk + 1}/{chunks} '
              f'(steps {step + 1}-{end} of {plan.steps})', flush=True)
      history = trainer.fit(data, epochs=chunk + 1, initial_epoch=chunk,
                            steps_per_epoch=end - step, callbacks=callbacks,
                            verbose=self.config.verbose)
      step = end
      top_max, top_min = self.evaluator.validation_scores(space)
      score = (top_max + top_min) / 2
      progress = {'step': step, 'validation': score, 'validation_max': top_max,
                  'validation_min': top_min, 'best_validation': max(best, score),
                  'loss': float(history.history['loss'][-1]),
                  'accuracy': float(history.history['accuracy'][-1])}
      if score > best:
        best = score
        self.folder.save_checkpoint(self.folder.best_dir(plan), checkpoint, progress)
      directory = self.folder.step_dir(plan, step)
      self.folder.save_checkpoint(directory, checkpoint, progress)
      self.folder.prune_steps(plan, keep=directory)
      with self.writer.as_default(step=offset + step):
        tf.summary.scalar('validation/max_subnet_top1', top_max)
        tf.summary.scalar('validation/min_subnet_top1', top_min)
      self.writer.flush()
      self.folder.log(f'phase {plan.name} step {step}/{plan.steps}: loss {progress["loss"]:.4f} '
                      f'train acc {progress["accuracy"]:.4f} val top-1 max {top_max:.4f} min '
                      f'{top_min:.4f}, mean {score:.4f} (best {best:.4f})')
    train_seconds = time.time() - started
    self._load_model(self.folder.best_dir(plan))
    evaluation = self.evaluator.evaluate_phase(
        space, self.config.eval_resolutions, self.config.eval_max_subnets,
        progress=self.folder.log,
        images=(self.config.final_eval_images if plan.index == len(self.plans) - 1
                else self.config.eval_images))
    result = {'phase': plan.name, 'index': plan.index, 'steps': plan.steps,
              'subnets_per_step': plan.subnets_per_step, 'lr': plan.lr,
              'teacher': None if self.teacher is None else self.config.teacher,
              'optimizer_steps': int(optimizer.iterations.numpy()),
              'best_validation': best, 'train_seconds': round(train_seconds, 1),
              'seconds': round(time.time() - started, 1),
              'teacher_fingerprint': _fingerprint(self.teacher)}
    result.update(evaluation)
    self.folder.write_phase_result(plan, result)
    with self.writer.as_default(step=offset + plan.steps):
      tf.summary.scalar('test/uniform_best_top1', result['uniform_best'])
      tf.summary.scalar('test/uniform_mean_top1', result['uniform_mean'])
    self.writer.flush()
    self.folder.log(f'phase {plan.index + 1}/{total} {plan.name} done in {result["seconds"]:.0f}s: '
                    f'best uniform {result["uniform_best"]:.4f} '
                    f'({result["best_uniform"]["label"]}), mean {result["uniform_mean"]:.4f}')
    return result


def _fingerprint(model) -> Optional[float]:
  """A number that changes when any teacher weight does (for the record and for tests)."""
  if model is None:
    return None
  return float(sum(np.abs(w).sum() for w in model.get_weights()))

