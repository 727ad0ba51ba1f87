"""Affine int8/uint8 quantization with a tensor's own parameters, as the runtimes apply them.

The exported files take and return int8 tensors; callers think in float images and logits. The
parameters always come from the file (never recomputed), so the conversion matches what a device does.
"""

import numpy as np


def quantize(values, scale, zero_point, dtype):
  """Maps float `values` to integers: round(values / scale) + zero_point, saturated to `dtype`.

  Args:
    values: float array.
    scale: positive float from the tensor's quantization parameters.
    zero_point: integer from the tensor's quantization parameters.
    dtype: integer numpy dtype of the tensor (int8 or uint8).

  Returns:
    Array of `dtype`.
  """
  info = np.iinfo(dtype)
  q = np.round(np.asarray(values, np.float64) / scale) + zero_point
  return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values, scale, zero_point):
  """Maps integers back to float32: (values - zero_point) * scale."""
  return ((np.asarray(values, np.float64) - zero_point) * scale).astype(np.float32)
