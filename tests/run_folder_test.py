"""`ofav2_tf.run_folder`: a run folder appears whole, failed writes keep the previous checkpoint."""
# bazel: size=small

import errno
import os
from unittest import mock

import tensorflow as tf
from absl.testing import absltest

from export import atomic_write
from ofav2_tf import errors
from ofav2_tf import run_config as run_config_lib
from ofav2_tf import run_folder as run_folder_lib


def _config():
  return run_config_lib.RunConfig(dataset='fashion_mnist', variant='EE_D', num_classes=10,
                                  resolutions=(24, 28))


class CreateTest(absltest.TestCase):

  def test_a_new_run_folder_holds_its_config_and_provenance_and_no_staging_folder(self):
    root = self.create_tempdir().full_path
    folder = run_folder_lib.RunFolder(os.path.join(root, 'run'))
    self.assertFalse(folder.open_for(_config()))
    self.assertEqual(sorted(os.listdir(root)), ['run'])
    self.assertEqual(sorted(os.listdir(folder.path)), ['config.json', 'provenance.json'])
    self.assertTrue(folder.open_for(_config()))  # the second start resumes it

  def test_an_empty_folder_made_by_the_user_is_used(self):
    root = self.create_tempdir().full_path
    os.makedirs(os.path.join(root, 'run'))
    folder = run_folder_lib.RunFolder(os.path.join(root, 'run'))
    self.assertFalse(folder.open_for(_config()))
    self.assertTrue(folder.exists())

  def test_a_failure_while_creating_leaves_nothing(self):
    root = self.create_tempdir().full_path
    folder = run_folder_lib.RunFolder(os.path.join(root, 'run'))
    full = OSError(errno.ENOSPC, 'No space left on device', 'provenance.json')
    with mock.patch.object(run_folder_lib.RunFolder, '_record_provenance', side_effect=full):
      with self.assertRaises(OSError):
        folder.open_for(_config())
    self.assertEqual(os.listdir(root), [])


class LogTest(absltest.TestCase):

  def test_an_unwritable_log_is_a_storage_error_naming_the_file(self):
    folder = run_folder_lib.RunFolder(self.create_tempdir().full_path)
    refused = OSError(errno.EROFS, 'Read-only file system', folder.file('log.txt'))
    with mock.patch('builtins.open', side_effect=refused):
      with self.assertRaises(errors.StorageError) as raised:
        folder.log('hello')
    self.assertIn(folder.file('log.txt'), str(raised.exception))
    self.assertIn('Read-only file system', str(raised.exception))
    self.assertIn('writable', str(raised.exception))


class SaveCheckpointTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.folder = run_folder_lib.RunFolder(self.create_tempdir().full_path)
    self.variable = tf.Variable(1.0)
    self.checkpoint = tf.train.Checkpoint(v=self.variable)
    self.directory = self.folder.file('phases', '00_full', 'best')
    self.folder.save_checkpoint(self.directory, self.checkpoint, {'step': 2})

  def test_disk_full_keeps_the_previous_checkpoint_and_no_temporary_folder(self):
    self.variable.assign(2.0)
    full = tf.errors.ResourceExhaustedError(None, None, 'x.tempstate; No space left on device')
    with mock.patch.object(tf.train.Checkpoint, 'write', side_effect=full):
      with self.assertRaises(errors.StorageError) as raised:
        self.folder.save_checkpoint(self.directory, self.checkpoint, {'step': 4})
    message = str(raised.exception)
    for needle in (self.directory, 'previous checkpoint there is intact', 'disk is full',
                   'run the same command again to resume'):
      self.assertIn(needle, message)
    self.assertEqual(os.listdir(os.path.dirname(self.directory)), ['best'])
    self.assertEqual(self.folder.read_progress(self.directory), {'step': 2})
    self.checkpoint.read(self.folder.checkpoint_prefix(self.directory)).assert_consumed()
    self.assertEqual(float(self.variable.numpy()), 1.0)


class RemoveLeftoversTest(absltest.TestCase):

  def test_removes_what_killed_writes_left_and_keeps_the_rest(self):
    folder = run_folder_lib.RunFolder(self.create_tempdir().full_path)
    phase = folder.file('phases', '00_full')
    keep = [os.path.join(phase, 'best'), os.path.join(phase, 'steps', 'step-0000004')]
    stale = [os.path.join(phase, 'best.tmp'), os.path.join(phase, 'steps', 'step-0000006.tmp'),
             os.path.join(phase, 'steps', 'step-0000002.old')]
    for path in keep + stale:
      os.makedirs(path)
    dead_writer = os.path.join(phase, '.result.json.tmp-999999999-x1')
    live_writer = folder.file(atomic_write.temp_prefix('metrics.json') + 'x2')
    for path in (dead_writer, live_writer, folder.file('metrics.json')):
      open(path, 'w').close()
    removed = folder.remove_leftovers()
    self.assertEqual(removed, sorted(os.path.relpath(p, folder.path)
                                     for p in stale + [dead_writer]))
    for path in keep + [live_writer, folder.file('metrics.json')]:
      self.assertTrue(os.path.exists(path), msg=path)
    self.assertEqual(folder.remove_leftovers(), [])


if __name__ == '__main__':
  absltest.main()
