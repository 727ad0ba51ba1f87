"""Elastic conv, depthwise conv, batch norm and squeeze-excite layers.

Each layer owns its weights at the maximum size and receives the active size as an int32 tensor,
so a single traced graph serves every sub-network: changing the sub-network changes tensor values,
never Python values, and therefore never retraces. Input widths of the OFA MobileNetV3 space are
fixed; only the middle width of a block (set by its expand ratio) and the depthwise kernel size are
elastic, and they are sliced from the leading channels / the kernel's centre.
"""

import tensorflow as tf
import tf_keras

from ofav2_tf.layers import activations

_SERIALIZABLE = tf_keras.utils.register_keras_serializable(package='ofav2')


def index_of(choices, value):
  """Position of an int32 `value` tensor in the sorted tuple `choices` (as an int32 tensor)."""
  return tf.reduce_sum(tf.cast(tf.constant(choices, tf.int32) < value, tf.int32))


def crop_to_map(kernel, height, width):
  """The centre taps of a stride-1 'SAME' kernel that can reach an input of height x width.

  A k x k kernel on an h x w map only ever multiplies padding with its taps beyond the central
  (2h - 1) x (2w - 1), so the cropped kernel gives the same output and the same gradients (zero
  for the cut taps). It matters because the late stages run 7x7 kernels on 1-3 px maps at the
  demo's 32-40 px, and TensorFlow's depthwise filter gradient costs about 14x as much at 7x7 as
  at 3x3 (`benchmarks/elastic_step` measures the whole step).
  """
  size = tf.shape(kernel)
  rows = tf.minimum(size[0], 2 * height - 1)
  cols = tf.minimum(size[1], 2 * width - 1)
  return tf.slice(kernel, [(size[0] - rows) // 2, (size[1] - cols) // 2, 0, 0],
                  [rows, cols, -1, -1])


def _kernel_init():
  return tf_keras.initializers.VarianceScaling(2.0, mode='fan_out', distribution='truncated_normal')


@_SERIALIZABLE
class ElasticPointwiseConv(tf_keras.layers.Layer):
  """1x1 conv whose input and output channels are the leading ones of a max-size kernel.

  Args:
    max_in: Largest input width.
    max_out: Largest output width.
    use_bias: Add a bias (squeeze-excite convs) or not (convs followed by BN).
  """

  def __init__(self, max_in: int, max_out: int, use_bias: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.max_in, self.max_out, self.use_bias = int(max_in), int(max_out), bool(use_bias)

  def build(self, input_shape=None):
    self.kernel = self.add_weight('kernel', [1, 1, self.max_in, self.max_out],
                                  initializer=_kernel_init())
    self.bias = self.add_weight('bias', [self.max_out], initializer='zeros') if self.use_bias else None
    super().build(input_shape)

  def active_kernel(self, in_channels, out_channels):
    return self.kernel[:, :, :in_channels, :out_channels]

  def call(self, x, out_channels=None):
    in_channels = tf.shape(x)[-1] if x.shape[-1] != self.max_in else self.max_in
    out_channels = self.max_out if out_channels is None else out_channels
    y = tf.nn.conv2d(x, self.active_kernel(in_channels, out_channels), 1, 'SAME')
    if self.use_bias:
      y = tf.nn.bias_add(y, self.bias[:out_channels])
    return y

  def get_config(self):
    return {**super().get_config(), 'max_in': self.max_in, 'max_out': self.max_out,
            'use_bias': self.use_bias}


@_SERIALIZABLE
class ElasticDepthwiseConv(tf_keras.layers.Layer):
  """Depthwise conv with OFA's elastic kernel.

  One max-size kernel is stored; a smaller kernel is the centre crop of the next larger one passed
  through a learned (k*k x k*k) transform, shared across channels and initialised to identity
  (7 -> 5 through a 25x25 matrix, 5 -> 3 through a 9x9 one), so small kernels can drift from the
  large kernel's centre without owning separate weights.

  Args:
    max_channels: Largest number of channels.
    kernel_sizes: Allowed kernel sizes, odd.
    stride: Spatial stride.
  """

  def __init__(self, max_channels: int, kernel_sizes=(3, 5, 7), stride: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.max_channels = int(max_channels)
    self.kernel_sizes = tuple(sorted(int(k) for k in kernel_sizes))
    self.stride = int(stride)

  def build(self, input_shape=None):
    kmax = self.kernel_sizes[-1]
    self.depthwise_kernel = self.add_weight(
        'depthwise_kernel', [kmax, kmax, self.max_channels, 1], initializer=_kernel_init())
    self.transforms = {}
    for k in self.kernel_sizes[:-1]:
      self.transforms[f'k{k}'] = self.add_weight(f'transform_{k}x{k}', [k * k, k * k],
                                           initializer=tf_keras.initializers.Identity())
    super().build(input_shape)

  def kernel_for(self, kernel_size: int, channels=None):
    """The effective [k, k, channels, 1] kernel for a Python kernel size."""
    channels = self.max_channels if channels is None else channels
    kernel = self.depthwise_kernel[:, :, :channels, :]
    current = self.kernel_sizes[-1]
    for k in reversed(self.kernel_sizes[:-1]):
      if k < kernel_size:
        break
      start = (current - k) // 2
      crop = kernel[start:start + k, start:start + k, :, :]
      flat = tf.reshape(tf.transpose(crop, [2, 3, 0, 1]), [-1, k * k])
      flat = tf.matmul(flat, self.transforms[f'k{k}'])
      kernel = tf.transpose(tf.reshape(flat, [-1, 1, k, k]), [2, 3, 0, 1])
      current = k
    return kernel

  def call(self, x, kernel_size=None):
    channels = tf.shape(x)[-1] if x.shape[-1] != self.max_channels else self.max_channels
    if kernel_size is None or len(self.kernel_sizes) == 1:
      kernel = self.kernel_for(self.kernel_sizes[-1], channels)
    else:
      kernel = tf.switch_case(
          index_of(self.kernel_sizes, kernel_size),
          [lambda k=k: self.kernel_for(k, channels) for k in self.kernel_sizes])
    if self.stride == 1:
      kernel = crop_to_map(kernel, tf.shape(x)[1], tf.shape(x)[2])
    return tf.nn.depthwise_conv2d(x, kernel, [1, self.stride, self.stride, 1], 'SAME')

  def get_config(self):
    return {**super().get_config(), 'max_channels': self.max_channels,
            'kernel_sizes': list(self.kernel_sizes), 'stride': self.stride}


@_SERIALIZABLE
class ElasticBatchNorm(tf_keras.layers.Layer):
  """Batch norm over the leading channels of max-size parameters.

  In training mode it normalises with batch statistics (fused kernel) and updates the moving
  statistics of the active channels only, so training a small sub-network does not disturb the
  statistics of channels it did not use. `momentum` follows the Keras convention (0.9 keeps 90% of
  the old statistic).
  """

  def __init__(self, max_channels: int, momentum: float = 0.9, epsilon: float = 1e-5, **kwargs):
    super().__init__(**kwargs)
    self.max_channels, self.momentum, self.epsilon = int(max_channels), float(momentum), float(epsilon)

  def build(self, input_shape=None):
    c = self.max_channels
    self.gamma = self.add_weight('gamma', [c], initializer='ones')
    self.beta = self.add_weight('beta', [c], initializer='zeros')
    on_read = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                   aggregation=tf.VariableAggregation.MEAN)
    self.moving_mean = self.add_weight('moving_mean', [c], initializer='zeros', **on_read)
    self.moving_variance = self.add_weight('moving_variance', [c], initializer='ones', **on_read)
    super().build(input_shape)

  def call(self, x, training=None):
    c = tf.shape(x)[-1] if x.shape[-1] != self.max_channels else self.max_channels
    full = isinstance(c, int)
    gamma = self.gamma if full else self.gamma[:c]
    beta = self.beta if full else self.beta[:c]
    if training:
      y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
          x, gamma, beta, epsilon=self.epsilon, is_training=True)
      self._update(self.moving_mean, mean, c, full)
      self._update(self.moving_variance, variance, c, full)
      return y
    mean = self.moving_mean if full else self.moving_mean[:c]
    variance = self.moving_variance if full else self.moving_variance[:c]
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, mean=mean, variance=variance,
                                               epsilon=self.epsilon, is_training=False)
    return y

  def _update(self, variable, batch_value, c, full):
    if full:
      variable.assign(variable * self.momentum + batch_value * (1.0 - self.momentum))
      return
    active = variable[:c] * self.momentum + batch_value * (1.0 - self.momentum)
    variable.assign(tf.concat([active, variable[c:]], axis=0))

  def get_config(self):
    return {**super().get_config(), 'max_channels': self.max_channels,
            'momentum': self.momentum, 'epsilon': self.epsilon}


@_SERIALIZABLE
class ElasticSqueezeExcite(tf_keras.layers.Layer):
  """Squeeze-excite over the active middle channels with an elastic hidden width.

  Gate = hard-sigmoid(W2 relu(W1 mean(x) + b1) + b2); both matrices are sliced to the active
  (channels, hidden) corner of the max-size weights.
  """

  def __init__(self, max_channels: int, max_hidden: int, **kwargs):
    super().__init__(**kwargs)
    self.max_channels, self.max_hidden = int(max_channels), int(max_hidden)

  def build(self, input_shape=None):
    self.reduce_kernel = self.add_weight('reduce_kernel', [self.max_channels, self.max_hidden],
                                         initializer=_kernel_init())
    self.reduce_bias = self.add_weight('reduce_bias', [self.max_hidden], initializer='zeros')
    self.expand_kernel = self.add_weight('expand_kernel', [self.max_hidden, self.max_channels],
                                         initializer=_kernel_init())
    self.expand_bias = self.add_weight('expand_bias', [self.max_channels], initializer='zeros')
    super().build(input_shape)

  def call(self, x, hidden=None):
    c = tf.shape(x)[-1] if x.shape[-1] != self.max_channels else self.max_channels
    hidden = self.max_hidden if hidden is None else hidden
    pooled = tf.reduce_mean(x, axis=[1, 2])
    s = tf.nn.relu(tf.matmul(pooled, self.reduce_kernel[:c, :hidden]) + self.reduce_bias[:hidden])
    gate = activations.hard_sigmoid(tf.matmul(s, self.expand_kernel[:hidden, :c])
                                    + self.expand_bias[:c])
    return x * gate[:, None, None, :]

  def get_config(self):
    return {**super().get_config(), 'max_channels': self.max_channels,
            'max_hidden': self.max_hidden}
