"""Tests for export.litert_runner and export.quantization: LiteRT runs, latency, benchmark tool."""
# bazel: size=medium

import json
import os
import tempfile

import flatbuffers
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema

from export import litert_runner
from export import quantization
from export import tflite_convert
from export import toy_model
from export.errors import ExportError

RES = 32


def _without_signatures(data):
  """The same model with its SignatureDefs removed (as some third-party converters write it)."""
  model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
  model.signatureDefs = []
  builder = flatbuffers.Builder(len(data))
  builder.Finish(model.Pack(builder), file_identifier=b'TFL3')
  return bytes(builder.Output())


class LiteRTRunnerTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix='export-litert-test-')
    cls.model = toy_model.build_toy_model(resolution=RES, num_exits=2, seed=1)
    cls.path = os.path.join(cls.tmp, 'toy_int8.tflite')
    tflite_convert.convert_int8(cls.model, toy_model.synthetic_images(32, RES, seed=1), cls.path)

  def test_run_quantizes_and_names_outputs_with_file_params(self):
    runner = litert_runner.LiteRTModel(self.path)
    image = toy_model.synthetic_images(1, RES, seed=5)
    named = runner.run(image)
    self.assertEqual(list(named), list(runner.output_names))
    self.assertCountEqual(named, self.model.output_names)
    inp = runner.info.inputs[0]
    raw = runner.run_raw(quantization.quantize(image, inp.scale, inp.zero_point, np.int8))
    for value, tensor, name in zip(raw, runner.info.outputs, runner.output_names):
      self.assertEqual(value.dtype, np.int8)
      self.assertAllEqual(named[name], (value.astype(np.float32) - tensor.zero_point) * tensor.scale)
      self.assertEqual(named[name].dtype, np.float32)

  def test_quantize_saturates_and_round_trips(self):
    q = quantization.quantize(np.array([-1e9, -0.5, 0.0, 0.26, 1e9]), 0.5, 3, np.int8)
    self.assertAllEqual(q, [-128, 2, 3, 4, 127])
    self.assertAllClose(quantization.dequantize(q[1:4], 0.5, 3), [-0.5, 0.0, 0.5])

  def test_reference_kernels_and_threads(self):
    image = toy_model.synthetic_images(1, RES, seed=6)
    ref = litert_runner.LiteRTModel(self.path, reference_kernels=True).run(image)
    two = litert_runner.LiteRTModel(self.path, num_threads=2).run(image)
    builtin = litert_runner.LiteRTModel(self.path, delegate=False).run(image)
    for name in ref:  # Optimized and reference int8 kernels round differently, by a few steps.
      step = litert_runner.LiteRTModel(self.path).info.output(name).scale
      self.assertLessEqual(np.max(np.abs(ref[name] - two[name])), 16 * step + 1e-6)
      self.assertLessEqual(np.max(np.abs(ref[name] - builtin[name])), 16 * step + 1e-6)
    with self.assertRaisesRegex(ExportError, 'num_threads=0'):
      litert_runner.LiteRTModel(self.path, num_threads=0)

  def test_wrong_input_is_a_clear_error(self):
    runner = litert_runner.LiteRTModel(self.path)
    with self.assertRaisesRegex(ExportError, r'has shape \[1, 32, 32, 3\]; got \[2, 32, 32, 3\]'):
      runner.run(np.zeros((2, RES, RES, 3), np.float32))
    with self.assertRaisesRegex(ExportError, 'is int8; got float32'):
      runner.run_raw(np.zeros((1, RES, RES, 3), np.float32))

  def test_latency_one_and_two_threads(self):
    stats = litert_runner.measure_latency(self.path, num_threads=(1, 2), runs=20, warmup=3)
    self.assertEqual(sorted(stats), [1, 2])
    for threads, s in stats.items():
      self.assertEqual(s.num_threads, threads)
      self.assertEqual(s.runs, 20)
      self.assertGreater(s.median_ms, 0.0)
      self.assertGreaterEqual(s.p90_ms, s.median_ms)
      self.assertGreaterEqual(s.median_ms, s.min_ms)

  def test_benchmark_tool_runs_on_exported_file(self):
    self.assertIsNotNone(litert_runner.benchmark_tool_command())  # Shipped by ai-edge-litert.
    out = os.path.join(self.tmp, 'bench', 'toy_int8.json')
    result = litert_runner.run_benchmark_tool(self.path, out, num_threads=1, num_runs=5,
                                              warmup_runs=1)
    self.assertEqual(result['signature'], 'serving_default')
    self.assertEqual(result['latency']['num_runs'], 5)
    self.assertGreater(result['latency']['avg_ms'], 0.0)
    with open(out) as f:
      self.assertEqual(json.load(f), result)
    self.assertTrue(os.path.isfile(out + '.log'))
    self.assertCountEqual(os.listdir(os.path.dirname(out)), ['toy_int8.json', 'toy_int8.json.log'])

  def test_benchmark_tool_needs_a_signature(self):
    with open(self.path, 'rb') as f:
      data = f.read()
    bare = os.path.join(self.tmp, 'no_signature.tflite')
    with open(bare, 'wb') as f:
      f.write(_without_signatures(data))
    with self.assertRaisesRegex(ExportError, 'has no signature'):
      litert_runner.run_benchmark_tool(bare, os.path.join(self.tmp, 'never.json'))
    self.assertFalse(os.path.exists(os.path.join(self.tmp, 'never.json')))


if __name__ == '__main__':
  tf.test.main()
