"""The modes of `python -m ofav2_tf.main`, as a registry of functions taking the parsed flags.

A mode lives in its own module here and registers itself with `@MODES.register('<name>')`; the
module is named in `MODE_MODULES` and imported only when a mode runs, so `--help` and flag parsing
stay fast and modes do not import each other's dependencies.
"""

import importlib

from ofav2_tf import registry

MODES = registry.Registry('mode')

MODE_MODULES = (
    'ofav2_tf.modes.train',
    'ofav2_tf.modes.evaluate',
    'ofav2_tf.modes.profile',
    'ofav2_tf.modes.search',
    'ofav2_tf.modes.export',
    'ofav2_tf.modes.benchmark',
    'ofav2_tf.modes.report',
    'ofav2_tf.modes.run_all',
)


def load() -> None:
  for module in MODE_MODULES:
    importlib.import_module(module)


def run(name: str, flag_values) -> None:
  """Runs mode `name` (unknown names raise RegistryError listing the valid ones)."""
  load()
  MODES.get(name)(flag_values)
