"""Command line: `python -m ofav2_tf.main --flagfile=flags/<preset>.cfg [--flag=value ...]`.

Modes are a registry (`ofav2_tf.modes.MODES`): `train` runs the progressive-shrinking schedule into `--run_dir`
(resuming it when it exists), `evaluate` evaluates a phase's best checkpoint of a run. Other modes
(search, export, ...) register a function taking the parsed flags in their own module under `ofav2_tf/modes/`;
nothing here changes when one is added.

Every failure is one line on stderr, `error: ...`, with an exit status that says its kind
(`ofav2_tf.cli`): 2 for user mistakes (`OFAError`: bad flag values, missing data, a run folder of
another architecture; flags that do not parse or fail their validators), 3 for a file that cannot be
written (permission, read-only or full disk), 1 for a bug, whose traceback is kept in the run's
log.txt (or a temporary file) and printed with `--traceback`.
"""
# bazel: lazy_deps=ofav2_tf/modes/*.py

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before TensorFlow is imported

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top

from ofav2_tf import cli  # pylint: disable=g-import-not-at-top
from ofav2_tf import flag_defs  # pylint: disable=g-import-not-at-top
from ofav2_tf import modes  # pylint: disable=g-import-not-at-top

flag_defs.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv  # cli.parse_flags refused anything but flags.
  # TensorFlow's INFO lines (checkpoint sharding, ...) would drown the progress display.
  # Retracing notices for the per-sub-network evaluation functions are expected (one static model
  # per evaluated sub-network) and say nothing to the user.
  logging.set_verbosity(logging.WARNING)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  try:
    modes.run(FLAGS.mode, FLAGS)
  except KeyboardInterrupt:
    print('interrupted: the run folder keeps its last checkpoint; run the same command to resume',
          file=sys.stderr, flush=True)
    sys.exit(cli.EXIT_INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except
    cli.report_failure(e, run_dir=FLAGS.run_dir, show_traceback=FLAGS.traceback)


if __name__ == '__main__':
  cli.quiet_cuda_probe()  # before TensorFlow is imported
  app.run(main, flags_parser=cli.parse_flags)
