"""The accuracy predictor's dataset: measured accuracies of sampled sub-networks, cached on disk.

Each evaluation extracts a sub-network, re-calibrates its BN statistics and runs the validation
split: seconds to minutes each, hours for a dataset. So every result is appended to a JSON-lines
file as soon as it exists (flushed and fsynced), and a collection that is started again skips every
config already in the file: an interrupted run resumes where it stopped and never re-evaluates. A
crash can leave a partial last line; it is dropped (and cut from the file) on the next start. A
corrupt line anywhere else means the file was edited or mixed up, and is an error.

The list of configs is deterministic: the uniform grid (the paper's evaluation protocol, so the
predictor sees the configs that reports quote) at `uniform_resolutions`, then `num_samples` distinct
random configs drawn from `seed`. Random draws form a prefix sequence, so asking for more samples
later reuses the first ones. Configs are compared as networks (`SubnetConfig.canonical`).

Files in the folder:
  predictor_data.jsonl  one {"config": <string>, "accuracy": float, "seconds": float} per line;
  meta.json             the space and the caller's metadata (e.g. checkpoint, split), checked on
                        resume so accuracies of another supernet are never mixed in.
"""

import dataclasses
import json
import math
import os
import time
from typing import Callable, List, Optional, Sequence

from absl import logging
import numpy as np

from export import atomic_write
from ofav2_tf import errors
from ofav2_tf import subnet_config as sc

DATA_FILE = 'predictor_data.jsonl'
META_FILE = 'meta.json'


@dataclasses.dataclass
class PredictorDataset:
  """Evaluated sub-networks.

  Attributes:
    configs: The sub-networks, in evaluation order.
    accuracies: Their accuracies (float64, same order).
  """

  configs: List[sc.SubnetConfig]
  accuracies: np.ndarray

  def __len__(self) -> int:
    return len(self.configs)


def collection_plan(space: sc.SearchSpace, num_samples: int, seed: int = 0,
                    include_uniform: bool = True,
                    uniform_resolutions: Optional[Sequence[int]] = None) -> List[sc.SubnetConfig]:
  """The configs a collection evaluates, in order (see the module docstring).

  Args:
    space: Space to sample from.
    num_samples: Random configs besides the uniform grid.
    seed: Seeds the random draw.
    include_uniform: Start with the uniform grid.
    uniform_resolutions: Resolutions of the grid; default the smallest and largest of the space
      (the paper evaluates uniform sub-networks at 48 and 64).

  Raises:
    ConfigError: `num_samples` is negative or exceeds what the space can supply.
  """
  if num_samples < 0:
    raise errors.ConfigError(f'num_samples={num_samples} must be >= 0')
  plan, seen = [], set()

  def add(config):
    key = config.canonical()
    if key not in seen:
      seen.add(key)
      plan.append(config)
      return True
    return False

  if include_uniform:
    if uniform_resolutions is None:
      uniform_resolutions = sorted({min(space.resolutions), max(space.resolutions)})
    for config in space.uniform_grid(uniform_resolutions):
      add(config)
  rng = np.random.default_rng(seed)
  drawn, attempts = 0, 0
  while drawn < num_samples:
    attempts += 1
    if attempts > 100 * num_samples + 1000:
      raise errors.ConfigError(f'num_samples={num_samples}: could not draw that many distinct '
                               f'sub-networks from the space (got {drawn})')
    drawn += add(space.sample(rng))
  return plan


def _read_records(path: str) -> list:
  """Records of a cache file; drops (and truncates away) a partial last line."""
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    data = f.read()
  records, good_end, lines = [], 0, data.split(b'\n')
  for number, line in enumerate(lines, start=1):
    last = number == len(lines)
    end = good_end + len(line) + (0 if last else 1)
    if not line.strip():
      good_end = end
      continue
    try:
      record = json.loads(line)
      config = sc.SubnetConfig.from_string(record['config'])
      accuracy = float(record['accuracy'])
    except (ValueError, KeyError, TypeError, errors.ConfigError) as e:
      if last or all(not rest.strip() for rest in lines[number:]):
        logging.warning('predictor data %s: dropping a partial last line (%s)', path, e)
        with open(path, 'r+b') as f:
          f.truncate(good_end)
        break
      raise errors.DataError(f'predictor data {path} line {number} is corrupt ({e}); fix or '
                             'delete that line') from None
    if last:  # A complete record without its newline: add it so appends start a new line.
      with open(path, 'ab') as f:
        f.write(b'\n')
      end += 1
    records.append({'config': config, 'accuracy': accuracy,
                    'seconds': float(record.get('seconds', 0.0))})
    good_end = end
  return records


def _check_meta(folder: str, space: sc.SearchSpace, metadata: Optional[dict]):
  meta = {'space': space.to_dict(), 'metadata': metadata or {}}
  meta = json.loads(json.dumps(meta))  # Tuples -> lists, as they read back.
  path = os.path.join(folder, META_FILE)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      try:
        stored = json.load(f)
      except json.JSONDecodeError as e:
        raise errors.DataError(f'{path} is not valid JSON: {e}') from None
    if stored != meta:
      raise errors.DataError(
          f'predictor data folder {folder} was collected for {stored}; this collection is for '
          f'{meta}: use another folder')
  else:
    atomic_write.write_text(path, json.dumps(meta, indent=1, sort_keys=True) + '\n')


def _as_accuracy(value, config) -> float:
  accuracy = float(getattr(value, 'accuracy', value))
  if not math.isfinite(accuracy):
    raise ValueError(f'evaluate({config}) returned {value!r}, not a finite accuracy')
  return accuracy


def collect(space: sc.SearchSpace, evaluate: Callable[[sc.SubnetConfig], float], folder: str,
            num_samples: int, seed: int = 0, include_uniform: bool = True,
            uniform_resolutions: Optional[Sequence[int]] = None,
            metadata: Optional[dict] = None, log_every: int = 10) -> PredictorDataset:
  """Evaluates the collection plan, appending each result to the cache, and returns all of it.

  Args:
    space: Space to sample from.
    evaluate: evaluate(config) -> accuracy (a float, or an object with `.accuracy` such as
      `evaluation.SubnetResult`).
    folder: Cache folder (created if needed).
    num_samples: Random configs besides the uniform grid.
    seed: Seeds the random draw.
    include_uniform: Evaluate the uniform grid too.
    uniform_resolutions: Resolutions of the grid (see `collection_plan`).
    metadata: JSON-serialisable facts the accuracies depend on (checkpoint, split, calibration
      images); stored on first use and checked on resume.
    log_every: Log progress every this many evaluations (and at the end).

  Returns:
    The plan's configs with their accuracies (cached or new), in plan order.

  Raises:
    DataError: The folder holds data of another space or metadata, or a corrupt line.
  """
  folder = os.fspath(folder)
  os.makedirs(folder, exist_ok=True)
  _check_meta(folder, space, metadata)
  path = os.path.join(folder, DATA_FILE)
  cached = {r['config'].canonical(): r['accuracy'] for r in _read_records(path)}
  plan = collection_plan(space, num_samples, seed, include_uniform, uniform_resolutions)
  todo = [c for c in plan if c.canonical() not in cached]
  logging.info('predictor data: %d sub-networks planned, %d cached, %d to evaluate', len(plan),
               len(plan) - len(todo), len(todo))
  start = time.perf_counter()
  with open(path, 'a', encoding='utf-8') as f:
    for done, config in enumerate(todo, start=1):
      began = time.perf_counter()
      accuracy = _as_accuracy(evaluate(config), config)
      seconds = time.perf_counter() - began
      f.write(json.dumps({'config': config.to_string(), 'accuracy': accuracy,
                          'seconds': round(seconds, 4)}) + '\n')
      f.flush()
      os.fsync(f.fileno())
      cached[config.canonical()] = accuracy
      if done % max(1, log_every) == 0 or done == len(todo):
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (len(todo) - done)
        logging.info('predictor data: %d/%d evaluated (%.1f s, ETA %.0f s), last %s: %.4f', done,
                     len(todo), elapsed, eta, config.to_string(), accuracy)
  return PredictorDataset(configs=list(plan),
                          accuracies=np.array([cached[c.canonical()] for c in plan], np.float64))


def load(folder: str, space: Optional[sc.SearchSpace] = None) -> PredictorDataset:
  """Everything cached in `folder` (in file order); with `space`, only the configs inside it."""
  path = os.path.join(os.fspath(folder), DATA_FILE)
  if not os.path.exists(path):
    raise errors.DataError(f'no predictor data at {path}; collect it first')
  records = _read_records(path)
  if space is not None:
    records = [r for r in records if space.contains(r['config'])]
  return PredictorDataset(configs=[r['config'] for r in records],
                          accuracies=np.array([r['accuracy'] for r in records], np.float64))
