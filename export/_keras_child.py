"""Child process for `keras_portability`: loads or builds a model with ONE Keras generation.

Run as a script (never imported by the exporter) in a fresh interpreter, so that what it proves holds
for a user's process: the Keras 3 child imports `keras` and never `tf_keras` (and the parent removes
TF_USE_LEGACY_KERAS from its environment); the tf_keras child imports `tf_keras` only. Imports of
this project are avoided for the same reason.

Usage:
  _keras_child.py build-keras3 CONFIG_JSON WEIGHTS_NPZ OUT_PATH
      Builds keras.Model.from_config(CONFIG_JSON), copies weights by layer name from WEIGHTS_NPZ
      (keys 'LAYER_INDEX:WEIGHT_INDEX' for each weighted layer, names in '__names__'), checks that
      every weighted Keras 3 layer received its weights, saves OUT_PATH (.keras) atomically.
  _keras_child.py load {tf_keras|keras3} MODEL_PATH INPUTS_NPY EXPECTED_NPZ RESULT_JSON [ALSO_TRY]
      load_model(MODEL_PATH, safe_mode=True), runs INPUTS_NPY, writes the largest absolute difference
      per output against EXPECTED_NPZ ('0', '1', ... in Keras output order). ALSO_TRY: another .keras
      to attempt loading afterwards, recording only whether that works (a finding, not a check).
"""

import json
import os
import sys

import numpy as np


def _keras(flavour):
  if flavour == 'keras3':
    import keras  # pylint: disable=g-import-not-at-top
    return keras
  import tf_keras  # pylint: disable=g-import-not-at-top
  return tf_keras


def _write_json(path, value):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


def build_keras3(config_json, weights_npz, out_path):
  keras = _keras('keras3')
  with open(config_json) as f:
    config = json.load(f)
  model = keras.Model.from_config(config)
  weights = np.load(weights_npz)
  names = [str(n) for n in weights['__names__']]
  by_name = {layer.name: layer for layer in model.layers}
  for i, name in enumerate(names):
    layer = by_name.get(name)
    if layer is None:
      raise SystemExit(f'Keras 3 model has no layer {name!r}')
    values = []
    while f'{i}:{len(values)}' in weights.files:
      values.append(weights[f'{i}:{len(values)}'])
    current = layer.get_weights()
    if [v.shape for v in current] != [v.shape for v in values]:
      raise SystemExit(f'layer {name!r}: Keras 3 weight shapes {[v.shape for v in current]} differ '
                       f'from tf_keras {[v.shape for v in values]}')
    layer.set_weights(values)
  missed = sorted(set(l.name for l in model.layers if l.weights) - set(names))
  if missed:
    raise SystemExit(f'Keras 3 layers {missed} have weights the tf_keras model does not')
  tmp = out_path + '.tmp.keras'
  model.save(tmp)
  os.replace(tmp, out_path)


def _try_load(keras, path, inputs, expected):
  model = keras.models.load_model(path, safe_mode=True)
  outputs = model(inputs, training=False)
  if not isinstance(outputs, (list, tuple)):
    outputs = [outputs]
  outputs = [np.asarray(o) for o in outputs]
  if len(outputs) != len(expected.files):
    raise ValueError(f'{len(outputs)} outputs, expected {len(expected.files)}')
  return [float(np.max(np.abs(o - expected[str(k)]))) for k, o in enumerate(outputs)]


def _one_line(error):
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0][:300] if text else ""}'


def load(flavour, model_path, inputs_npy, expected_npz, result_json, also_try=None):
  keras = _keras(flavour)
  inputs = np.load(inputs_npy)
  expected = np.load(expected_npz)
  result = {'flavour': flavour, 'keras_version': keras.__version__, 'path': model_path}
  try:
    result['max_abs_diff'] = _try_load(keras, model_path, inputs, expected)
    result['error'] = None
  except Exception as e:  # pylint: disable=broad-except
    result['max_abs_diff'] = None
    result['error'] = _one_line(e)
  if also_try:
    try:
      result['also_try_max_abs_diff'] = _try_load(keras, also_try, inputs, expected)
      result['also_try_error'] = None
    except Exception as e:  # pylint: disable=broad-except
      result['also_try_max_abs_diff'] = None
      result['also_try_error'] = _one_line(e)
  # Which Keras generations ended up in this process (TensorFlow may import others lazily).
  result['imported_tf_keras'] = 'tf_keras' in sys.modules
  result['imported_keras3'] = 'keras.src' in sys.modules
  _write_json(result_json, result)


def main(argv):
  if argv[1] == 'build-keras3':
    build_keras3(*argv[2:5])
  elif argv[1] == 'load':
    load(*argv[2:8])
  else:
    raise SystemExit(f'unknown mode {argv[1]!r}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
