# bazel: size=small
"""Throwaway probe test."""
import sys
import tensorflow as tf
from ofav2_tf import _buildprobe
from ofav2_tf import errors


class ProbeTest(tf.test.TestCase):

  def test_it(self):
    print('PYTHON', sys.executable, sys.version)
    r = _buildprobe.f()
    with self.assertRaises(errors.RegistryError):
      r.get('nope')


if __name__ == '__main__':
  tf.test.main()
