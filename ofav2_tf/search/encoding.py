"""Fixed-length float features of a `SubnetConfig`, the accuracy predictor's input.

Every elastic dimension of the space is encoded, in this order:
  - per block: a one-hot of its kernel size and one of its expand ratio, and for parallel spaces the
    three bits of its branch pattern (MBConv, 1x1 conv, transformation op); all zero when the block
    does not run (past its stage's depth or the exit), as in OFA's predictor, so values of skipped
    blocks cannot change a prediction;
  - per stage: a one-hot of its depth (zero when the stage is dropped by the exit);
  - a one-hot of the exit (only when the space has several exits: early-exit variants);
  - a one-hot of the input resolution (only when the space has several).
One-hots rather than scalars because accuracy need not be monotone in a choice, and the MLP learns
any scale it needs. Features are computed from genomes in batch (`encode_genomes`), so the search
can score whole populations without a Python loop over blocks.
"""

from typing import List, Sequence

import numpy as np

from ofav2_tf import subnet_config as sc
from ofav2_tf.search import genome as genome_lib


class Encoder:
  """Encodes configs of one search space.

  Args:
    space: The space; the feature layout depends on its allowed values.
  """

  def __init__(self, space: sc.SearchSpace):
    self.space = space
    self.genome = genome_lib.Genome(space)
    self._nk = len(space.kernel_sizes)
    self._ne = len(space.expand_ratios)
    self._nd = len(space.depths)
    self._encode_exit = len(space.exits) > 1
    self._encode_resolution = len(space.resolutions) > 1
    self._names = self._build_names()

  def _build_names(self) -> List[str]:
    space, names = self.space, []
    for b in range(genome_lib.NUM_BLOCKS):
      names += [f'block{b}/kernel={k}' for k in space.kernel_sizes]
      names += [f'block{b}/expand={e}' for e in space.expand_ratios]
      if space.parallel:
        names += [f'block{b}/branch_{letter}' for letter in sc.BRANCH_LETTERS]
    for s in range(genome_lib.NUM_STAGES):
      names += [f'stage{s + 1}/depth={d}' for d in space.depths]
    if self._encode_exit:
      names += [f'exit={x}' for x in space.exits]
    if self._encode_resolution:
      names += [f'resolution={r}' for r in space.resolutions]
    return names

  @property
  def feature_names(self) -> List[str]:
    """One name per feature column, e.g. 'block3/kernel=5', 'stage2/depth=3', 'exit=4'."""
    return list(self._names)

  @property
  def num_features(self) -> int:
    return len(self._names)

  def encode_genomes(self, genomes: np.ndarray) -> np.ndarray:
    """(N, num_features) float32 features of an (N, genome size) integer matrix."""
    g = self.genome
    genomes = np.atleast_2d(np.asarray(genomes, np.int64))
    n = len(genomes)
    active = g.active(genomes)[:, :, None]  # (N, 20, 1)
    parts = [np.eye(self._nk, dtype=np.float32)[genomes[:, g.kernel]] * active,
             np.eye(self._ne, dtype=np.float32)[genomes[:, g.expand]] * active]
    if g.branches is not None:
      patterns = g.values('branches')[genomes[:, g.branches]]  # (N, 20)
      bits = (patterns[:, :, None] >> np.arange(3)[None, None, :]) & 1
      parts.append(bits.astype(np.float32) * active)
    per_block = np.concatenate(parts, axis=2).reshape(n, -1)
    depth = (np.eye(self._nd, dtype=np.float32)[genomes[:, g.depth]] *
             g.stage_present(genomes)[:, :, None]).reshape(n, -1)
    columns = [per_block, depth]
    if self._encode_exit:
      columns.append(np.eye(len(self.space.exits), dtype=np.float32)[genomes[:, g.exit]])
    if self._encode_resolution:
      columns.append(np.eye(len(self.space.resolutions), dtype=np.float32)[
          genomes[:, g.resolution]])
    return np.concatenate(columns, axis=1)

  def encode(self, configs: Sequence[sc.SubnetConfig]) -> np.ndarray:
    """(N, num_features) float32 features of `configs` (each must lie in the space)."""
    if isinstance(configs, sc.SubnetConfig):
      configs = [configs]
    if not len(configs):
      return np.zeros((0, self.num_features), np.float32)
    return self.encode_genomes(self.genome.from_configs(configs))

  def describe(self) -> dict:
    """What a saved predictor records to check it is loaded for the same encoding."""
    return {'space': self.space.to_dict(), 'feature_names': self.feature_names}


def encode(configs: Sequence[sc.SubnetConfig], space: sc.SearchSpace) -> np.ndarray:
  """Features of `configs` in `space` (see `Encoder`)."""
  return Encoder(space).encode(configs)


def feature_names(space: sc.SearchSpace) -> List[str]:
  """Names of the feature columns for `space`."""
  return Encoder(space).feature_names
