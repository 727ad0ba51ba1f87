"""What several modes share: the dataset, the resolved `RunConfig`, and a trained run's supernet."""

import dataclasses
import os
from typing import Optional

from ofav2_tf import data
from ofav2_tf import errors
from ofav2_tf import run_config as run_config_lib
from ofav2_tf import run_folder as run_folder_lib

# Flags that describe how to evaluate, which `evaluate` may change for an existing run.
EVAL_FLAGS = ('eval_resolutions', 'eval_max_subnets', 'eval_images', 'final_eval_images',
              'calibration_images',
              'eval_split', 'validation_images')


def load_dataset(config: run_config_lib.RunConfig):
  return data.load(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir,
                   seed=config.seed, validation_fraction=config.validation_fraction,
                   download=config.download)


def config_from_flags(flag_values) -> run_config_lib.RunConfig:
  """The flags as a RunConfig, without the fields that need the data (classes, resolutions)."""
  f = flag_values
  ints = run_config_lib.ints
  from ofav2_tf import flag_defs  # pylint: disable=g-import-not-at-top
  return run_config_lib.RunConfig(
      dataset=f.dataset, data_dir=f.data_dir, manual_dir=f.manual_dir, download=f.download,
      validation_fraction=f.validation_fraction, resolutions=ints(f.resolutions),
      batch_size=f.batch_size, seed=f.seed, variant=f.variant,
      width_multiplier=f.width_multiplier, dropout=f.dropout, kernel_sizes=ints(f.kernel_sizes),
      expand_ratios=ints(f.expand_ratios), depths=ints(f.depths),
      phases=tuple(f.phases or ()), teacher=f.teacher, epoch_scale=f.epoch_scale,
      phase_epochs=flag_defs.parse_phase_map(f.phase_epochs, float),
      phase_steps=flag_defs.parse_phase_map(f.phase_steps, int),
      steps_per_epoch=f.steps_per_epoch, lr_scale=f.lr_scale,
      phase_lr=flag_defs.parse_phase_map(f.phase_lr, float), warmup_scale=f.warmup_scale,
      momentum=f.momentum, weight_decay=f.weight_decay, label_smoothing=f.label_smoothing,
      kd_weight=f.kd_weight, sandwich=f.sandwich, checkpoint_every_steps=f.checkpoint_every_steps,
      validation_images=f.validation_images, eval_resolutions=ints(f.eval_resolutions),
      eval_max_subnets=f.eval_max_subnets, eval_images=f.eval_images,
      final_eval_images=f.final_eval_images,
      calibration_images=f.calibration_images, eval_split=f.eval_split,
      distribution=f.distribution, verbose=f.verbose)


def resolve(config: run_config_lib.RunConfig, splits) -> run_config_lib.RunConfig:
  """Fills in what depends on the data and validates the whole configuration.

  Everything a new run can be refused for is checked here, before the run folder is created, so a
  refused run leaves nothing behind.
  """
  if splits.num_classes < 2:
    raise errors.DataError(f'dataset {splits.name} has {splits.num_classes} class; a classifier '
                           'needs at least 2')
  config.num_classes = splits.num_classes
  if not config.resolutions:
    config.resolutions = run_config_lib.default_resolutions(splits.native_size)
  if not config.eval_resolutions:
    config.eval_resolutions = tuple(sorted({min(config.resolutions), max(config.resolutions)}))
  config.validate()
  config.plan(splits.train_size)  # a phase left with no steps
  return config


def trained_plan(config: run_config_lib.RunConfig, folder: run_folder_lib.RunFolder,
                 train_size: int, phase_name: Optional[str] = None):
  """The `PhasePlan` of phase `phase_name` (default: the last one with a best checkpoint).

  Raises:
    ConfigError: the run has no trained phase, or `phase_name` has no best checkpoint.
  """
  plans = config.plan(train_size)
  done = [p for p in plans if folder.has_best(p)]
  if not done:
    raise errors.ConfigError(f'run {folder.path} has no trained phase yet (no best checkpoint); '
                             'train it first with --mode=train')
  if phase_name is None:
    return done[-1]
  for plan in done:
    if plan.name == phase_name:
      return plan
  raise errors.ConfigError(f'--phase={phase_name}: run {folder.path} has best checkpoints for '
                           f'phases {", ".join(p.name for p in done)}')


@dataclasses.dataclass
class TrainedRun:
  """A run folder's supernet restored from a phase's best checkpoint, with its data and space.

  Attributes:
    folder: The run folder.
    config: Its `RunConfig` (from config.json).
    splits: The dataset splits.
    plan: The phase whose best checkpoint was restored.
    supernet: The restored `OFASupernet`.
    space: The phase's search space (the sub-networks it trained) at the run's resolutions.
  """
  folder: run_folder_lib.RunFolder
  config: run_config_lib.RunConfig
  splits: object
  plan: object
  supernet: object
  space: object


def phase_space(config: run_config_lib.RunConfig, phase_name: str):
  """The sub-networks phase `phase_name` of the run trains, at the run's resolutions."""
  from ofav2_tf import subnet_config as sc  # pylint: disable=g-import-not-at-top
  full = sc.SearchSpace.for_variant(config.variant, config.resolutions, config.kernel_sizes,
                                    config.expand_ratios, config.depths)
  for phase in config.schedule():
    if phase.name == phase_name:
      return phase.space(full)
  raise errors.ConfigError(f'phase {phase_name!r} is not in the run\'s schedule '
                           f'{",".join(p.name for p in config.schedule())}')


def pareto_path(run_dir: str) -> str:
  """Where `--mode=search` saves its Pareto result and `--mode=export` looks for it."""
  return os.path.join(run_dir, 'search', 'pareto.json')


def latency_table_path(run_dir: str) -> str:
  """Where `--mode=profile` writes the latency table and the search reads it by default."""
  return os.path.join(os.path.abspath(run_dir), 'latency', 'latency_table.json')


def open_run_folder(run_dir: Optional[str]) -> run_folder_lib.RunFolder:
  """The existing run folder `run_dir` (ConfigError when it is missing or holds no run)."""
  if not run_dir:
    raise errors.ConfigError('--run_dir is required: the folder of a run made with --mode=train')
  if not os.path.isfile(os.path.join(run_dir, 'config.json')):
    raise errors.ConfigError(f'--run_dir={run_dir} holds no run (no config.json); train one with '
                             '--mode=train --run_dir=' + run_dir)
  return run_folder_lib.RunFolder(run_dir)


def eval_overrides(flag_values) -> dict:
  """The evaluation flags given on the command line, as RunConfig field values."""
  overrides = {}
  for name in EVAL_FLAGS:
    if flag_values[name].present:
      value = flag_values[name].value
      overrides[name] = tuple(int(v) for v in value) if isinstance(value, list) else value
  return overrides


def load_trained_run(run_dir: Optional[str], phase_name: Optional[str] = None,
                     overrides: Optional[dict] = None) -> TrainedRun:
  """Restores a run's supernet from the best checkpoint of `phase_name` (default the last).

  Args:
    run_dir: The run folder.
    phase_name: The phase whose best checkpoint to restore.
    overrides: RunConfig fields to change (evaluation settings only, see `eval_overrides`).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ofav2_tf import supernet as supernet_lib  # pylint: disable=g-import-not-at-top
  folder = open_run_folder(run_dir)
  config = folder.load_config()
  for name, value in (overrides or {}).items():
    setattr(config, name, value)
  splits = load_dataset(config)
  config.validate()
  plan = trained_plan(config, folder, splits.train_size, phase_name)
  net = supernet_lib.build_supernet(config.variant, config.num_classes,
                                    **config.supernet_kwargs())
  tf.train.Checkpoint(model=net).read(folder.checkpoint_prefix(folder.best_dir(plan))) \
      .expect_partial().assert_existing_objects_matched()
  space = phase_space(config, plan.name)
  return TrainedRun(folder, config, splits, plan, net, space)
