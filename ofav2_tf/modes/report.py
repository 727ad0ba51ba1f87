"""`--mode=report`: writes `<run_dir>/report.md` from whatever the run's modes have produced."""

from ofav2_tf import report as report_lib
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common


@MODES.register('report')
def report(flag_values):
  folder = common.open_run_folder(flag_values.run_dir)
  path = report_lib.write(folder.path)
  folder.log(f'Report: {path}')
  return path
