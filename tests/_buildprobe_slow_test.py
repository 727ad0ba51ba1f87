# bazel: size=small tags=slow
"""Throwaway probe: a slow-tagged test."""
import tensorflow as tf


class SlowProbeTest(tf.test.TestCase):

  def test_slow(self):
    d = self.get_temp_dir()
    self.assertTrue(tf.io.gfile.exists(d))


if __name__ == '__main__':
  tf.test.main()
