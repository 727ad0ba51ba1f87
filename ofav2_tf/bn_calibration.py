"""BatchNorm re-calibration of a sub-network (DESIGN.md 2.1).

Weight sharing leaves the supernet's moving statistics as a blend over every sub-network trained;
a sub-network's own statistics must be re-estimated before it is evaluated or exported. We run
batches through the network in training mode with momentum 0 (so each BN's moving statistics become
that batch's statistics), average them over the batches and store the averages, as OFA does.

Works on the supernet (only the sub-network's active channels change) and on any Keras model with
standard `BatchNormalization` layers, e.g. an extracted model: both use the same fused kernel, so the
two re-calibrations give the same statistics for the same images.
"""

import contextlib
from typing import Callable, Iterable, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import errors
from ofav2_tf.layers import elastic_ops

BN_TYPES = (tf_keras.layers.BatchNormalization, elastic_ops.ElasticBatchNorm)


def batch_norm_layers(model) -> list:
  """Every BN layer inside `model` (standard or elastic), each once."""
  seen, layers = set(), []
  for module in model.submodules:
    if isinstance(module, BN_TYPES) and id(module) not in seen:
      seen.add(id(module))
      layers.append(module)
  return layers


@contextlib.contextmanager
def zero_momentum(layers):
  """Sets every BN layer's momentum to 0 (moving statistics := the batch's) inside the block.

  The layers read `momentum` as a Python number when they run, and a traced forward reads it once,
  when it is traced: a calibration forward traced inside this block keeps momentum 0 for good.
  """
  saved = [layer.momentum for layer in layers]
  try:
    for layer in layers:
      layer.momentum = 0.0
    yield
  finally:
    for layer, momentum in zip(layers, saved):
      layer.momentum = momentum


def recalibrate(model, batches: Iterable, forward: Optional[Callable] = None,
                max_images: Optional[int] = None) -> int:
  """Replaces the moving statistics of every BN in `model` by averages over `batches`.

  Args:
    model: A Keras model or layer holding the BN layers.
    batches: Iterable of image batches (or (images, labels) tuples).
    forward: Runs one batch in training mode; default `model(images, training=True)`. For the
      supernet pass e.g. `lambda x: supernet(x, arch, training=True)`.
    max_images: Stop after this many images.

  Returns:
    The number of images used.
  """
  layers = batch_norm_layers(model)
  if not layers:
    return 0
  forward = forward or (lambda images: model(images, training=True))
  sums = [[np.zeros(layer.moving_mean.shape, np.float64),
           np.zeros(layer.moving_variance.shape, np.float64)] for layer in layers]
  seen = count = 0
  with zero_momentum(layers):
    # Eager by default: a fresh trace of the supernet costs far more than a few eager batches, and
    # eager calls read the momentum set here. A caller that re-calibrates many sub-networks passes
    # a traced `forward` instead (see `phase_eval.Evaluator`).
    for batch in batches:
      images = batch[0] if isinstance(batch, (tuple, list)) else batch
      if max_images is not None:
        images = images[:max_images - seen]
      if int(tf.shape(images)[0]) == 0:
        break
      forward(images)
      for layer, acc in zip(layers, sums):
        acc[0] += layer.moving_mean.numpy()
        acc[1] += layer.moving_variance.numpy()
      count += 1
      seen += int(tf.shape(images)[0])
      if max_images is not None and seen >= max_images:
        break
  if count == 0:
    raise errors.DataError('BN re-calibration got no images; give a non-empty batch iterator')
  for layer, (mean_sum, var_sum) in zip(layers, sums):
    layer.moving_mean.assign((mean_sum / count).astype(np.float32))
    layer.moving_variance.assign((var_sum / count).astype(np.float32))
  return seen
