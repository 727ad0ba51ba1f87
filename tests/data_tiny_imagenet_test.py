"""Tiny ImageNet: the TFDS builder prepares from tar.gz, zip and folder; the real archive is whole.

The tests read the real archive from `<repo>/../shared/data/` (never copied into the repository):
one streaming pass counts its content and cuts a small slice (3 classes, one with a grayscale
JPEG, plus a fake extra class that must be skipped), which is then written as tar.gz, zip and an
extracted folder and prepared through the builder.
"""
# bazel: size=large tags=slow

import hashlib
import os
import shutil
import tarfile
import tempfile
import unittest
import zipfile

import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import data
from ofav2_tf.data import image_bytes
from ofav2_tf.data import tiny_imagenet
from ofav2_tf.data import tiny_imagenet_builder
from ofav2_tf.data import tiny_imagenet_classes
from ofav2_tf.data import tiny_imagenet_source as source_lib
from tests import testutil

_ARCHIVE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data',
    'tiny-imagenet-200.tar.gz')
_PER_CLASS = 20
_VAL_PER_CLASS = 10
_FAKE_WNID = 'n99999999'  # A class some public copies append; the builder must skip it.


def _scan_real_archive():
  """One pass over the real archive: its counts, and the files of a small slice of it."""
  counts = {'train': 0, 'val': 0, 'classes': set()}
  by_class = {}  # wnid -> [(name, bytes, channels)] of the classes that may enter the slice.
  val_images = {}
  texts = {}
  first_classes = []
  grayscale_class = None
  for path, read in source_lib.iter_files(_ARCHIVE):
    kind, wnid, name = source_lib.classify(path)
    if kind == 'train_image':
      counts['train'] += 1
      counts['classes'].add(wnid)
      if len(first_classes) < 2 and wnid not in first_classes:
        first_classes.append(wnid)
      if wnid in first_classes or grayscale_class in (None, wnid):
        content = read()
        channels = image_bytes.read_jpeg_header(content).channels
        by_class.setdefault(wnid, []).append((name, content, channels))
        if grayscale_class is None and channels == 1 and wnid not in first_classes:
          grayscale_class = wnid
    elif kind == 'val_image':
      counts['val'] += 1
      val_images[name] = read()
    elif kind in ('wnids', 'val_annotations'):
      texts[kind] = read()
  classes = first_classes + [grayscale_class]
  train = {}
  for wnid in classes:
    files = sorted(by_class[wnid], key=lambda item: (item[2] != 1, item[0]))  # Grayscale first.
    train[wnid] = [(name, content) for name, content, _ in files[:_PER_CLASS]]
  annotations = source_lib.parse_val_annotations(texts['val_annotations'].decode(), _ARCHIVE)
  val = {}
  for name in sorted(annotations):
    wnid = annotations[name]
    if wnid in classes and sum(1 for n in val if annotations[n] == wnid) < _VAL_PER_CLASS:
      val[name] = (wnid, val_images[name])
  return counts, texts, annotations, train, val, grayscale_class


def _write_slice_tree(root, texts, train, val, fake_image):
  """Writes the slice as an extracted `tiny-imagenet-200/` tree under `root`."""
  tree = os.path.join(root, 'tiny-imagenet-200')
  os.makedirs(os.path.join(tree, 'val', 'images'))
  with open(os.path.join(tree, 'wnids.txt'), 'wb') as f:
    f.write(texts['wnids'].rstrip(b'\n') + f'\n{_FAKE_WNID}\n'.encode())
  for wnid, files in list(train.items()) + [(_FAKE_WNID, [(f'{_FAKE_WNID}_0.JPEG', fake_image)])]:
    folder = os.path.join(tree, 'train', wnid, 'images')
    os.makedirs(folder)
    for name, content in files:
      with open(os.path.join(folder, name), 'wb') as f:
        f.write(content)
  lines = []
  for name, (wnid, content) in list(val.items()) + [('val_99999.JPEG', (_FAKE_WNID, fake_image))]:
    with open(os.path.join(tree, 'val', 'images', name), 'wb') as f:
      f.write(content)
    lines.append(f'{name}\t{wnid}\t0\t0\t63\t63\n')
  with open(os.path.join(tree, 'val', 'val_annotations.txt'), 'w') as f:
    f.writelines(lines)
  return tree


def _sha(array):
  return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


class TinyImagenetTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    if not os.path.isfile(_ARCHIVE):
      raise unittest.SkipTest(
          f'real Tiny ImageNet archive not found at {os.path.normpath(_ARCHIVE)} (it lives in '
          'the shared data folder next to the repository, never inside it)')
    cls.tmp = tempfile.mkdtemp(prefix='tiny_imagenet_test_')
    (cls.counts, texts, cls.annotations, cls.train_files, cls.val_files,
     cls.grayscale_class) = _scan_real_archive()
    fake_image = next(iter(cls.train_files.values()))[-1][1]
    cls.tree = _write_slice_tree(
        os.path.join(cls.tmp, 'extracted'), texts, cls.train_files, cls.val_files, fake_image)
    cls.tar_dir = os.path.join(cls.tmp, 'manual_tar')
    os.makedirs(cls.tar_dir)
    with tarfile.open(os.path.join(cls.tar_dir, 'tiny-imagenet-200.tar.gz'), 'w:gz') as t:
      t.add(cls.tree, arcname='tiny-imagenet-200')
    cls.zip_dir = os.path.join(cls.tmp, 'manual_zip')
    os.makedirs(cls.zip_dir)
    with zipfile.ZipFile(os.path.join(cls.zip_dir, 'tiny-imagenet-200.zip'), 'w') as z:
      for folder, _, files in os.walk(cls.tree):
        for name in files:
          full = os.path.join(folder, name)
          z.write(full, os.path.relpath(full, os.path.dirname(cls.tree)))
    cls.tfds_tar = os.path.join(cls.tmp, 'tfds_tar')
    cls.builder = tiny_imagenet.prepare(cls.tfds_tar, manual_dir=cls.tar_dir, download=False)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _examples(self, builder, split):
    """file name -> (image, label) of a prepared split."""
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    return {ex['file_name'].decode(): (ex['image'], int(ex['label']))
            for ex in dataset.as_numpy_iterator()}

  def test_real_archive_has_the_standard_content(self):
    self.assertEqual(self.counts['train'], 100000)
    self.assertLen(self.counts['classes'], 200)
    self.assertEqual(self.counts['val'], 10000)
    self.assertLen(self.annotations, 10000)
    self.assertEqual(sorted(self.counts['classes']), list(tiny_imagenet_classes.WNIDS))

  def test_real_images_decode_to_64x64_rgb_including_grayscale(self):
    handful = [item for files in self.train_files.values() for item in files[:3]]
    grayscale = [(name, content) for name, content in handful
                 if image_bytes.read_jpeg_header(content).channels == 1]
    self.assertNotEmpty(grayscale, 'the slice should hold a grayscale JPEG')
    for name, content in handful:
      stored = tiny_imagenet_builder.as_rgb_image_bytes(content, name)
      pixels = tf.io.decode_image(stored).numpy()
      self.assertEqual(pixels.shape, (64, 64, 3), name)
      expected = tf.io.decode_jpeg(content, channels=3).numpy()
      self.assertAllEqual(pixels, expected)  # Lossless: RGB kept as is, grayscale via PNG.
      if image_bytes.read_jpeg_header(content).channels == 3:
        self.assertIs(stored, content)  # RGB JPEGs are stored byte for byte.

  def test_prepared_from_tar_gz(self):
    info = self.builder.info
    self.assertEqual(info.splits['train'].num_examples, 3 * _PER_CLASS)
    self.assertEqual(info.splits['test'].num_examples, 3 * _VAL_PER_CLASS)
    self.assertEqual(info.features['label'].names, sorted(info.features['label'].names))
    train = self._examples(self.builder, 'train')
    self.assertNotIn(f'{_FAKE_WNID}_0.JPEG', train)
    for name, (image, label) in train.items():
      self.assertEqual(image.shape, (64, 64, 3))
      self.assertEqual(tiny_imagenet_classes.WNIDS[label], name.split('_')[0])
    test = self._examples(self.builder, 'test')
    self.assertCountEqual(test, self.val_files)
    for name, (_, label) in test.items():
      self.assertEqual(tiny_imagenet_classes.WNIDS[label], self.val_files[name][0])

  def test_grayscale_jpeg_becomes_three_equal_channels(self):
    train = self._examples(self.builder, 'train')
    gray = [name for name, content in self.train_files[self.grayscale_class]
            if image_bytes.read_jpeg_header(content).channels == 1]
    self.assertNotEmpty(gray)
    image = train[gray[0]][0]
    self.assertEqual(image.shape, (64, 64, 3))
    self.assertAllEqual(image[..., 0], image[..., 1])
    self.assertAllEqual(image[..., 0], image[..., 2])
    self.assertGreater(image.std(), 0)

  def test_folder_and_zip_give_the_same_examples_as_tar(self):
    reference = {split: self._examples(self.builder, split) for split in ('train', 'test')}
    for kind, kwargs in (('folder', {'source': self.tree}),
                         ('zip', {'manual_dir': self.zip_dir})):
      builder = tiny_imagenet.prepare(os.path.join(self.tmp, f'tfds_{kind}'), download=False,
                                      **kwargs)
      for split in ('train', 'test'):
        examples = self._examples(builder, split)
        self.assertCountEqual(examples, reference[split], kind)
        for name, (image, label) in examples.items():
          self.assertAllEqual(image, reference[split][name][0], f'{kind} {name}')
          self.assertEqual(label, reference[split][name][1])

  def test_load_splits_85_15_deterministically(self):
    load = lambda seed: data.load('tiny_imagenet', data_dir=self.tfds_tar,
                                  manual_dir=self.tar_dir, download=False, seed=seed)
    splits = load(0)
    self.assertEqual((splits.train_size, splits.validation_size, splits.test_size), (51, 9, 30))
    self.assertEqual(splits.num_classes, 200)
    self.assertEqual(splits.native_size, 64)
    self.assertEqual(splits.mean, (0.4802, 0.4481, 0.3975))
    hashes = lambda ds: sorted(_sha(image) for image, _ in ds.as_numpy_iterator())
    train, validation = hashes(splits.train), hashes(splits.validation)
    self.assertLen(train, 51)
    self.assertLen(validation, 9)
    self.assertEmpty(set(train) & set(validation))
    self.assertEqual(validation, hashes(load(0).validation))
    self.assertNotEqual(validation, hashes(load(1).validation))

  def test_tfds_catalog_name_loads_the_prepared_builder(self):
    splits = data.load('tfds:tiny_imagenet', data_dir=self.tfds_tar, download=False)
    self.assertEqual((splits.train_size, splits.validation_size, splits.test_size), (51, 9, 30))
    self.assertEqual(splits.class_names, tiny_imagenet_classes.WNIDS)
    self.assertEqual(splits.native_size, 64)
    for channel_mean in splits.mean:
      self.assertBetween(channel_mean, 0.2, 0.8)

  def test_missing_data_says_where_it_looked_and_how_to_get_it(self):
    empty = os.path.join(self.tmp, 'empty_manual')
    os.makedirs(empty, exist_ok=True)
    with self.assertRaises(errors.DataError) as raised:
      data.load('tiny_imagenet', data_dir=os.path.join(self.tmp, 'tfds_none'), manual_dir=empty,
                download=False)
    message = str(raised.exception)
    for expected in (empty, 'tiny-imagenet-200.zip', 'tiny-imagenet-200.tar.gz',
                     'tiny-imagenet-200/', source_lib.URL):
      self.assertIn(expected, message)

  def test_missing_source_path(self):
    missing = os.path.join(self.tmp, 'no_such_archive.tar.gz')
    with self.assertRaisesRegex(errors.DataError, 'no Tiny ImageNet at .*no_such_archive'):
      data.load('tiny_imagenet', data_dir=os.path.join(self.tmp, 'tfds_none2'), source=missing,
                download=False)

  def test_truncated_archive_names_the_archive(self):
    folder = os.path.join(self.tmp, 'truncated')
    os.makedirs(folder)
    with open(os.path.join(self.tar_dir, 'tiny-imagenet-200.tar.gz'), 'rb') as f:
      content = f.read()
    target = os.path.join(folder, 'tiny-imagenet-200.tar.gz')
    with open(target, 'wb') as f:
      f.write(content[:len(content) // 2])
    data_dir = os.path.join(self.tmp, 'tfds_truncated')
    os.makedirs(os.path.join(data_dir, 'other_dataset'))  # the user's: kept
    with self.assertRaisesRegex(errors.DataError, 'truncated.*tiny-imagenet-200.tar.gz'):
      tiny_imagenet.prepare(data_dir, manual_dir=folder, download=False)
    # TFDS had made tiny_imagenet/1.0.0 and downloads/extracted on its way: empty, they would pass
    # for a prepared dataset.
    self.assertEqual(os.listdir(data_dir), ['other_dataset'])

  def test_foreign_class_list_is_refused(self):
    tree = os.path.join(self.tmp, 'foreign', 'tiny-imagenet-200')
    shutil.copytree(self.tree, tree)
    with open(os.path.join(tree, 'wnids.txt'), 'w') as f:
      f.write('\n'.join(tiny_imagenet_classes.WNIDS[:150]))
    with self.assertRaisesRegex(errors.DataError, 'lacks 50 of the 200'):
      tiny_imagenet.prepare(os.path.join(self.tmp, 'tfds_foreign'), source=tree, download=False)

  def test_offline_download_fails_fast_with_a_clear_message(self):
    if tiny_imagenet_builder.resolve_failure(source_lib.URL) is None:
      self.skipTest('this machine has network access; the test would download the official zip')
    with self.assertRaises(errors.DataError) as raised:
      tiny_imagenet.prepare(os.path.join(self.tmp, 'tfds_offline'),
                            manual_dir=os.path.join(self.tmp, 'nothing_here'), download=True)
    self.assertIn('no internet', str(raised.exception))
    self.assertIn('nothing_here', str(raised.exception))


  def test_bounded_evaluation_is_a_stratified_seeded_sample(self):
    for name in ('tiny_imagenet', 'tfds:tiny_imagenet'):
      with self.subTest(loader=name):
        splits = data.load(name, data_dir=self.tfds_tar, manual_dir=self.tar_dir, download=False,
                           seed=0)
        # (The 9 validation images are of 9 classes: any 5 of them is a tie, not a sample.)
        testutil.assert_stratified_sample(self, splits, 'test', 11)

if __name__ == '__main__':
  tf.test.main()
