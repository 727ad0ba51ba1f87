"""Tests for export.tflm_runner: TFLite Micro in a child process, arena report, clear failures."""
# bazel: size=medium

import os
import re
import tempfile

import flatbuffers
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema

from export import litert_runner
from export import tflite_convert
from export import tflite_inspect
from export import tflm_runner
from export import toy_model
from export.errors import ArenaTooSmallError
from export.errors import ExportError
from export.errors import RuntimeCrashError
from export.errors import UnsupportedOpError

RES = 32


def _edited(data, edit):
  """The model in `data` after `edit(model_t)` changed its object-API form."""
  model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
  edit(model)
  builder = flatbuffers.Builder(len(data))
  builder.Finish(model.Pack(builder), file_identifier=b'TFL3')
  return bytes(builder.Output())


class TFLMRunnerTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix='export-tflm-test-')
    model = toy_model.build_toy_model(resolution=RES, num_exits=2, seed=2)
    cls.path = os.path.join(cls.tmp, 'toy_int8.tflite')
    cls.data = tflite_convert.convert_int8(model, toy_model.synthetic_images(32, RES, seed=3),
                                           cls.path)
    cls.info = tflite_inspect.inspect_tflite(cls.data)
    inp = cls.info.inputs[0]
    cls.litert = litert_runner.LiteRTModel(cls.path, reference_kernels=True)
    cls.inputs = [cls.litert.quantize_inputs(image[np.newaxis])[0]
                  for image in toy_model.synthetic_images(2, RES, seed=4)]
    cls.inputs.append(np.random.default_rng(0).integers(-128, 128, inp.shape).astype(np.int8))

  def _write(self, name, data):
    path = os.path.join(self.tmp, name)
    with open(path, 'wb') as f:
      f.write(data)
    return path

  def test_outputs_equal_litert_reference_and_arena_is_reported(self):
    for x in self.inputs:
      result = tflm_runner.run_tflm(self.path, x)
      expected = self.litert.run_raw(x)
      self.assertEqual(result.output_names, self.info.output_names)
      for got, want in zip(result.outputs, expected):
        self.assertEqual(got.dtype, np.int8)
        self.assertEqual(got.shape, want.shape)
        # Same reference arithmetic; allow one step for rounding in a different accumulation order.
        self.assertLessEqual(np.max(np.abs(got.astype(int) - want.astype(int))), 1)
      self.assertGreater(result.arena_used_bytes, 1000)
      self.assertLess(result.arena_used_bytes, result.arena_size)
      self.assertEqual(result.arena_size, tflm_runner.DEFAULT_ARENA_BYTES)

  def test_minimum_arena_is_measured_and_enforced(self):
    result = tflm_runner.run_tflm(self.path, self.inputs[0], find_min_arena=True)
    need = result.arena_min_bytes
    self.assertGreaterEqual(need, result.arena_used_bytes)
    self.assertLess(need, 2 * result.arena_used_bytes)
    exact = tflm_runner.run_tflm(self.path, self.inputs[0], arena_size=need)
    for a, b in zip(exact.outputs, result.outputs):
      self.assertAllEqual(a, b)
    self.assertEqual(need % 16, 0)
    for too_small in (need - 64, result.arena_used_bytes // 2, 64):
      with self.assertRaisesRegex(ArenaTooSmallError,
                                  rf'arena of {too_small} bytes is too small for .*toy_int8.tflite'
                                  rf'( \(it crashed\))?; it needs {need} bytes'):
        tflm_runner.run_tflm(self.path, self.inputs[0], arena_size=too_small)

  def test_op_missing_from_tflm_is_rejected_before_running(self):
    def to_gelu(model):
      for code in model.operatorCodes:
        if code.builtinCode == schema.BuiltinOperator.MAX_POOL_2D:
          code.builtinCode = schema.BuiltinOperator.GELU
          code.deprecatedBuiltinCode = 127  # Placeholder for codes beyond the int8 field.
    path = self._write('gelu.tflite', _edited(self.data, to_gelu))
    with self.assertRaisesRegex(UnsupportedOpError,
                                r'gelu.tflite uses ops TFLite Micro lacks: GELU'):
      tflm_runner.run_tflm(path, self.inputs[0])
    self.assertEqual(tflm_runner.unsupported_ops(self.info), ())

  def test_crash_in_tflm_becomes_a_clear_error(self):
    def dangling_buffer(model):  # A weight tensor pointing far past the buffer table.
      op = model.subgraphs[0].operators[0]
      model.subgraphs[0].tensors[op.inputs[1]].buffer = 2**31 - 1
    path = self._write('corrupt.tflite', _edited(self.data, dangling_buffer))
    with self.assertRaisesRegex(RuntimeCrashError,
                                r'TFLite Micro crashed \(SIG[A-Z]+\) on .*corrupt.tflite: the file is '
                                'likely corrupt'):
      tflm_runner.run_tflm(path, self.inputs[0])

  def test_float_model_and_wrong_inputs_are_rejected(self):
    def float_io(model):
      sub = model.subgraphs[0]
      for index in list(sub.inputs) + list(sub.outputs):
        sub.tensors[index].type = schema.TensorType.FLOAT32
    path = self._write('float_io.tflite', _edited(self.data, float_io))
    with self.assertRaisesRegex(ExportError, 'non-integer inputs/outputs'):
      tflm_runner.run_tflm(path, self.inputs[0])
    with self.assertRaisesRegex(ExportError, r'is int8 \[1, 32, 32, 3\]; got float32'):
      tflm_runner.run_tflm(self.path, self.inputs[0].astype(np.float32))
    with self.assertRaisesRegex(ExportError, 'does not exist'):
      tflm_runner.run_tflm(os.path.join(self.tmp, 'missing.tflite'), self.inputs[0])

  def test_op_list_matches_installed_tflm_kernels(self):
    import tflite_micro  # pylint: disable=g-import-not-at-top
    lib = os.path.join(os.path.dirname(tflite_micro.__file__), 'python', 'tflite_micro',
                       '_runtime.so')
    with open(lib, 'rb') as f:
      registered = set(re.findall(rb'Register_([A-Z0-9_]+)Ev', f.read()))
    registered = {r.decode() for r in registered}
    self.assertLessEqual(tflm_runner.TFLM_BUILTIN_OPS, registered)
    self.assertNotIn('GELU', registered)


if __name__ == '__main__':
  tf.test.main()
