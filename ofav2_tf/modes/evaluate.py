"""`--mode=evaluate`: the paper's protocol (or given sub-networks) on a phase's best checkpoint.

The run's own `config.json` decides the architecture and the data; evaluation flags given on the
command line (`--eval_*`, `--calibration_images`, `--subnets`, `--phase`) override its values.
"""

from ofav2_tf import phase_eval
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import subnet_config as sc
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common


@MODES.register('evaluate')
def evaluate(flag_values):
  run = common.load_trained_run(flag_values.run_dir, flag_values.phase,
                                common.eval_overrides(flag_values))
  folder, config, plan, space = run.folder, run.config, run.plan, run.space
  evaluator = phase_eval.Evaluator(run.supernet, run.splits, config.calibration_images, config.seed,
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
