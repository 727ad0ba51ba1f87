"""Tests for export.cascade: the early-exit runner and the threshold sweep derived from one pass."""
# bazel: size=medium

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from export import cascade
from export import manifest as manifest_lib
from export import segments
from export import toy_model
from export.errors import ExportError
from tests import testutil

RES = 32
NUM_CLASSES = 4
LATENCY = {1: 1.0, 2: 2.0, 3: 4.0}


class CascadeTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix='export-cascade-test-')
    net = testutil.perturbed_supernet('EE_B', num_classes=NUM_CLASSES, seed=4,
                                      width_multiplier=0.25)
    config = net.search_space(resolutions=(RES,)).sample(np.random.default_rng(8)).replace(exit=3)
    testutil.calibrate(net, config, all_exits=True)
    result = segments.export_early_exit(net, config, toy_model.synthetic_images(32, RES, seed=1),
                                        cls.tmp, multi_output=False, check_tflm=False)
    cls.manifest_path = result.manifest_path
    cls.images = toy_model.synthetic_images(24, RES, seed=2)
    # Labels: the float network's own answers, from exit 1 for half the images and exit 3 for the
    # others, so that stopping early is sometimes right and sometimes wrong.
    chained = segments.run_float_chain(result.segments, cls.images)
    cls.labels = np.where(np.arange(len(cls.images)) % 2 == 0, chained['exit1'].argmax(axis=1),
                          chained['exit3'].argmax(axis=1))
    cls.cascade = cascade.Cascade(cls.manifest_path)
    # An untrained network's confidences bunch together: add their median at exit 1 to the grid,
    # so that some threshold stops about half of the images early.
    first = [cascade.confidence(cls.cascade.run_all(image)[1]) for image in cls.images]
    cls.median_confidence = float(np.median(first))
    cls.thresholds = sorted(set(np.round(np.linspace(0.0, 1.0, 21), 2)) |
                            {cls.median_confidence})
    cls.result = cascade.sweep(cls.cascade, cls.images, cls.labels, thresholds=cls.thresholds,
                               segment_latency_ms=LATENCY)

  def _by_running(self, threshold):
    """The sweep row recomputed by really running the cascade on every image."""
    runs = [self.cascade.run(image, threshold) for image in self.images]
    exits = np.array([r.exit for r in runs])
    cumulative = {1: 1.0, 2: 3.0, 3: 7.0}
    return (float(np.mean(np.array([r.prediction for r in runs]) == self.labels)),
            float(np.mean([r.macs for r in runs])),
            float(np.mean([cumulative[e] for e in exits])),
            {e: int(np.sum(exits == e)) for e in (1, 2, 3)})

  def test_rows_derived_from_cache_equal_real_cascade_runs(self):
    rows = {r.threshold: r for r in self.result.rows}
    mixed = [r.threshold for r in self.result.rows
             if sum(1 for n in r.exit_histogram.values() if n) > 1]
    self.assertNotEmpty(mixed)  # Some thresholds really split the images between exits.
    self.assertIn(self.median_confidence, mixed)
    for threshold in sorted({0.0, mixed[0], mixed[-1], self.median_confidence, 1.0}):
      accuracy, macs, latency, histogram = self._by_running(threshold)
      row = rows[threshold]
      self.assertAlmostEqual(row.accuracy, accuracy)
      self.assertAlmostEqual(row.mean_macs, macs)
      self.assertAlmostEqual(row.mean_latency_ms, latency)
      self.assertEqual(row.exit_histogram, histogram)

  def test_extremes_and_baseline(self):
    segments_meta = self.cascade.manifest.segments
    zero = self.result.rows[0]
    self.assertEqual(zero.threshold, 0.0)
    self.assertEqual(zero.exit_histogram, {1: len(self.images), 2: 0, 3: 0})
    self.assertEqual(zero.mean_macs, segments_meta[0].cumulative_macs)
    self.assertEqual(zero.mean_latency_ms, 1.0)
    base = self.result.baseline
    self.assertIsNone(base.threshold)
    self.assertEqual(base.exit_histogram, {1: 0, 2: 0, 3: len(self.images)})
    self.assertEqual(base.mean_macs, segments_meta[-1].cumulative_macs)
    self.assertEqual(base.mean_latency_ms, 7.0)
    self.assertEqual(base.mac_saving, 0.0)
    self.assertAlmostEqual(base.accuracy, self.result.exit_accuracy[3])
    macs = [r.mean_macs for r in self.result.rows]
    self.assertEqual(macs, sorted(macs))  # Higher thresholds run more segments.

  def test_choice_is_cheapest_within_one_point(self):
    chosen, base = self.result.chosen, self.result.baseline
    self.assertGreaterEqual(chosen.accuracy, base.accuracy - 0.01 - 1e-12)
    for row in self.result.rows:
      if row.accuracy >= base.accuracy - 0.01:
        self.assertGreaterEqual(row.mean_macs, chosen.mean_macs)
    # With no tolerance for loss at all and a worse early exit, the choice can be the baseline.
    strict = cascade.choose(self.result.rows, base, max_accuracy_drop=-1.0)
    self.assertIs(strict, base)

  def test_write_thresholds_updates_manifest_and_default_run(self):
    copy = os.path.join(self.tmp, 'copy')
    os.makedirs(copy, exist_ok=True)
    manifest = manifest_lib.Manifest.load(self.manifest_path)
    for entry in manifest.segments:
      shutil.copy(os.path.join(self.tmp, entry.file), copy)
    path = manifest.save(os.path.join(copy, 'manifest.json'))
    # Threshold 0 stops every image at exit 1: the cheapest row, chosen when any loss is allowed.
    result = cascade.sweep(self.cascade, self.images, self.labels, thresholds=[0.0],
                           max_accuracy_drop=1.0, segment_latency_ms=LATENCY)
    self.assertEqual(result.chosen.threshold, 0.0)
    updated = cascade.write_thresholds(path, result)
    self.assertEqual(updated.thresholds, {1: 0.0, 2: 0.0, 3: None})
    reloaded = cascade.Cascade(path)
    self.assertEqual(reloaded.manifest.sweep['threshold'], 0.0)
    self.assertEqual({reloaded.run(image).exit for image in self.images[:4]}, {1})
    self.assertEqual({self.cascade.run(image).exit for image in self.images[:4]}, {3})

  def test_measured_latency_and_summary(self):
    latency = self.cascade.segment_latency_ms(runs=5, warmup=1)
    self.assertEqual(sorted(latency), [1, 2, 3])
    self.assertTrue(all(v > 0 for v in latency.values()))
    summary = self.result.to_dict()
    self.assertEqual(summary['images'], len(self.images))
    self.assertLen(summary['rows'], len(self.thresholds))

  def test_bad_input_is_a_clear_error(self):
    with self.assertRaisesRegex(ExportError, 'probabilities'):
      cascade.sweep(self.cascade, self.images, self.labels, thresholds=[1.5],
                    segment_latency_ms=LATENCY)
    with self.assertRaisesRegex(ExportError, 'labels'):
      cascade.sweep(self.cascade, self.images, self.labels[:3], segment_latency_ms=LATENCY)
    with self.assertRaisesRegex(ExportError, 'lacks exits'):
      cascade.sweep(self.cascade, self.images[:2], self.labels[:2],
                    segment_latency_ms={1: 1.0})
    with self.assertRaisesRegex(ExportError, 'does not exist'):
      cascade.Cascade(os.path.join(self.tmp, 'nope.json'))


if __name__ == '__main__':
  tf.test.main()
