"""The distillation teacher of a phase: a frozen, BN re-calibrated static copy of a max network.

OFA keeps the full-phase network as the teacher of every later phase (`fixed`); OFAv2's
progressively extracted teacher (`pet`) takes, at the start of each phase, the best checkpoint of
the phase before, sets it to the maximal sub-network (all five exits for early-exit variants, whose
outputs ENS-KD mixes), re-calibrates its BN statistics and freezes it for the whole phase
(DESIGN.md 2.3). Either way the teacher is an extracted static Keras model: it does not change when
the supernet's weights do, and it is cheap to trace.
"""

from typing import Iterable, Optional

from ofav2_tf import bn_calibration
from ofav2_tf import extraction
from ofav2_tf import registry

TEACHER_MODES = registry.Registry[str]('teacher mode')
TEACHER_MODES.add('pet', 'previous phase')   # the phase before this one
TEACHER_MODES.add('fixed', 'full phase')     # the full phase, for every later phase (OFA)
TEACHER_MODES.add('none', 'no teacher')      # labels only


def source_phase(mode: str, phase_index: int) -> Optional[int]:
  """Index of the phase whose best checkpoint becomes the teacher of phase `phase_index`.

  None when the phase has no teacher: the full phase (nothing trained before it) or mode 'none'.
  """
  TEACHER_MODES.get(mode)
  if mode == 'none' or phase_index == 0:
    return None
  return phase_index - 1 if mode == 'pet' else 0


def extract_teacher(supernet, max_config, calibration: Iterable, max_images: Optional[int] = None):
  """A frozen static model of `max_config` with the supernet's current weights.

  Args:
    supernet: The supernet holding the teacher's weights (they are copied, not shared).
    max_config: The maximal sub-network of the phase; its resolution is the calibration size.
    calibration: Image batches at that resolution for BN re-calibration.
    max_images: Cap on the calibration images.

  Returns:
    A tf_keras model taking images of any size and returning logits, or for early-exit variants
    the list of all five exits' logits.
  """
  exits = 'all' if supernet.variant.early_exits else None
  model = extraction.extract(supernet, max_config, exits=exits, name='teacher',
                             any_resolution=True)
  bn_calibration.recalibrate(model, calibration, max_images=max_images)
  model.trainable = False
  return model
