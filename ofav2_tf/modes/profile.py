"""`--mode=profile`: the latency lookup table of a run's supernet, measured on this machine.

Latency belongs to the device, not to the training machine, so this mode is meant to run where the
sub-networks will run (or on a machine like it): it needs only the run folder's `config.json` and,
when present, a best checkpoint. It does not read the dataset, so a device without the training
data can profile; phase folders are named by index and phase alone, so the training-set size that
`RunConfig.plan` asks for (it only sets step counts) is not needed to find them.

Weights matter for int8 tables (per-channel weight scales come from them), so a trained checkpoint
is restored when there is one; a run folder without one is profiled with the freshly built
supernet, which times the same ops, and the log says so.

Writes `--latency_table` (default `<run_dir>/latency/latency_table.json`, where the search looks
for it) and, unless `--latency_check_subnets=0`, `<run_dir>/latency/latency_check.json`: the
table's predictions against whole random sub-networks converted and timed the same way, with the
mean absolute relative error (MARE).
"""

import json
import os
import time

from export import atomic_write
from ofav2_tf import errors
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common

LATENCY_DIR = 'latency'
CHECK_NAME = 'latency_check.json'
# Timing passes over all block models (`latency_table._SpreadTimer`): each costs well under a
# second per 10 blocks, against about a second to convert each.
PASSES = 3


def table_path(flag_values) -> str:
  return os.path.abspath(flag_values.latency_table or
                         common.latency_table_path(flag_values.run_dir))


def _restorable_plan(config, folder, phase_name):
  """The phase to restore, or None when the run has no best checkpoint and none was asked for."""
  plans = config.plan(max(int(config.batch_size), 1))  # Step counts only; see module docstring.
  if phase_name is None and not any(folder.has_best(p) for p in plans):
    return None
  return common.trained_plan(config, folder, max(int(config.batch_size), 1), phase_name)


def _count_blocks(latency_table, block_shapes, supernet, space) -> int:
  """Distinct block keys `profile` will time: the denominator of the progress counter."""
  exits = list(space.exits)
  keys = set()
  for resolution in space.resolutions:
    # The profiler's own choice of configs, so the count matches what it times.
    configs = latency_table._profiling_configs(  # pylint: disable=protected-access
        space, resolution)
    for config in configs:
      keys.update(b.key for b in block_shapes.network_blocks(
          config, supernet.variant, supernet.num_classes, supernet.width_multiplier,
          supernet.expand_ratios, exits))
  return len(keys)


@MODES.register('profile')
def profile(flag_values):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ofav2_tf import block_shapes  # pylint: disable=g-import-not-at-top
  from ofav2_tf import latency_table  # pylint: disable=g-import-not-at-top
  from ofav2_tf import supernet as supernet_lib  # pylint: disable=g-import-not-at-top

  folder = common.open_run_folder(flag_values.run_dir)
  config = folder.load_config()
  config.validate()
  out_path = table_path(flag_values)
  if os.path.isdir(out_path):
    raise errors.ConfigError(f'--latency_table={flag_values.latency_table} is a folder; give a '
                             'file name, e.g. latency_table.json')
  check_path = folder.file(LATENCY_DIR, CHECK_NAME)

  plan = _restorable_plan(config, folder, flag_values.phase)
  net = supernet_lib.build_supernet(config.variant, config.num_classes,
                                    **config.supernet_kwargs())
  if plan is None:
    source = 'freshly built supernet (no trained checkpoint)'
    folder.log(f'Profiling {folder.path}: no trained checkpoint yet, so the freshly built '
               'supernet is timed (same ops; int8 weight ranges are those of the initial weights)')
  else:
    tf.train.Checkpoint(model=net).read(folder.checkpoint_prefix(folder.best_dir(plan))) \
        .expect_partial().assert_existing_objects_matched()
    source = f'phase {plan.name} (best checkpoint)'
    folder.log(f'Profiling {folder.path}: weights of {source}')

  space = net.search_space(resolutions=config.resolutions)
  total = _count_blocks(latency_table, block_shapes, net, space)
  calibration_networks = flag_values.latency_calibration_subnets
  folder.log(f'Latency table: {total} block models ({flag_values.latency_dtype}, '
             f'{flag_values.latency_threads} thread(s), {flag_values.latency_runs} runs each), '
             f'resolutions {",".join(map(str, space.resolutions))}')
  start = time.perf_counter()

  def progress(done, key, ms):
    print(f'  block {done}/{total} {ms:8.4f} ms  {key}', flush=True)
    if done == total:
      folder.log(f'  {total} blocks converted and timed once in {time.perf_counter() - start:.0f} '
                 f's; timing them in {PASSES - 1} more passes, then {calibration_networks} whole '
                 'sub-networks to fit the correction to block sums')

  table = latency_table.profile(net, space=space, num_threads=flag_values.latency_threads,
                                dtype=flag_values.latency_dtype, runs=flag_values.latency_runs,
                                passes=PASSES, calibration_networks=calibration_networks,
                                progress=progress)
  table.settings['weights'] = source
  table.save(out_path)
  scores = ', '.join(f'{name} {100 * mare:.1f}%'
                     for name, mare in table.correction['leave_one_out_mare'].items())
  folder.log(f'Latency table: {len(table.entries)} entries in {table.profile_seconds:.0f} s; '
             f'correction {table.correction["name"]!r} (overhead {table.overhead_ms:.4f} ms per '
             f'block, {table.ms_per_streamed_mb:.4f} ms per MB of weights beyond L2; '
             f'leave-one-out error {scores or "not scored"}) -> {out_path}')

  count = flag_values.latency_check_subnets
  if count == 0:
    if os.path.exists(check_path):  # A check of an older table would be mistaken for this one's.
      os.remove(check_path)
    folder.log('Latency check skipped (--latency_check_subnets=0)')
    return {'table': out_path, 'check': None}
  folder.log(f'Checking the table on {count} random whole sub-networks (each converted and timed)')
  result = latency_table.validate(table, net, count=count)
  check = {'latency_table': out_path, 'weights': source, **result.to_dict()}
  atomic_write.write_text(check_path, json.dumps(check, indent=2) + '\n')
  rel = [abs(r) for r in result.relative_errors]
  folder.log(f'Latency check: mean absolute relative error (MARE) '
             f'{100 * result.mean_abs_relative_error:.1f}% over {count} sub-networks '
             f'({min(result.measured_ms):.3f}-{max(result.measured_ms):.3f} ms measured; worst '
             f'{100 * max(rel):.1f}%) -> {check_path}')
  return {'table': out_path, 'check': check_path}
