"""The eight OFAv2 supernet variants {SE, EE} x {B, D, P, DP} (DESIGN.md 2.2).

A variant is a set of three switches (early exits, dense skips, parallel blocks); code asks the
switches, never the name, so adding a variant is one line in the table below.
"""

import dataclasses
import itertools

from ofav2_tf import registry


@dataclasses.dataclass(frozen=True)
class Variant:
  """The structural options of one supernet family.

  Attributes:
    name: Registry name, e.g. 'EE_D'.
    early_exits: One exit head after every stage; the exit becomes elastic (Elastic Height).
    dense: Dense skip connections inside each stage (block 4 reads y3 + y1, ...).
    parallel: Each block position holds three summed branches (Elastic Level).
  """

  name: str
  early_exits: bool
  dense: bool
  parallel: bool

  @property
  def num_exits(self) -> int:
    return 5 if self.early_exits else 1


VARIANTS = registry.Registry[Variant]('variant')

_BODIES = {'B': (False, False), 'D': (True, False), 'P': (False, True), 'DP': (True, True)}
for _exits, _body in itertools.product(('SE', 'EE'), _BODIES):
  _dense, _parallel = _BODIES[_body]
  VARIANTS.add(f'{_exits}_{_body}',
               Variant(name=f'{_exits}_{_body}', early_exits=_exits == 'EE', dense=_dense,
                       parallel=_parallel))


def get_variant(name: str) -> Variant:
  """Looks a variant up by name ('SE_B' is the original OFA network)."""
  return VARIANTS.get(name)
