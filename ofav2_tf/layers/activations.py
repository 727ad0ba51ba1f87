"""Activations of the MobileNetV3 space as plain TensorFlow ops, chosen by name from a registry.

The supernet applies them as functions (no weights); extraction turns the same names into standard
serialisable Keras layers (see `ofav2_tf.extraction`), so both sides agree on one definition:
hard-sigmoid(x) = relu6(x + 3) / 6 and hard-swish(x) = x * hard-sigmoid(x).
"""

import tensorflow as tf

from ofav2_tf import registry

ACTIVATIONS = registry.Registry('activation')


@ACTIVATIONS.register('relu')
def relu(x):
  return tf.nn.relu(x)


@ACTIVATIONS.register('hsigmoid')
def hard_sigmoid(x):
  return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


@ACTIVATIONS.register('hswish')
def hard_swish(x):
  return x * hard_sigmoid(x)


def apply(name: str, x):
  return ACTIVATIONS.get(name)(x)
