"""`--mode=train`: runs (or resumes) the progressive-shrinking schedule into `--run_dir`."""

from ofav2_tf import distribute
from ofav2_tf import errors
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import training_run
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common


@MODES.register('train')
def train(flag_values):
  folder = run_folder_lib.RunFolder(flag_values.run_dir)
  config = common.config_from_flags(flag_values)
  config.schedule()  # unknown or misplaced phases fail before the data is read
  strategy = _strategy(config.distribution, flag_values.cpu_devices)
  splits = common.load_dataset(config)
  config = common.resolve(config, splits)
  resumed = folder.open_for(config)  # everything that can be refused was checked by now
  folder.log(f'{"Resuming" if resumed else "Starting"} run {folder.path}: {config.variant} on '
             f'{splits.name} ({splits.train_size} train / {splits.validation_size} validation / '
             f'{splits.test_size} test images, {splits.num_classes} classes)')
  leftovers = folder.remove_leftovers() if resumed else []
  if leftovers:
    folder.log(f'Removed {len(leftovers)} leftover(s) of an interrupted write: '
               f'{", ".join(leftovers)}')
  return training_run.TrainingRun(config, folder, splits, strategy=strategy).run()


def _strategy(name: str, cpu_devices: int):
  """The tf.distribute strategy, created before any other TensorFlow work (as TF requires)."""
  if name == 'multi_worker':
    raise errors.ConfigError(
        '--distribution=multi_worker: the trainer supports it (tests/distributed_test.py) but the '
        'run driver does not yet coordinate checkpoint writing across workers; use default or '
        'mirrored')
  if cpu_devices:
    distribute.split_cpu(cpu_devices)
  return distribute.get_strategy(name)
