"""What a run measures during and after each phase (DESIGN.md 2.3, evaluation protocol).

- `Evaluator.validation_score`: at every checkpoint, the top-1 of the phase's maximal sub-network on
  a slice of the validation split, after BN re-calibration; it picks the phase's best checkpoint.
- `Evaluator.evaluate_phase`: after a phase, the paper's protocol: the uniform sub-networks of the
  phase's space at the evaluation resolutions (optionally thinned to `max_subnets` spread evenly
  over their MACs, so the cheapest and the largest are always in), each BN re-calibrated, on the
  report split; for early-exit variants also the accuracy of every exit of the maximal network.

Sub-networks are evaluated through the supernet, not through extraction: building a static Keras
model costs ~25 ms per layer (4-10 s for an EE_D sub-network on 2 cores) while one traced inference
function of the supernet serves every sub-network and resolution, and the two agree to 1e-4
(tests/extraction_test.py). Each evaluation re-calibrates the sub-network's BN statistics inside the
supernet and restores the training statistics afterwards, so validating during a phase does not
disturb its training. Calibration images are drawn once per run and reused for every sub-network,
so sub-networks are compared on the same footing. An evaluator built for many sub-networks (the
search's predictor data) also traces the re-calibration forward once (`traced_calibration`).
"""

import collections
import math
from typing import List, Optional, Sequence

import numpy as np

import tensorflow as tf

from ofav2_tf import bn_calibration
from ofav2_tf import costs
from ofav2_tf import evaluation
from ofav2_tf import losses
from ofav2_tf import subnet_config as sc
from ofav2_tf import supernet as supernet_lib
from ofav2_tf.data import pipeline

EVAL_BATCH = 250
# Bytes of batches an Evaluator keeps (see Evaluator._cached). 10,000 test images at 64 px are
# ~0.5 GB as float32; a search's validation and calibration sets are far smaller.
BATCH_CACHE_BYTES = 1 << 30


def thin_grid(configs: Sequence[sc.SubnetConfig], max_subnets: int, variant, num_classes: int,
              width_multiplier: float) -> List[sc.SubnetConfig]:
  """At most `max_subnets` configs spread evenly over MACs (0 keeps them all)."""
  if not max_subnets or len(configs) <= max_subnets:
    return list(configs)
  macs = [costs.count(c, variant, num_classes, width_multiplier).macs for c in configs]
  order = np.argsort(macs, kind='stable')
  picks = sorted({int(round(i)) for i in np.linspace(0, len(configs) - 1, max_subnets)})
  return [configs[order[i]] for i in picks]


def uniform_label(config: sc.SubnetConfig) -> str:
  """Short name of a uniform sub-network, e.g. 'k7 e6 d4 x5 r64' (+ ' b3' branch count)."""
  label = (f'k{config.kernel[0]} e{config.expand[0]} d{config.depth[0]} x{config.exit} '
           f'r{config.resolution}')
  if config.branches is not None:
    label += f' b{sc.branch_count(config.branches[0])}'
  return label


class Evaluator:
  """Scores sub-networks of one supernet on one dataset, with fixed calibration images."""

  def __init__(self, supernet, splits, calibration_images: int, seed: int,
               validation_images: int, eval_images: int = 0, eval_split: str = 'test',
               traced_calibration: bool = False):
    """See the module docstring.

    Args:
      supernet: The supernet whose sub-networks are scored.
      splits: The dataset's `DatasetSplits`.
      calibration_images: Training images for every BN re-calibration (drawn once).
      seed: Seeds the calibration draw and crops.
      validation_images: Validation images for `validation_score`.
      eval_images: Images of `eval_split` for `evaluate_phase` (0 = all).
      eval_split: The split `evaluate_phase` reports on.
      traced_calibration: Re-calibrate BN through one traced training-mode forward of the
        supernet instead of eager calls. The trace costs about as much as 10-20 eager
        re-calibrations, and then halves each one (EE_D demo supernet, 512 calibration and 1000
        validation images: 0.95 s instead of 1.75 s per sub-network), so it pays off for an
        evaluator that scores hundreds of sub-networks, not for a phase's handful.
    """
    self.supernet = supernet
    self.splits = splits
    self.calibration = pipeline.calibration_images(splits, calibration_images, seed)
    self.seed = seed
    self.validation_images = validation_images
    self.eval_images = eval_images
    self.eval_split = eval_split
    self.traced_calibration = traced_calibration
    self._functions = {}
    self._batch_cache = collections.OrderedDict()
    self._cache_sizes = {}

  def _cached(self, key, make):
    """The list of batches `make()` yields, kept for the next call with the same key.

    Both kinds of batches are deterministic (the eval transform has no randomness; calibration
    crops are seeded), and a search scores hundreds of sub-networks on the same images at a few
    resolutions: decoding and resizing them once instead of per sub-network saves a good share
    of each evaluation. The least recently used sets are dropped beyond `BATCH_CACHE_BYTES`.
    """
    if key in self._batch_cache:
      self._batch_cache.move_to_end(key)
      return self._batch_cache[key]
    batches = list(make())
    size = sum(int(np.prod(t.shape)) * t.dtype.size for batch in batches
               for t in (batch if isinstance(batch, tuple) else (batch,)))
    if size <= BATCH_CACHE_BYTES:
      self._batch_cache[key] = batches
      self._cache_sizes[key] = size
      while sum(self._cache_sizes.values()) > BATCH_CACHE_BYTES:
        oldest, _ = self._batch_cache.popitem(last=False)
        del self._cache_sizes[oldest]
    return batches

  def calibration_batches(self, resolution: int):
    return self._cached(('calibration', resolution), lambda: pipeline.calibration_batches(
        self.splits, self.calibration, resolution, seed=self.seed))

  def _batches(self, resolution: int, split: str, images: Optional[int]):
    """(images, labels) batches of `split`, exactly `images` of them (all when 0/None)."""
    return self._cached((split, resolution, images or 0),
                        lambda: self._read_batches(resolution, split, images))

  def _read_batches(self, resolution: int, split: str, images: Optional[int]):
    take = math.ceil(images / EVAL_BATCH) if images else None
    batches = pipeline.eval_batches(self.splits, EVAL_BATCH, resolution, split=split, take=take)
    left = images or None
    for x, y in batches:
      if left is not None:
        x, y = x[:left], y[:left]
        left -= int(y.shape[0])
      yield x, y

  def _supernet_fn(self, training: bool, all_exits: bool):
    """The supernet's forward, traced once for every sub-network and resolution.

    The training-mode one serves BN re-calibration (`traced_calibration`). BN layers read their
    momentum when traced, so it is traced under `zero_momentum`: it then always overwrites the
    moving statistics with the batch's, as re-calibration needs, whoever calls it first.
    """
    key = (training, all_exits)
    if key not in self._functions:
      net = self.supernet
      layers = bn_calibration.batch_norm_layers(net) if training else []

      def forward(images, arch):
        with bn_calibration.zero_momentum(layers):
          return net(images, arch, training=training, all_exits=all_exits)

      self._functions[key] = tf.function(
          forward, input_signature=[supernet_lib.IMAGE_SIGNATURE, supernet_lib.ARCH_SIGNATURE])
    return self._functions[key]

  def evaluate(self, config: sc.SubnetConfig, split: str, images: Optional[int],
               exits=None) -> evaluation.SubnetResult:
    """Top-1 of `config` after BN re-calibration (per exit with `exits='all'`)."""
    net = self.supernet
    all_exits = exits == 'all'
    arch = supernet_lib.arch_tensors(config)
    layers = bn_calibration.batch_norm_layers(net)
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    if self.traced_calibration:
      calibrate = self._supernet_fn(training=True, all_exits=all_exits)
      forward = lambda images: calibrate(images, arch)  # noqa: E731
    else:
      forward = lambda images: net(images, arch, training=True, all_exits=all_exits)  # noqa: E731
    try:
      bn_calibration.recalibrate(net, self.calibration_batches(config.resolution), forward)
      predict = self._supernet_fn(training=False, all_exits=all_exits)
      correct, per_exit, seen = 0, np.zeros(5), 0
      for batch, labels in self._batches(config.resolution, split, images):
        labels = labels.numpy()
        outputs = predict(batch, arch)
        if all_exits:
          hits = [np.argmax(o.numpy(), -1) == labels for o in outputs]
          per_exit += [h.sum() for h in hits]
          final = losses.ensemble_logits(outputs) if net.variant.early_exits else outputs[-1]
        else:
          final = outputs
        correct += int((np.argmax(np.asarray(final), -1) == labels).sum())
        seen += len(labels)
    finally:
      for layer, (mean, variance) in zip(layers, saved):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)
    exit_acc = {k + 1: float(per_exit[k] / seen) for k in range(5)} if all_exits else None
    accuracy = exit_acc[config.exit] if all_exits else correct / seen
    return evaluation.SubnetResult(config, accuracy, exit_acc, seen)

  def validation_score(self, space: sc.SearchSpace) -> float:
    """Top-1 of the phase's maximal sub-network on the validation slice."""
    config = space.max_config(max(space.resolutions))
    return self.evaluate(config, 'validation', self.validation_images).accuracy

  def _row(self, config: sc.SubnetConfig, accuracy: float, images: int) -> dict:
    net = self.supernet
    report = costs.count(config, net.variant, net.num_classes, net.width_multiplier)
    return {'config': config.to_string(), 'label': uniform_label(config), 'accuracy': accuracy,
            'macs': report.macs, 'params': report.params, 'images': images}

  def evaluate_phase(self, space: sc.SearchSpace, resolutions: Sequence[int],
                     max_subnets: int, progress=None, images: Optional[int] = None) -> dict:
    """The paper's uniform grid (thinned) and, for early exits, per-exit accuracy.

    `images` overrides the evaluator's `eval_images` (0 = the whole split).
    """
    images = self.eval_images if images is None else images
    grid = evaluation.uniform_grid(space, resolutions)
    net = self.supernet
    grid = thin_grid(grid, max_subnets, net.variant, net.num_classes, net.width_multiplier)
    rows = []
    for i, config in enumerate(grid):
      result = self.evaluate(config, self.eval_split, images)
      rows.append(self._row(config, result.accuracy, result.images))
      if progress:
        progress(f'  uniform {i + 1}/{len(grid)} {uniform_label(config)}: '
                 f'top-1 {result.accuracy:.4f}')
    exit_accuracy = None
    if net.variant.early_exits:
      config = space.max_config(max(resolutions))
      result = self.evaluate(config.replace(exit=max(space.exits)), self.eval_split,
                             images, exits='all')
      exit_accuracy = {str(k): v for k, v in result.exit_accuracy.items()}
      # The maximal network cut at exit k is the uniform sub-network k7 e6 d4 xk of the grid, and
      # its BN statistics up to exit k are the same whether the later stages run or not, so the
      # per-exit figures are that grid's results: they join the rows (exits the phase allows,
      # sub-networks not already measured) instead of being left out of the best uniform.
      measured = {row['config'] for row in rows}
      for k in space.exits:
        config_k = config.replace(exit=k)
        if config_k.to_string() not in measured:
          rows.append(self._row(config_k, result.exit_accuracy[k], result.images))
    accuracies = [r['accuracy'] for r in rows]
    best = int(np.argmax(accuracies))
    summary = {'uniform': rows, 'best_uniform': rows[best],
               'uniform_best': accuracies[best], 'uniform_mean': float(np.mean(accuracies)),
               'uniform_min': float(np.min(accuracies)), 'split': self.eval_split}
    if exit_accuracy is not None:
      summary['exit_accuracy'] = exit_accuracy
    return summary
