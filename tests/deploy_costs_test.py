"""Tests for ofav2_tf.deploy_costs: int8 graph model, flash and TFLite Micro arena estimates
against real converted files and measured arenas."""
# bazel: size=medium

import os
import tempfile

from ai_edge_litert import schema_py_generated as schema
import numpy as np
import tensorflow as tf

from export import tflite_convert
from export import tflite_inspect
from export import tflm_runner
from export import toy_model
from ofav2_tf import block_shapes
from ofav2_tf import costs
from ofav2_tf import deploy_costs
from ofav2_tf import extraction
from tests import testutil

# Stated accuracy (module docstring of deploy_costs has the measured figures).
FLASH_TOLERANCE = 0.05
ARENA_TOLERANCE = 0.10
CASES = (('EE_DP', 0.25, 5, 40, 11), ('SE_D', 0.5, 10, 32, 12))


class DeployCostsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(prefix='deploy-costs-test-')
    cls.cases = []
    for variant, width, classes, resolution, seed in CASES:
      net = testutil.perturbed_supernet(variant, num_classes=classes, seed=seed,
                                        width_multiplier=width)
      rng = np.random.default_rng(seed)
      for w in net.weights:  # Non-zero biases, as in a trained network (zeros get dropped).
        if 'bias' in w.name:
          w.assign(rng.normal(0, 0.1, w.shape).astype(np.float32))
      config = net.search_space(resolutions=(resolution,)).sample(rng)
      testutil.calibrate(net, config)
      model = extraction.extract(net, config)
      path = os.path.join(tmp, f'{variant}.tflite')
      data = tflite_convert.convert_int8(model, toy_model.synthetic_images(16, resolution), path)
      info = tflite_inspect.inspect_tflite(data)
      tensors = schema.Model.GetRootAs(data, 0).Subgraphs(0).TensorsLength()
      image = rng.integers(-128, 128, info.inputs[0].shape).astype(np.int8)
      arena = tflm_runner.run_tflm(path, image, find_min_arena=True).arena_min_bytes
      graph = deploy_costs.int8_graph(config, variant, classes, width)
      cls.cases.append(dict(variant=variant, width=width, classes=classes, config=config,
                            info=info, tensors=tensors, arena=arena, graph=graph))

  def test_graph_has_the_converted_files_ops_and_tensors(self):
    for case in self.cases:
      graph, info = case['graph'], case['info']
      mine = {}
      for op in graph.ops:
        mine[op.kind] = mine.get(op.kind, 0) + 1
      self.assertEqual(mine, dict(info.op_counts), msg=case['variant'])
      self.assertEqual(graph.tensor_count, case['tensors'], msg=case['variant'])

  def test_flash_estimate(self):
    for case in self.cases:
      estimate = deploy_costs.flash_bytes(case['config'], case['variant'], case['classes'],
                                          width_multiplier=case['width'])
      real = case['info'].size_bytes
      print(f'{case["variant"]}: flash {real} B, estimate {estimate} B '
            f'({(estimate - real) / real:+.1%})')
      self.assertLess(abs(estimate - real) / real, FLASH_TOLERANCE)

  def test_arena_estimate(self):
    for case in self.cases:
      estimate = deploy_costs.estimate(case['config'], case['variant'], case['classes'],
                                       width_multiplier=case['width'])
      real = case['arena']
      print(f'{case["variant"]}: arena {real} B, estimate {estimate.arena_bytes} B '
            f'({(estimate.arena_bytes - real) / real:+.1%})')
      self.assertLess(abs(estimate.arena_bytes - real) / real, ARENA_TOLERANCE)
      self.assertGreater(estimate.persistent_bytes, 0)
      # The op-level activation peak includes hard-swish temporaries the analytic count folds.
      counted = costs.count(case['config'], case['variant'], case['classes'],
                            case['width']).peak_activation_elements
      self.assertGreaterEqual(case['graph'].peak_bytes(), counted)
      self.assertGreaterEqual(estimate.activation_bytes, case['graph'].peak_bytes())

  def test_block_weights_agree_with_graph(self):
    for case in self.cases:
      blocks = block_shapes.network_blocks(case['config'], case['variant'], case['classes'],
                                           case['width'])
      graph = case['graph']
      in_graph = sum(op.weights + op.bias for op in graph.ops)
      in_graph += sum(op.constant_bytes for op in graph.ops if op.constant_bytes > 1)
      self.assertEqual(sum(b.weights for b in blocks), in_graph)

  def test_greedy_planner_reuses_dead_buffers(self):
    g = deploy_costs.Graph()
    x = g.tensor(100)
    a = g.op('CONV_2D', [x], 1000)
    b = g.op('CONV_2D', [a], 1000)  # x is dead here: b can reuse x's space after a's.
    c = g.op('ADD', [a, b], 1000)
    g.outputs.append(c)
    # Sizes align to 16: x 112, a/b/c 1008. Alive together at most: a, b (then a, b, c).
    self.assertEqual(g.peak_bytes(), 3000)
    self.assertEqual(g.planned_bytes(), 3 * 1008)


if __name__ == '__main__':
  tf.test.main()
