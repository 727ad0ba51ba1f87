"""Parameter and MAC counts read off a built Keras model, layer by layer.

This is the independent check of `ofav2_tf.costs`: the analytic counter derives costs from the
architecture table, this module from the layers and weights an extracted model actually has. The
MAC convention is the same (conv and dense multiply-accumulates only).
"""

import numpy as np
import tf_keras


def trainable_params(model) -> int:
  return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _spatial(shape):
  return int(shape[1]) * int(shape[2])


def layer_macs(layer) -> int:
  """MACs of one layer of a built functional model (0 for layers without multiplies)."""
  if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
    kh, kw, channels, multiplier = layer.depthwise_kernel.shape
    return _spatial(layer.output.shape) * kh * kw * channels * multiplier
  if isinstance(layer, tf_keras.layers.Conv2D):
    kh, kw, cin, cout = layer.kernel.shape
    return _spatial(layer.output.shape) * kh * kw * cin * cout
  if isinstance(layer, tf_keras.layers.Dense):
    cin, cout = layer.kernel.shape
    return int(cin) * int(cout)
  return 0


def keras_macs(model) -> int:
  return int(sum(layer_macs(layer) for layer in model.layers))
