"""Equivalence of the supernet and its extracted static models, for all eight variants."""
# bazel: size=enormous tags=slow


from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ofav2_tf import extraction
from ofav2_tf import supernet as supernet_lib
from ofav2_tf import variants
from tests import testutil

STANDARD_LAYERS = {'InputLayer', 'Conv2D', 'DepthwiseConv2D', 'BatchNormalization', 'ReLU',
                   'Rescaling', 'Multiply', 'Add', 'GlobalAveragePooling2D', 'MaxPooling2D',
                   'Dense', 'Dropout'}
TOLERANCE = 1e-4
NUM_RANDOM = 10


class ExtractionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters((v, v) for v in variants.VARIANTS.names())
  def test_extracted_outputs_equal_supernet(self, variant):
    # Width 0.5: the same graph (every layer, slice and branch) for half the compute.
    net = testutil.perturbed_supernet(variant, seed=1, width_multiplier=0.5)
    space = net.search_space()
    rng = np.random.default_rng(7)
    configs = [space.max_config(), space.min_config()] + [space.sample(rng)
                                                          for _ in range(NUM_RANDOM)]
    for i, config in enumerate(configs):
      testutil.calibrate(net, config, seed=i)
      arch = supernet_lib.arch_tensors(config)
      model = extraction.extract(net, config, any_resolution=True)
      self.assertContainsSubset({type(l).__name__ for l in model.layers}, STANDARD_LAYERS)
      for resolution in (config.resolution, 48 if config.resolution != 48 else 64):
        x = testutil.images(2, resolution, seed=i)
        expected = net(x, arch, training=False)
        actual = model(x, training=False)
        self.assertAllClose(expected, actual, atol=TOLERANCE, rtol=0,
                            msg=f'{variant} {config} at {resolution}')
        self.assertGreater(float(tf.reduce_max(tf.abs(expected))), 1e-3)  # not trivially zero

  @parameterized.named_parameters((v, v) for v in ('EE_B', 'EE_D', 'EE_P', 'EE_DP'))
  def test_all_exits_extraction_matches_all_outputs(self, variant):
    net = testutil.perturbed_supernet(variant, seed=2)
    rng = np.random.default_rng(3)
    space = net.search_space()
    for config in (space.max_config(), space.sample(rng).replace(exit=5)):
      testutil.calibrate(net, config, all_exits=True)
      model = extraction.extract(net, config, exits='all')
      self.assertEqual(model.output_names, [f'exit{k}' for k in range(1, 6)])
      x = testutil.images(2, config.resolution, seed=5)
      expected = net(x, supernet_lib.arch_tensors(config), training=False, all_exits=True)
      for k, (e, a) in enumerate(zip(expected, model(x, training=False))):
        self.assertAllClose(e, a, atol=TOLERANCE, rtol=0, msg=f'exit {k + 1}')

  def test_exit_subset(self):
    net = testutil.perturbed_supernet('EE_B', seed=4)
    config = net.search_space().max_config().replace(exit=3)
    model = extraction.extract(net, config, exits=[1, 3])
    self.assertEqual(model.output_names, ['exit1', 'exit3'])
    self.assertNotIn('stage4_block1_project_conv', [l.name for l in model.layers])

  def test_layer_names_are_systematic(self):
    net = testutil.perturbed_supernet('SE_DP', seed=0)
    config = net.search_space().max_config()
    names = {l.name for l in extraction.extract(net, config).layers}
    for name in ('stem_conv', 'first_block_depthwise', 'stage2_block1_mbconv_se_reduce',
                 'stage2_block1_conv1x1', 'stage2_block1_transform_pool',
                 'stage2_block1_transform_conv', 'stage3_block3_transform_bn',
                 'stage5_dense_after_block4', 'exit5'):
      self.assertIn(name, names)


if __name__ == '__main__':
  tf.test.main()
