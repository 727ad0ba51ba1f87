"""Exporter error types.

All derive from `ofav2_tf.errors.OFAError`, so the command line prints them as one line: they report a
model, file or setting the user can fix, not a bug in the exporter.
"""

from ofav2_tf.errors import OFAError


class ExportError(OFAError, ValueError):
  """A model, file or export setting cannot be exported or run as asked."""


class UnsupportedOpError(ExportError):
  """A .tflite file uses an op the target runtime does not provide."""


class ArenaTooSmallError(ExportError):
  """The TFLite Micro tensor arena given is smaller than the model needs."""


class RuntimeCrashError(ExportError):
  """A runtime (TFLite Micro) died while loading or running a file, instead of returning an error."""
