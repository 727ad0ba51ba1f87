"""`--mode=evaluate`: the paper's protocol, given sub-networks or random ones, on a phase's checkpoint.

The run's own `config.json` decides the architecture and the data; evaluation flags given on the
command line (`--eval_*`, `--calibration_images`, `--subnets`, `--phase`) override its values.
Three kinds, one per call:
  - default: the uniform grid (a spread of it with `--eval_max_subnets`), as after each phase;
    writes `evaluation_<phase>.json`;
  - `--subnets=<config>,...`: those sub-networks; writes `evaluation_<phase>.json`;
  - `--random_subnets=R --random_min_exit=X`: R random sub-networks of the phase's space with exit
    >= X against its max network (`ofav2_tf.random_subnets`; resumable), on `--random_images` of
    `--eval_split` (default all); writes `random_subnets.json` and `random_subnets.png`, and
    refreshes `report.md` when the run already has one.
"""

import os

from ofav2_tf import errors
from ofav2_tf import phase_eval
from ofav2_tf import random_subnets
from ofav2_tf import report as report_lib
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf import subnet_config as sc
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common


def _given(run, evaluator, texts) -> dict:
  folder, config, space = run.folder, run.config, run.space
  results = []
  for text in texts:
    subnet = space.validate(sc.SubnetConfig.parse(text))
    result = evaluator.evaluate(subnet, config.eval_split, config.eval_images)
    folder.log(f'  {subnet.to_string()}: top-1 {result.accuracy:.4f} ({result.images} images)')
    results.append(result.as_dict())
  return {'phase': run.plan.name, 'subnets': results}


def _uniform(run, evaluator) -> dict:
  config = run.config
  summary = evaluator.evaluate_phase(run.space, config.eval_resolutions, config.eval_max_subnets,
                                     progress=run.folder.log)
  summary['phase'] = run.plan.name
  run.folder.log(f'max network {summary["uniform_max"]["accuracy"]:.4f}; over '
                 f'{len(summary["uniform"])} of {summary["uniform_grid_size"]} uniform: best '
                 f'{summary["uniform_best"]:.4f} ({summary["best_uniform"]["label"]}), mean '
                 f'{summary["uniform_mean"]:.4f}, min {summary["uniform_min"]:.4f}')
  return summary


def _random(run, flag_values) -> dict:
  folder, config, net = run.folder, run.config, run.supernet
  images = flag_values.random_images
  calibration = flag_values.random_calibration_images or config.calibration_images
  evaluator = phase_eval.Evaluator(net, run.splits, calibration, config.seed,
                                   config.validation_images, images, config.eval_split,
                                   traced_calibration=True)
  count, min_exit = flag_values.random_subnets, flag_values.random_min_exit
  folder.log(f'Random sub-networks: {count} of phase {run.plan.name}\'s space with exit >= '
             f'{min_exit}, each BN re-calibrated on {calibration} training images and scored on '
             f'{images or "all"} {config.eval_split} images (cached in '
             f'{random_subnets.CACHE_DIR}/)')
  result = random_subnets.evaluate(
      lambda subnet: evaluator.evaluate(subnet, config.eval_split, images).accuracy,
      run.space, count, min_exit, folder.path, config.seed,
      network={'variant': net.variant, 'num_classes': net.num_classes,
               'width_multiplier': net.width_multiplier},
      metadata={'phase': run.plan.name, 'split': config.eval_split, 'images': images,
                'calibration_images': calibration},
      progress=folder.log,
      title=f'{config.variant} {run.plan.name}: {count} random sub-networks, exit >= {min_exit}')
  s = result['summary']
  folder.log(f'Random sub-networks: max network {s["max_network_accuracy"]:.4f}, median '
             f'{s["median"]:.4f} (gap {s["median_gap"]:.4f}), worst {s["worst"]:.4f} (gap '
             f'{s["worst_gap"]:.4f}); per-exit medians '
             + ', '.join(f'x{k} {v["median"]:.4f}' for k, v in s['per_exit'].items())
             + f'; {result["measured_this_session"]} measured in '
             f'{result["seconds_this_session"]:.0f} s this session')
  if os.path.isfile(os.path.join(folder.path, report_lib.REPORT_FILE)):
    report_lib.write(folder.path)
  return result


@MODES.register('evaluate')
def evaluate(flag_values):
  if flag_values.subnets and flag_values.random_subnets:
    raise errors.ConfigError('--subnets and --random_subnets are two kinds of evaluation; give '
                             'one of them')
  run = common.load_trained_run(flag_values.run_dir, flag_values.phase,
                                common.eval_overrides(flag_values))
  folder, config = run.folder, run.config
  folder.log(f'Evaluating {folder.path}, phase {run.plan.name} (best checkpoint), split '
             f'{config.eval_split}')
  if flag_values.random_subnets:
    return _random(run, flag_values)
  evaluator = phase_eval.Evaluator(run.supernet, run.splits, config.calibration_images, config.seed,
                                   config.validation_images, config.eval_images, config.eval_split)
  if flag_values.subnets:
    summary = _given(run, evaluator, flag_values.subnets)
  else:
    summary = _uniform(run, evaluator)
  run_folder_lib.write_json_atomic(folder.file(f'evaluation_{run.plan.folder_name}.json'), summary)
  return summary
