"""Finds and reads the official `tiny-imagenet-200` tree from a zip, a tar(.gz) or a folder.

Users get Tiny ImageNet as the official zip, as a tar made from it, or already extracted; this
module hides the difference behind one iterator of (path, bytes) so the TFDS builder has a single
code path. Tar archives (gzip or not) are read as a stream, in one sequential pass, because gzip
offers no random access; the other forms are read file by file.
"""

import contextlib
import dataclasses
import os
import re
import tarfile
import zipfile
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from ofav2_tf import errors

FOLDER_NAME = 'tiny-imagenet-200'
ARCHIVE_NAMES = (
    'tiny-imagenet-200.zip',
    'tiny-imagenet-200.tar.gz',
    'tiny-imagenet-200.tgz',
    'tiny-imagenet-200.tar',
)
URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'

_WNIDS = re.compile(r'(?:^|/)wnids\.txt$')
_VAL_ANNOTATIONS = re.compile(r'(?:^|/)val/val_annotations\.txt$')
_TRAIN_IMAGE = re.compile(r'(?:^|/)train/(n\d+)/images/([^/]+\.jpe?g)$', re.IGNORECASE)
_VAL_IMAGE = re.compile(r'(?:^|/)val/images/([^/]+\.jpe?g)$', re.IGNORECASE)


def accepted_forms() -> str:
  """Human-readable list of what `find_source` accepts, for error messages."""
  return (f'{", ".join(ARCHIVE_NAMES)}, or the extracted folder {FOLDER_NAME}/ (holding '
          'wnids.txt, train/ and val/)')


def _is_tree(path: str) -> bool:
  return (os.path.isfile(os.path.join(path, 'wnids.txt'))
          and os.path.isdir(os.path.join(path, 'train'))
          and os.path.isdir(os.path.join(path, 'val')))


def find_source(location: str) -> Optional[str]:
  """Returns the Tiny ImageNet source found at `location`, or None.

  Args:
    location: An archive file, an extracted tree, or a folder containing one of them under an
      accepted name. The extracted folder is preferred (fastest to read), then zip, then tar.
  """
  if os.path.isfile(location):
    return location if _archive_kind(location) else None
  if not os.path.isdir(location):
    return None
  if _is_tree(location):
    return location
  nested = os.path.join(location, FOLDER_NAME)
  if os.path.isdir(nested) and _is_tree(nested):
    return nested
  for name in ARCHIVE_NAMES:
    candidate = os.path.join(location, name)
    if os.path.isfile(candidate):
      return candidate
  return None


def _archive_kind(path: str) -> Optional[str]:
  lower = path.lower()
  if lower.endswith('.zip'):
    return 'zip'
  if lower.endswith(('.tar.gz', '.tgz', '.tar')):
    return 'tar'
  return None


def _skipped(path: str) -> bool:
  """Metadata files some archivers add (macOS resource forks) look like images; skip them."""
  return '__MACOSX/' in path or os.path.basename(path).startswith('._')


def iter_files(source: str) -> Iterator[Tuple[str, Callable[[], bytes]]]:
  """Yields (posix path, reader) for every regular file of the source, in storage order.

  For tar sources the reader must be called before advancing the iterator (the archive is a
  stream); callers that skip a file simply do not call it.

  Raises:
    errors.DataError: The archive is unreadable (names the archive), when iterating or reading.
  """
  kind = None if os.path.isdir(source) else _archive_kind(source)
  with _archive_errors(source):
    if kind is None:
      prefix_length = len(os.path.join(source, ''))
      for root, dirs, files in os.walk(source):
        dirs.sort()
        rel_root = root[prefix_length:].replace(os.sep, '/')
        rel_root = rel_root + '/' if rel_root else ''
        for name in sorted(files):
          full = os.path.join(root, name)
          yield rel_root + name, _guarded(source, lambda full=full: _read_file(full))
    elif kind == 'zip':
      with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
          if not info.is_dir() and not _skipped(info.filename):
            yield info.filename, _guarded(source, lambda info=info: archive.read(info))
    else:
      with tarfile.open(source, mode='r|*') as archive:
        for member in archive:
          if member.isfile() and not _skipped(member.name):
            read = lambda member=member: archive.extractfile(member).read()
            yield member.name, _guarded(source, read)


@contextlib.contextmanager
def _archive_errors(source: str):
  """Turns low-level archive failures into a `DataError` naming the archive."""
  try:
    yield
  except errors.DataError:
    raise
  except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
    raise errors.DataError(
        f'cannot read Tiny ImageNet source {source}: {type(e).__name__}: {e}; the archive is '
        f'corrupt or truncated, download it again from {URL}') from None


def _guarded(source: str, read: Callable[[], bytes]) -> Callable[[], bytes]:
  def guarded_read() -> bytes:
    with _archive_errors(source):
      return read()
  return guarded_read


def _read_file(path: str) -> bytes:
  with open(path, 'rb') as stream:
    return stream.read()


@dataclasses.dataclass
class Metadata:
  """The two text files that give class ids and validation labels."""
  wnids: List[str]
  val_labels: Dict[str, str]  # Validation file name -> wnid.


def parse_wnids(text: str) -> List[str]:
  return [line.strip() for line in text.splitlines() if line.strip()]


def parse_val_annotations(text: str, source: str) -> Dict[str, str]:
  """Maps validation file names to wnids from `val_annotations.txt` (file, wnid, box...)."""
  labels = {}
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.split()
    if len(fields) < 2:
      raise errors.DataError(
          f'{source}: val/val_annotations.txt line {number} is {line!r}; expected '
          '"<file>\\t<wnid>\\t<box>"; the file is corrupt')
    labels[fields[0]] = fields[1]
  return labels


def classify(path: str) -> Tuple[str, Optional[str], Optional[str]]:
  """Tells what a path of the tree is.

  Returns:
    (kind, wnid, file name) with kind one of 'wnids', 'val_annotations', 'train_image',
    'val_image' or 'other'; wnid is set for train images, file name for images.
  """
  if _WNIDS.search(path):
    return 'wnids', None, None
  if _VAL_ANNOTATIONS.search(path):
    return 'val_annotations', None, None
  match = _TRAIN_IMAGE.search(path)
  if match:
    return 'train_image', match.group(1), match.group(2)
  match = _VAL_IMAGE.search(path)
  if match:
    return 'val_image', None, match.group(1)
  return 'other', None, None


def read_metadata(source: str) -> Metadata:
  """Reads wnids.txt and val/val_annotations.txt.

  For folders and zips the two files are read directly; for tar archives this costs one pass
  over the stream, so `iter_split` avoids calling it for tars.

  Raises:
    errors.DataError: A file is missing (names the source and the file).
  """
  texts = {}
  for path, read in _metadata_files(source):
    kind, _, _ = classify(path)
    if kind in ('wnids', 'val_annotations') and kind not in texts:
      texts[kind] = (path, read().decode('utf-8', errors='replace'))
  for kind, name in (('wnids', 'wnids.txt'), ('val_annotations', 'val/val_annotations.txt')):
    if kind not in texts:
      raise errors.DataError(
          f'{source} has no {FOLDER_NAME}/{name}; it is not a complete Tiny ImageNet tree '
          f'(download the official zip from {URL})')
  return Metadata(
      wnids=parse_wnids(texts['wnids'][1]),
      val_labels=parse_val_annotations(texts['val_annotations'][1], source))


def _metadata_files(source: str) -> Iterator[Tuple[str, Callable[[], bytes]]]:
  """The candidate metadata files, without walking all 110,000 images when avoidable."""
  if os.path.isdir(source):
    for rel in ('wnids.txt', 'val/val_annotations.txt'):
      full = os.path.join(source, rel)
      if os.path.isfile(full):
        yield rel, (lambda full=full: _read_file(full))
    return
  if _archive_kind(source) == 'zip':
    with _archive_errors(source), zipfile.ZipFile(source) as archive:
      for info in archive.infolist():
        kind = classify(info.filename)[0]
        if kind in ('wnids', 'val_annotations') and not _skipped(info.filename):
          yield info.filename, _guarded(source, lambda info=info: archive.read(info))
    return
  yield from iter_files(source)


def is_stream(source: str) -> bool:
  """Whether the source can only be read sequentially (tar archives)."""
  return not os.path.isdir(source) and _archive_kind(source) == 'tar'


@dataclasses.dataclass
class SplitSummary:
  """What a pass over one split skipped, for the log and for sanity checks."""
  yielded: int = 0
  unknown_class: int = 0
  unlabelled: int = 0


@dataclasses.dataclass
class ValidationStash:
  """Validation images and metadata kept from a train pass over a tar stream.

  A tar.gz can only be read from the start, and the official tree stores val/ after train/, so
  reading each split separately costs two full decompressions. The train pass keeps the ~15 MB of
  validation images it streams past, and the val pass reuses them when the pass was complete.
  """
  images: List[Tuple[str, bytes]] = dataclasses.field(default_factory=list)
  wnids: Optional[List[str]] = None
  val_labels: Optional[Dict[str, str]] = None
  complete: bool = False


def iter_split(source: str, split: str, known_wnids,
               summary: Optional[SplitSummary] = None,
               stash: Optional[ValidationStash] = None) -> Iterator[Tuple[str, str, bytes]]:
  """Yields (file name, wnid, encoded bytes) for the images of one official split.

  Images of classes outside `known_wnids` (some public copies append extra classes) and
  validation images without an annotation are skipped and counted in `summary`. The tree's
  `wnids.txt` must list every known wnid, so a different dataset is not silently mislabelled.

  Args:
    source: A path accepted by `find_source`.
    split: 'train' or 'val'.
    known_wnids: The classes to keep.
    summary: Filled with counts when given.
    stash: For tar sources: a train pass fills it, a later val pass reads from it instead of
      decompressing the archive again.

  Raises:
    errors.DataError: Missing metadata, foreign class list, no images, unreadable archive.
  """
  if split not in ('train', 'val'):
    raise ValueError(f'split must be train or val, got {split!r}')
  known = frozenset(known_wnids)
  summary = summary if summary is not None else SplitSummary()
  if split == 'val' and stash is not None and stash.complete:
    wnids, val_labels = stash.wnids, stash.val_labels
    for name, data in stash.images:
      example = _labelled(name, data, val_labels, known, summary)
      if example:
        yield example
  else:
    state = _PassState(stash=stash if split == 'train' and is_stream(source) else None)
    if not is_stream(source):
      metadata = read_metadata(source)
      state.wnids, state.val_labels = metadata.wnids, metadata.val_labels
    yield from _stream_split(source, split, known, summary, state)
    wnids, val_labels = state.wnids, state.val_labels
    if state.stash is not None:
      state.stash.wnids, state.stash.val_labels = wnids, val_labels
      state.stash.complete = wnids is not None and val_labels is not None
  _check_pass(source, split, known, summary, wnids, val_labels)


@dataclasses.dataclass
class _PassState:
  wnids: Optional[List[str]] = None
  val_labels: Optional[Dict[str, str]] = None
  stash: Optional[ValidationStash] = None


def _labelled(name: str, data: bytes, val_labels: Dict[str, str], known: frozenset,
              summary: SplitSummary) -> Optional[Tuple[str, str, bytes]]:
  """A validation example with its wnid, or None (counted) if unlabelled or of unknown class."""
  wnid = val_labels.get(name)
  if wnid is None:
    summary.unlabelled += 1
    return None
  if wnid not in known:
    summary.unknown_class += 1
    return None
  summary.yielded += 1
  return name, wnid, data


def _stream_split(source: str, split: str, known: frozenset, summary: SplitSummary,
                  state: _PassState) -> Iterator[Tuple[str, str, bytes]]:
  """One pass over the files; validation images met before their annotations wait in memory."""
  pending = []
  for path, read in iter_files(source):
    kind, wnid, name = classify(path)
    if kind == 'wnids' and state.wnids is None:
      state.wnids = parse_wnids(read().decode('utf-8', errors='replace'))
    elif kind == 'val_annotations' and state.val_labels is None:
      state.val_labels = parse_val_annotations(read().decode('utf-8', errors='replace'), source)
    elif kind == 'train_image' and split == 'train':
      if wnid in known:
        summary.yielded += 1
        yield name, wnid, read()
      else:
        summary.unknown_class += 1
    elif kind == 'val_image' and split == 'val':
      pending.append((name, read()))
    elif kind == 'val_image' and state.stash is not None:
      state.stash.images.append((name, read()))
    if pending and state.val_labels is not None:
      for name, data in pending:
        example = _labelled(name, data, state.val_labels, known, summary)
        if example:
          yield example
      pending = []
  if pending and state.val_labels is None:
    summary.unlabelled += len(pending)


def _check_pass(source: str, split: str, known: frozenset, summary: SplitSummary,
                wnids: Optional[List[str]], val_labels: Optional[Dict[str, str]]) -> None:
  """Raises a `DataError` if a finished pass shows the tree is incomplete or foreign."""
  if wnids is None:
    raise errors.DataError(
        f'{source} has no {FOLDER_NAME}/wnids.txt; it is not a complete Tiny ImageNet tree '
        f'(download the official zip from {URL})')
  missing = sorted(known - set(wnids))
  if missing:
    raise errors.DataError(
        f'{source}: wnids.txt lacks {len(missing)} of the {len(known)} Tiny ImageNet classes '
        f'(e.g. {", ".join(missing[:3])}); this is not the standard tiny-imagenet-200 tree '
        f'(download the official zip from {URL})')
  if split == 'val' and val_labels is None:
    raise errors.DataError(
        f'{source} has no {FOLDER_NAME}/val/val_annotations.txt, so validation images have no '
        f'labels (download the official zip from {URL})')
  if summary.yielded == 0:
    where = 'train/<wnid>/images/*.JPEG' if split == 'train' else 'val/images/*.JPEG'
    raise errors.DataError(
        f'{source} holds no {split} images of the known classes under {FOLDER_NAME}/{where} '
        f'(download the official zip from {URL})')
