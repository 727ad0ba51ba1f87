"""Reads gzip-compressed IDX files (the MNIST family's format) into NumPy arrays, strictly.

The IDX header states the element type and every dimension, so a truncated or mixed-up file can
be caught before training: each check here names the file, since the user has to fix or reinstall
that file, not guess which of four similar names is broken.
"""

import gzip
import zlib
from typing import Optional, Sequence

import numpy as np

from ofav2_tf import errors

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), and the number of dimensions.
_UBYTE = 0x08


def read_idx_gz(path: str, expected_shape: Sequence[Optional[int]]) -> np.ndarray:
  """Reads a gzip IDX file of unsigned bytes and checks its shape.

  Args:
    path: The `.gz` file.
    expected_shape: Expected dimensions; None accepts any size for that dimension (but the rank
      must match).

  Returns:
    A uint8 array of the declared shape.

  Raises:
    errors.DataError: The file is missing, not gzip, truncated, or its header or size is wrong.
  """
  try:
    with gzip.open(path, 'rb') as stream:
      content = stream.read()
  except FileNotFoundError:
    raise errors.DataError(f'IDX file not found: {path}') from None
  except (OSError, EOFError, zlib.error) as e:
    raise errors.DataError(
        f'cannot read {path}: not a complete gzip file ({e}); the file is corrupt or truncated, '
        'reinstall or re-download it') from None
  rank = len(expected_shape)
  header_size = 4 + 4 * rank
  if len(content) < header_size:
    raise errors.DataError(
        f'{path} is too short for an IDX header ({len(content)} bytes); the file is corrupt')
  magic = content[:4]
  if magic[:2] != b'\x00\x00' or magic[2] != _UBYTE or magic[3] != rank:
    raise errors.DataError(
        f'{path} has IDX magic {magic.hex()}, expected 0000{_UBYTE:02x}{rank:02x} '
        f'(unsigned bytes, {rank} dimensions); it is not the expected IDX file')
  shape = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], 'big') for i in range(rank))
  for i, (got, want) in enumerate(zip(shape, expected_shape)):
    if want is not None and got != want:
      raise errors.DataError(
          f'{path} declares shape {shape}, expected dimension {i} to be {want} '
          f'(expected shape {tuple(expected_shape)}); it is not the expected IDX file')
  expected_bytes = header_size + int(np.prod(shape))
  if len(content) != expected_bytes:
    raise errors.DataError(
        f'{path} holds {len(content)} bytes after decompression but its header {shape} needs '
        f'{expected_bytes}; the file is truncated or corrupt')
  data = np.frombuffer(content, dtype=np.uint8, offset=header_size)
  return data.reshape(shape)
