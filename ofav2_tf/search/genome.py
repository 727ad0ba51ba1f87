"""A `SubnetConfig` as a fixed-length vector of integer choices within a `SearchSpace`.

Evolutionary search mutates and recombines sub-networks gene by gene, and pymoo needs integer
decision variables with bounds; the predictor's encoding is computed from the same vectors in
batch. A genome holds one index into the space's allowed values per choice:

    kernel[20] | expand[20] | depth[5] | branches[20] (parallel spaces only) | exit | resolution

Genes of blocks a config does not run (past the stage's depth or the exit) are free: they do not
change the network. `canonical` zeroes them so equal networks have equal genomes.
"""

from typing import List, Sequence

import numpy as np

from ofav2_tf import arch_spec
from ofav2_tf import errors
from ofav2_tf import subnet_config as sc

NUM_BLOCKS = sc.NUM_BLOCKS
NUM_STAGES = arch_spec.NUM_STAGES
PER_STAGE = arch_spec.BLOCKS_PER_STAGE
# Stage of each flat block index and its position inside the stage.
BLOCK_STAGE = np.arange(NUM_BLOCKS) // PER_STAGE
BLOCK_INDEX = np.arange(NUM_BLOCKS) % PER_STAGE


class Genome:
  """Converts configs of one space to and from integer vectors.

  Args:
    space: The space whose allowed values the genes index.
  """

  def __init__(self, space: sc.SearchSpace):
    self.space = space
    self.kernel = slice(0, NUM_BLOCKS)
    self.expand = slice(NUM_BLOCKS, 2 * NUM_BLOCKS)
    self.depth = slice(2 * NUM_BLOCKS, 2 * NUM_BLOCKS + NUM_STAGES)
    offset = 2 * NUM_BLOCKS + NUM_STAGES
    self.branches = None
    if space.parallel:
      self.branches = slice(offset, offset + NUM_BLOCKS)
      offset += NUM_BLOCKS
    self.exit = offset
    self.resolution = offset + 1
    self.size = offset + 2
    self._values = {'kernel': np.array(space.kernel_sizes), 'expand': np.array(space.expand_ratios),
                    'depth': np.array(space.depths), 'exit': np.array(space.exits),
                    'resolution': np.array(space.resolutions)}
    if space.parallel:
      self._values['branches'] = np.array(space.branch_patterns)
    upper = np.zeros(self.size, np.int64)
    upper[self.kernel] = len(space.kernel_sizes) - 1
    upper[self.expand] = len(space.expand_ratios) - 1
    upper[self.depth] = len(space.depths) - 1
    if self.branches is not None:
      upper[self.branches] = len(space.branch_patterns) - 1
    upper[self.exit] = len(space.exits) - 1
    upper[self.resolution] = len(space.resolutions) - 1
    self.upper = upper  # Inclusive upper bound of each gene; the lower bound is 0.

  def gene_names(self) -> List[str]:
    """One readable name per gene, e.g. 'kernel[3]', 'depth[1]', 'exit'."""
    names = [f'kernel[{b}]' for b in range(NUM_BLOCKS)]
    names += [f'expand[{b}]' for b in range(NUM_BLOCKS)]
    names += [f'depth[{s}]' for s in range(NUM_STAGES)]
    if self.branches is not None:
      names += [f'branches[{b}]' for b in range(NUM_BLOCKS)]
    return names + ['exit', 'resolution']

  def values(self, name: str) -> np.ndarray:
    """The allowed values a gene of dimension `name` indexes."""
    return self._values[name]

  # ---- conversion ---------------------------------------------------------------------------

  def _index(self, name, allowed, value, where=''):
    try:
      return allowed.index(value)
    except ValueError:
      raise errors.ConfigError(
          f'{name}{where} = {value} is not in the search space; valid values: '
          f'{", ".join(str(a) for a in allowed)}') from None

  def from_config(self, config: sc.SubnetConfig) -> np.ndarray:
    """The genome of `config`; values of skipped blocks outside the space map to index 0."""
    space = self.space
    g = np.zeros(self.size, np.int64)
    g[self.exit] = self._index('exit', space.exits, config.exit)
    g[self.resolution] = self._index('resolution', space.resolutions, config.resolution)
    for s in range(min(config.exit, NUM_STAGES)):
      g[self.depth.start + s] = self._index('depth', space.depths, config.depth[s], f'[{s}]')
    for b in config.active_blocks():
      g[self.kernel.start + b] = self._index('kernel', space.kernel_sizes, config.kernel[b],
                                             f'[{b}]')
      g[self.expand.start + b] = self._index('expand', space.expand_ratios, config.expand[b],
                                             f'[{b}]')
      if self.branches is not None:
        if config.branches is None:
          raise errors.ConfigError('branches is missing: this space has parallel blocks')
        g[self.branches.start + b] = self._index('branches', space.branch_patterns,
                                                 config.branches[b], f'[{b}]')
    return g

  def from_configs(self, configs: Sequence[sc.SubnetConfig]) -> np.ndarray:
    """Genomes of `configs` as an (N, size) int64 matrix."""
    if not len(configs):
      return np.zeros((0, self.size), np.int64)
    return np.stack([self.from_config(c) for c in configs])

  def to_config(self, genome) -> sc.SubnetConfig:
    """The config a genome stands for (its free genes give the skipped blocks' values)."""
    g = np.asarray(genome, np.int64)
    v = self._values
    branches = None
    if self.branches is not None:
      branches = v['branches'][g[self.branches]]
    return sc.SubnetConfig(kernel=v['kernel'][g[self.kernel]], expand=v['expand'][g[self.expand]],
                           depth=v['depth'][g[self.depth]], exit=v['exit'][g[self.exit]],
                           resolution=v['resolution'][g[self.resolution]], branches=branches)

  # ---- batch helpers ------------------------------------------------------------------------

  def active(self, genomes: np.ndarray) -> np.ndarray:
    """(N, 20) bool: which blocks each genome runs (within its stage's depth and its exit)."""
    genomes = np.atleast_2d(genomes)
    exits = self._values['exit'][genomes[:, self.exit]]
    depths = self._values['depth'][genomes[:, self.depth]]  # (N, 5)
    return ((BLOCK_STAGE[None, :] < exits[:, None]) &
            (BLOCK_INDEX[None, :] < depths[:, BLOCK_STAGE]))

  def stage_present(self, genomes: np.ndarray) -> np.ndarray:
    """(N, 5) bool: which stages each genome runs (those up to its exit)."""
    genomes = np.atleast_2d(genomes)
    exits = self._values['exit'][genomes[:, self.exit]]
    return np.arange(NUM_STAGES)[None, :] < exits[:, None]

  def canonical(self, genomes: np.ndarray) -> np.ndarray:
    """Genomes with free genes zeroed: equal networks get equal rows."""
    genomes = np.array(np.atleast_2d(genomes), np.int64)
    active = self.active(genomes)
    genomes[:, self.kernel] *= active
    genomes[:, self.expand] *= active
    if self.branches is not None:
      genomes[:, self.branches] *= active
    genomes[:, self.depth] *= self.stage_present(genomes)
    return genomes

  def random(self, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` uniformly random genomes."""
    return rng.integers(0, self.upper + 1, size=(int(count), self.size))
