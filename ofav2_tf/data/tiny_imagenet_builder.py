"""TFDS builder for Tiny ImageNet (200 classes, 64x64), which the TFDS catalog does not include.

Preparing once into TFDS's record format gives fast, sharded reads for every later run (no
archive to decompress, no folder of 110,000 files to walk), and lets users manage the data with
TFDS tools. The builder reads the official tree from
TFDS's manual_dir (or a path given by the caller) as the official zip, a tar(.gz) of it, or the
extracted folder; without any of them it downloads the official zip when allowed.

RGB JPEGs are stored byte-for-byte (no decode/re-encode: faster on small machines and lossless).
The ~1.8% grayscale JPEGs are decoded to 3 channels and stored as PNG, losslessly, so every stored
image decodes to 64x64x3 with exactly the pixels a 3-channel JPEG decode would give.
"""

import inspect
import os
import socket
import urllib.parse
from typing import Dict, Iterator, Optional, Tuple

from absl import logging
from etils import epath
import tensorflow as tf
import tensorflow_datasets as tfds

from ofav2_tf import errors
from ofav2_tf.data import image_bytes
from ofav2_tf.data import tiny_imagenet_classes
from ofav2_tf.data import tiny_imagenet_source as source_lib

IMAGE_SIZE = 64

_DESCRIPTION = """\
Tiny ImageNet (Stanford CS231n): 200 ImageNet classes, 64x64 RGB images; 500 training and 50
validation images per class. The official validation set is exposed as the `test` split (the
official test images are unlabelled and not included). Grayscale images are converted to RGB.
"""

_CITATION = """\
@misc{le2015tiny,
  title={Tiny ImageNet Visual Recognition Challenge},
  author={Le, Ya and Yang, Xuan},
  howpublished={CS231N course, Stanford},
  year={2015}
}
"""

_MANUAL_INSTRUCTIONS = f"""\
Put one of {source_lib.accepted_forms()} in the manual_dir (default
<data_dir>/downloads/manual/). The official archive is {source_lib.URL}.
"""


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet from the official zip, a tar(.gz) of its tree, or the extracted folder.

  Args:
    source: An archive or folder to read instead of looking in manual_dir.
    allow_download: Whether to download the official zip when no local copy is found.
    **kwargs: Passed to `tfds.core.GeneratorBasedBuilder` (`data_dir`, ...).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Official train and val (as test); grayscale images converted to RGB PNG.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This module's file (TFDS looks for `checksums.tsv` beside it).

    TFDS's generic lookup imports `importlib_resources`, an optional dependency that a plain
    install may lack (it is missing here); the answer for a regular package is just this file.
    """
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, source: Optional[str] = None, allow_download: bool = True, **kwargs):
    self._source = None if source is None else os.fspath(source)
    self._allow_download = allow_download
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=tiny_imagenet_classes.WNIDS),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://cs231n.stanford.edu/',
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    source = self._locate(dl_manager)
    logging.info('Preparing Tiny ImageNet from %s', source)
    stash = source_lib.ValidationStash() if source_lib.is_stream(source) else None
    return {
        'train': self._generate_examples(source, 'train', stash),
        'test': self._generate_examples(source, 'val', stash),
    }

  def _locate(self, dl_manager: tfds.download.DownloadManager) -> str:
    """Finds a local copy, or downloads the official zip if allowed."""
    found, looked = find_local(self._source, _manual_dir(dl_manager))
    if found:
      return found
    if not self._allow_download:
      raise errors.DataError(not_found_message(looked, download_failure=None))
    unreachable = resolve_failure(source_lib.URL)
    if unreachable:
      # TFDS would retry for minutes before giving up; without DNS there is no point.
      raise errors.DataError(not_found_message(looked, download_failure=unreachable))
    logging.info('Tiny ImageNet not found locally (looked in %s); downloading %s',
                 ', '.join(looked), source_lib.URL)
    try:
      return os.fspath(dl_manager.download(source_lib.URL))
    except Exception as e:  # pylint: disable=broad-except; any network failure means the same.
      raise errors.DataError(
          not_found_message(looked, download_failure=f'{type(e).__name__}: {e}')) from None

  def _generate_examples(
      self, source: str, official_split: str,
      stash: Optional[source_lib.ValidationStash]) -> Iterator[Tuple[str, Dict[str, object]]]:
    summary = source_lib.SplitSummary()
    converted = 0
    for name, wnid, data in source_lib.iter_split(
        source, official_split, tiny_imagenet_classes.WNIDS, summary, stash):
      stored = as_rgb_image_bytes(data, f'{source}: {official_split}/{name}')
      converted += stored is not data
      yield name, {'image': stored, 'label': wnid, 'file_name': name}
    logging.info(
        'Tiny ImageNet %s: %d images (%d converted to RGB), skipped %d of unknown classes and '
        '%d unlabelled', official_split, summary.yielded, converted, summary.unknown_class,
        summary.unlabelled)


def find_local(source: Optional[str], manual_dir: Optional[str]):
  """Looks for a local copy: `source` if given (and only there), else in `manual_dir`.

  Returns:
    `(found path or None, list of places looked)`.

  Raises:
    errors.DataError: `source` was given but holds no Tiny ImageNet.
  """
  if source is not None:
    found = source_lib.find_source(source)
    if not found:
      raise errors.DataError(
          f'no Tiny ImageNet at {source}; expected a path to, or a folder containing, '
          f'{source_lib.accepted_forms()}. Get the official archive from {source_lib.URL}.')
    return found, [source]
  if manual_dir is None:
    return None, ['the manual_dir (not set)']
  return source_lib.find_source(manual_dir), [manual_dir]


def not_found_message(looked, download_failure: Optional[str]) -> str:
  """Says where we looked, which names are accepted, and how to get the data."""
  message = (f'Tiny ImageNet not found: looked in {", ".join(looked)} for '
             f'{source_lib.accepted_forms()}.')
  how = (f'download {source_lib.URL} (on a machine with internet) and put it in '
         f'{looked[0]}, or pass manual_dir=/source= pointing at a copy')
  if download_failure is None:
    return f'{message} Downloading is disabled; {how}.'
  return f'{message} Downloading {source_lib.URL} failed ({download_failure}); {how}.'


def resolve_failure(url: str) -> Optional[str]:
  """Why the URL's host cannot be resolved (no network), or None if it can."""
  parsed = urllib.parse.urlparse(url)
  try:
    socket.getaddrinfo(parsed.hostname, parsed.port or 80)
  except OSError as e:
    return f'cannot resolve {parsed.hostname}: {e}; this machine seems to have no internet'
  return None


def _manual_dir(dl_manager: tfds.download.DownloadManager) -> Optional[str]:
  """The manual_dir path, whether or not it exists (TFDS raises when it is missing or empty)."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError:
    # TFDS refuses a missing/empty manual dir; we still want its path for the error message.
    path = getattr(dl_manager, '_manual_dir', None)
    return None if path is None else os.fspath(path)


def as_rgb_image_bytes(data: bytes, name: str) -> bytes:
  """Returns `data` itself if it is a complete 64x64 3-channel JPEG, else a 64x64 RGB PNG.

  Args:
    data: Encoded image.
    name: Where the image came from, for error messages.

  Raises:
    errors.DataError: The image does not decode or is not 64x64 (names the image).
  """
  header = image_bytes.read_jpeg_header(data)
  if (header is not None and header.complete and header.channels == 3
      and (header.height, header.width) == (IMAGE_SIZE, IMAGE_SIZE)):
    return data
  try:
    pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
  except tf.errors.OpError as e:
    raise errors.DataError(
        f'corrupt image {name}: it does not decode ({e.message.splitlines()[0]}); replace the '
        f'archive with a fresh copy of {source_lib.URL}') from None
  if tuple(pixels.shape[:2]) != (IMAGE_SIZE, IMAGE_SIZE):
    raise errors.DataError(
        f'image {name} is {pixels.shape[1]}x{pixels.shape[0]}, but Tiny ImageNet images are '
        f'{IMAGE_SIZE}x{IMAGE_SIZE}; the archive is not the official tiny-imagenet-200')
  return tf.io.encode_png(pixels).numpy()

