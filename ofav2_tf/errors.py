"""Project exception types.

User mistakes (a bad flag, a config outside the space, a missing dataset) raise an `OFAError`
subclass whose message names the offending field or file and what would be valid. The command-line
entry point prints these as one line without a traceback; anything else is a bug and keeps its
traceback.
"""


class OFAError(Exception):
  """Base class for errors caused by user input rather than by a bug."""


class ConfigError(OFAError, ValueError):
  """A configuration value (sub-network choice, flag, space restriction) is not valid."""


class RegistryError(OFAError, KeyError):
  """A name was looked up in a registry that does not know it."""

  def __str__(self):  # KeyError quotes its message; show it plainly.
    return str(self.args[0]) if self.args else ''


class ArchitectureMismatchError(OFAError, ValueError):
  """Saved weights or a run folder belong to a different architecture than requested."""


class DataError(OFAError, IOError):
  """A dataset is missing, incomplete or corrupt."""


class StorageError(OFAError, OSError):
  """A file or folder could not be written or read: permissions, a read-only or full disk.

  Not the user's input as such, but theirs to fix (free space, make a folder writable), so it is
  reported like a mistake, with its own exit status (`ofav2_tf.cli.EXIT_STORAGE`).
  """
