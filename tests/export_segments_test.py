"""Tests for export.segments and export.manifest: early-exit segment files and their manifest."""
# bazel: size=medium

import os
import tempfile
import types

import numpy as np
import tensorflow as tf
import tf_keras

from export import graph_slice
from export import litert_runner
from export import manifest as manifest_lib
from export import quantization
from export import segments
from export import tflite_inspect
from export import tflm_runner
from export import toy_model
from export.errors import ExportError
from ofav2_tf import costs
from ofav2_tf import variants
from tests import testutil

RES = 32
NUM_CLASSES = 5
STANDARD_LAYERS = {'InputLayer', 'Conv2D', 'DepthwiseConv2D', 'BatchNormalization', 'ReLU',
                   'Rescaling', 'Multiply', 'Add', 'GlobalAveragePooling2D', 'MaxPooling2D',
                   'Dense', 'Dropout', 'Identity'}


class ExportSegmentsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix='export-segments-test-')
    cls.net = testutil.perturbed_supernet('EE_D', num_classes=NUM_CLASSES, seed=1,
                                          width_multiplier=0.25)
    space = cls.net.search_space(resolutions=(RES,))
    cls.config = space.sample(np.random.default_rng(3)).replace(exit=3)
    testutil.calibrate(cls.net, cls.config, all_exits=True)
    cls.calibration = toy_model.synthetic_images(32, RES, seed=5)
    cls.images = toy_model.synthetic_images(16, RES, seed=6)
    cls.result = segments.export_early_exit(cls.net, cls.config, cls.calibration, cls.tmp)
    cls.manifest = cls.result.manifest

  def test_float_segments_chain_to_the_multi_exit_model(self):
    for segment in self.result.segments:
      self.assertContainsSubset({type(l).__name__ for l in segment.model.layers},
                                STANDARD_LAYERS)
    chained = segments.run_float_chain(self.result.segments, self.images)
    expected = self.result.model(self.images, training=False)
    for exit_number, want in zip(self.manifest.exits, expected):
      self.assertAllClose(chained[f'exit{exit_number}'], want, atol=1e-4, rtol=0)
      self.assertGreater(float(np.max(np.abs(want))), 1e-3)

  def test_exit_subset_splits_and_chains(self):
    model = self.result.model
    parts = segments.split(model, [2, 3], batch_size=None)
    self.assertEqual([p.exit for p in parts], [2, 3])
    self.assertEqual(parts[1].input_name, 'features2')
    chained = segments.run_float_chain(parts, self.images)
    expected = model(self.images, training=False)
    self.assertAllClose(chained['exit2'], expected[1], atol=1e-4, rtol=0)
    self.assertAllClose(chained['exit3'], expected[2], atol=1e-4, rtol=0)
    fixed = segments.split(model, [3])[0].model
    self.assertEqual(fixed.inputs[0].shape[0], 1)

  def test_files_match_manifest_and_deployment_contract(self):
    reloaded = manifest_lib.Manifest.load(self.result.manifest_path)
    self.assertEqual(reloaded, self.manifest)
    self.assertEqual(self.manifest.exits, (1, 2, 3))
    self.assertEqual(self.manifest.config, self.config.to_dict())
    previous = None
    for position, entry in enumerate(self.manifest.segments):
      info = tflite_inspect.inspect_tflite(os.path.join(self.tmp, entry.file))
      tflite_inspect.check_deployable(info)
      tflm_runner.check_runnable(info)
      self.assertEqual(entry.size_bytes, info.size_bytes)
      self.assertEqual([t.name for t in entry.outputs], list(info.output_names))
      self.assertEqual([t.tensor_index for t in entry.outputs], [t.index for t in info.outputs])
      for tensor, meta in zip(info.inputs + info.outputs, entry.inputs + entry.outputs):
        self.assertEqual(meta.dtype, 'int8')
        self.assertEqual(meta.shape, tensor.shape)
        self.assertEqual((meta.scale, meta.zero_point), (tensor.scale, tensor.zero_point))
      self.assertEqual(entry.output(entry.logits).shape, (1, NUM_CLASSES))
      last = position == len(self.manifest.segments) - 1
      self.assertEqual(len(entry.outputs), 1 if last else 2)
      self.assertEqual(entry.features is None, last)
      self.assertIsNone(entry.threshold)
      if previous is not None:
        self.assertEqual(entry.inputs[0].name, previous.features)
        self.assertEqual(entry.inputs[0].shape, previous.output(previous.features).shape)
      else:
        self.assertEqual(entry.inputs[0].shape, (1, RES, RES, 3))
      previous = entry

  def test_multi_output_file_maps_exits_by_name(self):
    multi = self.manifest.multi_output
    info = tflite_inspect.inspect_tflite(os.path.join(self.tmp, multi.file))
    tflite_inspect.check_deployable(info)
    self.assertCountEqual(multi.output_index, ['exit1', 'exit2', 'exit3'])
    for name, index in multi.output_index.items():
      self.assertEqual(info.output_names[index], name)
      self.assertEqual(info.outputs[index].index, multi.outputs[index].tensor_index)
    # The runtime's outputs, named from the flatbuffer, agree with the float model's exits.
    runner = litert_runner.LiteRTModel(os.path.join(self.tmp, multi.file))
    expected = self.result.model(self.images[:1], training=False)
    got = runner.run(self.images[:1])
    for k, want in zip((1, 2, 3), expected):
      spread = float(np.ptp(want))
      self.assertLess(float(np.max(np.abs(got[f'exit{k}'] - want))), 0.25 * spread + 1e-3)

  def test_macs_are_cumulative_costs(self):
    total = 0
    for position, entry in enumerate(self.manifest.segments):
      total += entry.macs
      self.assertGreater(entry.macs, 0)
      self.assertEqual(entry.cumulative_macs, total)
      expected = costs.count(self.config, 'EE_D', NUM_CLASSES, 0.25,
                             exits=self.manifest.exits[:position + 1]).macs
      self.assertEqual(entry.cumulative_macs, expected)

  def test_int8_chain_tracks_float_and_runs_in_tflite_micro(self):
    """Dequantized int8 logits stay close to float ones; TFLite Micro equals LiteRT reference."""
    float_out = segments.run_float_chain(self.result.segments, self.images)
    models = [litert_runner.LiteRTModel(os.path.join(self.tmp, e.file), reference_kernels=True)
              for e in self.manifest.segments]
    int8_out = {}
    for i, image in enumerate(self.images):
      current = models[0].quantize_inputs(image[np.newaxis])[0]
      for position, (entry, model) in enumerate(zip(self.manifest.segments, models)):
        raw = dict(zip(model.output_names, model.run_raw(current)))
        if i == 0:  # TFLite Micro on the real chained input, against LiteRT's reference kernels.
          micro = tflm_runner.run_tflm(os.path.join(self.tmp, entry.file), current)
          for name, value in micro.named_outputs().items():
            self.assertLessEqual(int(np.max(np.abs(value.astype(int) - raw[name].astype(int)))), 1)
        out = entry.output(entry.logits)
        logits = quantization.dequantize(raw[entry.logits], out.scale, out.zero_point)[0]
        int8_out.setdefault(entry.exit, []).append(logits)
        if entry.features is not None:
          source = entry.output(entry.features)
          dest = self.manifest.segments[position + 1].inputs[0]
          current = quantization.quantize(
              quantization.dequantize(raw[entry.features], source.scale, source.zero_point),
              dest.scale, dest.zero_point, np.int8)
    rates = {}
    for exit_number, logits in int8_out.items():
      want = float_out[f'exit{exit_number}']
      error = np.sqrt(np.mean((np.stack(logits) - want) ** 2))
      spread = np.sqrt(np.mean((want - want.mean(axis=0)) ** 2))  # across images
      self.assertLess(error, 0.35 * spread, msg=f'exit {exit_number}')
      rates[exit_number] = float(np.mean(np.argmax(logits, axis=1) == np.argmax(want, axis=1)))
    print(f'int8 vs float top-1 agreement per exit: {rates}')
    self.assertGreaterEqual(rates[self.manifest.exits[-1]], 0.5)
    for entry in self.manifest.segments:  # Recorded by the export's own TFLite Micro run.
      self.assertLessEqual(entry.tflm_max_step_diff, 1)
      self.assertGreaterEqual(entry.arena_bytes, entry.arena_used_bytes)
      self.assertGreater(entry.arena_used_bytes, 1000)
    print('arena bytes per segment:', [e.arena_bytes for e in self.manifest.segments])

  def test_bad_requests_are_clear_errors(self):
    with self.assertRaisesRegex(ExportError, 'including 3'):
      segments.resolve_exits(self.net, self.config, [1, 2])
    with self.assertRaisesRegex(ExportError, r'1\.\.3'):
      segments.resolve_exits(self.net, self.config, [2, 4])
    single = types.SimpleNamespace(variant=variants.get_variant('SE_D'))
    with self.assertRaisesRegex(ExportError, 'EE_'):
      segments.resolve_exits(single, self.config.replace(exit=5), None)
    with self.assertRaisesRegex(ExportError, 'last exit'):
      segments.split(self.result.model, [1, 2])
    with self.assertRaisesRegex(ExportError, 'not outputs'):
      segments.split(self.result.model, [4])
    with self.assertRaisesRegex(ExportError, 'not among its inputs'):
      graph_slice.slice_model(self.result.model, {'stage1_block2_expand_conv': 'x'}, ['exit3'])
    with self.assertRaisesRegex(ExportError, 'no layer'):
      graph_slice.slice_model(self.result.model, {'nope': 'x'}, ['exit3'])
    with self.assertRaisesRegex(ExportError, 'version'):
      manifest_lib.Manifest.from_dict({**self.manifest.to_dict(), 'version': 99})
    with self.assertRaisesRegex(ExportError, 'does not exist'):
      manifest_lib.Manifest.load(os.path.join(self.tmp, 'missing.json'))
    with self.assertRaisesRegex(ExportError, 'probability'):
      self.manifest.with_thresholds(1.5)

  def test_slice_copies_layers(self):
    segment = self.result.segments[0].model
    source = self.result.model
    shared = {id(w) for w in segment.weights} & {id(w) for w in source.weights}
    self.assertEmpty(shared)
    self.assertIsInstance(segment, tf_keras.Model)


if __name__ == '__main__':
  tf.test.main()
