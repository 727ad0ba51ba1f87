"""`export.atomic_write`: files appear whole, and what a killed writer left is removed later."""
# bazel: size=small

import os

from absl.testing import absltest

from export import atomic_write
from export import exporter

_DEAD_PID = 999999999  # above any Linux pid_max


class AtomicWriteTest(absltest.TestCase):

  def test_a_failed_write_leaves_neither_file_nor_temporary(self):
    directory = self.create_tempdir().full_path
    path = os.path.join(directory, 'model.tflite')
    with self.assertRaises(RuntimeError):
      with atomic_write.atomic_path(path) as tmp:
        self.assertTrue(os.path.basename(tmp).startswith(f'.model.tflite.tmp-{os.getpid()}-'))
        with open(tmp, 'wb') as f:
          f.write(b'half')
        raise RuntimeError('killed')
    self.assertEqual(os.listdir(directory), [])

  def test_remove_stale_spares_live_writers_and_other_names(self):
    parent = self.create_tempdir().full_path
    dead = [f'.export.tmp-{_DEAD_PID}-a1', '.export.tmp-b2c3', f'.export.old-{_DEAD_PID}-d4']
    live = [atomic_write.temp_prefix('export') + 'e5', f'.other.tmp-{_DEAD_PID}-f6', 'export',
            '.hidden']
    for name in dead + live:
      os.makedirs(os.path.join(parent, name))
    removed = atomic_write.remove_stale(parent, 'export')
    self.assertEqual(sorted(removed), sorted(os.path.join(parent, n) for n in dead))
    self.assertEqual(sorted(os.listdir(parent)), sorted(live))
    self.assertEqual(atomic_write.remove_stale(parent),
                     [os.path.join(parent, f'.other.tmp-{_DEAD_PID}-f6')])

  def test_an_export_removes_the_temporary_folder_of_a_killed_export(self):
    # Before: each interrupted export left its .export.tmp-* (5 MB) behind forever.
    parent = self.create_tempdir().full_path
    left = os.path.join(parent, f'.export.tmp-{_DEAD_PID}-x')
    os.makedirs(left)
    with open(os.path.join(left, 'model_int8.tflite'), 'wb') as f:
      f.write(b'\0' * 1024)
    with self.assertLogs(level='WARNING') as logs:
      out_dir, tmp = exporter._prepare_out_dir(os.path.join(parent, 'export'), overwrite=False)
    self.assertFalse(os.path.exists(left))
    self.assertIn(left, '\n'.join(logs.output))
    self.assertEqual(os.listdir(parent), [os.path.basename(tmp)])
    self.assertEqual(out_dir, os.path.join(parent, 'export'))


if __name__ == '__main__':
  absltest.main()
