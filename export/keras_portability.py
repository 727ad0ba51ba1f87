"""Saves an extracted model as .keras files that load without custom code in both Keras generations.

Users import the exported model with plain Keras and `safe_mode=True`; some run tf_keras (Keras 2,
as this project does), most new code runs Keras 3. A .keras file written by tf_keras 2.21 does not
load in Keras 3.15 (see `keras3_config` for the three reasons), so two files are written:
  <basename>.keras         written by tf_keras, for tf_keras;
  <basename>_keras3.keras  written by Keras 3 itself, for Keras 3: a child process that imports only
                           Keras 3 rebuilds the graph from the rewritten config and copies the weights
                           by layer name (no custom objects anywhere).
Each file is then loaded in a FRESH process importing only its own Keras generation, and its outputs
are compared with the original model's on the same inputs. Fresh processes because the property
being claimed is about a user's process: inside this one, tf_keras is loaded and registered objects
could mask a file that would fail elsewhere.

A note on the alternative of one file for both: with the three config rewrites the tf_keras file's
weights also happen to load in Keras 3 (both store weights under per-class ordinal paths such as
'layers/batch_normalization_3/vars/0'), but that relies on both generations ordering same-class
layers identically; copying by unique layer name into a Keras 3-written file does not.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from export import atomic_write
from export import keras3_config
from export.errors import ExportError

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_keras_child.py')
DEFAULT_ATOL = 1e-5


@dataclasses.dataclass(frozen=True)
class LoadCheck:
  """One fresh-process load of one file.

  Attributes:
    flavour: 'tf_keras' or 'keras3': the only Keras generation the child imported.
    path: the .keras file loaded.
    keras_version: version of that Keras in the child.
    max_abs_diff: per output, largest |child output - original output|; None if loading failed.
    error: one-line error if loading or running failed, else None.
    imported_tf_keras: whether tf_keras ended up imported in the child.
    tolerance: per output, the largest allowed difference: atol * max(1, max |original output|), so
      atol is absolute for logits up to 1 and relative beyond (float32 rounding grows with magnitude).
  """
  flavour: str
  path: str
  keras_version: str
  max_abs_diff: tuple
  error: str
  imported_tf_keras: bool
  tolerance: tuple

  @property
  def ok(self):
    isolated = self.flavour != 'keras3' or not self.imported_tf_keras
    return (self.error is None and isolated and len(self.max_abs_diff) == len(self.tolerance) and
            all(d <= t for d, t in zip(self.max_abs_diff, self.tolerance)))


@dataclasses.dataclass(frozen=True)
class PortabilityReport:
  """Result of `save_and_check`.

  Attributes:
    tf_keras_path: the file for tf_keras.
    keras3_path: the file for Keras 3.
    checks: the fresh-process `LoadCheck`s, tf_keras first.
    keras3_direct_error: what Keras 3 said when asked to load the tf_keras file itself (None if it
      loaded and matched): a finding recorded on every run, so a Keras release that fixes it shows up.
  """
  tf_keras_path: str
  keras3_path: str
  checks: tuple
  keras3_direct_error: str

  @property
  def ok(self):
    return all(c.ok for c in self.checks)

  def raise_for_failure(self):
    for c in self.checks:
      if not c.ok:
        why = c.error or ('tf_keras was imported' if c.imported_tf_keras and c.flavour == 'keras3'
                          else f'output differences {c.max_abs_diff} exceed {c.tolerance}')
        raise ExportError(f'{c.path} does not load reproducibly in a fresh {c.flavour} process: {why}')


def check_vocabulary(model):
  """Raises unless `model` is a functional model built only from the export vocabulary."""
  config = model.get_config()
  if 'layers' not in config:
    raise ExportError(f'model {model.name!r} is a subclassed model; export the static functional '
                      'model produced by extraction')
  keras3_config.check_layer_classes(config)


def save_tf_keras(model, path):
  """Saves `model` with tf_keras as a .keras file, atomically."""
  if not os.fspath(path).endswith('.keras'):
    raise ExportError(f'{path}: a Keras model file name must end in .keras')
  with atomic_write.atomic_path(path, suffix='.keras') as tmp:
    model.save(tmp)
  return os.fspath(path)


def _child_env(flavour):
  env = dict(os.environ)
  env.pop('TF_USE_LEGACY_KERAS', None)  # Set, it would make Keras 3 code paths load tf_keras.
  if flavour == 'keras3':
    env['KERAS_BACKEND'] = 'tensorflow'
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


def _start(args, flavour):
  return subprocess.Popen([sys.executable, _CHILD] + list(args), env=_child_env(flavour),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, what, timeout_s):
  try:
    out, err = proc.communicate(timeout=timeout_s)
  except subprocess.TimeoutExpired as e:
    proc.kill()
    proc.communicate()
    raise ExportError(f'{what} did not finish in {timeout_s} s') from e
  if proc.returncode != 0:
    lines = [l for l in (err + out).splitlines() if l.strip()]
    raise ExportError(f'{what} failed (exit {proc.returncode}): {lines[-1] if lines else "no output"}')


def _write_weights(model, path):
  """Saves every weighted layer's weights, keyed by position, with the layer names alongside."""
  layers = [layer for layer in model.layers if layer.weights]
  arrays = {'__names__': np.array([layer.name for layer in layers])}
  for i, layer in enumerate(layers):
    for j, value in enumerate(layer.get_weights()):
      arrays[f'{i}:{j}'] = value
  np.savez(path, **arrays)


def _load_check(result_json, tolerance):
  with open(result_json) as f:
    r = json.load(f)
  diffs = tuple(r['max_abs_diff']) if r['max_abs_diff'] is not None else None
  return LoadCheck(flavour=r['flavour'], path=r['path'], keras_version=r['keras_version'],
                   max_abs_diff=diffs, error=r['error'], imported_tf_keras=r['imported_tf_keras'],
                   tolerance=tolerance), r


def save_and_check(model, directory, basename='model', atol=DEFAULT_ATOL, num_samples=2, seed=0,
                   timeout_s=600):
  """Writes the tf_keras and Keras 3 .keras files and checks each in a fresh process.

  Args:
    model: a static tf_keras functional model in the export vocabulary.
    directory: where the files go.
    basename: file stem; files are `<basename>.keras` and `<basename>_keras3.keras`.
    atol: allowed difference of any output value, relative to max(1, the output's largest value).
    num_samples: random inputs compared.
    seed: seeds the inputs.
    timeout_s: per child process.

  Returns:
    A `PortabilityReport` (call `raise_for_failure()` to turn a failed check into an ExportError).

  Raises:
    ExportError: the model uses layers outside the vocabulary, or a child failed to run at all.
  """
  check_vocabulary(model)
  dims = tuple(model.inputs[0].shape[1:])
  if len(model.inputs) != 1 or any(d is None for d in dims):
    raise ExportError(f'model {model.name!r} must have one input of fixed size; got input shapes '
                      f'{[list(i.shape) for i in model.inputs]}')
  os.makedirs(directory, exist_ok=True)
  tf_keras_path = os.path.join(directory, basename + '.keras')
  keras3_path = os.path.join(directory, basename + '_keras3.keras')
  save_tf_keras(model, tf_keras_path)
  shape = (num_samples,) + tuple(int(d) for d in dims)
  inputs = np.random.default_rng(seed).normal(0.0, 1.0, shape).astype(np.float32)
  outputs = model(inputs, training=False)
  if not isinstance(outputs, (list, tuple)):
    outputs = [outputs]
  outputs = [np.asarray(o) for o in outputs]
  tolerance = tuple(float(atol * max(1.0, np.max(np.abs(o)))) for o in outputs)
  with tempfile.TemporaryDirectory(prefix='keras-port-') as tmp:
    files = {k: os.path.join(tmp, k) for k in (
        'config.json', 'weights.npz', 'inputs.npy', 'expected.npz', 'tf_keras.json', 'keras3.json')}
    with open(files['config.json'], 'w') as f:
      json.dump(keras3_config.to_keras3_config(model.get_config()), f)
    _write_weights(model, files['weights.npz'])
    np.save(files['inputs.npy'], inputs)
    np.savez(files['expected.npz'], **{str(k): o for k, o in enumerate(outputs)})
    # The tf_keras check and the Keras 3 build are independent: run them side by side.
    with atomic_write.atomic_path(keras3_path, suffix='.keras') as tmp_keras3:
      check_tf = _start(['load', 'tf_keras', tf_keras_path, files['inputs.npy'],
                         files['expected.npz'], files['tf_keras.json']], 'tf_keras')
      try:
        build = _start(['build-keras3', files['config.json'], files['weights.npz'], tmp_keras3],
                       'keras3')
        _finish(build, 'building the Keras 3 model in a Keras 3 process', timeout_s)
        _finish(check_tf, f'loading {tf_keras_path} in a fresh tf_keras process', timeout_s)
      finally:
        if check_tf.poll() is None:  # Only if the build failed: do not leave it running.
          check_tf.kill()
          check_tf.communicate()
    check_k3 = _start(['load', 'keras3', keras3_path, files['inputs.npy'], files['expected.npz'],
                       files['keras3.json'], tf_keras_path], 'keras3')
    _finish(check_k3, f'loading {keras3_path} in a fresh Keras 3 process', timeout_s)
    tf_check, _ = _load_check(files['tf_keras.json'], tolerance)
    k3_check, raw = _load_check(files['keras3.json'], tolerance)
  direct_error = raw.get('also_try_error')
  direct_diffs = raw.get('also_try_max_abs_diff') or []
  if direct_error is None and any(d > t for d, t in zip(direct_diffs, tolerance)):
    direct_error = f'loads, but outputs differ by {max(raw["also_try_max_abs_diff"]):.3g}'
  return PortabilityReport(tf_keras_path=tf_keras_path, keras3_path=keras3_path,
                           checks=(tf_check, k3_check), keras3_direct_error=direct_error)
