"""`image_folder` datasets: layouts, split rules, statistics, and errors that name the bad file."""
# bazel: size=medium

import os
import zlib

import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import data
from tests import testutil

_CLASSES = ('dog', 'ant', 'cat')  # Written unsorted: labels must follow sorted names.
_COLOURS = {'ant': (200, 40, 40), 'cat': (40, 200, 40), 'dog': (40, 40, 200)}


def _image(cls, index, size):
  """A seeded noisy image whose colour identifies its class."""
  rng = np.random.default_rng(zlib.crc32(f'{cls}/{index}'.encode()))
  noise = rng.integers(-30, 31, (size[0], size[1], 3))
  return np.clip(np.array(_COLOURS[cls]) + noise, 0, 255).astype(np.uint8)


def _write(path, pixels):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  encode = tf.io.encode_png if path.endswith('.png') else tf.io.encode_jpeg
  tf.io.write_file(path, encode(pixels))


def _make_tree(root, counts, size=(20, 20)):
  """Writes `counts[split]` images per class; even indices as PNG, odd as JPEG."""
  pixels = []
  for split, count in counts.items():
    for cls in _CLASSES:
      for i in range(count):
        ext = 'png' if i % 2 == 0 else 'JPG'
        image = _image(cls, (split, i), size)
        _write(os.path.join(root, split, cls, f'{cls}_{i}.{ext}'), image)
        if split == 'train':
          pixels.append(image)
  return pixels


def _all(dataset):
  pairs = list(dataset.as_numpy_iterator())
  return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


class ImageFolderTest(tf.test.TestCase):

  def test_full_layout(self):
    root = self.create_tempdir().full_path
    train_pixels = _make_tree(root, {'train': 10, 'val': 2, 'test': 3})
    splits = data.load(f'image_folder:{root}', seed=0)
    self.assertEqual(splits.class_names, ('ant', 'cat', 'dog'))
    self.assertEqual(splits.num_classes, 3)
    self.assertEqual((splits.train_size, splits.validation_size, splits.test_size), (30, 6, 9))
    self.assertEqual(splits.native_size, 20)
    for dataset, count in ((splits.train, 30), (splits.validation, 6), (splits.test, 9)):
      images, labels = _all(dataset)
      self.assertEqual(images.shape, (count, 20, 20, 3))
      self.assertEqual(images.dtype, np.uint8)
      self.assertEqual(labels.dtype, np.int64)
      # The dominant colour channel tells the class: ant=red(0), cat=green(1), dog=blue(2).
      self.assertAllEqual(images.mean(axis=(1, 2)).argmax(axis=1), labels)
    pixels = np.stack(train_pixels).astype(np.float64) / 255
    self.assertAllClose(splits.mean, pixels.mean(axis=(0, 1, 2)), atol=0.01)  # JPEG is lossy.
    self.assertAllClose(splits.std, pixels.std(axis=(0, 1, 2)), atol=0.01)
    # Training images are stored in a seeded mixed order, not class by class.
    _, labels = _all(splits.train)
    self.assertNotAllEqual(labels, np.sort(labels))
    _, again = _all(data.load('image_folder', data_dir=root, seed=0).train)
    self.assertAllEqual(labels, again)

  def test_train_and_val_only_makes_val_the_test_set(self):
    root = self.create_tempdir().full_path
    _make_tree(root, {'train': 20, 'validation': 4})
    splits = data.load('image_folder', data_dir=root, seed=1)
    self.assertEqual((splits.train_size, splits.validation_size, splits.test_size), (51, 9, 12))
    train, _ = _all(splits.train)
    validation, _ = _all(splits.validation)
    train_keys = {image.tobytes() for image in train}
    self.assertEmpty([image for image in validation if image.tobytes() in train_keys])

  def test_train_and_test_only_holds_out_validation_from_train(self):
    root = self.create_tempdir().full_path
    _make_tree(root, {'train': 20, 'test': 2})
    splits = data.load('image_folder', data_dir=root, seed=1)
    self.assertEqual((splits.train_size, splits.validation_size, splits.test_size), (51, 9, 6))

  def test_corrupt_files_are_named(self):
    root = self.create_tempdir().full_path
    _make_tree(root, {'train': 4, 'test': 2})
    good = os.path.join(root, 'train', 'cat', 'cat_1.JPG')
    truncated = os.path.join(root, 'train', 'cat', 'cat_9.jpg')
    with open(good, 'rb') as f:
      content = f.read()
    with open(truncated, 'wb') as f:
      f.write(content[:len(content) // 2])
    not_an_image = os.path.join(root, 'test', 'dog', 'notes.png')
    with open(not_an_image, 'w') as f:
      f.write('this is not a PNG')
    with self.assertRaises(errors.DataError) as raised:
      data.load('image_folder', data_dir=root)
    message = str(raised.exception)
    self.assertIn('2 corrupt', message)
    self.assertIn(truncated, message)
    self.assertIn(not_an_image, message)
    self.assertNotIn(good, message)

  def test_other_files_are_skipped_with_one_warning_per_split(self):
    root = self.create_tempdir().full_path
    _make_tree(root, {'train': 2, 'test': 1})
    others = {'train/ant/anim.gif': b'GIF89a', 'train/cat/still.GIF': b'GIF89a',
              'train/cat/labels.txt': b'cat', 'train/notes.txt': b'notes',
              'train/dog/.DS_Store': b'', 'test/dog/photo.webp': b'RIFF', 'test/dog/LICENSE': b''}
    for name, content in others.items():
      with open(os.path.join(root, name), 'wb') as f:
        f.write(content)
    with self.assertLogs(logger='absl', level='WARNING') as logs:
      splits = data.load('image_folder', data_dir=root)
    self.assertEqual(splits.train_size + splits.validation_size, 6)
    self.assertEqual(splits.test_size, 3)
    train = os.path.join(root, 'train')
    test = os.path.join(root, 'test')
    self.assertEqual(logs.output, [
        f'WARNING:absl:image_folder: skipped 4 file(s) under {train} that are not .jpg, .jpeg or '
        '.png images: 2 .gif, 2 .txt',
        f'WARNING:absl:image_folder: skipped 2 file(s) under {test} that are not .jpg, .jpeg or '
        '.png images: 1 (no extension), 1 .webp'])
    # A class folder of GIFs only is still an error, which now says what it holds.
    os.makedirs(os.path.join(train, 'gifs'))
    with open(os.path.join(train, 'gifs', 'a.gif'), 'wb') as f:
      f.write(b'GIF89a')
    with self.assertRaisesRegex(errors.DataError, r'train/gifs holds no \.jpg.*\(only 1 \.gif\)'):
      data.load('image_folder', data_dir=root)

  def test_layout_errors_say_what_is_wrong(self):
    root = self.create_tempdir().full_path
    with self.assertRaisesRegex(errors.DataError, 'does not exist.*<root>/train/<class>'):
      data.load('image_folder', data_dir=os.path.join(root, 'missing'))
    os.makedirs(os.path.join(root, 'images'))
    with self.assertRaisesRegex(errors.DataError, 'no train/ folder.*found: images'):
      data.load('image_folder', data_dir=root)
    _make_tree(root, {'train': 2})
    with self.assertRaisesRegex(errors.DataError, 'neither test/ nor val/'):
      data.load('image_folder', data_dir=root)
    _write(os.path.join(root, 'test', 'zebra', 'z.png'), _image('ant', 0, (20, 20)))
    with self.assertRaisesRegex(errors.DataError, 'test/zebra has no counterpart in train/'):
      data.load('image_folder', data_dir=root)
    os.remove(os.path.join(root, 'test', 'zebra', 'z.png'))
    os.rmdir(os.path.join(root, 'test', 'zebra'))
    _write(os.path.join(root, 'test', 'loose.png'), _image('ant', 0, (20, 20)))
    with self.assertRaisesRegex(errors.DataError, 'loose.png is not inside a class folder'):
      data.load('image_folder', data_dir=root)
    os.remove(os.path.join(root, 'test', 'loose.png'))
    os.makedirs(os.path.join(root, 'train', 'empty'))
    with self.assertRaisesRegex(errors.DataError, 'train/empty holds no .jpg'):
      data.load('image_folder', data_dir=root)

  def test_mixed_sizes_are_resized_to_one_square_size(self):
    root = self.create_tempdir().full_path
    _make_tree(root, {'train': 3, 'test': 1}, size=(24, 32))
    _write(os.path.join(root, 'train', 'ant', 'big.png'), _image('ant', 99, (40, 40)))
    splits = data.load('image_folder', data_dir=root)
    self.assertEqual(splits.native_size, 24)  # Median shorter side.
    images, _ = _all(splits.train)
    self.assertEqual(images.shape[1:], (24, 24, 3))
    resized = data.load('image_folder', data_dir=root, image_size=16, verify=False)
    self.assertEqual(resized.native_size, 16)
    images, _ = _all(resized.test)
    self.assertEqual(images.shape, (3, 16, 16, 3))
    with self.assertRaisesRegex(errors.ConfigError, 'image_size'):
      data.load('image_folder', data_dir=root, image_size=0)


  def test_bounded_evaluation_is_a_stratified_seeded_sample(self):
    # Evaluation splits are stored in class order: the first 7 images would be one class.
    root = self.create_tempdir().full_path
    _make_tree(root, {'train': 4, 'val': 6, 'test': 12}, size=(8, 8))
    splits = data.load(f'image_folder:{root}', seed=0)
    labels = np.concatenate([y.numpy() for _, y in splits.test.batch(64)])
    self.assertAllEqual(labels, np.sort(labels))
    testutil.assert_stratified_sample(self, splits, 'test', 7)
    testutil.assert_stratified_sample(self, splits, 'validation', 5)

if __name__ == '__main__':
  tf.test.main()
