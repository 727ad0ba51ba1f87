"""Atomic file writes: a file appears complete under its final name, or not at all.

Exports are read by other tools (benchmarks, device flashing scripts); a half-written .tflite left by
a crash would be mistaken for a real one, so every writer here goes through a temporary name in the
same directory (same file system, so `os.replace` is atomic) and renames at the end.

Temporary names carry the writer's process id, `.<name>.<kind>-<pid>-<random>`, so that what a
killed process left (SIGKILL runs no cleanup) can be told from what a live one is still writing:
`remove_stale` deletes the former on the next start.
"""

import contextlib
import os
import re
import shutil
import tempfile
from typing import List

# .<name>.<kind>-<pid>-<random>; kinds: tmp (being written), old (being replaced), new (staging).
_TEMP_NAME = re.compile(r'^\.(?P<name>.+)\.(?:tmp|old|new)-(?:(?P<pid>\d+)-)?.+$')


def temp_prefix(name: str, kind: str = 'tmp') -> str:
  """The prefix of a temporary sibling of `name` written by this process."""
  return f'.{name}.{kind}-{os.getpid()}-'


def temp_dir(parent: str, name: str, kind: str = 'tmp') -> str:
  """Creates a hidden temporary folder for `name` in `parent` (same file system)."""
  return tempfile.mkdtemp(prefix=temp_prefix(name, kind), dir=parent)


def _process_alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def remove_stale(parent: str, name: str = None) -> List[str]:
  """Deletes temporary siblings (of `name`, or of anything) in `parent` whose writer is gone.

  A name without a process id (written before ids were added) counts as stale.

  Returns:
    The removed paths.
  """
  removed = []
  try:
    entries = os.listdir(parent)
  except OSError:
    return removed
  for entry in sorted(entries):
    match = _TEMP_NAME.match(entry)
    if not match or (name is not None and match.group('name') != name):
      continue
    if match.group('pid') and _process_alive(int(match.group('pid'))):
      continue
    path = os.path.join(parent, entry)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      try:
        os.unlink(path)
      except OSError:
        continue
    removed.append(path)
  return removed


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
  fd, tmp = tempfile.mkstemp(prefix=temp_prefix(os.path.basename(path)), suffix=suffix,
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
