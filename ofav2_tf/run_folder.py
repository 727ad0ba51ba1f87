"""The run folder: one directory holding everything a run produces, laid out so a run can resume.

    <run_dir>/
      config.json           resolved RunConfig (architecture fields checked on resume)
      provenance.json       command line, versions, host, start times (one entry per start)
      log.txt               the run's log (every start appends)
      tensorboard/          scalar summaries of every phase (one event stream per start)
      phases/<NN_name>/
        steps/step-000120/  resumable checkpoints: weights + optimizer + progress.json
        best/               weights of the best validation score in the phase + progress.json
        result.json         written last: the phase is complete (never re-run)
      metrics.json          per-phase results (rewritten after each phase)
      phases.png            per-phase accuracy plot

Every checkpoint is written under a temporary name and renamed when complete, so a process killed
at any moment (SIGKILL included) leaves either the previous or the new checkpoint, never a torn one;
`latest_step` ignores leftovers of an interrupted write, and the next start removes them
(`remove_leftovers`). A write that fails (a full disk, a folder made read-only) removes its own
temporary folder and raises `StorageError`, the previous checkpoint intact. A new run folder appears
whole: config.json and provenance.json are written into a hidden sibling folder that is then
renamed, so a failure before that leaves nothing, and a failure after it a folder that resumes.
"""

import errno
import json
import os
import shutil
import sys
import time
from typing import List, Optional

import tensorflow as tf

from export import atomic_write
from ofav2_tf import errors
from ofav2_tf import run_config as run_config_lib

CONFIG_FILE = 'config.json'
PROGRESS_FILE = 'progress.json'
RESULT_FILE = 'result.json'
_TMP = '.tmp'
_OLD = '.old'


def write_json_atomic(path: str, value) -> None:
  atomic_write.write_text(path, json.dumps(value, indent=2, sort_keys=True))


def read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise errors.ConfigError(f'{path} is corrupt ({e}); delete it or use another --run_dir') \
        from None


class RunFolder:
  """Paths and the small amount of state kept in a run folder."""

  def __init__(self, path: str):
    if not path:
      raise errors.ConfigError('--run_dir is required: the folder that holds (or will hold) the run')
    self.path = os.path.abspath(path)
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise errors.ConfigError(f'--run_dir {path} exists and is not a folder')

  def file(self, *parts) -> str:
    return os.path.join(self.path, *parts)

  def exists(self) -> bool:
    return os.path.exists(self.file(CONFIG_FILE))

  # -- configuration -----------------------------------------------------------------------------

  def load_config(self) -> run_config_lib.RunConfig:
    if not self.exists():
      raise errors.ConfigError(
          f'{self.path} is not a run folder (no {CONFIG_FILE}); train into it first with '
          '--mode=train')
    return run_config_lib.RunConfig.from_dict(read_json(self.file(CONFIG_FILE)))

  def open_for(self, config: run_config_lib.RunConfig) -> bool:
    """Creates the folder for `config`, or checks an existing one matches it.

    Returns:
      True when an existing run is being resumed.

    Raises:
      ArchitectureMismatchError: The folder holds a run of another architecture. Nothing is
        written in that case.
    """
    if not self.exists():
      self._create(config)
      return False
    saved = read_json(self.file(CONFIG_FILE))
    run_config_lib.check_same_architecture(saved, config.architecture(), self.path)
    # Keep the original; a changed schedule flag is recorded beside it for the reader.
    write_json_atomic(self.file('config.resumed.json'), config.to_dict())
    self._record_provenance(True, self.path)
    return True

  def _create(self, config: run_config_lib.RunConfig) -> None:
    """Writes a new run folder as a whole: in a hidden sibling, renamed when complete."""
    if os.path.isdir(self.path) and os.listdir(self.path):
      # The user's own non-empty folder cannot be renamed onto; config.json goes last there, as
      # the mark of a run folder (`exists`).
      self._record_provenance(False, self.path)
      write_json_atomic(self.file(CONFIG_FILE), config.to_dict())
      return
    parent = os.path.dirname(self.path)
    try:
      os.makedirs(parent, exist_ok=True)
      staging = atomic_write.temp_dir(parent, os.path.basename(self.path), 'new')
    except OSError as e:
      raise _storage_error(e, f'cannot create the run folder {self.path}') from None
    try:
      write_json_atomic(os.path.join(staging, CONFIG_FILE), config.to_dict())
      self._record_provenance(False, staging)
      os.replace(staging, self.path)  # onto a missing or empty folder
    finally:
      shutil.rmtree(staging, ignore_errors=True)

  def remove_leftovers(self) -> List[str]:
    """Deletes what interrupted writes left: checkpoint `.tmp`/`.old` folders, and the temporary
    files of `write_json_atomic` whose writer is gone (`export.atomic_write.remove_stale`).

    Returns:
      The removed paths, relative to the run folder, for the log.
    """
    removed = atomic_write.remove_stale(self.path)
    for directory, folders, _ in os.walk(self.file('phases')):
      removed += atomic_write.remove_stale(directory)
      for name in list(folders):
        if name.endswith((_TMP, _OLD)) and os.path.isdir(os.path.join(directory, name)):
          removed.append(os.path.join(directory, name))
          shutil.rmtree(removed[-1], ignore_errors=True)
          folders.remove(name)
    return sorted(os.path.relpath(path, self.path) for path in removed)

  def _record_provenance(self, resumed: bool, folder: str) -> None:
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top
    path = os.path.join(folder, 'provenance.json')
    history = read_json(path) if os.path.exists(path) else []
    history.append({
        'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'resumed': resumed,
        'command': [sys.executable] + sys.argv,
        'cwd': os.getcwd(),
        'versions': {'python': sys.version.split()[0], 'tensorflow': tf.__version__,
                     'tf_keras': tf_keras.__version__, 'numpy': np.__version__},
        'git_commit': _git_commit(),
        'host': os.uname().nodename,
    })
    write_json_atomic(path, history)

  # -- logging -------------------------------------------------------------------------------------

  def log(self, message: str) -> None:
    """Prints `message` and appends it, time-stamped, to log.txt."""
    print(message, flush=True)
    try:
      os.makedirs(self.path, exist_ok=True)
      with open(self.file('log.txt'), 'a') as f:
        for line in str(message).splitlines() or ['']:
          f.write(f'{time.strftime("%H:%M:%S")} {line}\n')
    except OSError as e:
      raise _storage_error(e, f'cannot write the run\'s log {self.file("log.txt")}') from None

  # -- phases ------------------------------------------------------------------------------------

  def phase_dir(self, plan: run_config_lib.PhasePlan) -> str:
    return self.file('phases', plan.folder_name)

  def phase_result(self, plan) -> Optional[dict]:
    path = os.path.join(self.phase_dir(plan), RESULT_FILE)
    return read_json(path) if os.path.exists(path) else None

  def write_phase_result(self, plan, result: dict) -> None:
    os.makedirs(self.phase_dir(plan), exist_ok=True)
    write_json_atomic(os.path.join(self.phase_dir(plan), RESULT_FILE), result)

  def best_dir(self, plan) -> str:
    return os.path.join(self.phase_dir(plan), 'best')

  def has_best(self, plan) -> bool:
    return os.path.exists(os.path.join(self.best_dir(plan), PROGRESS_FILE))

  def completed_phases(self) -> list:
    """Folder names of the phases with a result, in order."""
    root = self.file('phases')
    if not os.path.isdir(root):
      return []
    return sorted(name for name in os.listdir(root)
                  if os.path.exists(os.path.join(root, name, RESULT_FILE)))

  # -- checkpoints -------------------------------------------------------------------------------

  def save_checkpoint(self, directory: str, checkpoint: tf.train.Checkpoint, progress: dict) -> None:
    """Writes `checkpoint` and `progress` into `directory` atomically (tmp folder, rename)."""
    tmp = directory + _TMP
    shutil.rmtree(tmp, ignore_errors=True)
    try:
      os.makedirs(tmp)
      checkpoint.write(os.path.join(tmp, 'ckpt'))
      write_json_atomic(os.path.join(tmp, PROGRESS_FILE), progress)
    except (OSError, tf.errors.OpError) as e:
      shutil.rmtree(tmp, ignore_errors=True)
      kept = ('the previous checkpoint there is intact' if os.path.exists(directory)
              else 'earlier checkpoints are intact')
      raise _storage_error(e, f'cannot write the checkpoint {directory} ({kept})') from None
    old = directory + _OLD
    if os.path.exists(directory):
      shutil.rmtree(old, ignore_errors=True)
      os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)

  def step_dir(self, plan, step: int) -> str:
    return os.path.join(self.phase_dir(plan), 'steps', f'step-{step:07d}')

  def latest_step(self, plan) -> Optional[str]:
    """The newest complete step checkpoint of a phase, or None."""
    root = os.path.join(self.phase_dir(plan), 'steps')
    if not os.path.isdir(root):
      return None
    complete = sorted(name for name in os.listdir(root)
                      if name.startswith('step-') and not name.endswith((_TMP, '.old'))
                      and os.path.exists(os.path.join(root, name, PROGRESS_FILE)))
    return os.path.join(root, complete[-1]) if complete else None

  def prune_steps(self, plan, keep: str) -> None:
    root = os.path.join(self.phase_dir(plan), 'steps')
    for name in os.listdir(root):
      path = os.path.join(root, name)
      if path != keep:
        shutil.rmtree(path, ignore_errors=True)

  @staticmethod
  def read_progress(directory: str) -> dict:
    return read_json(os.path.join(directory, PROGRESS_FILE))

  @staticmethod
  def checkpoint_prefix(directory: str) -> str:
    return os.path.join(directory, 'ckpt')


def _storage_error(error: Exception, what: str) -> errors.StorageError:
  """`what`, the reason in one line and what to do, as the StorageError the command line reports."""
  message = str(getattr(error, 'message', None) or getattr(error, 'strerror', None) or error)
  message = message.splitlines()[0] if message.strip() else type(error).__name__
  if 'no space left' in message.lower() or getattr(error, 'errno', None) == errno.ENOSPC:
    hint = 'the disk is full: free some space and run the same command again to resume'
  elif getattr(error, 'errno', None) in (errno.EACCES, errno.EPERM, errno.EROFS) or any(
      text in message for text in ('Permission denied', 'Read-only file system')):
    hint = ('the run folder must be writable: fix its permissions, or copy the run to a writable '
            'place and use that as --run_dir')
  else:
    hint = 'fix the cause and run the same command again to resume'
  return errors.StorageError(f'{what}: {message}; {hint}')


def _git_commit() -> Optional[str]:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  head = os.path.join(root, '.git', 'HEAD')
  try:
    with open(head) as f:
      ref = f.read().strip()
    if ref.startswith('ref: '):
      with open(os.path.join(root, '.git', ref[5:])) as f:
        return f.read().strip()
    return ref
  except OSError:
    return None
