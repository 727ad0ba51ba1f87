"""Extraction: any sub-network of the supernet as a static Keras model of standard layers only.

The result is a plain `tf_keras` functional model (Conv2D, DepthwiseConv2D, BatchNormalization,
ReLU, Rescaling, Multiply, Add, pooling, Dense, Dropout) with the sliced weights and the
transformed depthwise kernels copied in. It has no Lambda layers and no custom classes, so it loads
with `tf_keras.models.load_model(path, safe_mode=True)` in a process that never imports this
package, and its outputs equal the supernet's for the same sub-network (see tests).

Hard-sigmoid is built from standard layers as clip(x / 6 + 1/2, 0, 1) = Rescaling(1/6, 0.5) then
ReLU(max_value=1), which equals relu6(x + 3) / 6; hard-swish multiplies it with x.

Layer names are systematic: `stage{s}_block{b}[_{branch}]_{op}`, `exit{k}_{op}`, outputs `exit{k}`.
"""

from typing import Iterable, Optional, Union

import numpy as np
import tf_keras

from ofav2_tf import arch_spec
from ofav2_tf import errors
from ofav2_tf import subnet_config as sc
from ofav2_tf.layers import blocks

L = tf_keras.layers


def hard_sigmoid_layers(x, name):
  x = L.Rescaling(1.0 / 6.0, offset=0.5, name=f'{name}_hsig_scale')(x)
  return L.ReLU(max_value=1.0, name=f'{name}_hsig')(x)


def activation_layers(x, activation, name):
  if activation == 'relu':
    return L.ReLU(name=f'{name}_relu')(x)
  if activation == 'hswish':
    return L.Multiply(name=f'{name}_hswish')([x, hard_sigmoid_layers(x, name)])
  raise errors.ConfigError(f'unknown activation {activation!r}; valid: relu, hswish')


class _Builder:
  """Builds the functional graph and records (layer, weights) to copy in after building."""

  def __init__(self, supernet):
    self.net = supernet
    self.assignments = []

  def _assign(self, layer, weights):
    self.assignments.append((layer, [np.asarray(w) for w in weights]))

  def bn(self, x, source, channels, name):
    layer = L.BatchNormalization(momentum=self.net.bn_momentum, epsilon=self.net.bn_epsilon,
                                 name=name)
    y = layer(x)
    self._assign(layer, [v.numpy()[:channels] for v in
                         (source.gamma, source.beta, source.moving_mean, source.moving_variance)])
    return y

  def keras_bn(self, x, source, name):
    layer = L.BatchNormalization(momentum=self.net.bn_momentum, epsilon=self.net.bn_epsilon,
                                 name=name)
    y = layer(x)
    self._assign(layer, source.get_weights())
    return y

  def conv(self, x, kernel, name, stride=1, bias=None):
    layer = L.Conv2D(kernel.shape[-1], kernel.shape[0], strides=stride, padding='same',
                     use_bias=bias is not None, name=name)
    y = layer(x)
    self._assign(layer, [kernel] + ([bias] if bias is not None else []))
    return y

  def mbconv(self, x, block: blocks.ElasticMBConv, kernel_size, expand_ratio, name):
    index = block.expand_ratios.index(expand_ratio) if block.has_expand else 0
    mid, hidden = block.mid_widths[index], block.se_widths[index]
    y = x
    if block.has_expand:
      y = self.conv(y, block.expand_conv.kernel.numpy()[:, :, :, :mid], f'{name}_expand_conv')
      y = self.bn(y, block.expand_bn, mid, f'{name}_expand_bn')
      y = activation_layers(y, block.activation, f'{name}_expand')
    dw = L.DepthwiseConv2D(kernel_size, strides=block.stride, padding='same', use_bias=False,
                           name=f'{name}_depthwise')
    y = dw(y)
    self._assign(dw, [block.depthwise.kernel_for(kernel_size, mid).numpy()])
    y = self.bn(y, block.depthwise_bn, mid, f'{name}_depthwise_bn')
    y = activation_layers(y, block.activation, f'{name}_depthwise')
    if block.use_se:
      se = block.se
      s = L.GlobalAveragePooling2D(keepdims=True, name=f'{name}_se_pool')(y)
      s = self.conv(s, se.reduce_kernel.numpy()[None, None, :mid, :hidden], f'{name}_se_reduce',
                    bias=se.reduce_bias.numpy()[:hidden])
      s = L.ReLU(name=f'{name}_se_relu')(s)
      s = self.conv(s, se.expand_kernel.numpy()[None, None, :hidden, :mid], f'{name}_se_expand',
                    bias=se.expand_bias.numpy()[:mid])
      s = hard_sigmoid_layers(s, f'{name}_se')
      y = L.Multiply(name=f'{name}_se_multiply')([y, s])
    y = self.conv(y, block.project_conv.kernel.numpy()[:, :, :mid, :], f'{name}_project_conv')
    y = self.bn(y, block.project_bn, block.out_width, f'{name}_project_bn')
    if block.residual:
      y = L.Add(name=f'{name}_residual')([y, x])
    return y

  def parallel_level(self, x, level: blocks.ParallelLevel, kernel_size, expand_ratio, pattern,
                     name):
    outputs = []
    if pattern & sc.BRANCH_MBCONV:
      outputs.append(self.mbconv(x, level.mbconv, kernel_size, expand_ratio, f'{name}_mbconv'))
    if pattern & sc.BRANCH_CONV1X1:
      y = self.conv(x, level.conv1x1.kernel.numpy(), f'{name}_conv1x1', stride=level.stride)
      y = self.keras_bn(y, level.conv1x1_bn, f'{name}_conv1x1_bn')
      outputs.append(activation_layers(y, level.activation, f'{name}_conv1x1'))
    if pattern & sc.BRANCH_TRANSFORM:
      y = x
      if level.transform_pool is not None:
        y = L.MaxPooling2D(level.stride, level.stride, padding='same',
                           name=f'{name}_transform_pool')(y)
      if level.transform_conv is not None:
        y = self.conv(y, level.transform_conv.kernel.numpy(), f'{name}_transform_conv')
      y = self.keras_bn(y, level.transform_bn, f'{name}_transform_bn')
      outputs.append(activation_layers(y, level.activation, f'{name}_transform'))
    if len(outputs) == 1:
      return outputs[0]
    return L.Add(name=f'{name}_sum')(outputs)

  def head(self, x, head: blocks.ExitHead, name):
    y = self.conv(x, head.conv.kernel.numpy(), f'{name}_conv')
    y = self.keras_bn(y, head.bn, f'{name}_bn')
    y = activation_layers(y, 'hswish', f'{name}_conv')
    y = L.GlobalAveragePooling2D(name=f'{name}_pool')(y)
    mix = L.Dense(head.mix.units, use_bias=False, name=f'{name}_mix')
    y = mix(y)
    self._assign(mix, head.mix.get_weights())
    y = activation_layers(y, 'hswish', f'{name}_mix')
    y = L.Dropout(head.dropout_rate, name=f'{name}_dropout')(y)
    classifier = L.Dense(head.num_classes, name=name)
    y = classifier(y)
    self._assign(classifier, head.classifier.get_weights())
    return y


def resolve_exits(supernet, config: sc.SubnetConfig,
                  exits: Union[None, str, Iterable[int]]) -> list:
  """The exits an extraction returns: [config.exit] by default, 'all' for every exit up to 5."""
  if exits is None:
    return [config.exit]
  valid = [s + 1 for s in supernet.exit_stages]
  if exits == 'all':
    exits = valid
  exits = sorted(set(int(e) for e in exits))
  bad = [e for e in exits if e not in valid]
  if bad or not exits:
    raise errors.ConfigError(f'exits {bad or exits} are not available; valid exits for '
                             f'{supernet.variant.name}: {valid}')
  return exits


def extract(supernet, config: sc.SubnetConfig, exits=None, name: Optional[str] = None,
            batch_size: Optional[int] = None, any_resolution: bool = False) -> tf_keras.Model:
  """Builds the static Keras model of `config` with the supernet's current weights.

  Args:
    supernet: A built `OFASupernet`.
    config: The sub-network (validated against the supernet's space, any resolution).
    exits: None for the config's own exit; 'all' or a list of exit numbers (early-exit variants)
      for a multi-output model whose stages run up to the largest exit.
    name: Model name.
    batch_size: Fixed batch size of the input (None = any; TFLite export uses 1).
    any_resolution: Accept any input size instead of the config's resolution (the weights do not
      depend on it; deployment files want the fixed size).

  Returns:
    A functional `tf_keras.Model` with one output per exit, named `exit{k}`.
  """
  space = supernet.search_space(resolutions=(config.resolution,))
  exits = resolve_exits(supernet, config, exits)
  # Every stage up to the largest requested exit must hold valid choices.
  space.validate(config.replace(exit=max(exits)))
  builder = _Builder(supernet)
  net = supernet
  size = None if any_resolution else config.resolution
  image = L.Input((size, size, 3), batch_size=batch_size, name='image')
  x = builder.conv(image, net.stem_conv.kernel.numpy(), 'stem_conv', stride=2)
  x = builder.keras_bn(x, net.stem_bn, 'stem_bn')
  x = activation_layers(x, 'hswish', 'stem')
  x = builder.mbconv(x, net.first_block, 3, 1, 'first_block')
  outputs = []
  for stage in range(max(exits)):
    ys = []
    inputs = x
    for index in range(config.depth[stage]):
      b = stage * arch_spec.BLOCKS_PER_STAGE + index
      level = net.levels[stage][index]
      block_name = f'stage{stage + 1}_block{index + 1}'
      if net.variant.parallel:
        y = builder.parallel_level(inputs, level, config.kernel[b], config.expand[b],
                                   config.branches[b], block_name)
      else:
        y = builder.mbconv(inputs, level, config.kernel[b], config.expand[b], block_name)
      ys.append(y)
      inputs = ys[-1]
      if net.variant.dense and len(ys) >= 3:
        inputs = L.Add(name=f'stage{stage + 1}_dense_after_block{index + 1}')(
            [ys[-1]] + ys[:-2])
    x = inputs
    if stage + 1 in exits:
      outputs.append(builder.head(x, net.head(stage), f'exit{stage + 1}'))
  model = tf_keras.Model(image, outputs if len(outputs) > 1 else outputs[0],
                         name=name or f'{net.variant.name}_subnet')
  for layer, weights in builder.assignments:
    layer.set_weights(weights)
  return model
