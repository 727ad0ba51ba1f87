"""Quantization-aware fine-tuning (QAT) of an extracted sub-network, and its int8 TFLite conversion.

Post-training quantization (export.tflite_convert.convert_int8) rounds a network trained in
float; QAT fine-tunes it a few steps with the rounding simulated (tensorflow-model-optimization's
fake-quant nodes), so the weights adapt to it. Flow: `quantization_aware_finetune` (annotate, apply,
initialise ranges, train) then `convert_qat_int8` (full-integer int8 TFLite, int8 in/out, builtin
ops, batch 1).

tfmot and Keras generations (tensorflow-model-optimization 0.8.1, TF 2.21, tf_keras 2.21): tfmot
only works with Keras 2. On import it sets TF_USE_LEGACY_KERAS=1 in `os.environ` and takes its Keras
from `tf.keras` if that is Keras 2, else from `tf_keras` explicitly; so in this process `tf.keras`
either becomes tf_keras (first touched after the import) or stays Keras 3 (touched before) and tfmot
still builds tf_keras layers. Both orders were checked: tfmot's layer classes ARE tf_keras's, so an
extracted tf_keras model quantizes as is. Side effects to know about: the variable leaks into child
processes (export.keras_portability removes it for its Keras 3 children) and into any later
`tf.keras` lookup in this process (project code only uses `tf_keras`).

Which layers need a custom QuantizeConfig (extraction vocabulary, DESIGN.md 3):
- Rescaling (the affine half of hard-sigmoid, x/6 + 1/2): not in tfmot's default registry, which
  rejects the model. `OutputQuantizeConfig`: no weights, output fake-quantized with a learned range.
- Multiply (hard-swish x * hsig(x), and the squeeze-excite gate): not in the registry either; same
  `OutputQuantizeConfig`. Both inputs already come fake-quantized from the layers before.
- ReLU(max_value=1) (the clip of hard-sigmoid): the registry would accept it, with a learned range;
  `FixedRangeQuantizeConfig` pins it to [0, 1] instead, the exact range of a sigmoid gate (what
  TFLite uses for LOGISTIC), so it needs no calibration and never clips a saturated gate.
- DepthwiseConv2D: the registry accepts it but quantizes its kernel with ONE range (tfmot takes
  the last kernel axis, the depth multiplier, as the channel axis) while the int8 file has one per
  channel; `DepthwiseQuantizeConfig` simulates the per-channel rounding the device applies. Its BN
  (and the BN's ReLU) are then placed by hand (`_batch_norm_config`), as tfmot's transforms do for
  Conv2D.
- BatchNormalization not fed by a convolution (parallel blocks' transform branch, stride 1, same
  width): tfmot only handles BN through its Conv+BN transforms; `OutputQuantizeConfig`.
- Identity (segment outputs named by export.graph_slice): `NoOpQuantizeConfig`.
Everything else (Conv2D, Dense, ReLU, Add, pooling, Dropout, BN after a Conv2D) keeps tfmot's
default 8-bit scheme, except that `QuantizeScheme` replaces tfmot's LayerReLUQuantize transform,
which dropped the kernel fake-quant of a Conv2D followed by ReLU (the SE reduce conv). A layer
outside this list raises `ExportError` before tfmot runs.

Range initialisation (the part tfmot does not do): tfmot starts every activation range at [-6, 6]
and moves it by an exponential moving average with decay 0.999 per training step, which suits long
QAT runs from scratch, not a fine-tune of a few steps: after 20 steps a [0, 1] gate would still be
quantized over ~[-5.9, 5.9]. So before training, every fake-quant range is set to the float model's
min/max of that tensor over the representative images (what post-training quantization uses), and
the weight ranges by one forward pass; QAT thus starts where PTQ is and improves from there.

BatchNorm is frozen by default during the fine-tune (moving statistics and affine parameters): the
statistics were re-calibrated for this sub-network on ~2,000 images; a few small QAT batches would
replace them with noisier ones (and BN momentum may be 0 in re-calibrated models).

Conversion (TF 2.21): the converter reads the fake-quant ranges (checked: scaling the
representative data does not change them) and calibrates only the tensors inside a layer that QAT
does not simulate (the MUL before Rescaling's ADD, the RELU before ReLU(max_value=1)'s MINIMUM) from
the representative images. A representative dataset is mandatory anyway: TF 2.21's converter
rejects int8-only QAT conversion without one (its metrics code builds the quantization mode before
it has the graph, so it does not see the fake-quants; with that bypassed, it fails on an attribute
set after use), and without int8-only ops the untracked tensors stay float (QUANTIZE/DEQUANTIZE
islands: 12 ops on a small EE_D net). Where a calibrated range and a fake-quant range meet, the
converter can mix them (seen: a conv bias quantized with the calibrated scale of its input); that is
harmless for small biases, which is why no Rescaling is folded into a conv here (see
WeightsOnlyQuantizeConfig).
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
# tfmot internals (0.8.1, pinned in requirements.txt) not in its public API: the input fake-quant
# layer's class (its range is set like the others) and the full list of default layout transforms.
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_transforms as _T)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
    model_transformer as _model_transformer)
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (
    QuantizeLayer as _QuantizeLayer)

from export import tflite_convert
from export.errors import ExportError
from ofav2_tf.registry import Registry

_Q = tfmot.quantization.keras
_L = tf_keras.layers

DEFAULT_LEARNING_RATE = 1e-4
DEFAULT_RANGE_BATCH = 32
QAT_PREFIX = 'quant_'
_ACTIVATION_RANGE_VARS = ('output', 'post_activation', 'pre_activation')


def _moving_average_quantizer():
  return _Q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                              narrow_range=False)


class OutputQuantizeConfig(_Q.QuantizeConfig):
  """Fake-quantizes a weightless layer's output with a learned (moving-average) int8 range.

  For Rescaling, Multiply and a BatchNormalization not folded into a convolution: each becomes its
  own TFLite op(s) whose int8 output needs a range.
  """

  def get_weights_and_quantizers(self, layer):
    return []

  def get_activations_and_quantizers(self, layer):
    return []

  def set_quantize_weights(self, layer, quantize_weights):
    pass

  def set_quantize_activations(self, layer, quantize_activations):
    pass

  def get_output_quantizers(self, layer):
    return [_moving_average_quantizer()]

  def get_config(self):
    return {}


class FixedRangeQuantizeConfig(OutputQuantizeConfig):
  """Fake-quantizes a layer's output over a fixed range: hard-sigmoid's clip ReLU(max_value=1).

  Args:
    output_min: lower end of the range.
    output_max: upper end of the range.
  """

  def __init__(self, output_min=0.0, output_max=1.0):
    self.output_min = float(output_min)
    self.output_max = float(output_max)

  def get_output_quantizers(self, layer):
    return [_Q.quantizers.FixedQuantizer(num_bits=8, init_min=self.output_min,
                                         init_max=self.output_max, narrow_range=False)]

  def get_config(self):
    return {'output_min': self.output_min, 'output_max': self.output_max}


class NoOpQuantizeConfig(OutputQuantizeConfig):
  """Passes a layer through unquantized (Identity: its input is already quantized)."""

  def get_output_quantizers(self, layer):
    return []


class WeightsOnlyQuantizeConfig(OutputQuantizeConfig):
  """Fake-quantizes a Conv2D's or Dense's kernel, not its output (a ReLU after it holds the range).

  Used by `_LayerReLUQuantize` for the squeeze-excite reduce conv. Not used to let the converter
  fold a following Rescaling into a conv (the SE expand conv before its hard-sigmoid, which PTQ
  folds): tried and measured, the converter then quantized the folded bias (which carries the
  hard-sigmoid's +0.5) with a calibrated input scale while the tensor kept the fake-quant scale, so
  every SE gate of the int8 file was off by ~0.13 once QAT had moved the weights. Unfolded, the SE
  blocks keep a separate int8 MUL and ADD each (2 ops per SE block more than the PTQ file).

  Args:
    per_axis: one range per output channel (convolutions, as tfmot does) or one per tensor (Dense).
  """

  def __init__(self, per_axis=True):
    self.per_axis = bool(per_axis)

  def get_weights_and_quantizers(self, layer):
    return [(layer.kernel, _Q.quantizers.LastValueQuantizer(
        num_bits=8, per_axis=self.per_axis, symmetric=True, narrow_range=True))]

  def set_quantize_weights(self, layer, quantize_weights):
    layer.kernel = quantize_weights[0]

  def get_output_quantizers(self, layer):
    return []

  def get_config(self):
    return {'per_axis': self.per_axis}


class DepthwiseKernelQuantizer(_Q.quantizers.LastValueQuantizer):
  """Quantizes a depthwise kernel per channel, as TFLite does.

  tfmot's default quantizes per slice of the LAST kernel axis, which for a depthwise kernel
  [kh, kw, C, M] is the depth multiplier (1 here): one range for the whole tensor, while the TFLite
  file quantizes each of the C*M channels separately. Training would adapt to a far coarser
  rounding than the device applies, and the QAT model would not predict what its int8 file computes
  (measured on an extracted EE_D net before any QAT step: RMS difference between the QAT model's
  logits and its int8 file's 0.39 with one range, 0.21 per channel, for logits spread over ~7). The
  kernel is viewed as [kh, kw, 1, C*M] (same memory order; channel c*M + m, TFLite's order) for a
  per-channel fake-quant and reshaped back.
  """

  def __init__(self):
    super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

  def build(self, tensor_shape, name, layer):
    channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
    return {'min_var': layer.add_weight(name + '_min', shape=(channels,), trainable=False,
                                        initializer=tf_keras.initializers.Constant(-6.0)),
            'max_var': layer.add_weight(name + '_max', shape=(channels,), trainable=False,
                                        initializer=tf_keras.initializers.Constant(6.0))}

  def __call__(self, inputs, training, weights, **kwargs):
    shape = inputs.shape
    # tfmot's per-channel ops take 2-D or 4-D tensors: [kh, kw, 1, C*M], the same memory order.
    flat = tf.reshape(inputs, list(shape[:-2]) + [1, int(shape[-2]) * int(shape[-1])])
    return tf.reshape(super().__call__(flat, training, weights, **kwargs), shape)

  def get_config(self):
    return {}


class DepthwiseQuantizeConfig(OutputQuantizeConfig):
  """DepthwiseConv2D: per-channel kernel fake-quant (`DepthwiseKernelQuantizer`), no output one.

  The BatchNorm after it (always, in the extraction vocabulary) is folded into it by the converter,
  so the range belongs after the BN (or after the BN's ReLU): see `_batch_norm_config`. tfmot's own
  Conv+BN transforms step aside for layers with a custom config, so that placement is done here.

  Args:
    quantize_output: fake-quantize the output too (a depthwise conv not followed by BN).
  """

  def __init__(self, quantize_output=False):
    self.quantize_output = bool(quantize_output)

  def get_weights_and_quantizers(self, layer):
    return [(layer.depthwise_kernel, DepthwiseKernelQuantizer())]

  def set_quantize_weights(self, layer, quantize_weights):
    layer.depthwise_kernel = quantize_weights[0]

  def get_output_quantizers(self, layer):
    return [_moving_average_quantizer()] if self.quantize_output else []

  def get_config(self):
    return {'quantize_output': self.quantize_output}


CUSTOM_OBJECTS = {c.__name__: c for c in (
    OutputQuantizeConfig, FixedRangeQuantizeConfig, NoOpQuantizeConfig, WeightsOnlyQuantizeConfig,
    DepthwiseQuantizeConfig, DepthwiseKernelQuantizer)}


class _Graph:
  """Who reads whom in a functional model whose layers are each called once."""

  def __init__(self, model):
    self.producers = {}
    self.consumers = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
      self.producers[layer.name] = _producers(layer)
      for producer in self.producers[layer.name]:
        self.consumers[producer.name].append(layer)


# Layer class name -> function(layer, _Graph) returning the QuantizeConfig to annotate the layer
# with, or None to leave it to tfmot's default 8-bit registry.
LAYER_CONFIGS = Registry('quantizable layer')


def _default(layer, graph):
  del layer, graph
  return None


for _name in ('InputLayer', 'Conv2D', 'Dense', 'Add', 'GlobalAveragePooling2D', 'MaxPooling2D',
              'Dropout'):
  LAYER_CONFIGS.add(_name, _default)


@LAYER_CONFIGS.register('Rescaling')
@LAYER_CONFIGS.register('Multiply')
def _output_config(layer, graph):
  del layer, graph
  return OutputQuantizeConfig()


@LAYER_CONFIGS.register('DepthwiseConv2D')
def _depthwise_config(layer, graph):
  readers = graph.consumers[layer.name]
  folds = (len(readers) == 1 and isinstance(readers[0], _L.BatchNormalization) and
           layer.get_config().get('activation') == 'linear')
  return DepthwiseQuantizeConfig(quantize_output=not folds)


def _is_hard_sigmoid_clip(layer):
  config = layer.get_config()
  return (isinstance(layer, _L.ReLU) and config.get('max_value') is not None and
          float(config['max_value']) == 1.0 and not config.get('threshold') and
          not config.get('negative_slope'))


@LAYER_CONFIGS.register('ReLU')
def _relu_config(layer, graph):
  del graph
  return FixedRangeQuantizeConfig(0.0, 1.0) if _is_hard_sigmoid_clip(layer) else None


@LAYER_CONFIGS.register('BatchNormalization')
def _batch_norm_config(layer, graph):
  producers = graph.producers[layer.name]
  linear = len(producers) == 1 and producers[0].get_config().get('activation') == 'linear'
  if linear and isinstance(producers[0], _L.Conv2D):
    return None  # tfmot's Conv2D+BN(+ReLU) transforms place the ranges.
  if linear and isinstance(producers[0], _L.DepthwiseConv2D):
    readers = graph.consumers[layer.name]
    if len(readers) == 1 and isinstance(readers[0], _L.ReLU) and not _is_hard_sigmoid_clip(
        readers[0]):
      return NoOpQuantizeConfig()  # Conv + BN + ReLU fuse into one op; the ReLU holds the range.
  return OutputQuantizeConfig()


@LAYER_CONFIGS.register('Identity')
def _identity_config(layer, graph):
  del layer, graph
  return NoOpQuantizeConfig()


class _LayerReLUQuantize(_T.LayerReLUQuantize):
  """tfmot's Add/Conv/Dense + ReLU transform, without dropping the conv's weight quantization.

  tfmot's version gives the layer before a ReLU a NoOp config, so no fake-quant sits before the
  ReLU (they fuse into one TFLite op): right for Add, but for a Conv2D or Dense it also drops the
  KERNEL fake-quant, so the squeeze-excite reduce conv trains in float while the int8 file rounds
  its weights. Here Conv2D/Dense keep their kernel fake-quant, like every other convolution.
  """

  def replacement(self, match_layer):
    producer = match_layer.input_layers[0]
    kind = producer.layer['class_name']
    if kind in ('Conv2D', 'Dense'):
      config = WeightsOnlyQuantizeConfig(per_axis=kind == 'Conv2D')
    elif kind == 'DepthwiseConv2D':
      config = DepthwiseQuantizeConfig(quantize_output=False)
    else:
      config = NoOpQuantizeConfig()
    producer.metadata['quantize_config'] = config
    return match_layer

  def custom_objects(self):
    return dict(CUSTOM_OBJECTS)


class _LayerReluActivationQuantize(_LayerReLUQuantize):
  pattern = _T.LayerReluActivationQuantize.pattern


class _LayoutTransform(_Q.default_8bit.Default8BitQuantizeLayoutTransform):
  """tfmot 0.8.1's default 8-bit layout transforms, in its order, with `_LayerReLUQuantize`."""

  def apply(self, model, layer_quantize_map):
    transforms = [
        _T.InputLayerQuantize(),
        _T.SeparableConv1DQuantize(),
        _T.SeparableConvQuantize(),
        _T.Conv2DReshapeBatchNormReLUQuantize(),
        _T.Conv2DReshapeBatchNormActivationQuantize(),
        _T.Conv2DBatchNormReLUQuantize(),
        _T.Conv2DBatchNormActivationQuantize(),
        _T.Conv2DReshapeBatchNormQuantize(),
        _T.Conv2DBatchNormQuantize(),
        _T.ConcatTransform6Inputs(),
        _T.ConcatTransform5Inputs(),
        _T.ConcatTransform4Inputs(),
        _T.ConcatTransform3Inputs(),
        _T.ConcatTransform(),
        _T.DenseBatchNormQuantize(),
        _T.DenseBatchNormReLUQuantize(),
        _T.DenseBatchNormActivationQuantize(),
        _LayerReLUQuantize(),
        _LayerReluActivationQuantize(),
    ]
    return _model_transformer.ModelTransformer(
        model, transforms, set(layer_quantize_map.keys()), layer_quantize_map).transform()


class QuantizeScheme(_Q.default_8bit.Default8BitQuantizeScheme):
  """tfmot's default 8-bit scheme (registry, per-axis conv weights) with `_LayoutTransform`."""

  def get_layout_transformer(self):
    return _LayoutTransform()


def _producers(layer):
  if isinstance(layer, _L.InputLayer):
    return []
  nodes = layer.inbound_nodes
  if len(nodes) != 1:
    raise ExportError(f'layer {layer.name!r} is called {len(nodes)} times; QAT needs a model whose '
                      'layers are each called once (an extracted sub-network)')
  return [inbound for inbound, _, _, _ in nodes[0].iterate_inbound()]


def layer_quantize_configs(model):
  """The custom QuantizeConfig of every layer that needs one, by layer name.

  Raises:
    ExportError: `model` is not a functional model, or has a layer QAT does not support.
  """
  # pylint: disable-next=protected-access
  if not isinstance(model, tf_keras.Model) or not getattr(model, '_is_graph_network', False):
    raise ExportError(f'model {getattr(model, "name", model)!r} is not a functional tf_keras '
                      'model; QAT takes the static model produced by ofav2_tf.extraction.extract')
  unsupported = [l for l in model.layers if type(l).__name__ not in LAYER_CONFIGS]
  if unsupported:
    layer = unsupported[0]
    raise ExportError(f'layer {layer.name!r} of class {type(layer).__name__} has no quantization '
                      f'config; QAT supports {", ".join(sorted(LAYER_CONFIGS.names()))}')
  graph = _Graph(model)
  configs = {}
  for layer in model.layers:
    config = LAYER_CONFIGS.get(type(layer).__name__)(layer, graph)
    if config is not None:
      configs[layer.name] = config
  return configs


def quantize_model(model):
  """Wraps `model` for quantization-aware training (fake-quant nodes; weights copied).

  Args:
    model: an extracted sub-network: a functional tf_keras model of the extraction vocabulary.

  Returns:
    The QAT model: a functional tf_keras model of tfmot QuantizeWrapperV2 layers named
    'quant_<layer>' (plus the input 'quantize_layer'); its ranges are tfmot's initial [-6, 6] until
    `initialize_ranges` runs.
  """
  configs = layer_quantize_configs(model)

  def annotate(layer):
    # A fresh copy: reusing `layer` would add a second call node to the caller's model, which
    # breaks graph slicing (early-exit segments) of that model later.
    copy = layer.__class__.from_config(layer.get_config())
    config = configs.get(layer.name)
    return copy if config is None else _Q.quantize_annotate_layer(copy, config)

  annotated = tf_keras.models.clone_model(model, clone_function=annotate)
  copies = {getattr(l, 'layer', l).name: getattr(l, 'layer', l) for l in annotated.layers}
  for layer in model.layers:
    if layer.weights:
      copies[layer.name].set_weights(layer.get_weights())
  with _Q.quantize_scope(CUSTOM_OBJECTS):
    return _Q.quantize_apply(_Q.quantize_annotate_model(annotated), scheme=QuantizeScheme())


def _unwrapped(layer):
  return layer.layer if isinstance(layer, _Q.QuantizeWrapperV2) else layer


def _range_variables(layer):
  """(min, max) variable pairs of `layer`'s activation fake-quants (not its weights').

  tfmot names them '<quantizer>_min'/'_max' after the quantized tensor: 'output' and
  'post_activation'/'pre_activation' in a wrapper, the layer's own name in the input QuantizeLayer;
  weight ranges are named after the weight ('kernel_min') and are left alone.
  """
  by_name = {w.name.rsplit('/', 1)[-1].split(':')[0]: w for w in layer.weights}
  prefixes = ((layer.name,) if isinstance(layer, _QuantizeLayer) else _ACTIVATION_RANGE_VARS)
  return [(by_name[f'{p}_min'], by_name[f'{p}_max']) for p in prefixes if f'{p}_min' in by_name]


def _batches(images, batch_size):
  for start in range(0, len(images), batch_size):
    yield images[start:start + batch_size]


def initialize_ranges(qat_model, float_model, images, batch_size=DEFAULT_RANGE_BATCH):
  """Sets every activation fake-quant range from the float model's activations, and weight ranges.

  Args:
    qat_model: the result of `quantize_model(float_model)`.
    float_model: the model it was made from (layer names match: 'quant_<name>' wraps '<name>').
    images: float32 array [N, H, W, C] of representative training images.
    batch_size: images per forward pass.

  Returns:
    The number of ranges set.
  """
  targets = []  # (float layer name or None for the input, [(min_var, max_var), ...])
  for layer in qat_model.layers:
    pairs = _range_variables(layer)
    if not pairs:
      continue
    if isinstance(layer, _QuantizeLayer):
      targets.append((None, pairs))
    else:
      targets.append((_unwrapped(layer).name, pairs))
  names = [n for n, _ in targets if n is not None]
  probe = tf_keras.Model(float_model.inputs, [float_model.get_layer(n).output for n in names])
  lows = {n: np.inf for n in [None] + names}
  highs = {n: -np.inf for n in [None] + names}
  for batch in _batches(images, batch_size):
    outputs = probe(batch, training=False)
    if not isinstance(outputs, (list, tuple)):
      outputs = [outputs]
    for name, value in zip([None] + names, [batch] + list(outputs)):
      value = np.asarray(value)
      lows[name] = min(lows[name], float(value.min()))
      highs[name] = max(highs[name], float(value.max()))
  for name, pairs in targets:
    low, high = min(lows[name], 0.0), max(highs[name], 0.0)  # int8 ranges must contain 0.
    if high - low < 1e-6:
      high = low + 1e-6
    for min_var, max_var in pairs:
      min_var.assign(tf.fill(tf.shape(min_var), low))
      max_var.assign(tf.fill(tf.shape(max_var), high))
  # Weight ranges (LastValueQuantizer) are only written by a training-mode call; one pass with BN
  # frozen sets them without touching the BN statistics. The activation ranges move by 0.1%.
  with _frozen_batch_norm(qat_model, True):
    qat_model(images[:batch_size], training=True)
  return sum(len(p) for _, p in targets)


class _frozen_batch_norm:  # pylint: disable=invalid-name
  """Context manager: the QAT model's BN layers run in inference mode and are not trained inside.

  Setting `trainable = False` makes tf_keras BN use its moving statistics, but tfmot's wrapper
  still lists the BN's gamma and beta among its trainable weights, so `variables` (the trainable
  variables minus the frozen BN's) is what an optimizer must be given.
  """

  def __init__(self, qat_model, freeze):
    self.model = qat_model
    self.layers = [l for l in qat_model.layers
                   if isinstance(_unwrapped(l), _L.BatchNormalization)] if freeze else []
    self.saved = [l.trainable for l in self.layers]
    self.frozen = {id(w) for l in self.layers for w in l.weights}

  def __enter__(self):
    for layer in self.layers:
      layer.trainable = False
    return self

  def __exit__(self, *exc):
    for layer, value in zip(self.layers, self.saved):
      layer.trainable = value

  @property
  def variables(self):
    return [v for v in self.model.trainable_variables if id(v) not in self.frozen]


def _input_shape(model):
  """[1, H, W, C] of a model with one fixed-size input (what every exported file takes)."""
  dims = tuple(model.inputs[0].shape[1:])
  if len(model.inputs) != 1 or any(d is None for d in dims):
    raise ExportError(f'model {model.name!r} must have one input of fixed size for QAT; got input '
                      f'shapes {[list(i.shape) for i in model.inputs]}')
  return (1,) + tuple(int(d) for d in dims)


def _as_list(outputs):
  return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _training_batches(train_batches, steps):
  """Yields `steps` (images, labels) pairs, re-iterating `train_batches` if it ends early."""
  produced = 0
  while produced < steps:
    before = produced
    source = train_batches() if callable(train_batches) and not hasattr(
        train_batches, '__iter__') else train_batches
    for item in source:
      if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ExportError('QAT training batches must be (images, labels) pairs; got '
                          f'{type(item).__name__}')
      yield item[0], item[1]
      produced += 1
      if produced >= steps:
        return
    if produced == before:
      raise ExportError(f'QAT training data ran out after {produced} of {steps} steps; pass a '
                        'repeating tf.data.Dataset (pipeline.train_batches) or fewer steps')


@dataclasses.dataclass
class QATResult:
  """What `quantization_aware_finetune` returns.

  Attributes:
    model: the QAT model (fake-quant wrappers); call it for the simulated-int8 float outputs.
    losses: training loss of every step.
    ranges_initialized: number of activation ranges set from the representative images.
  """
  model: tf_keras.Model
  losses: list
  ranges_initialized: int


def quantization_aware_finetune(model, train_batches, steps, representative_images,
                                learning_rate=DEFAULT_LEARNING_RATE,
                                loss: Optional[Callable] = None, freeze_batch_norm=True,
                                momentum=0.9,
                                max_range_images=tflite_convert.DEFAULT_CALIBRATION_SAMPLES
                                ) -> QATResult:
  """Quantization-aware fine-tuning of an extracted sub-network.

  Args:
    model: the extracted sub-network (functional tf_keras model, fixed input size, BN statistics
      re-calibrated); left unchanged.
    train_batches: (images, labels) batches from the training split at the model's resolution:
      a tf.data.Dataset (e.g. `ofav2_tf.data.pipeline.train_batches(..., resolutions=(r,))`), an
      iterable, or a function returning one. Re-iterated if it ends before `steps`.
    steps: optimizer steps (0 only initialises the ranges: QAT's starting point equals PTQ).
    representative_images: training images to initialise the ranges (any form
      `tflite_convert.calibration_samples` takes).
    learning_rate: SGD learning rate; small, since the network is already trained.
    loss: `loss(labels, logits) -> scalar`, applied to every output and averaged; default sparse
      categorical cross-entropy on logits.
    freeze_batch_norm: keep BN statistics and affine parameters fixed (see module docstring).
    momentum: SGD momentum.
    max_range_images: representative images used for the ranges.

  Returns:
    A `QATResult`.

  Raises:
    ExportError: unsupported layer, missing/empty representative or training data.
  """
  if int(steps) < 0:
    raise ExportError(f'QAT steps={steps}; expected 0 or more')
  if not float(learning_rate) > 0:
    raise ExportError(f'QAT learning_rate={learning_rate}; expected a positive number')
  shape = _input_shape(model)
  images = np.concatenate(tflite_convert.calibration_samples(representative_images, shape,
                                                             max_range_images))
  qat_model = quantize_model(model)
  ranges = initialize_ranges(qat_model, model, images)
  loss_fn = loss or tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  optimizer = tf_keras.optimizers.SGD(learning_rate=float(learning_rate), momentum=float(momentum))
  losses = []
  with _frozen_batch_norm(qat_model, freeze_batch_norm) as frozen:
    variables = frozen.variables

    @tf.function
    def train_step(batch_images, labels):
      with tf.GradientTape() as tape:
        outputs = _as_list(qat_model(batch_images, training=True))
        value = tf.add_n([loss_fn(labels, o) for o in outputs]) / len(outputs)
      optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
      return value

    for batch_images, labels in _training_batches(train_batches, int(steps)):
      batch_images = tf.convert_to_tensor(batch_images, tf.float32)
      if tuple(batch_images.shape[1:]) != shape[1:]:
        raise ExportError(f'QAT training images have shape {list(batch_images.shape)}; the model '
                          f'takes [N, {", ".join(map(str, shape[1:]))}] (one resolution)')
      losses.append(float(train_step(batch_images, labels)))
  return QATResult(model=qat_model, losses=losses, ranges_initialized=ranges)


def original_name(layer_name):
  """The float model's name of a QAT wrapper ('quant_exit2' -> 'exit2')."""
  return layer_name[len(QAT_PREFIX):] if layer_name.startswith(QAT_PREFIX) else layer_name


def with_original_output_names(qat_model):
  """The QAT model with its outputs renamed back to the float model's ('exit{k}').

  tfmot renames every layer 'quant_<name>'; the exported file's signature must name outputs like
  the float files (that is how outputs are matched to exits). Identity layers do it, and the
  converter removes them; the variables are shared, not copied.
  """
  outputs = _as_list(qat_model.outputs)
  # pylint: disable-next=protected-access
  names = [original_name(t._keras_history.layer.name) for t in outputs]
  renamed = [_L.Identity(name=n)(t) for n, t in zip(names, outputs)]
  return tf_keras.Model(qat_model.inputs, renamed if len(renamed) > 1 else renamed[0],
                        name=qat_model.name)


def convert_qat_int8(qat_model, representative_images, path=None,
                     max_samples=tflite_convert.DEFAULT_CALIBRATION_SAMPLES):
  """Converts a QAT model to a full-integer int8 TFLite file (int8 in/out, builtin ops, batch 1).

  The int8 ranges of every fake-quantized tensor come from the QAT model; `representative_images`
  only calibrates the few tensors QAT does not simulate (see module docstring) and is required by
  the converter for int8 input/output.

  Args:
    qat_model: `QATResult.model`.
    representative_images: training images (any form `tflite_convert.calibration_samples` takes).
    path: where to write the file (atomically); None to only return the bytes.
    max_samples: calibration images used.

  Returns:
    The flatbuffer bytes; outputs are named like the float model's.
  """
  if not any(isinstance(l, (_Q.QuantizeWrapperV2, _QuantizeLayer)) for l in qat_model.layers):
    raise ExportError(f'model {qat_model.name!r} has no fake-quant layers; convert a float model '
                      'with export.tflite_convert.convert_int8, or run quantization_aware_finetune')
  return tflite_convert.convert_int8(with_original_output_names(qat_model), representative_images,
                                     path, max_samples=max_samples)


def predict(model, images, batch_size=32):
  """Outputs of a (QAT or float) model on `images`, as a list of arrays in the model's order."""
  chunks = [_as_list(model(b, training=False)) for b in _batches(np.asarray(images), batch_size)]
  return [np.concatenate(parts) for parts in zip(*chunks)]


__all__ = ['OutputQuantizeConfig', 'FixedRangeQuantizeConfig', 'NoOpQuantizeConfig',
           'CUSTOM_OBJECTS', 'LAYER_CONFIGS', 'layer_quantize_configs', 'quantize_model',
           'initialize_ranges', 'quantization_aware_finetune', 'QATResult', 'convert_qat_int8',
           'with_original_output_names', 'original_name', 'predict']
