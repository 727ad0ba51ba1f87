"""Saving and loading supernet weights together with the architecture they belong to.

Weights are written with `tf.train.Checkpoint` (variables matched by object path, so a checkpoint
outlives refactors of unrelated code) next to an `architecture.json` holding the supernet's
constructor arguments. Loading compares the two first, so a checkpoint trained for 10 classes or
another variant is refused with a message naming the differing fields instead of a shape error deep
inside TensorFlow.
"""

import json
import os

import tensorflow as tf

from export import atomic_write
from ofav2_tf import errors

ARCHITECTURE_FILE = 'architecture.json'
WEIGHTS_PREFIX = 'weights'
# Fields that change the set or shape of the weights; the others (dropout, BN momentum) do not.
ARCHITECTURE_FIELDS = ('variant', 'num_classes', 'width_multiplier', 'kernel_sizes',
                       'expand_ratios', 'depths')


def architecture_of(supernet) -> dict:
  config = supernet.get_config()
  return {field: config[field] for field in ARCHITECTURE_FIELDS}


def check_architecture(expected: dict, found: dict, source: str) -> None:
  """Raises `ArchitectureMismatchError` listing every field that differs."""
  diffs = [f'{field}: {source} has {found.get(field)!r}, expected {expected.get(field)!r}'
           for field in ARCHITECTURE_FIELDS if expected.get(field) != found.get(field)]
  if diffs:
    raise errors.ArchitectureMismatchError(
        f'{source} belongs to a different supernet ({"; ".join(diffs)}); build the supernet with '
        'the same architecture flags or use another checkpoint')


def save_weights(supernet, directory: str) -> str:
  """Writes the weights and architecture of `supernet` into `directory` (created if needed)."""
  os.makedirs(directory, exist_ok=True)
  atomic_write.write_text(os.path.join(directory, ARCHITECTURE_FILE),
                          json.dumps(architecture_of(supernet), indent=2, sort_keys=True))
  return tf.train.Checkpoint(model=supernet).write(os.path.join(directory, WEIGHTS_PREFIX))


def read_architecture(directory: str) -> dict:
  path = os.path.join(directory, ARCHITECTURE_FILE)
  if not os.path.exists(path):
    raise errors.ArchitectureMismatchError(
        f'{path} not found: {directory} is not a supernet checkpoint folder written by '
        'save_weights')
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise errors.ArchitectureMismatchError(f'{path} is corrupt ({e})') from None


def load_weights(supernet, directory: str) -> None:
  """Restores weights saved by `save_weights` after checking the architecture matches."""
  check_architecture(architecture_of(supernet), read_architecture(directory),
                     f'checkpoint {directory}')
  status = tf.train.Checkpoint(model=supernet).read(os.path.join(directory, WEIGHTS_PREFIX))
  status.assert_existing_objects_matched()
