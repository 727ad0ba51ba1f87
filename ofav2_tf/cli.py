"""What the command-line entry points share: every failure as one `error:` line, a quiet CUDA probe.

`python -m ofav2_tf.main` and `python -m ofav2_tf.data.prepare` report every failure as one line on
stderr, `error: <what is wrong and what would be valid>`, with neither traceback nor flag help, so
that the line is the first thing the user reads. The exit status says which kind it was:

  0    success
  1    EXIT_BUG: an unexpected exception (a bug): the line names the file holding its traceback
  2    EXIT_USAGE: a mistake in flags, flagfiles, data or a run folder (`errors.OFAError`)
  3    EXIT_STORAGE: a file could not be written or read (permission, read-only or full disk)
  130  EXIT_INTERRUPTED: Ctrl-C; the run folder keeps its last checkpoint

`--traceback` prints the traceback as well, for any of them (`report_failure`). absl's own flag parser prints `FATAL
Flags parsing error` with status 1 and its `UsageError` dumps the whole help; `parse_flags` replaces
the former (`app.run(main, flags_parser=cli.parse_flags)`) and `fail` the latter.

`quiet_cuda_probe` keeps TensorFlow from initialising CUDA on a machine that has no GPU device node:
there TensorFlow's GPU device factory calls `cuInit`, which fails and logs an `E0000 ... failed call
to cuInit` line on every command, an error line that means nothing. It must run before TensorFlow is
imported, because device factories register when the library loads. It imports nothing heavy.
"""

import errno
import glob
import os
import sys
import tempfile
import time
import traceback
from typing import List, MutableMapping, NoReturn, Optional, Sequence, Tuple

from absl import flags

from ofav2_tf import errors

EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_STORAGE = 3
EXIT_INTERRUPTED = 130

# TensorFlow registers only the device factories this variable lists (all when it is unset or
# empty); read once, when TensorFlow's library loads.
DEVICE_TYPES_VARIABLE = 'TF_ENABLED_DEVICE_TYPES'
# Device nodes through which TensorFlow can reach a GPU: NVIDIA's driver, WSL2's GPU bridge, ROCm.
GPU_DEVICE_NODES = ('/dev/nvidia*', '/dev/dxg', '/dev/kfd')


def one_line(message: str) -> str:
  return '; '.join(part.strip() for part in str(message).splitlines() if part.strip())


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
  """Prints `error: <message>` on stderr as one line and exits with `code` (a usage error)."""
  print(f'error: {one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(code)


# errno values and TensorFlow message fragments of file-system failures, with what the user can do.
_STORAGE_HINTS = (
    ((errno.ENOSPC, errno.EDQUOT), 'No space left on device',
     'free some space and run the same command again (a training run resumes from its last '
     'complete checkpoint)'),
    ((errno.EROFS,), 'Read-only file system',
     'the folder is on a read-only file system: copy the run to a writable place or choose '
     'another --run_dir'),
    ((errno.EACCES, errno.EPERM), 'Permission denied',
     'make the folder writable (chmod) or copy the run to a writable place'),
)


def storage_message(error: BaseException) -> Optional[str]:
  """One line for a file-system failure (an OSError or TensorFlow's I/O errors), else None."""
  if isinstance(error, OSError) and not isinstance(error, errors.OFAError):
    for numbers, _, hint in _STORAGE_HINTS:
      if error.errno in numbers:
        return f'{error.strerror}: {error.filename}; {hint}'
    if error.errno == errno.ENOENT:
      return f'no such file or folder: {error.filename}'
    if error.errno is not None:
      return f'{error.strerror}: {error.filename}'
    return None
  tf = sys.modules.get('tensorflow')  # imported by then if TensorFlow raised it
  if tf is not None and isinstance(error, tf.errors.OpError):
    for _, fragment, hint in _STORAGE_HINTS:
      if fragment.lower() in str(error.message).lower():
        return f'{one_line(error.message)}; {hint}'
  return None


def classify(error: BaseException) -> Tuple[int, str]:
  """The exit status and the one-line message for an exception that ended a command."""
  if isinstance(error, errors.StorageError):
    return EXIT_STORAGE, one_line(error)
  if isinstance(error, errors.OFAError):
    return EXIT_USAGE, one_line(error)
  storage = storage_message(error)
  if storage is not None:
    return EXIT_STORAGE, storage
  return EXIT_BUG, f'{type(error).__name__}: {one_line(error)}'


def report_failure(error: BaseException, run_dir: Optional[str] = None,
                   show_traceback: bool = False) -> NoReturn:
  """Ends the program on `error` with one `error:` line on stderr and the status of its kind.

  The line is also appended to the run folder's log.txt when that exists, so the log tells why a
  run stopped. An unexpected exception's traceback goes to that log too (else to a file in the
  temporary folder), and the line says where: one line on the screen, nothing lost.

  Args:
    error: The exception that ended the command.
    run_dir: The command's --run_dir, if any.
    show_traceback: Also print the traceback on stderr (--traceback).
  """
  code, line = classify(error)
  trace = ''.join(traceback.format_exception(type(error), error, error.__traceback__))
  log = os.path.join(run_dir, 'log.txt') if run_dir else None
  if log is None or not os.path.isfile(log):
    log = None
  if code == EXIT_BUG:
    where = _append(log, trace) if log else None
    if where is None:
      where = _write_temp_traceback(trace)
    line = (f'unexpected {line} (a bug: please report it with the traceback, which is in '
            f'{where or "no file: the disk refused it"}; --traceback prints it)')
  if show_traceback:
    print(trace, file=sys.stderr, end='', flush=True)
  if log:
    _append(log, f'error: {line}')
  fail(line, code)


def _append(path: str, text: str) -> Optional[str]:
  try:
    with open(path, 'a') as f:
      for part in text.splitlines():
        f.write(f'{time.strftime("%H:%M:%S")} {part}\n')
    return path
  except OSError:
    return None


def _write_temp_traceback(trace: str) -> Optional[str]:
  try:
    fd, path = tempfile.mkstemp(prefix=f'ofav2_tf-error-{time.strftime("%Y%m%d-%H%M%S")}-',
                                suffix='.txt')
    with os.fdopen(fd, 'w') as f:
      f.write(trace)
    return path
  except OSError:
    return None


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
