"""Rewrites a tf_keras (Keras 2) functional model config into one Keras 3 deserializes.

Why: a .keras file written by tf_keras 2.21 does not load in Keras 3.15. Measured with the
extraction's layer vocabulary, exactly three things stop it:
  1. the top-level object is tf_keras' own class ('tf_keras.src.engine.functional' / 'Functional'),
     which Keras 3 cannot locate;
  2. BatchNormalization stores `axis` as a list ([3]); Keras 3 wants an int;
  3. DepthwiseConv2D stores `groups` (always 1), an argument Keras 3's DepthwiseConv2D rejects.
Everything else (legacy inbound-node lists, InputLayer's batch_input_shape, initializer dicts) Keras
3 still reads. So the Keras 3 file is made by building `keras.Model.from_config` on the rewritten
inner config and copying the weights by layer name (see `keras_portability`).

Only the layer classes of the extraction vocabulary are accepted: an unknown class would need its
own rule, and guessing one is how silent mismatches happen.
"""

import copy

from export.errors import ExportError

# Layer classes an extracted sub-network is made of (DESIGN.md section 3).
VOCABULARY = frozenset((
    'InputLayer', 'Conv2D', 'DepthwiseConv2D', 'BatchNormalization', 'ReLU', 'Rescaling',
    'Multiply', 'Add', 'MaxPooling2D', 'GlobalAveragePooling2D', 'Dense', 'Dropout'))


def check_layer_classes(config):
  """Raises unless every layer in a functional config is in `VOCABULARY`."""
  for layer in config.get('layers', ()):
    if layer['class_name'] not in VOCABULARY:
      raise ExportError(f'layer {layer["config"].get("name")!r} is a {layer["class_name"]}; exported '
                        f'models may only use {", ".join(sorted(VOCABULARY))}')


def _fix_batch_norm(config, name):
  axis = config.get('axis', -1)
  if isinstance(axis, (list, tuple)):
    if len(axis) != 1:
      raise ExportError(f'BatchNormalization {name!r} normalises over axes {axis}; only a single '
                        'channel axis is portable to Keras 3')
    config['axis'] = int(axis[0])


def _fix_depthwise(config, name):
  groups = config.pop('groups', 1)
  if groups != 1:
    raise ExportError(f'DepthwiseConv2D {name!r} has groups={groups}; only groups=1 exists in Keras 3')


_FIXES = {'BatchNormalization': _fix_batch_norm, 'DepthwiseConv2D': _fix_depthwise}


def to_keras3_config(config):
  """Returns a copy of a tf_keras functional `model.get_config()` that `keras.Model.from_config` reads.

  Args:
    config: the inner functional config (with 'layers', 'input_layers', 'output_layers').

  Returns:
    A new dict; `config` is not modified.

  Raises:
    ExportError: a layer class outside `VOCABULARY`, or a setting Keras 3 cannot express.
  """
  if 'layers' not in config or 'output_layers' not in config:
    raise ExportError('model config is not a functional model (no layers/output_layers); export '
                      'a static functional model from extraction')
  check_layer_classes(config)
  out = copy.deepcopy(config)
  for layer in out['layers']:
    fix = _FIXES.get(layer['class_name'])
    if fix is not None:
      fix(layer['config'], layer['config'].get('name'))
  return out
