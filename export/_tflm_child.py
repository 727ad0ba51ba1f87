"""Child process for `tflm_runner`: runs one int8 .tflite under the TFLite Micro Python interpreter.

Run as a script (not imported) so that a TFLite Micro abort or segfault kills only this process; the
parent turns the exit status and captured log into a clear error. Imports nothing but numpy and
tflite_micro, so it starts in well under a second.

Usage: _tflm_child.py MODEL IN_DIR OUT_DIR ARENA_BYTES NUM_OUTPUTS FIND_MIN_ARENA(0|1)
  IN_DIR holds input_0.npy, input_1.npy, ... in the file's input order. Writes output_K.npy for each
  output and result.json ({"status": "ok"|"arena_too_small"|"error", ...}) to OUT_DIR. TFLite Micro's
  own log (MicroPrintf) goes to stderr, which the parent keeps for error messages. The arena total
  is only printed by the recording allocator (`print_allocations`), so it is captured from file
  descriptor 2 here and returned in result.json.
"""

import json
import os
import re
import sys
import tempfile

import numpy as np
from tflite_micro import runtime

_PROBE_ARENA = 256 << 20  # Used only to measure what a failed (too small) arena would have needed.
_ARENA_TOTAL = re.compile(r'Arena allocation total (\d+) bytes')


def _write(out_dir, result):
  tmp = os.path.join(out_dir, 'result.json.tmp')
  with open(tmp, 'w') as f:
    json.dump(result, f)
  os.replace(tmp, os.path.join(out_dir, 'result.json'))


def _run(model, inputs, arena):
  """Builds an interpreter with `arena` bytes, runs it; returns it (RuntimeError if it cannot)."""
  interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena)
  for i, value in enumerate(inputs):
    interpreter.set_input(value, i)
  interpreter.invoke()
  return interpreter


def _arena_total(interpreter):
  """The recording allocator's arena total, which it only prints (C stdio, to file descriptor 2)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      interpreter.print_allocations()
    finally:
      os.dup2(saved, 2)
      os.close(saved)
    capture.seek(0)
    text = capture.read().decode('utf-8', 'replace')
  sys.stderr.write(text)  # Keep it in the log the parent reads.
  match = _ARENA_TOTAL.search(text)
  if match is None:
    raise RuntimeError('the TFLite Micro recording allocator printed no arena total')
  return int(match.group(1))


def _min_arena(model, inputs, lower, upper):
  """Smallest arena that loads and runs, by bisection in (lower, upper], with alignment slack.

  `lower` is the recording allocator's total, known to fail: the memory planner also needs scratch
  space in the arena while it plans. Starting there keeps the probes near the answer, where a failed
  allocation is reported cleanly (much smaller arenas can make TFLite Micro crash).

  TFLite Micro aligns the start of the arena to 16 bytes, so how much of a buffer is usable depends on
  where malloc put it: the bisection stops at 16-byte resolution and the answer is rounded up to a
  multiple of 16 plus 16, which works wherever the buffer lands (a device build declares the arena
  16-byte aligned and needs at most this).
  """
  lo, hi = lower, upper
  guess = 2 * lower + 4096  # The planner's scratch is far smaller than the arena itself.
  if lo < guess < hi:
    try:
      _run(model, inputs, guess)
      hi = guess
    except RuntimeError:
      lo = guess
  while hi - lo > 16:
    mid = (lo + hi) // 2
    try:
      _run(model, inputs, mid)
      hi = mid
    except RuntimeError:
      lo = mid
  return min(upper, -(-hi // 16) * 16 + 16)


def main(argv):
  model_path, in_dir, out_dir = argv[1], argv[2], argv[3]
  arena, num_outputs, find_min = int(argv[4]), int(argv[5]), argv[6] == '1'
  with open(model_path, 'rb') as f:
    model = f.read()
  count = len([n for n in os.listdir(in_dir) if n.startswith('input_')])
  inputs = [np.load(os.path.join(in_dir, f'input_{i}.npy')) for i in range(count)]
  try:
    interpreter = _run(model, inputs, arena)
  except RuntimeError as e:
    result = {'status': 'error', 'message': str(e)}
    if 'allocate' in str(e).lower() and arena < _PROBE_ARENA:
      try:  # Measure what would have been needed, so the error can say it.
        total = _arena_total(_run(model, inputs, _PROBE_ARENA))
        result['status'] = 'arena_too_small'
        result['arena_used_bytes'] = total
        result['arena_min_bytes'] = _min_arena(model, inputs, total, _PROBE_ARENA)
      except RuntimeError:
        pass  # Fails even with a huge arena: not an arena problem.
    _write(out_dir, result)
    return 3
  for k in range(num_outputs):
    np.save(os.path.join(out_dir, f'output_{k}.npy'), interpreter.get_output(k))
  total = _arena_total(interpreter)
  result = {'status': 'ok', 'arena_used_bytes': total}
  if find_min:
    result['arena_min_bytes'] = _min_arena(model, inputs, total, arena)
  _write(out_dir, result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
