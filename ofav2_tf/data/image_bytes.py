"""Reads image geometry from encoded bytes without decoding the pixels.

Preparing Tiny ImageNet means handling 110,000 small JPEGs on a 2-core machine; decoding and
re-encoding each one would dominate the preparation time and lose quality. Reading the JPEG frame
header instead tells us, in microseconds, whether a file is the expected 64x64 RGB image (kept
byte-for-byte) or a grayscale one that must be converted to 3 channels.
"""

import dataclasses
from typing import Optional

# Start-of-frame markers carry the image size and component count. 0xC4 (DHT), 0xC8 (JPG
# extension) and 0xCC (DAC) share the 0xCx range but are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD9)) | {0x01}
_START_OF_SCAN = 0xDA


@dataclasses.dataclass(frozen=True)
class JpegHeader:
  """Geometry declared by a JPEG frame header.

  Attributes:
    height: Image height in pixels.
    width: Image width in pixels.
    channels: Number of colour components (1 grayscale, 3 YCbCr/RGB, 4 CMYK).
    complete: Whether the data ends with the end-of-image marker; a missing one means the file
      was cut short, which a header alone would not reveal.
  """
  height: int
  width: int
  channels: int
  complete: bool


def is_jpeg(data: bytes) -> bool:
  """Whether `data` starts with the JPEG start-of-image marker."""
  return data[:3] == b'\xff\xd8\xff'


def read_jpeg_header(data: bytes) -> Optional[JpegHeader]:
  """Parses the frame header of a JPEG.

  Args:
    data: The encoded file content.

  Returns:
    The declared geometry, or None when `data` is not a JPEG or its markers are malformed before
    the frame header (the caller should then fully decode, to get a precise error).
  """
  if not is_jpeg(data):
    return None
  size = len(data)
  pos = 2
  while pos + 4 <= size:
    if data[pos] != 0xFF:
      return None
    marker = data[pos + 1]
    if marker == 0xFF:  # Fill byte before a marker.
      pos += 1
      continue
    if marker in _STANDALONE_MARKERS:
      pos += 2
      continue
    if marker == _START_OF_SCAN:  # Scan data before any frame header: not a valid JPEG.
      return None
    length = int.from_bytes(data[pos + 2:pos + 4], 'big')
    if marker in _SOF_MARKERS:
      if pos + 10 > size:
        return None
      # Segment: length (2), precision (1), height (2), width (2), components (1).
      height = int.from_bytes(data[pos + 5:pos + 7], 'big')
      width = int.from_bytes(data[pos + 7:pos + 9], 'big')
      channels = data[pos + 9]
      complete = data.rstrip(b'\x00')[-2:] == b'\xff\xd9'
      return JpegHeader(height=height, width=width, channels=channels, complete=complete)
    if length < 2:
      return None
    pos += 2 + length
  return None
