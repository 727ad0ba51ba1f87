"""`SubnetConfig`, the one type that names a sub-network, and `SearchSpace`, the values it may take.

Every part of the project (sampling in training, the supernet's forward pass, extraction, cost
models, search, export, reports) speaks in `SubnetConfig`s. A config stores a value for every block
position, including blocks skipped by the depth and stages dropped by the exit, so that it maps
one-to-one onto the supernet's tensors; `canonical()` resets the unused values when two configs must
be compared as networks.

Branch patterns (parallel variants) are 3-bit masks over the branches of a level:
bit 0 = the elastic MBConv block, bit 1 = the 1x1 conv branch, bit 2 = the transformation op.
"""

import dataclasses
import itertools
import json
import re
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from ofav2_tf import arch_spec
from ofav2_tf import errors
from ofav2_tf import variants

NUM_BLOCKS = arch_spec.NUM_STAGES * arch_spec.BLOCKS_PER_STAGE
BRANCH_MBCONV, BRANCH_CONV1X1, BRANCH_TRANSFORM = 1, 2, 4
ALL_BRANCHES = 7
BRANCH_LETTERS = 'mct'  # bit order: m=MBConv, c=1x1 conv, t=transformation op
# The pattern used for "n branches" in uniform sub-networks (the paper's branch count).
UNIFORM_BRANCH_PATTERNS = {1: BRANCH_MBCONV, 2: BRANCH_MBCONV | BRANCH_CONV1X1, 3: ALL_BRANCHES}
DEFAULT_RESOLUTIONS = (48, 52, 56, 60, 64)


def branch_count(pattern: int) -> int:
  return bin(pattern).count('1')


def block_location(block: int) -> str:
  """Human-readable position of a flat block index, for error messages."""
  stage, index = divmod(block, arch_spec.BLOCKS_PER_STAGE)
  return f'stage {stage + 1}, block {index + 1}'


def _pattern_to_letters(pattern: int) -> str:
  return ''.join(letter for bit, letter in enumerate(BRANCH_LETTERS) if pattern & (1 << bit))


def _letters_to_pattern(letters: str) -> int:
  pattern = 0
  for letter in letters:
    if letter not in BRANCH_LETTERS:
      raise errors.ConfigError(
          f'branch letter {letter!r} is not valid; valid letters: m (MBConv), c (1x1 conv), '
          't (transformation op)')
    pattern |= 1 << BRANCH_LETTERS.index(letter)
  return pattern


@dataclasses.dataclass(frozen=True)
class SubnetConfig:
  """One sub-network of an OFAv2 supernet.

  Attributes:
    kernel: Depthwise kernel size per block (20 values, stage-major).
    expand: Expand ratio per block (20 values).
    depth: Active blocks per stage (5 values); a stage keeps its first `depth` blocks.
    exit: The exit the sub-network ends at (1-5); always 5 for single-exit variants.
    resolution: Input image size (square).
    branches: Active-branch mask per level (20 values, see module docstring); None for variants
      without parallel blocks.
  """

  kernel: Tuple[int, ...]
  expand: Tuple[int, ...]
  depth: Tuple[int, ...]
  exit: int
  resolution: int
  branches: Optional[Tuple[int, ...]] = None

  def __post_init__(self):
    # Accept lists/arrays from JSON or numpy and store hashable tuples of plain ints.
    object.__setattr__(self, 'kernel', tuple(int(v) for v in self.kernel))
    object.__setattr__(self, 'expand', tuple(int(v) for v in self.expand))
    object.__setattr__(self, 'depth', tuple(int(v) for v in self.depth))
    object.__setattr__(self, 'exit', int(self.exit))
    object.__setattr__(self, 'resolution', int(self.resolution))
    if self.branches is not None:
      object.__setattr__(self, 'branches', tuple(int(v) for v in self.branches))
    for name, expected in (('kernel', NUM_BLOCKS), ('expand', NUM_BLOCKS),
                           ('depth', arch_spec.NUM_STAGES)):
      if len(getattr(self, name)) != expected:
        raise errors.ConfigError(
            f'{name} has {len(getattr(self, name))} values; it needs {expected} '
            f'({"one per block" if expected == NUM_BLOCKS else "one per stage"})')
    if self.branches is not None and len(self.branches) != NUM_BLOCKS:
      raise errors.ConfigError(
          f'branches has {len(self.branches)} values; it needs {NUM_BLOCKS} (one per level)')

  # ---- structure ----------------------------------------------------------------------------

  @property
  def num_stages(self) -> int:
    """Stages the sub-network runs (the stages after its exit are dropped)."""
    return self.exit

  def is_active(self, block: int) -> bool:
    """Whether flat block index `block` is computed by this sub-network."""
    stage, index = divmod(block, arch_spec.BLOCKS_PER_STAGE)
    return stage < self.exit and index < self.depth[stage]

  def active_blocks(self) -> Iterator[int]:
    return (b for b in range(NUM_BLOCKS) if self.is_active(b))

  def canonical(self) -> 'SubnetConfig':
    """The same network with unused values (skipped blocks, dropped stages) set to fixed ones.

    Two configs describe the same network exactly when their canonical forms are equal.
    """
    kernel = [k if self.is_active(b) else 0 for b, k in enumerate(self.kernel)]
    expand = [e if self.is_active(b) else 0 for b, e in enumerate(self.expand)]
    depth = [d if s < self.exit else 0 for s, d in enumerate(self.depth)]
    branches = None
    if self.branches is not None:
      branches = [p if self.is_active(b) else 0 for b, p in enumerate(self.branches)]
    return SubnetConfig(kernel, expand, depth, self.exit, self.resolution, branches)

  def replace(self, **changes) -> 'SubnetConfig':
    return dataclasses.replace(self, **changes)

  # ---- serialisation ------------------------------------------------------------------------

  def to_dict(self) -> dict:
    data = {'kernel': list(self.kernel), 'expand': list(self.expand), 'depth': list(self.depth),
            'exit': self.exit, 'resolution': self.resolution}
    if self.branches is not None:
      data['branches'] = list(self.branches)
    return data

  @classmethod
  def from_dict(cls, data: dict) -> 'SubnetConfig':
    known = {'kernel', 'expand', 'depth', 'exit', 'resolution', 'branches'}
    unknown = set(data) - known
    if unknown:
      raise errors.ConfigError(
          f'unknown sub-network field(s) {sorted(unknown)}; valid fields: {sorted(known)}')
    missing = known - {'branches'} - set(data)
    if missing:
      raise errors.ConfigError(f'sub-network config lacks field(s) {sorted(missing)}')
    return cls(**data)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'SubnetConfig':
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise errors.ConfigError(f'sub-network JSON does not parse: {e}') from None
    if not isinstance(data, dict):
      raise errors.ConfigError('sub-network JSON must be an object with fields kernel, expand, '
                               'depth, exit, resolution[, branches]')
    return cls.from_dict(data)

  def to_string(self) -> str:
    """Compact form, e.g. 'r64-x5-d4:k7e6.k5e4.k3e3.k7e6-d2:...' (+letters for branches)."""
    parts = [f'r{self.resolution}', f'x{self.exit}']
    per = arch_spec.BLOCKS_PER_STAGE
    for stage in range(arch_spec.NUM_STAGES):
      tokens = []
      for b in range(stage * per, (stage + 1) * per):
        token = f'k{self.kernel[b]}e{self.expand[b]}'
        if self.branches is not None:
          token += '+' + _pattern_to_letters(self.branches[b])
        tokens.append(token)
      parts.append(f'd{self.depth[stage]}:' + '.'.join(tokens))
    return '-'.join(parts)

  __str__ = to_string

  @classmethod
  def from_string(cls, text: str) -> 'SubnetConfig':
    """Parses `to_string()`'s form."""
    example = 'r64-x5-d4:k7e6.k7e6.k7e6.k7e6-d4:... (5 stages)'
    parts = text.strip().split('-')
    if len(parts) != 2 + arch_spec.NUM_STAGES:
      raise errors.ConfigError(
          f'sub-network string {text!r} has {len(parts)} dash-separated parts; expected '
          f'{2 + arch_spec.NUM_STAGES} like {example}')
    res = re.fullmatch(r'r(\d+)', parts[0])
    ex = re.fullmatch(r'x(\d+)', parts[1])
    if not res or not ex:
      raise errors.ConfigError(
          f'sub-network string {text!r} must start with r<resolution>-x<exit>, like {example}')
    kernel, expand, depth, branches = [], [], [], []
    for part in parts[2:]:
      m = re.fullmatch(r'd(\d+):(.*)', part)
      if not m:
        raise errors.ConfigError(f'stage part {part!r} must look like d<depth>:<blocks>')
      depth.append(int(m.group(1)))
      tokens = m.group(2).split('.')
      if len(tokens) != arch_spec.BLOCKS_PER_STAGE:
        raise errors.ConfigError(
            f'stage part {part!r} has {len(tokens)} blocks; expected {arch_spec.BLOCKS_PER_STAGE}')
      for token in tokens:
        t = re.fullmatch(r'k(\d+)e(\d+)(?:\+([a-z]+))?', token)
        if not t:
          raise errors.ConfigError(f'block {token!r} must look like k<kernel>e<expand>[+mct]')
        kernel.append(int(t.group(1)))
        expand.append(int(t.group(2)))
        branches.append(_letters_to_pattern(t.group(3)) if t.group(3) else None)
    if any(p is None for p in branches) and not all(p is None for p in branches):
      raise errors.ConfigError(f'sub-network string {text!r} gives branches for some blocks only')
    return cls(kernel, expand, depth, int(ex.group(1)), int(res.group(1)),
               None if branches[0] is None else branches)

  @classmethod
  def parse(cls, text: str) -> 'SubnetConfig':
    """Accepts either the JSON or the compact string form (for flags and files)."""
    text = text.strip()
    return cls.from_json(text) if text.startswith('{') else cls.from_string(text)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """The allowed values of every elastic dimension.

  The supernet's full space comes from `SearchSpace.for_variant`; a training phase or a search
  restricts it with `restrict`, which only accepts subsets, so every sampled config is valid for
  the supernet.
  """

  kernel_sizes: Tuple[int, ...] = (3, 5, 7)
  expand_ratios: Tuple[int, ...] = (3, 4, 6)
  depths: Tuple[int, ...] = (2, 3, 4)
  exits: Tuple[int, ...] = (5,)
  resolutions: Tuple[int, ...] = DEFAULT_RESOLUTIONS
  branch_patterns: Optional[Tuple[int, ...]] = None  # None: variant without parallel blocks

  def __post_init__(self):
    for name in ('kernel_sizes', 'expand_ratios', 'depths', 'exits', 'resolutions'):
      values = tuple(sorted({int(v) for v in getattr(self, name)}))
      if not values:
        raise errors.ConfigError(f'search space dimension {name} is empty')
      object.__setattr__(self, name, values)
    if self.branch_patterns is not None:
      patterns = tuple(sorted({int(v) for v in self.branch_patterns},
                              key=lambda p: (branch_count(p), p)))
      if not patterns or any(not 1 <= p <= ALL_BRANCHES for p in patterns):
        raise errors.ConfigError(
            f'branch_patterns {patterns} must be non-empty masks in 1..{ALL_BRANCHES}')
      object.__setattr__(self, 'branch_patterns', patterns)
    if any(k % 2 == 0 or k < 1 for k in self.kernel_sizes):
      raise errors.ConfigError(f'kernel_sizes {self.kernel_sizes} must be odd positive integers')
    if any(not 1 <= d <= arch_spec.BLOCKS_PER_STAGE for d in self.depths):
      raise errors.ConfigError(
          f'depths {self.depths} must lie in 1..{arch_spec.BLOCKS_PER_STAGE}')
    if any(not 1 <= x <= arch_spec.NUM_STAGES for x in self.exits):
      raise errors.ConfigError(f'exits {self.exits} must lie in 1..{arch_spec.NUM_STAGES}')

  @classmethod
  def for_variant(cls, variant, resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
                  kernel_sizes=(3, 5, 7), expand_ratios=(3, 4, 6), depths=(2, 3, 4)):
    """The full space of a supernet variant (a `Variant` or its name)."""
    if isinstance(variant, str):
      variant = variants.get_variant(variant)
    return cls(kernel_sizes=tuple(kernel_sizes), expand_ratios=tuple(expand_ratios),
               depths=tuple(depths),
               exits=tuple(range(1, 6)) if variant.early_exits else (5,),
               resolutions=tuple(resolutions),
               branch_patterns=tuple(range(1, ALL_BRANCHES + 1)) if variant.parallel else None)

  @property
  def parallel(self) -> bool:
    return self.branch_patterns is not None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def restrict(self, **choices) -> 'SearchSpace':
    """A sub-space; every restricted dimension must be a subset of this space's values."""
    for name, values in choices.items():
      if not hasattr(self, name):
        raise errors.ConfigError(
            f'unknown search-space dimension {name!r}; valid: '
            f'{", ".join(f.name for f in dataclasses.fields(self))}')
      allowed = getattr(self, name)
      if values is None and allowed is None:
        continue
      if allowed is None:
        raise errors.ConfigError(f'{name} cannot be restricted: this variant has no parallel blocks')
      bad = sorted(set(int(v) for v in values) - set(allowed))
      if bad:
        raise errors.ConfigError(
            f'{name} restriction {bad} is outside the space; valid values: {list(allowed)}')
    return dataclasses.replace(self, **choices)

  # ---- validation ---------------------------------------------------------------------------

  def validate(self, config: SubnetConfig) -> SubnetConfig:
    """Raises `ConfigError` naming the first field outside this space; returns the config."""

    def check(field, value, allowed, where=''):
      if value not in allowed:
        raise errors.ConfigError(
            f'{field}{where} = {value} is not in the search space; valid values: '
            f'{", ".join(str(a) for a in allowed)}')

    check('resolution', config.resolution, self.resolutions)
    check('exit', config.exit, self.exits)
    for s, d in enumerate(config.depth):
      if s < config.exit:
        check('depth', d, self.depths, f'[{s}] (stage {s + 1})')
    for b in config.active_blocks():
      check('kernel', config.kernel[b], self.kernel_sizes, f'[{b}] ({block_location(b)})')
      check('expand', config.expand[b], self.expand_ratios, f'[{b}] ({block_location(b)})')
    if self.parallel:
      if config.branches is None:
        raise errors.ConfigError(
            'branches is missing: this variant has parallel blocks; give one mask per level '
            f'from {list(self.branch_patterns)}')
      for b in config.active_blocks():
        check('branches', config.branches[b], self.branch_patterns,
              f'[{b}] ({block_location(b)})')
    elif config.branches is not None:
      raise errors.ConfigError('branches is given but this variant has no parallel blocks; '
                               'leave it out')
    return config

  def contains(self, config: SubnetConfig) -> bool:
    try:
      self.validate(config)
      return True
    except errors.ConfigError:
      return False

  # ---- named configs ------------------------------------------------------------------------

  def uniform(self, kernel: int, expand: int, depth: int, exit: int = None,
              resolution: int = None, branches: int = None) -> SubnetConfig:
    """The same choice everywhere. `branches` is a pattern mask (parallel variants only)."""
    exit = max(self.exits) if exit is None else exit
    resolution = max(self.resolutions) if resolution is None else resolution
    if self.parallel and branches is None:
      branches = max(self.branch_patterns, key=lambda p: (branch_count(p), p))
    return self.validate(SubnetConfig(
        kernel=[kernel] * NUM_BLOCKS, expand=[expand] * NUM_BLOCKS,
        depth=[depth] * arch_spec.NUM_STAGES, exit=exit, resolution=resolution,
        branches=[branches] * NUM_BLOCKS if self.parallel else None))

  def max_config(self, resolution: int = None) -> SubnetConfig:
    """The largest sub-network (every dimension at its largest allowed value)."""
    branches = None
    if self.parallel:
      branches = max(self.branch_patterns, key=lambda p: (branch_count(p), p))
    return self.uniform(max(self.kernel_sizes), max(self.expand_ratios), max(self.depths),
                        max(self.exits), resolution, branches)

  def min_config(self, resolution: int = None) -> SubnetConfig:
    """The smallest sub-network; for parallel variants the fewest branches (MBConv first)."""
    branches = self.branch_patterns[0] if self.parallel else None
    return self.uniform(min(self.kernel_sizes), min(self.expand_ratios), min(self.depths),
                        min(self.exits), resolution or min(self.resolutions), branches)

  def uniform_branch_patterns(self) -> Tuple[int, ...]:
    """Patterns standing for the paper's uniform "branch count" 1, 2, 3 that this space allows."""
    if not self.parallel:
      return (None,)
    return tuple(p for p in UNIFORM_BRANCH_PATTERNS.values() if p in self.branch_patterns)

  def uniform_grid(self, resolutions: Sequence[int] = None) -> Iterator[SubnetConfig]:
    """All uniform sub-networks of the space (the paper's evaluation protocol)."""
    resolutions = self.resolutions if resolutions is None else resolutions
    for k, e, d, p, x, r in itertools.product(self.kernel_sizes, self.expand_ratios, self.depths,
                                              self.uniform_branch_patterns(), self.exits,
                                              resolutions):
      yield self.uniform(k, e, d, x, r, p)

  # ---- sampling -----------------------------------------------------------------------------

  def sample(self, rng: np.random.Generator) -> SubnetConfig:
    """A random config: k, e and branches per block, d per stage, one exit and one resolution."""
    kernel = rng.choice(self.kernel_sizes, NUM_BLOCKS)
    expand = rng.choice(self.expand_ratios, NUM_BLOCKS)
    depth = rng.choice(self.depths, arch_spec.NUM_STAGES)
    branches = rng.choice(self.branch_patterns, NUM_BLOCKS) if self.parallel else None
    exit = rng.choice(self.exits)
    resolution = rng.choice(self.resolutions)
    return SubnetConfig(kernel, expand, depth, exit, resolution, branches)
