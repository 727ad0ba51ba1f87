"""Tests for export.tflite_convert and export.tflite_inspect: conversion, contract, output order."""
# bazel: size=medium

import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

from export import litert_runner
from export import tflite_convert
from export import tflite_inspect
from export import toy_model
from export.errors import ExportError

RES = 32
# Every op the extraction vocabulary lowers to (hard-sigmoid's ReLU(max_value=1) becomes MINIMUM+RELU,
# Rescaling becomes MUL+ADD, global pooling MEAN).
VOCABULARY_OPS = {'ADD', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED', 'MAX_POOL_2D', 'MEAN',
                  'MINIMUM', 'MUL', 'RELU', 'RELU6', 'HARD_SWISH', 'LOGISTIC', 'RESHAPE', 'QUANTIZE',
                  'DEQUANTIZE'}


class ConvertTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix='export-convert-test-')
    cls.model = toy_model.build_toy_model(resolution=RES, num_exits=2, seed=0)
    cls.float_path = os.path.join(cls.tmp, 'toy_float.tflite')
    cls.int8_path = os.path.join(cls.tmp, 'toy_int8.tflite')
    cls.float_bytes = tflite_convert.convert_float(cls.model, cls.float_path)
    calibration = toy_model.synthetic_images(64, RES, seed=1)
    cls.int8_bytes = tflite_convert.convert_int8(cls.model, calibration, cls.int8_path)
    cls.images = toy_model.synthetic_images(40, RES, seed=2)
    cls.keras_out = [np.asarray(o) for o in cls.model(cls.images, training=False)]

  def _tflite_outputs(self, data):
    runner = litert_runner.LiteRTModel(data)
    per_image = [runner.run(image[np.newaxis]) for image in self.images]
    return {name: np.concatenate([r[name] for r in per_image]) for name in runner.output_names}

  def test_float_matches_keras(self):
    got = self._tflite_outputs(self.float_bytes)
    for name, want in zip(self.model.output_names, self.keras_out):
      rel = np.max(np.abs(got[name] - want)) / np.max(np.abs(want))
      self.assertLess(rel, 1e-4, name)

  def test_int8_tracks_float(self):
    got = self._tflite_outputs(self.int8_bytes)
    for name, want in zip(self.model.output_names, self.keras_out):
      corr = np.corrcoef(got[name].ravel(), want.ravel())[0, 1]
      self.assertGreater(corr, 0.95, name)
      # The toy is untrained, so many float predictions are near-ties that any rounding flips; top-1
      # must agree where the float model has a real margin (> 10% of its logit range), as a trained
      # model's predictions mostly do.
      ordered = np.sort(want, axis=1)
      margin = (ordered[:, -1] - ordered[:, -2]) / (ordered[:, -1] - ordered[:, 0])
      confident = margin > 0.1
      self.assertGreater(confident.sum(), 10, name)
      agree = got[name].argmax(1) == want.argmax(1)
      self.assertGreaterEqual(agree[confident].mean(), 0.9, name)
      self.assertGreaterEqual(agree.mean(), 0.75, name)

  def test_files_meet_export_contract(self):
    for data, dtype in ((self.float_bytes, 'float32'), (self.int8_bytes, 'int8')):
      info = tflite_inspect.inspect_tflite(data)
      self.assertEqual(info.subgraph_count, 1)
      self.assertTrue(info.builtin_only)
      self.assertEqual(info.flex_ops, ())
      self.assertFalse(info.has_dynamic_dims)
      self.assertLessEqual(set(info.op_names), VOCABULARY_OPS)
      self.assertIn('CONV_2D', info.op_names)
      self.assertEqual([t.shape for t in info.inputs], [(1, RES, RES, 3)])
      self.assertEqual([t.shape_signature for t in info.inputs], [(1, RES, RES, 3)])
      self.assertEqual({t.dtype for t in info.inputs + info.outputs}, {dtype})
      self.assertEqual(info.input_names, ('image',))
      self.assertCountEqual(info.output_names, self.model.output_names)
      self.assertIsNotNone(info.signature('serving_default'))
      tflite_inspect.check_deployable(info)
    int8 = tflite_inspect.inspect_tflite(self.int8_path)
    for t in int8.inputs + int8.outputs:  # Per-tensor params a device can apply.
      self.assertLen(t.scales, 1)
      self.assertGreater(t.scale, 0.0)
      self.assertBetween(t.zero_point, -128, 127)

  def test_files_written_atomically(self):
    with open(self.int8_path, 'rb') as f:
      self.assertEqual(f.read(), self.int8_bytes)
    self.assertCountEqual(os.listdir(self.tmp), ['toy_float.tflite', 'toy_int8.tflite'])

  def test_output_order_is_read_from_the_file(self):
    # Distinct sizes per output, names whose Keras order is neither sorted nor what the converter
    # emits: mapping outputs by position would pick the wrong tensor.
    image = tf_keras.Input((8, 8, 3), name='image')
    x = tf_keras.layers.Conv2D(4, 3, name='conv')(image)
    x = tf_keras.layers.GlobalAveragePooling2D(name='pool')(x)
    names_and_sizes = (('exit_c', 2), ('exit_a', 3), ('exit_b', 4))
    outputs = [tf_keras.layers.Dense(n, name=name)(x) for name, n in names_and_sizes]
    model = tf_keras.Model(image, outputs)
    info = tflite_inspect.inspect_tflite(tflite_convert.convert_float(model))
    self.assertCountEqual(info.output_names, ['exit_a', 'exit_b', 'exit_c'])
    self.assertNotEqual(list(info.output_names), model.output_names)  # The converter reorders.
    for tensor, name in zip(info.outputs, info.output_names):
      self.assertEqual(tensor.shape, (1, dict(names_and_sizes)[name]))
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype(np.float32)
    got = litert_runner.LiteRTModel(tflite_convert.convert_float(model)).run(x)
    for name, want in zip(model.output_names, model(x, training=False)):
      self.assertAllClose(got[name], want, rtol=1e-5, atol=1e-6)

  def test_missing_or_empty_representative_dataset(self):
    path = os.path.join(self.tmp, 'never.tflite')
    with self.assertRaisesRegex(ExportError, 'needs a representative dataset'):
      tflite_convert.convert_int8(self.model, None, path)
    with self.assertRaisesRegex(ExportError, 'representative dataset is empty'):
      tflite_convert.convert_int8(self.model, [], path)
    with self.assertRaisesRegex(ExportError, 'representative dataset is empty'):
      tflite_convert.convert_int8(self.model, lambda: iter(()), path)
    with self.assertRaisesRegex(ExportError, r'does not fit the model input; expected \[32, 32, 3\]'):
      tflite_convert.convert_int8(self.model, [np.zeros((28, 28, 1), np.float32)], path)
    self.assertFalse(os.path.exists(path))

  def test_calibration_accepts_datasets_batches_and_pairs(self):
    images = toy_model.synthetic_images(10, RES, seed=3)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(10))).batch(4)
    samples = tflite_convert.calibration_samples(dataset, (1, RES, RES, 3), max_samples=7)
    self.assertLen(samples, 7)
    self.assertEqual(samples[0].shape, (1, RES, RES, 3))
    self.assertAllEqual(samples[5][0], images[5])

  def test_unknown_input_size_is_rejected(self):
    image = tf_keras.Input((None, None, 3), name='image')
    model = tf_keras.Model(image, tf_keras.layers.Conv2D(2, 1)(image))
    with self.assertRaisesRegex(ExportError, 'unknown dimensions'):
      tflite_convert.convert_float(model)

  def test_inspect_rejects_non_tflite(self):
    path = os.path.join(self.tmp, 'not_a_model.tflite')
    with self.assertRaisesRegex(ExportError, 'not a TFLite flatbuffer'):
      tflite_inspect.inspect_tflite(b'\x00' * 64)
    with self.assertRaisesRegex(ExportError, 'does not exist'):
      tflite_inspect.inspect_tflite(path)
    with self.assertRaisesRegex(ExportError, 'corrupt'):
      tflite_inspect.inspect_tflite(self.int8_bytes[:len(self.int8_bytes) // 2])


class _NoisyConverter:
  """Writes to file descriptor 2 as TF's C++ converter does, then returns fixed bytes."""

  def __init__(self, fail=False):
    self.fail = fail

  def convert(self):
    os.write(2, b'fully_quantize: 0, inference_type: 6, input_inference_type: INT8\n')
    os.write(2, b'a converter warning\n')
    if self.fail:
      raise ValueError('conversion failed')
    return b'flatbuffer'


class RunConverterTest(tf.test.TestCase):

  def _stderr_of(self, fn):
    with tempfile.TemporaryFile() as sink:
      saved = os.dup(2)
      os.dup2(sink.fileno(), 2)
      try:
        result = fn()
      finally:
        os.dup2(saved, 2)
        os.close(saved)
      sink.seek(0)
      return result, sink.read().decode()

  def test_drops_only_the_quantizer_dump(self):
    data, text = self._stderr_of(lambda: tflite_convert.run_converter(_NoisyConverter()))
    self.assertEqual(data, b'flatbuffer')
    self.assertEqual(text, 'a converter warning\n')

  def test_errors_propagate_with_the_rest_of_stderr(self):
    def convert():
      with self.assertRaisesRegex(ValueError, 'conversion failed'):
        tflite_convert.run_converter(_NoisyConverter(fail=True))
    _, text = self._stderr_of(convert)
    self.assertEqual(text, 'a converter warning\n')


if __name__ == '__main__':
  tf.test.main()
