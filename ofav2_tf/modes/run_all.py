"""`--mode=all`: train, (profile,) search, export, benchmark and report, in one command.

Each stage is the mode of the same name run on the same flags, so `--mode=all` does nothing the
single modes do not, and an interrupted `all` resumes like they do: training continues from its
last checkpoint, the search from its cached predictor data, and the stages after it are cheap to
redo. Every stage is looked up in the mode registry, which `modes.run` has filled by importing
every mode module. The latency table is profiled only when a latency objective or budget asks for it. Stage
times go to `<run_dir>/stages.json` and into the report.
"""

import time

from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common
from ofav2_tf.search import objectives as objectives_lib

STAGES_FILE = 'stages.json'


def stages(flag_values):
  """The modes `all` runs, in order, before the report."""
  names = list(flag_values.objectives or []) + [
      b.name for b in objectives_lib.parse_budgets(flag_values.budgets)]
  profile_needed = 'latency' in names and not flag_values.latency_table
  return ['train'] + (['profile'] if profile_needed else []) + [
      'search', 'export', 'benchmark']


@MODES.register('all')
def run_all(flag_values):
  plan = stages(flag_values)
  timings = {}
  started = time.perf_counter()
  for name in plan:
    began = time.perf_counter()
    MODES.get(name)(flag_values)
    timings[name] = round(time.perf_counter() - began, 1)
    folder = common.open_run_folder(flag_values.run_dir)
    run_folder_lib.write_json_atomic(folder.file(STAGES_FILE), {
        'stages': timings, 'total_seconds': round(time.perf_counter() - started, 1)})
    folder.log(f'Stage {name} done in {timings[name] / 60:.1f} min')
  MODES.get('report')(flag_values)
  total = time.perf_counter() - started
  folder.log(f'All stages done in {total / 60:.1f} min: ' +
             ', '.join(f'{k} {v / 60:.1f} min' for k, v in timings.items()))
  return timings
