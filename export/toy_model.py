"""A small early-exit network in the extraction's layer vocabulary, for exporter tests and demos.

Extraction (supernet -> static model) produces plain tf_keras functional models built only from:
Conv2D (with and without bias), DepthwiseConv2D, BatchNormalization, ReLU (with max_value),
hard-sigmoid as Rescaling(1/6, 0.5) + ReLU(max_value=1), hard-swish as Multiply([x, hard_sigmoid(x)]),
squeeze-excite (pool, 1x1 conv, ReLU, 1x1 conv, hard-sigmoid, Multiply), Add (residual and dense
skips), MaxPooling2D, GlobalAveragePooling2D, Dense (with and without bias) and Dropout. This module
builds a scaled-down model from exactly that vocabulary so the exporter can be developed and tested
before (and independently of) the supernet.

Its BatchNorm statistics are set from a batch of images (as BN re-calibration does for a real
sub-network), so activations have realistic ranges and int8 calibration behaves as on a real model.
"""

import numpy as np
import tensorflow as tf
import tf_keras

_L = tf_keras.layers


def _hard_sigmoid(x, name):
  x = _L.Rescaling(scale=1.0 / 6.0, offset=0.5, name=name + '_hsig_scale')(x)
  return _L.ReLU(max_value=1.0, name=name + '_hsig_clip')(x)


def _hard_swish(x, name):
  return _L.Multiply(name=name + '_hswish')([x, _hard_sigmoid(x, name)])


def _relu6(x, name):
  return _L.ReLU(max_value=6.0, name=name + '_relu6')(x)


def _bn(x, name):
  # momentum 0: one training-mode pass sets the moving statistics to that batch's (see build).
  return _L.BatchNormalization(momentum=0.0, epsilon=1e-5, name=name)(x)


def _squeeze_excite(x, channels, name):
  hidden = max(8, channels // 4)
  s = _L.GlobalAveragePooling2D(keepdims=True, name=name + '_se_pool')(x)
  s = _L.Conv2D(hidden, 1, name=name + '_se_reduce')(s)
  s = _L.ReLU(name=name + '_se_relu')(s)
  s = _L.Conv2D(channels, 1, name=name + '_se_expand')(s)
  s = _hard_sigmoid(s, name + '_se')
  return _L.Multiply(name=name + '_se_scale')([x, s])


def _mbconv(x, out_channels, stride, activation, use_se, name, expand=3, kernel=3):
  mid = int(x.shape[-1]) * expand
  h = _L.Conv2D(mid, 1, use_bias=False, name=name + '_expand')(x)
  h = activation(_bn(h, name + '_expand_bn'), name + '_expand')
  h = _L.DepthwiseConv2D(kernel, strides=stride, padding='same', use_bias=False,
                         name=name + '_dw')(h)
  h = activation(_bn(h, name + '_dw_bn'), name + '_dw')
  if use_se:
    h = _squeeze_excite(h, mid, name)
  h = _L.Conv2D(out_channels, 1, use_bias=False, name=name + '_project')(h)
  return _bn(h, name + '_project_bn')


def _stage(x, width, stride, depth, activation, use_se, name):
  """Blocks with identity shortcuts after the first, plus OFAv2 dense skips (y_d + y1..y_{d-2})."""
  ys = [_mbconv(x, width, stride, activation, use_se, f'{name}_b1')]
  for b in range(2, depth + 1):
    inp = ys[-1]
    if b == 4:  # block 4 reads y3 + y1.
      inp = _L.Add(name=f'{name}_b4_in')([ys[2], ys[0]])
    y = _mbconv(inp, width, 1, activation, use_se, f'{name}_b{b}')
    ys.append(_L.Add(name=f'{name}_b{b}_res')([inp, y]))
  if depth >= 3:
    return _L.Add(name=f'{name}_dense')([ys[-1]] + ys[:depth - 2])
  return ys[-1]


def _exit_head(x, num_classes, name):
  c = int(x.shape[-1])
  h = _L.Conv2D(2 * c, 1, use_bias=False, name=name + '_conv')(x)
  h = _hard_swish(_bn(h, name + '_bn'), name + '_conv')
  h = _L.GlobalAveragePooling2D(name=name + '_pool')(h)
  h = _L.Dense(3 * c, use_bias=False, name=name + '_fc')(h)
  h = _hard_swish(h, name + '_fc')
  h = _L.Dropout(0.1, name=name + '_dropout')(h)
  return _L.Dense(num_classes, name=name)(h)


_STAGES = (  # width, stride, depth, activation, squeeze-excite
    (16, 2, 3, _relu6, False),
    (24, 2, 2, _hard_swish, True),
    (32, 1, 4, _hard_swish, True),
)


def synthetic_images(count, resolution, seed=0):
  """Smooth random colour images, normalised like training input (roughly zero mean, unit std).

  Smooth fields rather than white noise, so that calibration ranges and activations look like those
  of natural images (white noise saturates the first layers).
  """
  rng = np.random.default_rng(seed)
  coarse = rng.normal(0.0, 1.0, (count, 4, 4, 3)).astype(np.float32)
  images = tf.image.resize(coarse, (resolution, resolution), method='bicubic').numpy()
  ramp = np.linspace(-1.0, 1.0, resolution, dtype=np.float32)
  slope = rng.normal(0.0, 0.5, (count, 1, 1, 3)).astype(np.float32)
  images += slope * ramp[np.newaxis, :, np.newaxis, np.newaxis]
  images += rng.normal(0.0, 0.05, images.shape).astype(np.float32)
  return images.astype(np.float32)


def build_toy_model(resolution=32, num_classes=10, num_exits=2, seed=0, name='toy_ee'):
  """Builds a seeded early-exit model with realistic BatchNorm statistics.

  Args:
    resolution: input height and width.
    num_classes: logits per exit.
    num_exits: 1 to 3 exits, one after each of the first `num_exits` stages; outputs are named
      'exit1', 'exit2', ... in stage order.
    seed: seeds weights, BN affine parameters and the images used for BN statistics.
    name: model name.

  Returns:
    A tf_keras functional model with input 'image' [None, resolution, resolution, 3] and one logits
    output per exit.

  Note: seeds the global random generators (tf_keras.utils.set_random_seed) so weights repeat.
  """
  if not 1 <= num_exits <= len(_STAGES):
    raise ValueError(f'num_exits={num_exits}; expected 1..{len(_STAGES)}')
  tf_keras.utils.set_random_seed(seed)
  image = _L.Input((resolution, resolution, 3), name='image')
  x = _L.Conv2D(8, 3, strides=2, padding='same', use_bias=False, name='stem')(image)
  x = _hard_swish(_bn(x, 'stem_bn'), 'stem')
  x = _L.MaxPooling2D(2, name='stem_pool')(x)
  exits = []
  for i, (width, stride, depth, act, se) in enumerate(_STAGES[:num_exits]):
    x = _stage(x, width, stride, depth, act, se, f'stage{i + 1}')
    exits.append(_exit_head(x, num_classes, f'exit{i + 1}'))
  model = tf_keras.Model(image, exits, name=name)

  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, _L.BatchNormalization):
      gamma, beta, mean, var = layer.get_weights()
      layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                         rng.normal(0.0, 0.2, beta.shape).astype(np.float32), mean, var])
  # One training-mode pass with momentum 0 stores each BN's batch statistics as its moving ones.
  model(synthetic_images(64, resolution, seed=seed + 1), training=True)
  return model
