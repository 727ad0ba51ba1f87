"""Runs `python -m ofav2_tf.main` with a file-system fault injected, for tests/main_faults_test.py.

    python -m tests.fault_injection <fault> <folder> <main flags...>

CI runs as root, for whom a chmod changes nothing, and mounting a small tmpfs needs privileges a
test does not have; so the faults are injected into this process instead, at the calls the driver
writes through, and the rest of the command runs unchanged:

  read_only     every write under <folder> (open for writing, mkdir, mkstemp, rename) fails with
                EROFS, as on a file system mounted read-only.
  disk_full:N   the first N checkpoint writes succeed; every later one writes part of its data
                file into <folder>'s checkpoint and then fails as TensorFlow's SaveV2 does on a full
                disk (ResourceExhaustedError 'No space left on device').
  bug           the mode raises an unexpected RuntimeError (a bug), <folder> unused.
"""
# bazel: lazy_deps=ofav2_tf/main.py

import builtins
import errno
import os
import runpy
import sys


def _under(path, folder) -> bool:
  try:
    path = os.path.abspath(os.fspath(path))
  except TypeError:
    return False
  return path == folder or path.startswith(folder + os.sep)


def _read_only(folder: str) -> None:
  def refuse(path):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

  real_open = builtins.open

  def open_(file, mode='r', *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and _under(file, folder) and any(
        c in mode for c in 'wax+'):
      refuse(file)
    return real_open(file, mode, *args, **kwargs)

  real_os_open = os.open

  def os_open(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(path, folder):
      refuse(path)
    return real_os_open(path, flags, *args, **kwargs)

  def guard(real, arity=1):
    def wrapper(*args, **kwargs):
      for path in args[:arity]:
        if _under(path, folder):
          refuse(path)
      return real(*args, **kwargs)
    return wrapper

  builtins.open = open_
  os.open = os_open
  os.mkdir = guard(os.mkdir)
  os.replace = guard(os.replace, 2)
  os.rename = guard(os.rename, 2)
  os.unlink = guard(os.unlink)


def _disk_full(folder: str, allowed: int) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  real_write = tf.train.Checkpoint.write
  calls = [0]

  def write(self, file_prefix, *args, **kwargs):
    calls[0] += 1
    if calls[0] <= allowed or not _under(file_prefix, folder):
      return real_write(self, file_prefix, *args, **kwargs)
    with open(f'{file_prefix}.data-00000-of-00001', 'wb') as f:
      f.write(b'\0' * 4096)  # what a full disk lets through before SaveV2 fails
    raise tf.errors.ResourceExhaustedError(
        None, None, f'{file_prefix}_temp/part-00000-of-00001.data-00000-of-00001.tempstate; No '
        'space left on device [Op:SaveV2]')

  tf.train.Checkpoint.write = write


def main() -> None:
  fault, folder, *flags = sys.argv[1:]
  folder = os.path.abspath(folder)
  if fault == 'read_only':
    _read_only(folder)
  elif fault.startswith('disk_full:'):
    _disk_full(folder, int(fault.split(':', 1)[1]))
  elif fault == 'bug':
    from ofav2_tf import modes  # pylint: disable=g-import-not-at-top

    def run(name, flag_values):
      del name, flag_values
      raise RuntimeError('injected bug')
    modes.run = run
  else:
    raise SystemExit(f'unknown fault {fault!r}: read_only, disk_full:<N> or bug')
  sys.argv = ['ofav2_tf.main'] + flags
  runpy.run_module('ofav2_tf.main', run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()
