"""What a run measures during and after each phase (DESIGN.md 2.3, evaluation protocol).

- `Evaluator.validation_scores`: at every checkpoint, the mean top-1 of the phase's max and min
  sub-networks on a slice of the validation split, after BN re-calibration; it picks the phase's
  best checkpoint.
- `Evaluator.evaluate_phase`: after a phase, the paper's protocol: the uniform sub-networks of the
  phase's space at the evaluation resolutions (optionally thinned by `thin_grid` to `max_subnets`:
  the largest, the cheapest and a mix over every dimension the phase unlocked), each BN
  re-calibrated, on the report split; for early-exit variants also the accuracy of every exit of
  the maximal network, which are the grid's k7 e6 d4 members at every exit, for one pass.

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
from typing import List, Optional, Sequence, Tuple

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


# What a uniform sub-network chooses, per dimension. `thin_grid` covers every value of every
# dimension the grid varies, so a thinned grid cannot miss, e.g., the early exits of a phase.
UNIFORM_DIMENSIONS = (
    ('kernel', lambda c: c.kernel[0]),
    ('expand', lambda c: c.expand[0]),
    ('depth', lambda c: c.depth[0]),
    ('branches', lambda c: None if c.branches is None else c.branches[0]),
    ('exit', lambda c: c.exit),
    ('resolution', lambda c: c.resolution),
)


def uniform_choices(config: sc.SubnetConfig) -> tuple:
  """((dimension, value), ...) of a uniform sub-network, in `UNIFORM_DIMENSIONS` order."""
  return tuple((name, value(config)) for name, value in UNIFORM_DIMENSIONS)


def unlocked_dimensions(configs: Sequence[sc.SubnetConfig]) -> dict:
  """{dimension: sorted values} of the dimensions that take more than one value in `configs`."""
  values = collections.defaultdict(set)
  for config in configs:
    for name, value in uniform_choices(config):
      values[name].add(value)
  return {name: sorted(v) for name, v in values.items() if len(v) > 1}


def thin_grid(configs: Sequence[sc.SubnetConfig], max_subnets: int, variant, num_classes: int,
              width_multiplier: float,
              free: Sequence[sc.SubnetConfig] = ()) -> List[sc.SubnetConfig]:
  """A spread of the uniform grid: largest, cheapest and a mix over every unlocked dimension.

  Picking evenly spaced MAC ranks alone can land every pick on one exit or one kernel (MACs are
  dominated by exit and depth), and then the mean and minimum of a phase say nothing about the
  dimension it just unlocked. So after the largest and the cheapest sub-network, each pick is the
  grid member that adds the most values not yet covered (every value of every dimension the grid
  varies), then the most pairs of values of two dimensions not yet seen together (so the mix is
  not only kernels at one exit), then the farthest in log MACs from what is already picked (so
  the picks spread over the cost range).

  Args:
    configs: The uniform grid.
    max_subnets: How many sub-networks beyond `free` may be picked; 0 keeps the whole grid.
    variant: The variant (for MACs).
    num_classes: Classes of the classifier (for MACs).
    width_multiplier: The supernet's width multiplier (for MACs).
    free: Sub-networks measured anyway (the max network's all-exit pass fills in k7 e6 d4 at
      every exit): always in, counted as covered, not counted against `max_subnets`.

  Returns:
    The picked grid members and the `free` ones, in order of MACs.
  """
  free_keys = {c.to_string() for c in free}
  free_configs = list({c.to_string(): c for c in free}.values())
  paid = [c for c in configs if c.to_string() not in free_keys]
  macs = {c.to_string(): costs.count(c, variant, num_classes, width_multiplier).macs
          for c in list(paid) + free_configs}
  by_macs = lambda cs: sorted(cs, key=lambda c: macs[c.to_string()])  # noqa: E731
  if not max_subnets or len(paid) <= max_subnets:
    return by_macs(paid + free_configs)
  paid = by_macs(paid)
  unlocked = set(unlocked_dimensions(list(paid) + free_configs))

  def choices(config):
    return [choice for choice in uniform_choices(config) if choice[0] in unlocked]

  def pairs(config):
    chosen = choices(config)
    return {(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1:]}

  covered, covered_pairs, log_macs = set(), set(), []

  def take(config):
    covered.update(choices(config))
    covered_pairs.update(pairs(config))
    log_macs.append(math.log(max(macs[config.to_string()], 1)))

  for config in free_configs:
    take(config)
  picked, picked_keys = [], set()
  largest = by_macs(paid + free_configs)[-1]
  for config in (largest, paid[0]):  # The largest (unless free) and the cheapest first.
    key = config.to_string()
    if len(picked) < max_subnets and key not in free_keys | picked_keys:
      picked.append(config)
      picked_keys.add(key)
      take(config)

  def score(config):
    distance = min((abs(math.log(max(macs[config.to_string()], 1)) - m) for m in log_macs),
                   default=0.0)
    return (len(set(choices(config)) - covered), len(pairs(config) - covered_pairs), distance)

  while len(picked) < max_subnets:
    best = max((c for c in paid if c.to_string() not in picked_keys), key=score)
    picked.append(best)  # `max` keeps the first of equals: the cheaper one.
    picked_keys.add(best.to_string())
    take(best)
  return by_macs(picked + free_configs)


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
               traced_calibration: bool = False, sample_seed: Optional[int] = None):
    """See the module docstring.

    Args:
      supernet: The supernet whose sub-networks are scored.
      splits: The dataset's `DatasetSplits`.
      calibration_images: Training images for every BN re-calibration (drawn once).
      seed: Seeds the calibration draw and crops.
      validation_images: Validation images for `validation_scores`.
      eval_images: Images of `eval_split` for `evaluate_phase` (0 = all).
      eval_split: The split `evaluate_phase` reports on.
      traced_calibration: Re-calibrate BN through one traced training-mode forward of the
        supernet instead of eager calls. The trace costs about as much as 10-20 eager
        re-calibrations, and then halves each one (EE_D demo supernet, 512 calibration and 1000
        validation images: 0.95 s instead of 1.75 s per sub-network), so it pays off for an
        evaluator that scores hundreds of sub-networks, not for a phase's handful.
      sample_seed: Seeds the class-stratified sample of a bounded evaluation (default `seed`);
        apart from `seed` only to measure the evaluation's own spread.
    """
    self.supernet = supernet
    self.splits = splits
    self.calibration_images = calibration_images
    self.calibration = pipeline.calibration_images(splits, calibration_images, seed)
    self.seed = seed
    self.sample_seed = seed if sample_seed is None else sample_seed
    self.validation_images = validation_images
    self.eval_images = eval_images
    self.eval_split = eval_split
    self.traced_calibration = traced_calibration
    self._functions = {}
    self._batch_cache = collections.OrderedDict()
    self._cache_sizes = {}

  def reseeded(self, seed: int, sample_seed: Optional[int] = None) -> 'Evaluator':
    """The same evaluator with other calibration and sample seeds, sharing its traced functions.

    Measuring the evaluation's own spread takes one evaluator per seed pair; the traced inference
    depends on the supernet alone, and tracing it again would cost seconds per evaluator.
    """
    other = Evaluator(self.supernet, self.splits, self.calibration_images, seed,
                      self.validation_images, self.eval_images, self.eval_split,
                      self.traced_calibration, sample_seed)
    other._functions = self._functions  # pylint: disable=protected-access
    return other

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
    """The whole split, or a seeded class-stratified sample of `images` of it."""
    yield from pipeline.eval_batches(self.splits, EVAL_BATCH, resolution, split=split,
                                     images=images or None,
                                     sample_seed=self.sample_seed)

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

  def validation_scores(self, space: sc.SearchSpace) -> Tuple[float, float]:
    """Top-1 of the phase's max and min sub-networks on the validation slice.

    Their mean picks a phase's best checkpoint. A later phase trades the max network against the
    small ones: scored by the max alone, its best checkpoint was nearly always the first one,
    before the small networks had learned.
    """
    configs = (space.max_config(max(space.resolutions)), space.min_config(min(space.resolutions)))
    top_max, top_min = (self.evaluate(c, 'validation', self.validation_images).accuracy
                        for c in configs)
    return float(top_max), float(top_min)

  def _row(self, config: sc.SubnetConfig, accuracy: float, images: int) -> dict:
    net = self.supernet
    report = costs.count(config, net.variant, net.num_classes, net.width_multiplier)
    return {'config': config.to_string(), 'label': uniform_label(config), 'accuracy': accuracy,
            'macs': report.macs, 'params': report.params, 'images': images}

  def evaluate_phase(self, space: sc.SearchSpace, resolutions: Sequence[int],
                     max_subnets: int, progress=None, images: Optional[int] = None) -> dict:
    """The paper's uniform grid (a spread of it, see `thin_grid`) and, for early exits, per exit.

    Each uniform sub-network costs one BN re-calibration and one pass over the images, except the
    max network cut at each exit the phase allows: one all-exit pass of the max network measures
    all of them (see the comment below), so they never count against `max_subnets`.

    Args:
      space: The phase's space.
      resolutions: Resolutions of the grid.
      max_subnets: Uniform sub-networks with a pass of their own (0 = the whole grid).
      progress: Called with one line per measured sub-network.
      images: Overrides the evaluator's `eval_images` (0 = the whole split).

    Returns:
      {'uniform': rows, 'best_uniform': row, 'uniform_max': the max network's row,
       'uniform_best' / 'uniform_mean' / 'uniform_min': accuracies over the rows,
       'uniform_grid_size': members of the whole grid, 'split', and 'exit_accuracy' (early-exit
       variants: {exit: accuracy of the max network at that exit}); a row is {'config', 'label',
       'accuracy', 'macs', 'params', 'images'}.
    """
    images = self.eval_images if images is None else images
    net = self.supernet
    full_grid = evaluation.uniform_grid(space, resolutions)
    top = space.max_config(max(resolutions))
    # The maximal network cut at exit k is the uniform sub-network k7 e6 d4 xk of the grid, and
    # its BN statistics up to exit k are the same whether the later stages run or not, so one
    # all-exit pass of the max network measures those grid members (exits the phase allows).
    free = [top.replace(exit=k) for k in space.exits] if net.variant.early_exits else []
    grid = thin_grid(full_grid, max_subnets, net.variant, net.num_classes, net.width_multiplier,
                     free=free)
    rows, exit_accuracy = {}, None
    if free:
      result = self.evaluate(top, self.eval_split, images, exits='all')
      exit_accuracy = {str(k): v for k, v in result.exit_accuracy.items()}
      for config in free:
        rows[config.to_string()] = self._row(config, result.exit_accuracy[config.exit],
                                             result.images)
      if progress:
        progress(f'  max network, exits {",".join(map(str, space.exits))} in one pass: '
                 + ' '.join(f'x{c.exit} {rows[c.to_string()]["accuracy"]:.4f}' for c in free))
    # The max network is always measured: the table's max-net column and `uniform_max`.
    measure = [c for c in grid + [top] if c.to_string() not in rows]
    measure = list({c.to_string(): c for c in measure}.values())
    for i, config in enumerate(measure):
      result = self.evaluate(config, self.eval_split, images)
      rows[config.to_string()] = self._row(config, result.accuracy, result.images)
      if progress:
        progress(f'  uniform {i + 1}/{len(measure)} {uniform_label(config)}: '
                 f'top-1 {result.accuracy:.4f}')
    rows = sorted(rows.values(), key=lambda row: row['macs'])
    accuracies = [r['accuracy'] for r in rows]
    best = int(np.argmax(accuracies))
    summary = {'uniform': rows, 'best_uniform': rows[best],
               'uniform_max': next(r for r in rows if r['config'] == top.to_string()),
               'uniform_best': accuracies[best], 'uniform_mean': float(np.mean(accuracies)),
               'uniform_min': float(np.min(accuracies)), 'uniform_grid_size': len(full_grid),
               'split': self.eval_split}
    if exit_accuracy is not None:
      summary['exit_accuracy'] = exit_accuracy
    return summary
