"""What the command-line entry points share: mistakes as one `error:` line, a quiet CUDA probe.

`python -m ofav2_tf.main` and `python -m ofav2_tf.data.prepare` report a user's mistake as one line,
`error: <what is wrong and what would be valid>`, with exit status 2 and neither traceback nor flag
help, so that the line is the first thing the user reads. absl's own flag parser prints `FATAL
Flags parsing error` with status 1 and its `UsageError` dumps the whole help; `parse_flags` replaces
the former (`app.run(main, flags_parser=cli.parse_flags)`) and `fail` the latter.

`quiet_cuda_probe` keeps TensorFlow from initialising CUDA on a machine that has no GPU device node:
there TensorFlow's GPU device factory calls `cuInit`, which fails and logs an `E0000 ... failed call
to cuInit` line on every command, an error line that means nothing. It must run before TensorFlow is
imported, because device factories register when the library loads. It imports nothing heavy.
"""

import glob
import os
import sys
from typing import List, MutableMapping, NoReturn, Sequence

from absl import flags

# TensorFlow registers only the device factories this variable lists (all when it is unset or
# empty); read once, when TensorFlow's library loads.
DEVICE_TYPES_VARIABLE = 'TF_ENABLED_DEVICE_TYPES'
# Device nodes through which TensorFlow can reach a GPU: NVIDIA's driver, WSL2's GPU bridge, ROCm.
GPU_DEVICE_NODES = ('/dev/nvidia*', '/dev/dxg', '/dev/kfd')


def fail(message: str) -> NoReturn:
  """Prints `error: <message>` on stderr as one line and exits with status 2 (a usage error)."""
  line = '; '.join(part.strip() for part in str(message).splitlines() if part.strip())
  print(f'error: {line}', file=sys.stderr, flush=True)
  sys.exit(2)


def parse_flags(argv: Sequence[str]) -> List[str]:
  """Parses the command line into `flags.FLAGS`; a mistake ends the program through `fail`.

  Given to `app.run` as `flags_parser`. absl's messages already say what is wrong and, for enums and
  bounds, what is valid; an unknown flag gets the pointer to the flag list that absl leaves out.
  `--help` and `--helpfull` still print the help (they exit inside absl's parser).

  Returns:
    The program name: every option is a `--flag`, so anything else on the line is a mistake.
  """
  try:
    remaining = flags.FLAGS(list(argv))
  except flags.UnrecognizedFlagError as e:
    fail(f'{e} (--helpfull lists every flag)')
  except flags.Error as e:
    fail(str(e).removeprefix('ERROR:: '))  # the prefix of an unreadable flagfile's message
  if len(remaining) > 1:
    fail(f'unexpected arguments {remaining[1:]}; every option is a --flag (--helpfull lists them)')
  return remaining


def quiet_cuda_probe(environ: MutableMapping[str, str] = os.environ,
                     device_nodes: Sequence[str] = GPU_DEVICE_NODES) -> bool:
  """Restricts TensorFlow to CPU devices when no GPU device node exists; call before importing TF.

  Without a device node no GPU can be used anyway, so nothing is lost; the failing `cuInit` and its
  error line are. TensorFlow's other messages are untouched, apart from the INFO lines announcing
  each disabled factory, which are hidden by a TF_CPP_MIN_LOG_LEVEL of 1 (warnings and errors still
  show) unless the user set that level. A user who sets TF_ENABLED_DEVICE_TYPES, even to an empty
  value (every device type), decides alone.

  Args:
    environ: The environment to change (the process's own by default).
    device_nodes: Glob patterns of GPU device nodes.

  Returns:
    Whether TensorFlow was restricted to CPU devices.
  """
  if DEVICE_TYPES_VARIABLE in environ or any(glob.glob(pattern) for pattern in device_nodes):
    return False
  environ[DEVICE_TYPES_VARIABLE] = 'CPU'
  environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  return True
