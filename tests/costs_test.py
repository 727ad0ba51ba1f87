"""Analytic costs against the official OFA figures and against counts read off extracted models."""
# bazel: size=large

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ofav2_tf import costs
from ofav2_tf import extraction
from ofav2_tf import model_stats
from ofav2_tf import subnet_config as sc
from ofav2_tf import supernet as supernet_lib
from ofav2_tf import variants


class OfaFiguresTest(tf.test.TestCase):
  """SE_B is the original OFA MobileNetV3 network: its counts must match the official counter."""

  def setUp(self):
    super().setUp()
    self.space = sc.SearchSpace.for_variant('SE_B', resolutions=(32, 64))

  def test_parameters(self):
    self.assertEqual(costs.count(self.space.max_config(), 'SE_B', 200).params, 6_639_960)
    self.assertEqual(costs.count(self.space.min_config(), 'SE_B', 200).params, 2_385_992)

  def test_macs(self):
    expected = {(64, 'max'): 49.8e6, (64, 'min'): 11.4e6, (32, 'max'): 15.4e6, (32, 'min'): 4.2e6}
    for (resolution, which), macs in expected.items():
      config = getattr(self.space, f'{which}_config')(resolution)
      self.assertAllClose(costs.count(config, 'SE_B', 200).macs, macs, rtol=0.01,
                          msg=f'{which} at {resolution}')

  def test_costs_grow_with_every_dimension(self):
    base = self.space.uniform(5, 4, 3, resolution=64)
    report = costs.count(base, 'SE_B', 200)
    for bigger in (base.replace(kernel=(7,) * 20), base.replace(expand=(6,) * 20),
                   base.replace(depth=(4,) * 5)):
      other = costs.count(bigger, 'SE_B', 200)
      self.assertGreater(other.macs, report.macs)
      self.assertGreaterEqual(other.peak_activation_elements, report.peak_activation_elements)
    self.assertGreater(costs.count(base.replace(resolution=32), 'SE_B', 200).macs * 3, 0)


class PeakMemoryTest(tf.test.TestCase):

  def test_peak_of_max_network_at_64_is_the_first_strided_depthwise(self):
    # Stage 1, block 1 expands 32x32x16 to 32x32x96 (e6) and its stride-2 depthwise reads that
    # while writing 16x16x96; its input has no shortcut, so nothing else is alive.
    space = sc.SearchSpace.for_variant('SE_B')
    report = costs.count(space.max_config(64), 'SE_B', 10)
    self.assertEqual(report.peak_activation_elements, 32 * 32 * 96 + 16 * 16 * 96)
    # With e3 the peak moves to the expand conv before it: 32x32x16 in, 32x32x48 out.
    report = costs.count(space.min_config(64), 'SE_B', 10)
    self.assertEqual(report.peak_activation_elements, 32 * 32 * 16 + 32 * 32 * 48)

  def test_dense_skips_keep_more_tensors_alive(self):
    config = sc.SearchSpace.for_variant('SE_B').max_config(64)
    base = costs.count(config, 'SE_B', 10)
    dense = costs.count(config, 'SE_D', 10)
    self.assertEqual(base.params, dense.params)
    self.assertEqual(base.macs, dense.macs)
    self.assertGreaterEqual(dense.peak_activation_elements, base.peak_activation_elements)


class AgainstExtractedModelTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters((v, v) for v in variants.VARIANTS.names())
  def test_analytic_counts_equal_layer_counts(self, variant):
    net = supernet_lib.build_supernet(variant, 7, width_multiplier=0.75)
    space = net.search_space()
    rng = np.random.default_rng(5)
    for config in [space.max_config(), space.min_config(), space.sample(rng), space.sample(rng)]:
      model = extraction.extract(net, config)
      report = costs.count(config, variant, 7, width_multiplier=0.75)
      self.assertEqual(report.params, model_stats.trainable_params(model), msg=str(config))
      self.assertEqual(report.macs, model_stats.keras_macs(model), msg=str(config))
    if net.variant.early_exits:
      config = space.max_config()
      model = extraction.extract(net, config, exits='all')
      report = costs.count(config, variant, 7, width_multiplier=0.75, exits=range(1, 6))
      self.assertEqual(report.params, model_stats.trainable_params(model))
      self.assertEqual(report.macs, model_stats.keras_macs(model))


if __name__ == '__main__':
  tf.test.main()
