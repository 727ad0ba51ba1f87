"""`--mode=evaluate`: the paper's protocol (or given sub-networks) on a phase's best checkpoint.

The run's own `config.json` decides the architecture and the data; evaluation flags given on the
command line (`--eval_*`, `--calibration_images`, `--subnets`, `--phase`) override its values.
"""

import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import phase_eval
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import subnet_config as sc
from ofav2_tf import supernet as supernet_lib
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common


def _plan_to_evaluate(config, folder, splits, phase_name):
  plans = config.plan(splits.train_size)
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


@MODES.register('evaluate')
def evaluate(flag_values):
  folder = run_folder_lib.RunFolder(flag_values.run_dir)
  config = folder.load_config()
  for name in common.EVAL_FLAGS:
    if flag_values[name].present:
      value = flag_values[name].value
      setattr(config, name, tuple(int(v) for v in value) if isinstance(value, list) else value)
  splits = common.load_dataset(config)
  config.validate()
  plan = _plan_to_evaluate(config, folder, splits, flag_values.phase)
  net = supernet_lib.build_supernet(config.variant, config.num_classes,
                                    **config.supernet_kwargs())
  tf.train.Checkpoint(model=net).read(folder.checkpoint_prefix(folder.best_dir(plan))) \
      .expect_partial().assert_existing_objects_matched()
  space = config.schedule()[plan.index].space(net.search_space(resolutions=config.resolutions))
  evaluator = phase_eval.Evaluator(net, splits, config.calibration_images, config.seed,
                                   config.validation_images, config.eval_images, config.eval_split)
  folder.log(f'Evaluating {folder.path}, phase {plan.name} (best checkpoint), split '
             f'{config.eval_split}')
  if flag_values.subnets:
    results = []
    for text in flag_values.subnets:
      subnet = space.validate(sc.SubnetConfig.parse(text))
      result = evaluator.evaluate(subnet, config.eval_split, config.eval_images)
      folder.log(f'  {subnet.to_string()}: top-1 {result.accuracy:.4f} ({result.images} images)')
      results.append(result.as_dict())
    summary = {'phase': plan.name, 'subnets': results}
  else:
    summary = evaluator.evaluate_phase(space, config.eval_resolutions, config.eval_max_subnets,
                                       progress=folder.log)
    summary['phase'] = plan.name
    folder.log(f'best uniform {summary["uniform_best"]:.4f} ({summary["best_uniform"]["label"]}), '
               f'mean {summary["uniform_mean"]:.4f}, min {summary["uniform_min"]:.4f}')
  run_folder_lib.write_json_atomic(folder.file(f'evaluation_{plan.folder_name}.json'), summary)
  return summary
