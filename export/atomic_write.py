"""Atomic file writes: a file appears complete under its final name, or not at all.

Exports are read by other tools (benchmarks, device flashing scripts); a half-written .tflite left by
a crash would be mistaken for a real one, so every writer here goes through a temporary name in the
same directory (same file system, so `os.replace` is atomic) and renames at the end.
"""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=''):
  """Yields a temporary path next to `path`; renames it to `path` only if the block succeeds.

  Args:
    path: final file name.
    suffix: ending the temporary name must have (Keras insists on '.keras', for example).

  Yields:
    A path that does not exist yet, in the same directory as `path`.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.tmp-', suffix=suffix,
                             dir=directory)
  os.close(fd)
  os.unlink(tmp)  # Writers such as Keras refuse or misbehave on an existing file.
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def write_bytes(path, data):
  """Writes `data` to `path` atomically and returns `path`."""
  with atomic_path(path) as tmp:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  return os.fspath(path)


def write_text(path, text):
  """Writes UTF-8 `text` to `path` atomically and returns `path`."""
  return write_bytes(path, text.encode('utf-8'))
