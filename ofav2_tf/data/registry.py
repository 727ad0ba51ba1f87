"""The dataset registry and `load`, the one entry point the trainer uses to get data.

A dataset is named by a registry key, optionally followed by `:argument`, e.g. `fashion_mnist`,
`tiny_imagenet`, `image_folder:/data/flowers` or `tfds:cifar10`. Each key maps to a loader
function; keeping them in a `Registry` means a typo in `--dataset` fails with the list of valid
names instead of a `KeyError` deep in the trainer.
"""

import dataclasses
import numbers
from typing import Any, Callable, Dict, Optional

from ofav2_tf import errors
from ofav2_tf import registry as registry_lib
from ofav2_tf.data import splits as splits_lib


@dataclasses.dataclass(frozen=True)
class LoadRequest:
  """What the user asked for, passed to a dataset loader.

  Attributes:
    name: The full name given to `load` (for messages and `DatasetSplits.name`).
    argument: The text after `:` in the name, or None.
    data_dir: Where the dataset lives or is prepared; its meaning is the loader's (see `load`).
    manual_dir: Where manually downloaded archives are (TFDS convention), or None.
    seed: Seed of the train/validation hold-out.
    validation_fraction: Share of the official train set held out for validation.
    download: Whether the loader may use the network.
    options: Loader-specific options; a loader must reject the ones it does not know.
  """
  name: str
  argument: Optional[str]
  data_dir: Optional[str]
  manual_dir: Optional[str]
  seed: int
  validation_fraction: float
  download: bool
  options: Dict[str, Any]

  def take_options(self, allowed: Dict[str, Any]) -> Dict[str, Any]:
    """Returns the options with defaults filled in; unknown options are a `ConfigError`.

    Args:
      allowed: Option name -> default value, for this loader.
    """
    unknown = sorted(set(self.options) - set(allowed))
    if unknown:
      valid = ', '.join(sorted(allowed)) or 'none'
      raise errors.ConfigError(
          f'dataset {self.name!r} does not take option(s) {", ".join(unknown)}; '
          f'valid options: {valid}')
    return {**allowed, **self.options}


Loader = Callable[[LoadRequest], splits_lib.DatasetSplits]

DATASETS: registry_lib.Registry[Loader] = registry_lib.Registry('dataset')

# Keys whose loader accepts / requires the `:argument` part (e.g. which TFDS dataset); the
# others refuse one, so `fashion_mnist:x` is an error rather than silently ignored.
_TAKES_ARGUMENT = set()
_NEEDS_ARGUMENT = set()


def register(name: str, argument: str = 'none') -> Callable[[Loader], Loader]:
  """Decorator registering a loader under `name`.

  Args:
    name: The registry key.
    argument: 'none' if the loader takes no `:argument`, 'optional' or 'required'.
  """
  if argument not in ('none', 'optional', 'required'):
    raise ValueError(f'argument must be none, optional or required, got {argument!r}')
  if argument != 'none':
    _TAKES_ARGUMENT.add(name)
  if argument == 'required':
    _NEEDS_ARGUMENT.add(name)
  return DATASETS.register(name)


def names() -> list:
  """Registered dataset keys, for flag validators and help texts."""
  return DATASETS.names()


def load(name: str,
         *,
         data_dir: Optional[str] = None,
         manual_dir: Optional[str] = None,
         seed: int = 0,
         validation_fraction: float = 0.15,
         download: bool = True,
         **options: Any) -> splits_lib.DatasetSplits:
  """Loads a dataset by name as unbatched train/validation/test `tf.data` pipelines.

  Args:
    name: `key` or `key:argument`; see `names()`. `tiny_imagenet`; `fashion_mnist`;
      `image_folder:<root>` (or `image_folder` with `data_dir=<root>`); `tfds:<catalog name>`.
    data_dir: For `tiny_imagenet` and `tfds:*`, the TFDS data directory where the prepared
      dataset is stored (TFDS default `~/tensorflow_datasets`); for `fashion_mnist`, the folder
      holding the four IDX gzip files (default `/usr/share/datasets/fashion-mnist`); for
      `image_folder`, the root folder (if not given after the colon).
    manual_dir: For `tiny_imagenet` and `tfds:*`, the folder holding manually downloaded
      archives (default `<data_dir>/downloads/manual`).
    seed: Seed of the validation hold-out; the same seed always selects the same images.
    validation_fraction: Share of the official training set held out for validation.
    download: Whether downloading is allowed when the data is not found locally.
    **options: Dataset-specific options (e.g. `image_size` for `image_folder`).

  Returns:
    The `DatasetSplits`.

  Raises:
    errors.RegistryError: Unknown dataset key (the message lists valid ones).
    errors.ConfigError: Bad argument, option or fraction.
    errors.DataError: The data is missing, incomplete or corrupt.
  """
  if not isinstance(name, str) or not name:
    raise errors.ConfigError(f'dataset name must be a non-empty string, got {name!r}')
  key, colon, argument = name.partition(':')
  loader = DATASETS.get(key)
  if colon and key not in _TAKES_ARGUMENT:
    raise errors.ConfigError(
        f'dataset {key!r} takes no ":argument" (got {name!r}); datasets that take one: '
        f'{", ".join(sorted(_TAKES_ARGUMENT))}')
  if key in _NEEDS_ARGUMENT and not argument:
    raise errors.ConfigError(f'dataset {key!r} needs an argument, e.g. "{key}:<name>"')
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise errors.ConfigError(f'dataset seed must be an integer, got {seed!r}')
  request = LoadRequest(
      name=name,
      argument=argument or None,
      data_dir=None if data_dir is None else str(data_dir),
      manual_dir=None if manual_dir is None else str(manual_dir),
      seed=int(seed),
      validation_fraction=splits_lib.check_fraction(validation_fraction),
      download=bool(download),
      options=dict(options))
  return loader(request)


def describe() -> str:
  """One line per dataset key with its loader's summary, for `--help` texts."""
  lines = []
  for key in names():
    doc = (DATASETS.get(key).__doc__ or '').strip().splitlines()
    lines.append(f'{key}: {doc[0] if doc else ""}')
  return '\n'.join(lines)
