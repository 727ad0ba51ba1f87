"""A heartbeat for long stages: a line every few seconds saying what runs, how far, how long left.

Some stages of a run give no output of their own for minutes: the predictor's cross-validation,
NSGA-II's generations, a TFLite conversion. A person watching cannot tell them from a hang.
`Heartbeat` prints, at most every `every` seconds, the stage's label, the step it is at, the
counted progress and, once something was counted, an estimate of the time left. The stage reports
what it can (`update`); a background thread keeps the beat going through a single long call that
reports nothing (one conversion), so the display never goes quiet for longer than `every`.
"""

import threading
import time
from typing import Callable, Optional


class Heartbeat:
  """Context manager printing a stage's progress through `log` at most every `every` seconds.

  Args:
    log: Where lines go (a run folder's `log`, or `print`).
    label: What the stage is, e.g. 'NSGA-II'.
    total: The count at which the stage is done (for 'done/total' and the estimate), if known.
    every: Seconds between lines.
    clock: Monotonic seconds (injected by tests).
  """

  def __init__(self, log: Callable[[str], None], label: str, total: Optional[int] = None,
               every: float = 10.0, clock: Callable[[], float] = time.monotonic):
    self.log, self.label, self.total, self.every, self.clock = log, label, total, every, clock
    self.done = 0
    self.step = ''
    self._start = self._last = clock()
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = None

  def __enter__(self) -> 'Heartbeat':
    self._start = self._last = self.clock()
    self._thread = threading.Thread(target=self._beat, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()

  def update(self, done: Optional[int] = None, step: Optional[str] = None) -> None:
    """Records progress; prints a line when the last one is `every` seconds old."""
    with self._lock:
      if done is not None:
        self.done = done
      if step is not None:
        self.step = step
    self._maybe_print()

  def line(self) -> str:
    elapsed = self.clock() - self._start
    parts = [f'{self.label}:']
    if self.step:
      parts.append(self.step)
    if self.total:
      parts.append(f'{self.done}/{self.total}')
    parts.append(f'after {elapsed:.0f} s')
    if self.total and 0 < self.done < self.total:
      parts[-1] += f', about {elapsed * (self.total - self.done) / self.done:.0f} s left'
    return '  ' + ' '.join(parts)

  def _maybe_print(self) -> None:
    with self._lock:
      now = self.clock()
      if now - self._last < self.every:
        return
      self._last = now
      text = self.line()
    self.log(text)

  def _beat(self) -> None:
    while not self._stop.wait(min(1.0, self.every)):
      try:
        self._maybe_print()
      except Exception:  # pylint: disable=broad-except
        return  # a log that cannot be written is the stage's own error to report, not ours
