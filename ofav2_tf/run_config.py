"""The resolved configuration of a run: flags turned into one validated, serialisable object.

`RunConfig` is what the run folder stores (`config.json`) and what a resumed run is compared with.
Its `architecture` part decides the weights (variant, classes, widths, elastic choices): a run
folder made with another architecture is refused instead of half-loaded. The schedule part is
resolved here too, per phase (`PhasePlan`: steps, warm-up, learning rate, sub-networks per step), so
the plan printed at the start of a run is exactly what runs, and a resumed run re-derives the same
plan from the same flags.
"""

import dataclasses
import json
import math
from typing import Dict, List, Optional, Sequence, Tuple

from ofav2_tf import checkpoints
from ofav2_tf import errors
from ofav2_tf import flag_defs
from ofav2_tf import phases as phases_lib
from ofav2_tf import subnet_config
from ofav2_tf import variants as variants_lib

# The supernet's constructor arguments that shape its weights (the checkpoints' own list).
ARCHITECTURE_FIELDS = checkpoints.ARCHITECTURE_FIELDS


@dataclasses.dataclass(frozen=True)
class PhasePlan:
  """One phase as this run will execute it."""

  index: int
  name: str
  steps: int
  warmup_steps: int
  lr: float
  subnets_per_step: int

  @property
  def folder_name(self) -> str:
    return f'{self.index:02d}_{self.name}'


@dataclasses.dataclass
class RunConfig:
  """Everything a run depends on, resolved (no 'default' left to interpret later)."""

  # Data.
  dataset: str = 'fashion_mnist'
  data_dir: Optional[str] = None
  manual_dir: Optional[str] = None
  download: bool = True
  validation_fraction: float = 0.15
  resolutions: Tuple[int, ...] = ()
  batch_size: int = 64
  seed: int = 0
  # Architecture.
  variant: str = 'EE_D'
  num_classes: int = 0
  width_multiplier: float = 1.0
  dropout: float = 0.1
  kernel_sizes: Tuple[int, ...] = (3, 5, 7)
  expand_ratios: Tuple[int, ...] = (3, 4, 6)
  depths: Tuple[int, ...] = (2, 3, 4)
  # Schedule.
  phases: Tuple[str, ...] = ()
  teacher: str = 'pet'
  epoch_scale: float = 1.0
  phase_epochs: Dict[str, float] = dataclasses.field(default_factory=dict)
  phase_steps: Dict[str, int] = dataclasses.field(default_factory=dict)
  steps_per_epoch: int = 0
  lr_scale: float = 1.0
  phase_lr: Dict[str, float] = dataclasses.field(default_factory=dict)
  warmup_scale: float = 1.0
  momentum: float = 0.9
  weight_decay: float = 3e-5
  label_smoothing: float = 0.1
  kd_weight: float = 1.0
  sandwich: bool = False
  checkpoint_every_steps: int = 0
  validation_images: int = 1000
  # Evaluation.
  eval_resolutions: Tuple[int, ...] = ()
  eval_max_subnets: int = 0
  eval_images: int = 0
  final_eval_images: int = 0
  calibration_images: int = 2000
  eval_split: str = 'test'
  # Execution (not part of what a run *is*: a run may resume on another machine).
  distribution: str = 'default'
  verbose: int = 1

  def architecture(self) -> dict:
    return {field: _jsonable(getattr(self, field)) for field in ARCHITECTURE_FIELDS}

  def supernet_kwargs(self) -> dict:
    return dict(width_multiplier=self.width_multiplier, dropout=self.dropout,
                kernel_sizes=tuple(self.kernel_sizes), expand_ratios=tuple(self.expand_ratios),
                depths=tuple(self.depths))

  def to_dict(self) -> dict:
    return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, data: dict) -> 'RunConfig':
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
      raise errors.ConfigError(f'unknown run configuration fields: {", ".join(unknown)}')
    values = {}
    for name, value in data.items():
      if isinstance(value, list):
        value = tuple(value)
      values[name] = value
    return cls(**values)

  # -- the schedule ------------------------------------------------------------------------------

  def schedule(self) -> Tuple[phases_lib.PhaseSpec, ...]:
    """The phases this run executes, validated against the variant's schedule."""
    full = phases_lib.schedule(self.variant)
    names = [p.name for p in full]
    if not self.phases:
      return full
    for name in self.phases:
      phases_lib.PHASES.get(name)  # unknown names list the valid ones
      if name not in names:
        raise errors.ConfigError(
            f'--phases: phase {name!r} does not apply to variant {self.variant}; its schedule '
            f'is {",".join(names)}')
    if list(self.phases) != names[:len(self.phases)]:
      raise errors.ConfigError(
          f'--phases must be a prefix of the schedule of {self.variant} (each phase starts from '
          f'the one before), e.g. {",".join(names[:2])}; got {",".join(self.phases)}')
    return full[:len(self.phases)]

  def plan(self, train_images: int) -> List[PhasePlan]:
    """Steps, warm-up and learning rate of each phase for a training set of `train_images`."""
    steps_per_epoch = self.steps_per_epoch or max(1, train_images // self.batch_size)
    plans = []
    for index, spec in enumerate(self.schedule()):
      reference = spec.reference_epochs + spec.warmup_epochs  # the warm-up comes on top
      epochs = self.phase_epochs.get(spec.name, reference * self.epoch_scale)
      steps = int(self.phase_steps.get(spec.name, math.ceil(epochs * steps_per_epoch)))
      # Warm-up keeps its reference share of the phase, whatever the phase's length.
      warmup = int(round(steps * self.warmup_scale * spec.warmup_epochs / reference))
      if steps < 1:
        raise errors.ConfigError(
            f'phase {spec.name} gets {steps} steps: raise --epoch_scale or set --phase_steps')
      lr = self.phase_lr.get(spec.name, spec.reference_lr * self.lr_scale)
      plans.append(PhasePlan(index, spec.name, steps, min(warmup, steps - 1), float(lr),
                             spec.subnets_per_step))
    return plans

  def checkpoint_interval(self, train_images: int) -> int:
    return self.checkpoint_every_steps or self.steps_per_epoch or max(
        1, train_images // self.batch_size)

  # -- validation ---------------------------------------------------------------------------------

  def validate(self) -> 'RunConfig':
    """Cross-flag checks; raises ConfigError naming the flag and the valid values."""
    variants_lib.get_variant(self.variant)
    if self.teacher not in flag_defs.TEACHER_MODES:
      raise errors.ConfigError(f'--teacher must be one of {", ".join(flag_defs.TEACHER_MODES)}, '
                               f'got {self.teacher!r}')
    if self.batch_size < 1:
      raise errors.ConfigError(f'--batch_size must be positive, got {self.batch_size}')
    if not self.resolutions:
      raise errors.ConfigError('--resolutions is empty')
    for name in ('phase_epochs', 'phase_steps', 'phase_lr'):
      for phase in getattr(self, name):
        phases_lib.PHASES.get(phase)  # unknown names list the valid ones
    self.schedule()
    bad = [r for r in self.eval_resolutions if r not in self.resolutions]
    if bad:
      raise errors.ConfigError(
          f'--eval_resolutions {bad} are not training resolutions; valid: '
          f'{",".join(map(str, self.resolutions))}')
    for name in ('kernel_sizes', 'expand_ratios', 'depths'):
      if not getattr(self, name):
        raise errors.ConfigError(f'--{name} is empty')
    try:  # the space's own checks (odd kernels, depths within a stage), before a folder is made
      subnet_config.SearchSpace.for_variant(self.variant, self.resolutions, self.kernel_sizes,
                                            self.expand_ratios, self.depths)
    except errors.ConfigError as e:
      raise errors.ConfigError(f'--kernel_sizes/--expand_ratios/--depths: {e}') from None
    return self


def default_resolutions(native_size: int) -> Tuple[int, ...]:
  """48..64 for Tiny ImageNet-sized images (the paper), else native-4..native+4 in steps of 4."""
  if native_size >= 56:
    return (48, 52, 56, 60, 64)
  return tuple(r for r in (native_size - 4, native_size, native_size + 4) if r >= 16)


def check_same_architecture(saved: dict, requested: dict, run_dir: str) -> None:
  """Refuses to continue a run folder with another architecture (one line, names every field)."""
  diffs = [f'{k}: run has {saved.get(k)!r}, flags ask for {requested.get(k)!r}'
           for k in ARCHITECTURE_FIELDS if _jsonable(saved.get(k)) != _jsonable(requested.get(k))]
  if diffs:
    raise errors.ArchitectureMismatchError(
        f'run folder {run_dir} was made for a different architecture ({"; ".join(diffs)}); use '
        'the same architecture flags to resume it, or another --run_dir for a new run')


def _jsonable(value):
  if isinstance(value, tuple):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  return value


def ints(values: Optional[Sequence]) -> Tuple[int, ...]:
  return tuple(int(v) for v in values or ())
