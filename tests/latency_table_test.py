"""Tests for ofav2_tf.latency_table (profiling, prediction, JSON round trip, validation) and
ofav2_tf.block_shapes (the block list it is keyed by)."""
# bazel: size=medium

import dataclasses
import os
import tempfile

from unittest import mock

import numpy as np
import tensorflow as tf
import tf_keras

from export import graph_slice
from ofav2_tf import block_shapes
from ofav2_tf import errors
from ofav2_tf import extraction
from ofav2_tf import latency_table
from ofav2_tf import subnet_config
from ofav2_tf import supernet as supernet_lib

RES = 32


class BlockShapesTest(tf.test.TestCase):
  """The block list matches the extracted model, layer for layer, for every variant body."""

  def test_blocks_cover_the_extracted_layers_exactly(self):
    for variant in ('EE_DP', 'SE_B'):
      net = supernet_lib.build_supernet(variant, 3, width_multiplier=0.25)
      space = net.search_space(resolutions=(RES,))
      config = space.sample(np.random.default_rng(2))
      exits = [1, config.exit] if variant.startswith('EE') and config.exit > 1 else None
      model = extraction.extract(net, config, exits=exits)
      blocks = block_shapes.network_blocks(config, variant, 3, 0.25, exits=exits)
      owned = {}
      for layer in model.layers[1:]:
        owners = [b.scope for b in blocks if b.owns_layer(layer.name)]
        self.assertLen(owners, 1, msg=f'{variant}: layer {layer.name} owned by {owners}')
        owned.setdefault(owners[0], []).append(layer)
      self.assertCountEqual(owned, [b.scope for b in blocks])
      scope_position = {b.scope: i for i, b in enumerate(blocks)}
      for block in blocks:  # Each block reads what `reads` says, with the shapes its key claims.
        names = [l.name for l in owned[block.scope]]
        reads, _ = graph_slice.layer_group_boundary(model, names)
        positions = [-1 if name == 'image' else
                     scope_position[next(b.scope for b in blocks if b.owns_layer(name))]
                     for name in reads]
        self.assertCountEqual(positions, block.reads, msg=block.scope)
        part = graph_slice.slice_layer_group(model, names)
        self.assertEqual(len(part.inputs), block.inputs if block.kind == 'add' else 1)
        self.assertEqual(tuple(part.inputs[0].shape[1:]),
                         (block.resolution, block.resolution, block.in_width))
        if block.kind != 'head':
          self.assertEqual(tuple(part.outputs[0].shape[1:]),
                           (block.out_resolution, block.out_resolution, block.out_width))

  def test_keys_name_shapes_not_positions(self):
    space = subnet_config.SearchSpace.for_variant('EE_D', resolutions=(RES,))
    config = space.uniform(3, 4, 4, exit=2)
    blocks = block_shapes.network_blocks(config, 'EE_D', 3)
    keys = [b.key for b in blocks if b.scope.startswith('stage1_block')]
    self.assertLen(keys, 4)
    self.assertNotEqual(keys[0], keys[1])  # Stride and width change in block 1.
    self.assertEqual(keys[1], keys[2])
    self.assertEqual(keys[2], keys[3])
    self.assertEqual(blocks[0].key, 'stem|r=32,in=3,out=16,s=2,k=3,act=hswish')


def _rows(truth, count=8, noise=0.03, seed=0):
  """Synthetic calibration networks whose measured time is `truth(row)` with relative noise."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(count):
    row = {'block_sum_ms': float(rng.uniform(0.2, 3.0)), 'blocks': int(rng.integers(5, 32)),
           'streamed_mb': float(rng.uniform(0.02, 1.2))}
    row['measured_ms'] = truth(row) * (1 + noise * float(rng.uniform(-1, 1)))
    rows.append(row)
  return rows


class FitCorrectionTest(tf.test.TestCase):
  """The correction to block sums is chosen by leave-one-out error, not always fitted."""

  def test_plain_sums_keep_no_correction(self):
    fit = latency_table.fit_correction(_rows(lambda r: r['block_sum_ms']))
    self.assertEqual(fit['correction'], 'none')
    self.assertEqual((fit['overhead_ms'], fit['ms_per_streamed_mb']), (0.0, 0.0))
    self.assertCountEqual(fit['leave_one_out_mare'], latency_table.CORRECTIONS)

  def test_overhead_and_weight_costs_are_recovered(self):
    rows = _rows(lambda r: r['block_sum_ms'] - 0.02 * (r['blocks'] - 1) + 0.8 * r['streamed_mb'],
                 count=10, noise=0.005)
    fit = latency_table.fit_correction(rows)
    self.assertEqual(fit['correction'], 'overhead+streaming')
    self.assertAllClose([fit['overhead_ms'], fit['ms_per_streamed_mb']], [0.02, 0.8], rtol=0.2)
    self.assertLess(fit['leave_one_out_mare']['overhead+streaming'],
                    fit['leave_one_out_mare']['none'] / 3)

  def test_overhead_alone(self):
    fit = latency_table.fit_correction(
        _rows(lambda r: r['block_sum_ms'] - 0.01 * (r['blocks'] - 1), noise=0.002))
    self.assertIn(fit['correction'], ('overhead', 'overhead+streaming'))
    self.assertAllClose(fit['overhead_ms'], 0.01, rtol=0.2)
    self.assertAllClose(fit['ms_per_streamed_mb'], 0.0, atol=0.05)

  def test_one_slow_network_does_not_buy_a_weight_term(self):
    # The four int8 calibration networks of the demo's version-1 table on 2026-11-27 (32-40 px),
    # all of whose weights counted as streamed: always fitting both terms gave 0.72 ms per MB from
    # the 3.0 ms one and 15.2% error on 20 others.
    rows = [{'measured_ms': 0.4125, 'block_sum_ms': 0.4292, 'blocks': 13, 'streamed_mb': 0.1725},
            {'measured_ms': 1.3924, 'block_sum_ms': 1.3278, 'blocks': 19, 'streamed_mb': 0.4229},
            {'measured_ms': 3.0051, 'block_sum_ms': 2.5012, 'blocks': 31, 'streamed_mb': 1.1499},
            {'measured_ms': 0.5144, 'block_sum_ms': 0.5164, 'blocks': 17, 'streamed_mb': 0.2019}]
    self.assertEqual(latency_table.fit_correction(rows)['correction'], 'none')

  def test_too_few_networks_score_only_what_they_can(self):
    rows = _rows(lambda r: r['block_sum_ms'], count=2)
    self.assertEqual(list(latency_table.fit_correction(rows)['leave_one_out_mare']), ['none'])
    empty = latency_table.fit_correction([])
    self.assertEqual((empty['correction'], empty['leave_one_out_mare']), ('none', {}))

  def test_negative_weight_cost_is_not_fitted(self):
    rows = _rows(lambda r: r['block_sum_ms'] - 0.5 * r['streamed_mb'], noise=0.0)
    fit = latency_table.fit_correction(rows)
    self.assertNotIn('overhead+streaming', fit['leave_one_out_mare'])
    self.assertGreaterEqual(fit['ms_per_streamed_mb'], 0.0)


class LatencyTableTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.net = supernet_lib.build_supernet('EE_D', 5, width_multiplier=0.25)
    cls.space = cls.net.search_space(resolutions=(RES,)).restrict(
        kernel_sizes=(3,), expand_ratios=(3,), exits=(2,))
    cls.progress = []
    cls.table = latency_table.profile(cls.net, cls.space, runs=10, warmup=2, rounds=2,
                                      calibration_networks=2,
                                      progress=lambda n, key, ms: cls.progress.append(key))

  def test_profile_covers_every_block_once(self):
    rng = np.random.default_rng(0)
    for _ in range(10):
      self.assertEmpty(self.table.missing(self.space.sample(rng)))
    # stem, first block, 2 stages x (block 1, blocks 2-4) MBConv shapes, 2 x 2 dense adds, 1 head.
    self.assertLen(self.table.entries, 11)
    self.assertEqual(self.progress, list(self.table.entries))
    self.assertTrue(all(v > 0 for v in self.table.entries.values()))
    self.assertLen(self.table.calibration, 2)
    self.assertIn(self.table.correction['name'], latency_table.CORRECTIONS)
    self.assertGreaterEqual(self.table.ms_per_streamed_mb, 0.0)
    self.assertEqual(self.table.machine['threads'], 1)
    self.assertIn('cpu', self.table.machine)
    self.assertTrue(self.table.machine['litert'])

  def test_prediction_is_overhead_plus_block_sums(self):
    config = self.space.max_config()
    blocks = self.table.blocks(config)
    weight_mb = sum(b.weights for b in blocks) * 4 / 1e6  # float32 table
    table = self.table
    l2_mb = (table.machine['l2_cache_bytes'] or 0) / 1e6
    self.assertAlmostEqual(table.streamed_mb(config), max(0.0, weight_mb - l2_mb))
    expected = (sum(table.entries[b.key] for b in blocks) - (len(blocks) - 1) * table.overhead_ms +
                max(0.0, weight_mb - l2_mb) * table.ms_per_streamed_mb)
    self.assertAlmostEqual(self.table.predict(config), expected)
    for row in self.table.calibration:  # What the two constants were fitted on.
      calibrated = subnet_config.SubnetConfig.from_string(row['config'])
      self.assertAlmostEqual(row['block_sum_ms'], table.block_sum_ms(calibrated))
      self.assertEqual(row['blocks'], len(table.blocks(calibrated)))
      self.assertAlmostEqual(row['weight_mb'], table.weight_mb(calibrated))
      self.assertAlmostEqual(row['streamed_mb'], table.streamed_mb(calibrated))
      self.assertGreater(row['measured_ms'], 0)

  def test_only_weights_beyond_l2_are_streamed(self):
    config = self.space.max_config()
    weight_mb = self.table.weight_mb(config)
    half = int(weight_mb * 1e6) // 2
    for l2_bytes, streamed in ((None, weight_mb), (0, weight_mb), (half, weight_mb - half / 1e6),
                               (int(weight_mb * 1e6) + 1, 0.0)):
      table = dataclasses.replace(self.table, machine=dict(self.table.machine,
                                                           l2_cache_bytes=l2_bytes))
      self.assertAlmostEqual(table.streamed_mb(config), streamed)

  def test_l2_cache_size_is_read_from_sysfs(self):
    root = tempfile.mkdtemp()
    for index, (level, kind, size) in enumerate(
        (('1', 'Data', '48K'), ('1', 'Instruction', '32K'), ('2', 'Unified', '2048K'),
         ('3', 'Unified', '36M'))):
      os.makedirs(os.path.join(root, f'index{index}'))
      for name, value in (('level', level), ('type', kind), ('size', size)):
        with open(os.path.join(root, f'index{index}', name), 'w', encoding='utf-8') as f:
          f.write(value + '\n')
    self.assertEqual(latency_table.l2_cache_bytes(root), 2048 * 1024)
    self.assertIsNone(latency_table.l2_cache_bytes(os.path.join(root, 'missing')))
    self.assertIn('l2_cache_bytes', self.table.machine)

  def test_passes_go_over_every_model_in_turn(self):
    config = self.space.max_config()
    model, stem = extraction.extract(self.net, config), self.table.blocks(config)[0]
    first = graph_slice.slice_layer_group(
        model, [l.name for l in model.layers if stem.owns_layer(l.name)], name='block')
    second = tf_keras.Sequential([tf_keras.Input((RES, RES, 3)), tf_keras.layers.Conv2D(4, 3)])
    models = {'a': latency_table.convert_block(first), 'b': latency_table.convert_block(second)}
    timed, measure = [], latency_table.litert_runner.measure_latency

    def recording(data, *args, **kwargs):
      stats = measure(data, *args, **kwargs)
      timed.append((next(k for k, v in models.items() if v is data), stats[1].min_ms))
      return stats

    timer = latency_table._SpreadTimer(1, 3, 1, rounds=2, statistic='min', passes=3)
    with mock.patch.object(latency_table.litert_runner, 'measure_latency', recording):
      first_pass = {key: timer.add(key, data) for key, data in models.items()}
      self.assertEqual([k for k, _ in timed], ['a', 'a', 'b', 'b'])
      final = timer.finish()
    self.assertEqual([k for k, _ in timed], ['a', 'a', 'b', 'b'] * 3)
    for key in models:
      values = [ms for k, ms in timed if k == key]
      self.assertEqual(first_pass[key], min(values[:2]))
      self.assertEqual(final[key], min(values))
    self.assertEqual(self.table.settings['passes'], 3)

  def test_json_round_trip(self):
    path = os.path.join(tempfile.mkdtemp(), 'lut.json')
    self.table.save(path)
    loaded = latency_table.LatencyTable.load(path)
    self.assertEqual(loaded, self.table)
    config = self.space.sample(np.random.default_rng(5))
    self.assertEqual(loaded.predict(config), self.table.predict(config))

  def test_validation_reports_finite_error(self):
    result = latency_table.validate(self.table, self.net, count=2, seed=1)
    self.assertLen(result.measured_ms, 2)
    self.assertTrue(np.all(np.isfinite(result.relative_errors)))
    self.assertTrue(all(m > 0 for m in result.measured_ms))
    self.assertAlmostEqual(result.mean_abs_relative_error,
                           float(np.mean(np.abs(result.relative_errors))))
    print('latency table validation:', result.to_dict())

  def test_errors(self):
    outside = self.net.search_space(resolutions=(RES, 48)).max_config(48).replace(exit=2)
    with self.assertRaisesRegex(errors.ConfigError, 'no entry for stem'):
      self.table.predict(outside)
    with self.assertRaisesRegex(errors.ConfigError, 'dtype'):
      latency_table.profile(self.net, self.space, dtype='float16')
    with self.assertRaisesRegex(errors.ConfigError, 'statistic'):
      latency_table.profile(self.net, self.space, statistic='mean')
    with self.assertRaisesRegex(errors.ConfigError, 'does not exist'):
      latency_table.LatencyTable.load('/nonexistent/lut.json')
    with self.assertRaisesRegex(errors.ConfigError, 'not a latency table'):
      latency_table.LatencyTable.from_dict({'format': 'other'})
    with self.assertRaisesRegex(errors.ConfigError, 'version 1; .* reads version 2: profile again'):
      latency_table.LatencyTable.from_dict(dict(self.table.to_dict(), version=1))


if __name__ == '__main__':
  tf.test.main()
