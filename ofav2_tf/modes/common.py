"""What several modes share: the dataset and the resolved `RunConfig` from the parsed flags."""

from ofav2_tf import data
from ofav2_tf import run_config as run_config_lib

# Flags that describe how to evaluate, which `evaluate` may change for an existing run.
EVAL_FLAGS = ('eval_resolutions', 'eval_max_subnets', 'eval_images', 'calibration_images',
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
      kd_weight=f.kd_weight, checkpoint_every_steps=f.checkpoint_every_steps,
      validation_images=f.validation_images, eval_resolutions=ints(f.eval_resolutions),
      eval_max_subnets=f.eval_max_subnets, eval_images=f.eval_images,
      calibration_images=f.calibration_images, eval_split=f.eval_split,
      distribution=f.distribution, verbose=f.verbose)


def resolve(config: run_config_lib.RunConfig, splits) -> run_config_lib.RunConfig:
  """Fills in what depends on the data and validates the whole configuration."""
  config.num_classes = splits.num_classes
  if not config.resolutions:
    config.resolutions = run_config_lib.default_resolutions(splits.native_size)
  if not config.eval_resolutions:
    config.eval_resolutions = tuple(sorted({min(config.resolutions), max(config.resolutions)}))
  return config.validate()
