"""A synthetic accuracy of a config: a known, seeded, non-linear function for tests and benchmarks.

Testing the predictor and the searches on measured accuracies would need a trained supernet and
hours of evaluation; a known target makes "did the predictor learn it", "did the search find the
best configs" checkable in seconds. The function behaves like a real accuracy in the ways that
matter for search: it grows with every cost-raising choice (kernel, expand ratio, depth, exit,
resolution, MBConv branch), with block-specific weights, an interaction of kernel and expand ratio
within a block, and a saturating non-linearity (larger networks gain less).
"""

from typing import Sequence

import numpy as np

from ofav2_tf import subnet_config as sc
from ofav2_tf.search import genome as genome_lib


class SyntheticAccuracy:
  """accuracy = 0.9 * (1 - exp(-score / scale)) with a seeded additive-plus-interaction score.

  Args:
    space: The space the configs come from.
    seed: Seeds the per-block weights.
  """

  def __init__(self, space: sc.SearchSpace, seed: int = 0):
    self.space = space
    self.genome = genome_lib.Genome(space)
    rng = np.random.default_rng(seed)
    stage_weight = np.repeat(np.array([0.6, 0.8, 1.0, 1.2, 1.4]), genome_lib.PER_STAGE)
    self._a = rng.uniform(0.5, 1.5, genome_lib.NUM_BLOCKS) * stage_weight
    self._c = rng.uniform(0.5, 1.5, genome_lib.NUM_BLOCKS) * stage_weight
    self._d = rng.uniform(-0.5, 1.0, genome_lib.NUM_BLOCKS) * stage_weight
    self._scale = 12.0

  @staticmethod
  def _unit(values):
    values = np.asarray(values, np.float64)
    span = values.max() - values.min()
    return (values - values.min()) / span if span else np.zeros_like(values)

  def score_genomes(self, genomes: np.ndarray) -> np.ndarray:
    g = self.genome
    genomes = np.atleast_2d(genomes)
    active = g.active(genomes).astype(np.float64)
    k = self._unit(g.values('kernel'))[genomes[:, g.kernel]]
    e = self._unit(g.values('expand'))[genomes[:, g.expand]]
    block = (0.4 + self._a * k + self._c * e + self._d * k * e) * active
    if g.branches is not None:
      patterns = g.values('branches')[genomes[:, g.branches]]
      block = block * np.where(patterns & sc.BRANCH_MBCONV, 1.0, 0.3) + 0.15 * active * (
          (patterns & sc.BRANCH_CONV1X1) > 0)
    resolution = self._unit(g.values('resolution'))[genomes[:, g.resolution]]
    exits = g.values('exit')[genomes[:, g.exit]] / genome_lib.NUM_STAGES
    return block.sum(1) + 3.0 * resolution + 2.0 * exits

  def predict_genomes(self, genomes: np.ndarray) -> np.ndarray:
    """Accuracies of genomes."""
    return 0.9 * (1.0 - np.exp(-self.score_genomes(genomes) / self._scale))

  def __call__(self, configs: Sequence[sc.SubnetConfig]) -> np.ndarray:
    """Accuracies (noise-free) of configs of the space."""
    if isinstance(configs, sc.SubnetConfig):
      configs = [configs]
    return self.predict_genomes(self.genome.from_configs(configs))

  def noisy(self, configs: Sequence[sc.SubnetConfig], rng: np.random.Generator,
            sigma: float = 0.005) -> np.ndarray:
    """Accuracies with Gaussian measurement noise of standard deviation `sigma`."""
    clean = self(configs)
    return clean + rng.normal(0.0, sigma, clean.shape)
