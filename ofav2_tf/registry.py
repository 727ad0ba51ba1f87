"""A small name -> object registry with loud errors.

Variants, phases, datasets and cost models register themselves with a decorator; looking up an
unknown name fails with the list of known names, so a typo in a flag is a one-line fix for the user.
"""

from typing import Callable, Dict, Generic, Iterator, TypeVar

from ofav2_tf import errors

T = TypeVar('T')


class Registry(Generic[T]):
  """Maps names to registered objects (builders, specs, classes).

  Args:
    kind: What is registered, used in error messages ("variant", "dataset", ...).
  """

  def __init__(self, kind: str):
    self._kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Returns a decorator that registers its argument under `name`."""

    def decorator(obj: T) -> T:
      self.add(name, obj)
      return obj

    return decorator

  def add(self, name: str, obj: T) -> None:
    """Registers `obj` under `name`; registering a name twice is a programming error."""
    if name in self._entries:
      raise ValueError(f'{self._kind} {name!r} is already registered')
    self._entries[name] = obj

  def get(self, name: str) -> T:
    """Returns the object registered under `name`, or raises `RegistryError` listing valid names."""
    try:
      return self._entries[name]
    except KeyError:
      raise errors.RegistryError(
          f'unknown {self._kind} {name!r}; valid {self._kind}s: {", ".join(self.names())}'
      ) from None

  def names(self) -> list:
    """Registered names in registration order."""
    return list(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)
