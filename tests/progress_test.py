"""`ofav2_tf.progress.Heartbeat`: progress lines at most every N seconds, also through silence."""
# bazel: size=small

import time

from absl.testing import absltest

from ofav2_tf import progress


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class HeartbeatTest(absltest.TestCase):

  def test_updates_print_at_most_every_period_with_an_estimate(self):
    clock, lines = FakeClock(), []
    beat = progress.Heartbeat(lines.append, 'NSGA-II', total=10, every=10.0, clock=clock)
    clock.now += 5
    beat.update(done=1)
    self.assertEqual(lines, [])  # too soon
    clock.now += 7
    beat.update(done=3, step='generation')
    self.assertEqual(lines, ['  NSGA-II: generation 3/10 after 12 s, about 28 s left'])
    clock.now += 1
    beat.update(done=4)
    self.assertLen(lines, 1)

  def test_a_stage_without_a_total_gets_no_estimate(self):
    clock, lines = FakeClock(), []
    beat = progress.Heartbeat(lines.append, 'export', every=1.0, clock=clock)
    clock.now += 30
    beat.update(step='int8 TFLite conversion')
    self.assertEqual(lines, ['  export: int8 TFLite conversion after 30 s'])

  def test_a_silent_stage_still_beats(self):
    lines = []
    with progress.Heartbeat(lines.append, 'conversion', every=0.05):
      deadline = time.monotonic() + 10
      while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # one long call that reports nothing
    self.assertGreaterEqual(len(lines), 2)
    count = len(lines)
    time.sleep(0.2)
    self.assertLen(lines, count)  # the beat stops with the stage

  def test_a_failing_log_stops_the_beat_quietly(self):
    def refuse(line):
      raise OSError(30, 'Read-only file system', 'log.txt')
    with progress.Heartbeat(refuse, 'x', every=0.01) as beat:
      time.sleep(0.1)
    self.assertFalse(beat._thread.is_alive())


if __name__ == '__main__':
  absltest.main()
