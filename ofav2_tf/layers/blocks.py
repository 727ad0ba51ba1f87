"""Elastic blocks of the OFAv2 supernet: the MBConv block, the parallel-branch level, the exit head.

Blocks take the sub-network choice for their position (kernel size, expand ratio, branch pattern)
as int32 scalar tensors. Skipped branches are skipped with `tf.cond`, so a small sub-network also
costs less to run, while the traced graph stays the same for every choice.
"""

import tensorflow as tf
import tf_keras

from ofav2_tf import arch_spec
from ofav2_tf.layers import activations
from ofav2_tf.layers import elastic_ops

_SERIALIZABLE = tf_keras.utils.register_keras_serializable(package='ofav2')


def _bn(momentum, epsilon, name):
  return tf_keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name)


@_SERIALIZABLE
class ElasticMBConv(tf_keras.layers.Layer):
  """Inverted-residual block: [1x1 expand, BN, act], depthwise kxk, BN, act, [SE], 1x1 project, BN.

  Args:
    in_width, out_width, stride, activation, use_se: The block's static spec (see `BlockSpec`).
    kernel_sizes: Elastic depthwise kernel sizes.
    expand_ratios: Elastic expand ratios; the middle width for ratio e is
      make_divisible(round(in_width * e), 8), as in OFA.
    has_expand: False for the fixed first block of the network (expand ratio 1, no 1x1 expand).
    residual: Identity shortcut (blocks 2-4 of a stage).
    bn_momentum, bn_epsilon: Batch-norm settings (Keras momentum convention).
  """

  def __init__(self, in_width, out_width, stride=1, activation='relu', use_se=False,
               kernel_sizes=(3, 5, 7), expand_ratios=(3, 4, 6), has_expand=True,
               residual=False, bn_momentum=0.9, bn_epsilon=1e-5, **kwargs):
    super().__init__(**kwargs)
    self.in_width, self.out_width, self.stride = int(in_width), int(out_width), int(stride)
    self.activation, self.use_se = activation, bool(use_se)
    self.kernel_sizes = tuple(sorted(int(k) for k in kernel_sizes))
    self.expand_ratios = tuple(sorted(int(e) for e in expand_ratios))
    self.has_expand, self.residual = bool(has_expand), bool(residual)
    self.bn_momentum, self.bn_epsilon = float(bn_momentum), float(bn_epsilon)
    if has_expand:
      self.mid_widths = tuple(arch_spec.mid_width(self.in_width, e) for e in self.expand_ratios)
    else:
      self.mid_widths = (self.in_width,) * len(self.expand_ratios)
    self.se_widths = tuple(arch_spec.se_width(m) if use_se else 0 for m in self.mid_widths)
    max_mid = max(self.mid_widths)
    bn = dict(momentum=self.bn_momentum, epsilon=self.bn_epsilon)
    if has_expand:
      self.expand_conv = elastic_ops.ElasticPointwiseConv(self.in_width, max_mid, name='expand_conv')
      self.expand_bn = elastic_ops.ElasticBatchNorm(max_mid, name='expand_bn', **bn)
    self.depthwise = elastic_ops.ElasticDepthwiseConv(max_mid, self.kernel_sizes, self.stride,
                                                      name='depthwise')
    self.depthwise_bn = elastic_ops.ElasticBatchNorm(max_mid, name='depthwise_bn', **bn)
    if use_se:
      self.se = elastic_ops.ElasticSqueezeExcite(max_mid, max(self.se_widths), name='se')
    self.project_conv = elastic_ops.ElasticPointwiseConv(max_mid, self.out_width,
                                                         name='project_conv')
    self.project_bn = elastic_ops.ElasticBatchNorm(self.out_width, name='project_bn', **bn)

  def widths(self, expand_ratio):
    """(middle width, SE hidden width) for an int32 expand-ratio tensor."""
    if len(self.expand_ratios) == 1:
      return self.mid_widths[0], self.se_widths[0]
    index = elastic_ops.index_of(self.expand_ratios, expand_ratio)
    return (tf.gather(tf.constant(self.mid_widths, tf.int32), index),
            tf.gather(tf.constant(self.se_widths, tf.int32), index))

  def call(self, x, kernel_size=None, expand_ratio=None, training=None):
    mid, hidden = self.widths(expand_ratio)
    y = x
    if self.has_expand:
      y = self.expand_conv(y, mid)
      y = activations.apply(self.activation, self.expand_bn(y, training=training))
    y = self.depthwise(y, kernel_size)
    y = activations.apply(self.activation, self.depthwise_bn(y, training=training))
    if self.use_se:
      y = self.se(y, hidden)
    y = self.project_bn(self.project_conv(y), training=training)
    return y + x if self.residual else y

  def get_config(self):
    return {**super().get_config(), 'in_width': self.in_width, 'out_width': self.out_width,
            'stride': self.stride, 'activation': self.activation, 'use_se': self.use_se,
            'kernel_sizes': list(self.kernel_sizes), 'expand_ratios': list(self.expand_ratios),
            'has_expand': self.has_expand, 'residual': self.residual,
            'bn_momentum': self.bn_momentum, 'bn_epsilon': self.bn_epsilon}


@_SERIALIZABLE
class ParallelLevel(tf_keras.layers.Layer):
  """A block position of the parallel variants: three branches on the same input, summed.

  Branches: the elastic MBConv block (with its shortcut where it has one); a 1x1 conv + BN +
  activation with the block's stride and widths; and a transformation op (max-pool of size and
  stride s when s > 1, a 1x1 conv when the width changes, then BN + activation). The active set is
  a 3-bit mask tensor (Elastic Level); inactive branches are not computed.
  """

  def __init__(self, in_width, out_width, stride=1, activation='relu', use_se=False,
               kernel_sizes=(3, 5, 7), expand_ratios=(3, 4, 6), residual=False,
               bn_momentum=0.9, bn_epsilon=1e-5, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(in_width=int(in_width), out_width=int(out_width), stride=int(stride),
                        activation=activation, use_se=bool(use_se),
                        kernel_sizes=list(kernel_sizes), expand_ratios=list(expand_ratios),
                        residual=bool(residual), bn_momentum=float(bn_momentum),
                        bn_epsilon=float(bn_epsilon))
    self.in_width, self.out_width, self.stride = int(in_width), int(out_width), int(stride)
    self.activation = activation
    self.mbconv = ElasticMBConv(in_width, out_width, stride, activation, use_se, kernel_sizes,
                                expand_ratios, residual=residual, bn_momentum=bn_momentum,
                                bn_epsilon=bn_epsilon, name='mbconv')
    self.conv1x1 = tf_keras.layers.Conv2D(out_width, 1, strides=stride, padding='same',
                                          use_bias=False, name='conv1x1')
    self.conv1x1_bn = _bn(bn_momentum, bn_epsilon, 'conv1x1_bn')
    self.transform_pool = (tf_keras.layers.MaxPooling2D(stride, stride, padding='same',
                                                        name='transform_pool')
                           if stride > 1 else None)
    self.transform_conv = (tf_keras.layers.Conv2D(out_width, 1, padding='same', use_bias=False,
                                                  name='transform_conv')
                           if in_width != out_width else None)
    self.transform_bn = _bn(bn_momentum, bn_epsilon, 'transform_bn')

  def _conv_branch(self, x, training):
    return activations.apply(self.activation,
                             self.conv1x1_bn(self.conv1x1(x), training=training))

  def _transform_branch(self, x, training):
    if self.transform_pool is not None:
      x = self.transform_pool(x)
    if self.transform_conv is not None:
      x = self.transform_conv(x)
    return activations.apply(self.activation, self.transform_bn(x, training=training))

  def call(self, x, kernel_size=None, expand_ratio=None, branches=None, training=None):
    branch_fns = (lambda: self.mbconv(x, kernel_size, expand_ratio, training=training),
                  lambda: self._conv_branch(x, training),
                  lambda: self._transform_branch(x, training))
    if branches is None:  # all branches
      outputs = [fn() for fn in branch_fns]
      return outputs[0] + outputs[1] + outputs[2]
    shape = tf.shape(x)
    s = self.stride
    out_shape = tf.stack([shape[0], (shape[1] + s - 1) // s, (shape[2] + s - 1) // s,
                          self.out_width])
    total = None
    for bit, fn in enumerate(branch_fns):
      active = tf.not_equal(tf.bitwise.bitwise_and(branches, 1 << bit), 0)
      y = tf.cond(active, fn, lambda: tf.zeros(out_shape, x.dtype))
      total = y if total is None else total + y
    return total

  def get_config(self):
    return {**super().get_config(), **self._config}


def level_from_spec(layer_cls, spec: arch_spec.BlockSpec, kernel_sizes, expand_ratios, **kwargs):
  """Builds an `ElasticMBConv` or `ParallelLevel` for one block position of the stage table."""
  return layer_cls(spec.in_width, spec.out_width, spec.stride, spec.activation, spec.use_se,
                   kernel_sizes, expand_ratios, residual=spec.residual, **kwargs)


@_SERIALIZABLE
class ExitHead(tf_keras.layers.Layer):
  """Classifier head after a stage: 1x1 conv to 6C, BN, h-swish, pool, dense to 8C, h-swish,
  dropout, dense to the classes. The last stage's head is the OFA MobileNetV3 head."""

  def __init__(self, in_width, num_classes, dropout=0.1, bn_momentum=0.9, bn_epsilon=1e-5,
               **kwargs):
    super().__init__(**kwargs)
    self.in_width, self.num_classes = int(in_width), int(num_classes)
    self.dropout_rate, self.bn_momentum, self.bn_epsilon = float(dropout), bn_momentum, bn_epsilon
    feature, mix = arch_spec.HEAD_EXPAND * self.in_width, arch_spec.HEAD_MIX * self.in_width
    self.conv = tf_keras.layers.Conv2D(feature, 1, use_bias=False, name='conv')
    self.bn = _bn(bn_momentum, bn_epsilon, 'bn')
    self.pool = tf_keras.layers.GlobalAveragePooling2D(name='pool')
    self.mix = tf_keras.layers.Dense(mix, use_bias=False, name='mix')
    self.dropout = tf_keras.layers.Dropout(self.dropout_rate, name='dropout')
    self.classifier = tf_keras.layers.Dense(self.num_classes, name='classifier')

  def call(self, x, training=None):
    y = activations.hard_swish(self.bn(self.conv(x), training=training))
    y = activations.hard_swish(self.mix(self.pool(y)))
    return self.classifier(self.dropout(y, training=training))

  def get_config(self):
    return {**super().get_config(), 'in_width': self.in_width, 'num_classes': self.num_classes,
            'dropout': self.dropout_rate, 'bn_momentum': self.bn_momentum,
            'bn_epsilon': self.bn_epsilon}
