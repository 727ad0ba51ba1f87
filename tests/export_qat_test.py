"""Tests for export.qat: quantization-aware fine-tuning of an extracted sub-network, to int8."""
# bazel: size=enormous tags=slow

import numpy as np
import tensorflow as tf
import tf_keras
from tensorflow_model_optimization.python.core.keras import compat as tfmot_compat

from export import litert_runner
from export import qat
from export import tflite_convert
from export import tflite_inspect
from export import tflm_runner
from export import toy_model
from export.errors import ExportError
from ofav2_tf import extraction
from tests import testutil

RES = 32
NUM_CLASSES = 4
# TFLite ops the extraction vocabulary lowers to in an int8 file (see tflite_convert's tests).
INT8_OPS = {'ADD', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED', 'MAX_POOL_2D', 'MEAN',
            'MINIMUM', 'MUL', 'RELU', 'RELU6', 'RESHAPE', 'QUANTIZE', 'DEQUANTIZE'}


def structured_images(count, seed, offset=0.5):
  """Images whose class is a colour cast (red, green, blue, dark) over smooth random fields.

  A task a small network learns in a few dozen steps but not perfectly, so the float model has real
  top-1 margins (unlike an untrained net, whose near-ties any rounding flips) and quantization can
  still cost accuracy.
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, count)
  casts = np.array([[offset, 0, 0], [0, offset, 0], [0, 0, offset], [-offset] * 3], np.float32)
  images = 0.7 * toy_model.synthetic_images(count, RES, seed=seed)
  return (images + casts[labels][:, None, None, :]).astype(np.float32), labels


def litert_outputs(data, images):
  runner = litert_runner.LiteRTModel(data)
  return np.concatenate([runner.run(image[np.newaxis])['exit2'] for image in images])


class QATTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    net = testutil.perturbed_supernet('EE_D', num_classes=NUM_CLASSES, seed=1,
                                      width_multiplier=0.25)
    # Exit 2 with depth 3: stem and heads (hard-swish), dense skips, squeeze-excite in stage 2.
    config = net.search_space(resolutions=(RES,)).uniform(3, 3, 3, exit=2)
    testutil.calibrate(net, config, all_exits=True)
    cls.model = extraction.extract(net, config)
    cls.train_x, cls.train_y = structured_images(512, seed=1)
    cls.test_x, cls.test_y = structured_images(200, seed=2)
    cls.calibration = cls.train_x[:128]
    # A briefly trained float model (the "searched sub-network").
    tf_keras.utils.set_random_seed(0)
    cls.model.compile(tf_keras.optimizers.Adam(3e-3),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cls.model.fit(cls.train_x, cls.train_y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    cls.float_weights = {l.name: [w.copy() for w in l.get_weights()] for l in cls.model.layers}
    cls.float_out = np.asarray(cls.model(cls.test_x, training=False))

    train = tf.data.Dataset.from_tensor_slices((cls.train_x, cls.train_y))
    train = train.shuffle(512, seed=0).batch(32).repeat()
    cls.steps = 20
    cls.result = qat.quantization_aware_finetune(cls.model, train, cls.steps, cls.calibration,
                                                 learning_rate=1e-3)
    cls.qat_out = qat.predict(cls.result.model, cls.test_x)[0]
    cls.qat_bytes = qat.convert_qat_int8(cls.result.model, cls.calibration)
    cls.qat_int8 = litert_outputs(cls.qat_bytes, cls.test_x)
    cls.ptq_int8 = litert_outputs(tflite_convert.convert_int8(cls.model, cls.calibration),
                                  cls.test_x)

  def test_tfmot_builds_tf_keras_layers(self):
    self.assertIs(tfmot_compat.keras.layers.Conv2D, tf_keras.layers.Conv2D)
    self.assertIsInstance(self.result.model, tf_keras.Model)
    self.assertIsInstance(self.result.model.get_layer('quant_stem_conv'), tf_keras.layers.Layer)

  def test_custom_configs_where_the_default_registry_falls_short(self):
    configs = qat.layer_quantize_configs(self.model)
    kinds = {name: type(c).__name__ for name, c in configs.items()}
    self.assertEqual(kinds['stem_hsig_scale'], 'OutputQuantizeConfig')  # Rescaling
    self.assertEqual(kinds['stem_hswish'], 'OutputQuantizeConfig')  # Multiply
    self.assertEqual(kinds['stage2_block1_se_multiply'], 'OutputQuantizeConfig')
    self.assertEqual(kinds['stage2_block1_se_hsig'], 'FixedRangeQuantizeConfig')  # ReLU(max 1)
    self.assertEqual(kinds['stage1_block1_depthwise'], 'DepthwiseQuantizeConfig')
    self.assertEqual(kinds['stage1_block1_depthwise_bn'], 'NoOpQuantizeConfig')  # BN + ReLU fuse
    self.assertNotIn('stage1_block1_expand_conv', configs)  # tfmot's Conv2D + BN transforms
    self.assertNotIn('stage1_block1_expand_relu', configs)
    for config in configs.values():  # Serialisable with quantize_scope (saving a QAT model).
      clone = type(config).from_config(config.get_config())
      self.assertEqual(clone.get_config(), config.get_config())

    layers = {l.name: l for l in self.result.model.layers}

    def range_vars(name):
      return sorted(w.name.rsplit('/', 1)[-1] for w in layers[name].weights
                    if w.name.endswith(('_min:0', '_max:0')))

    # Depthwise kernels get one range per channel (tfmot's default: one per tensor).
    depthwise = layers['quant_stage1_block1_depthwise']
    kernel_min = [w for w in depthwise.weights if 'depthwise_kernel_min' in w.name][0]
    self.assertEqual(kernel_min.shape, (depthwise.layer.depthwise_kernel.shape[2],))
    # The SE reduce conv keeps its kernel fake-quant (tfmot's LayerReLUQuantize drops it).
    self.assertEqual(range_vars('quant_stage2_block1_se_reduce'), ['kernel_max:0', 'kernel_min:0'])
    self.assertEqual(range_vars('quant_stage2_block1_se_hsig'), [])  # fixed [0, 1], no variables
    self.assertEqual(range_vars('quant_stem_hsig_scale'), ['output_max:0', 'output_min:0'])

  def test_depthwise_kernel_quantizer_is_per_channel(self):
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 1, (3, 3, 5, 1)).astype(np.float32) * np.array(
        [0.01, 0.1, 1.0, 3.0, 0.5], np.float32)[None, None, :, None]
    holder = tf_keras.layers.Layer()
    quantizer = qat.DepthwiseKernelQuantizer()
    weights = quantizer.build(kernel.shape, 'depthwise_kernel', holder)
    got = quantizer(tf.constant(kernel), True, weights).numpy()
    scale = np.abs(kernel).max(axis=(0, 1, 3), keepdims=True) / 127.0  # symmetric, narrow range
    want = np.clip(np.round(kernel / scale), -127, 127) * scale
    self.assertAllClose(got, want, atol=1e-6, rtol=1e-5)
    # One range for the tensor (tfmot's default here) would round the smallest channel to zero.
    self.assertGreater(np.count_nonzero(got[:, :, 0]), 5)

  def test_ranges_start_from_the_float_activations_and_bn_stays_frozen(self):
    self.assertGreater(self.result.ranges_initialized, 20)
    layers = {qat.original_name(l.name): l for l in self.result.model.layers}
    probe = tf_keras.Model(self.model.inputs, [self.model.get_layer(n).output for n in (
        'stem_bn', 'stage1_dense_after_block3', 'exit2')])
    for name, value in zip(('stem_bn', 'stage1_dense_after_block3', 'exit2'),
                           probe(self.calibration, training=False)):
      value = np.asarray(value)
      variables = {w.name.rsplit('/', 1)[-1]: float(w.numpy()) for w in layers[name].weights
                   if w.name.endswith(('output_max:0', 'post_activation_max:0'))}
      (high,) = variables.values()
      # Set from the float model, then moved by 20 steps of tfmot's 0.999 moving average.
      self.assertNotEqual(high, 6.0)
      self.assertAllClose(high, max(value.max(), 0.0), rtol=0.05)
    for layer in self.model.layers:  # The float model is left untouched...
      for got, want in zip(layer.get_weights(), self.float_weights[layer.name]):
        self.assertAllEqual(got, want)
    checked = moved = 0
    for layer in self.result.model.layers:
      inner = getattr(layer, 'layer', None)
      weights = {w.name.rsplit('/', 1)[-1]: w.numpy() for w in layer.weights}
      if isinstance(inner, tf_keras.layers.BatchNormalization):  # ...BN was not retrained...
        want = dict(zip(('gamma:0', 'beta:0', 'moving_mean:0', 'moving_variance:0'),
                        self.float_weights[inner.name]))
        for key, value in want.items():
          self.assertAllEqual(weights[key], value, msg=f'{inner.name} {key}')
        checked += 1
      elif isinstance(inner, tf_keras.layers.Conv2D):  # ...and the convolutions were.
        moved += not np.allclose(weights['kernel:0'], self.float_weights[inner.name][0])
    self.assertGreater(checked, 10)
    self.assertGreater(moved, 10)
    self.assertLen(self.result.losses, self.steps)
    self.assertTrue(np.all(np.isfinite(self.result.losses)))

  def test_int8_file_is_builtin_full_integer_and_uses_the_qat_ranges(self):
    info = tflite_inspect.inspect_tflite(self.qat_bytes)
    print('QAT int8 op set:', dict(info.op_counts))
    tflite_inspect.check_deployable(info)
    tflm_runner.check_runnable(info)  # also: int8 input and output
    self.assertTrue(info.builtin_only)
    self.assertContainsSubset(set(info.op_names), INT8_OPS)
    self.assertNotIn('DEQUANTIZE', info.op_names)  # no float islands inside
    self.assertEqual(info.output_names, ('exit2',))
    self.assertEqual(info.inputs[0].shape, (1, RES, RES, 3))
    # The logits' int8 scale is the QAT model's own range for them, not a re-calibrated one.
    final = {w.name.rsplit('/', 1)[-1]: float(w.numpy())
             for w in self.result.model.get_layer('quant_exit2').weights if w.shape.rank == 0}
    width = final['post_activation_max:0'] - final['post_activation_min:0']
    self.assertAllClose(info.outputs[0].scale, width / 255.0, rtol=1e-3)

  def test_int8_file_agrees_with_the_qat_model(self):
    """Tolerance: top-1 agrees wherever the QAT model's margin exceeds 2 output steps, and the
    logits differ by less than 1.5 output quantization steps RMS (fake-quant and integer kernels
    round biases and rescales differently)."""
    scale = tflite_inspect.inspect_tflite(self.qat_bytes).outputs[0].scale
    agree = np.argmax(self.qat_int8, 1) == np.argmax(self.qat_out, 1)
    ordered = np.sort(self.qat_out, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 2 * scale
    rmse = float(np.sqrt(np.mean((self.qat_int8 - self.qat_out) ** 2)))
    print(f'QAT int8 vs QAT model: top-1 agreement {agree.mean():.3f} (clear margins '
          f'{agree[clear].mean():.3f} on {clear.sum()}), RMS {rmse:.3f} = {rmse / scale:.2f} steps')
    self.assertGreater(clear.sum(), 100)
    self.assertGreaterEqual(agree[clear].mean(), 0.98)
    self.assertGreaterEqual(agree.mean(), 0.85)
    self.assertLess(rmse, 1.5 * scale)

  def test_qat_against_ptq(self):
    accuracy = {name: float(np.mean(np.argmax(out, 1) == self.test_y)) for name, out in (
        ('float', self.float_out), ('ptq_int8', self.ptq_int8), ('qat_model', self.qat_out),
        ('qat_int8', self.qat_int8))}
    ptq_agree = float(np.mean(np.argmax(self.ptq_int8, 1) == np.argmax(self.float_out, 1)))
    print(f'accuracy on 200 held-out images: {accuracy}; PTQ int8 vs float top-1 {ptq_agree:.3f}')
    self.assertGreater(accuracy['float'], 0.5)  # the task is learnt (chance: 0.25)
    self.assertGreaterEqual(ptq_agree, 0.85)
    # QAT's extra steps train on the task too, so it is not a pure quantization comparison; it must
    # at least not lose what PTQ keeps.
    self.assertGreaterEqual(accuracy['qat_int8'], accuracy['ptq_int8'] - 0.05)

  def test_bad_inputs_are_clear_errors(self):
    train = [(self.train_x[:8], self.train_y[:8])]
    with self.assertRaisesRegex(ExportError, 'representative dataset'):
      qat.quantization_aware_finetune(self.model, train, 1, None)
    with self.assertRaisesRegex(ExportError, 'empty'):
      qat.quantization_aware_finetune(self.model, train, 1, [])
    with self.assertRaisesRegex(ExportError, 'steps=-1'):
      qat.quantization_aware_finetune(self.model, train, -1, self.calibration)
    with self.assertRaisesRegex(ExportError, 'no fake-quant'):
      qat.convert_qat_int8(self.model, self.calibration)
    inputs = tf_keras.Input((RES, RES, 3))
    odd = tf_keras.Model(inputs, tf_keras.layers.LayerNormalization(name='norm')(inputs))
    with self.assertRaisesRegex(ExportError, "'norm' of class LayerNormalization"):
      qat.layer_quantize_configs(odd)
    batches = qat._training_batches(iter(train), 3)  # pylint: disable=protected-access
    with self.assertRaisesRegex(ExportError, 'ran out after 1 of 3'):
      list(batches)


if __name__ == '__main__':
  tf.test.main()
