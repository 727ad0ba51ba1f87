"""Runs an int8 .tflite under TFLite Micro (the microcontroller runtime) and reports its arena.

Why a child process: TFLite Micro trusts the flatbuffer. A file it cannot handle may make it print
an error and return, but may also abort or segfault, which would take the whole export or test run
down with it. The interpreter therefore runs in `_tflm_child.py`; this module checks the file first
(ops TFLite Micro lacks, int8 inputs), passes inputs through .npy files in a temporary directory,
and turns every way the child can end into a result or a one-line error naming the file and the
likely cause.

Arena: the TFLite Micro Python API (`tflite_micro.runtime.Interpreter`) has no call returning the
arena use; its recording allocator prints it (`print_allocations()`: "[RecordingMicroAllocator]
Arena allocation total N bytes") to file descriptor 2, where the child captures it. That total is
not quite enough as an arena size (the memory planner needs scratch space while planning), so the
smallest arena that really works can also be measured by bisection (`find_min_arena=True`). A too
small arena makes interpreter construction fail ("TFLM failed to allocate tensors") or, when far too
small, crash TFLite Micro after its failed allocation; both are reported as `ArenaTooSmallError`
with the size that would have worked.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from export import tflite_inspect
from export.errors import ArenaTooSmallError
from export.errors import ExportError
from export.errors import RuntimeCrashError
from export.errors import UnsupportedOpError

DEFAULT_ARENA_BYTES = 64 << 20

# Builtin ops the TFLite Micro interpreter registers (its all-ops resolver), checked against the
# kernels compiled into the installed tflite-micro wheel (see tests/export_tflm_runner_test.py).
# Op support does not imply every type: TFLite Micro kernels cover int8 and float32 for most ops.
TFLM_BUILTIN_OPS = frozenset((
    'ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND '
    'BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM '
    'DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP EQUAL '
    'EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER '
    'GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG '
    'LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN MINIMUM '
    'MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE READ_VARIABLE REDUCE_ALL REDUCE_MAX '
    'REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT '
    'SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE '
    'SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV '
    'UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE').split())

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_tflm_child.py')


@dataclasses.dataclass(frozen=True)
class TFLMResult:
  """Outcome of one TFLite Micro inference.

  Attributes:
    outputs: raw output arrays in the file's output order.
    output_names: the signature name of each output (Keras output names).
    arena_size: the arena the interpreter was given, in bytes.
    arena_used_bytes: the recording allocator's total (head + tail) for this model.
    arena_min_bytes: smallest arena that loads and runs (16-byte multiple, with alignment slack), if
      it was measured.
    log: TFLite Micro's console output.
  """
  outputs: tuple
  output_names: tuple
  arena_size: int
  arena_used_bytes: int
  arena_min_bytes: int = None
  log: str = ''

  def named_outputs(self):
    return dict(zip(self.output_names, self.outputs))


def unsupported_ops(info):
  """Ops in a file (`tflite_inspect.ModelInfo`) that TFLite Micro cannot run."""
  missing = [op for op in info.op_names if op not in TFLM_BUILTIN_OPS]
  return tuple(missing + [f'custom:{c}' for c in info.custom_ops])


def check_runnable(info):
  """Raises if TFLite Micro certainly cannot run the file: missing ops, or not int8 in and out."""
  missing = unsupported_ops(info)
  if missing:
    raise UnsupportedOpError(f'{info.source} uses ops TFLite Micro lacks: {", ".join(missing)}; '
                             'rebuild the model from layers whose TFLite ops TFLite Micro has')
  floats = [t.name for t in info.inputs + info.outputs if t.dtype not in ('int8', 'int16')]
  if floats:
    raise ExportError(f'{info.source} has non-integer inputs/outputs {floats}; TFLite Micro runs '
                      'the int8 export (export.tflite_convert.convert_int8)')


def _check_inputs(info, inputs):
  if isinstance(inputs, np.ndarray):
    inputs = [inputs]
  inputs = list(inputs)
  if len(inputs) != len(info.inputs):
    raise ExportError(f'{info.source} takes {len(info.inputs)} inputs; got {len(inputs)}')
  for value, tensor in zip(inputs, info.inputs):
    if (np.asarray(value).dtype != tflite_inspect.dtype_of(tensor) or
        tuple(np.shape(value)) != tensor.shape):
      raise ExportError(f'{info.source} input {tensor.name!r} is {tensor.dtype} {list(tensor.shape)}; '
                        f'got {np.asarray(value).dtype} {list(np.shape(value))}')
  return inputs


def _crash_message(path, returncode, info, log):
  try:
    name = signal.Signals(-returncode).name
  except ValueError:
    name = f'signal {-returncode}'
  last = _last_line(log, '')
  hint = f'; last message: {last}' if last else ''
  return (f'TFLite Micro crashed ({name}) on {path}: the file is likely corrupt or uses an op/type '
          f'combination its kernels do not check (ops: {", ".join(info.op_names)}){hint}')


def _last_line(log, default='no output'):
  return next((line for line in reversed(log.splitlines()) if line.strip()), default)


def _spawn(model_path, info, inputs, arena_size, find_min_arena, timeout_s):
  """Runs the child once; returns (outputs or None, result dict or None, log, returncode)."""
  with tempfile.TemporaryDirectory(prefix='tflm-') as tmp:
    in_dir = os.path.join(tmp, 'in')
    out_dir = os.path.join(tmp, 'out')
    os.makedirs(in_dir)
    os.makedirs(out_dir)
    for i, value in enumerate(inputs):
      np.save(os.path.join(in_dir, f'input_{i}.npy'), np.asarray(value))
    command = [sys.executable, _CHILD, os.fspath(model_path), in_dir, out_dir, str(arena_size),
               str(len(info.outputs)), '1' if find_min_arena else '0']
    try:
      proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
      raise ExportError(f'TFLite Micro did not finish {model_path} in {timeout_s} s') from e
    result_path = os.path.join(out_dir, 'result.json')
    if proc.returncode < 0 or not os.path.isfile(result_path):
      return None, None, proc.stderr, proc.returncode
    with open(result_path) as f:
      result = json.load(f)
    outputs = None
    if result['status'] == 'ok':
      outputs = tuple(np.load(os.path.join(out_dir, f'output_{k}.npy'))
                      for k in range(len(info.outputs)))
    return outputs, result, proc.stderr, proc.returncode


def _run_child(model_path, info, inputs, arena_size, find_min_arena, timeout_s):
  """Runs the child and turns every way it can end into results or one clear error."""
  outputs, result, log, returncode = _spawn(model_path, info, inputs, arena_size, find_min_arena,
                                            timeout_s)
  if returncode < 0:
    # A very small arena can make TFLite Micro crash after a failed allocation instead of returning
    # an error; if a generous arena works, the arena was the problem.
    if 'Failed to allocate' in log and arena_size < DEFAULT_ARENA_BYTES:
      _, probe, _, _ = _spawn(model_path, info, inputs, DEFAULT_ARENA_BYTES, True, timeout_s)
      if probe is not None and probe['status'] == 'ok':
        raise ArenaTooSmallError(
            f'TFLite Micro arena of {arena_size} bytes is too small for {model_path} (it crashed); '
            f'it needs {probe["arena_min_bytes"]} bytes (arena_size >= {probe["arena_min_bytes"]})')
    raise RuntimeCrashError(_crash_message(model_path, returncode, info, log))
  if result is None:
    raise ExportError(f'TFLite Micro child failed on {model_path} (exit {returncode}): '
                      f'{_last_line(log)}')
  if result['status'] == 'arena_too_small':
    raise ArenaTooSmallError(
        f'TFLite Micro arena of {arena_size} bytes is too small for {model_path}; it needs '
        f'{result["arena_min_bytes"]} bytes (arena_size >= {result["arena_min_bytes"]})')
  if result['status'] != 'ok':
    tflm_lines = [l for l in log.splitlines() if l.strip() and not l.startswith(('Traceback', ' '))]
    detail = f' ({tflm_lines[0]})' if tflm_lines else ''
    raise ExportError(f'TFLite Micro could not run {model_path}: {result.get("message")}{detail}')
  return outputs, result, log


def run_tflm(model_path, inputs, arena_size=DEFAULT_ARENA_BYTES, find_min_arena=False,
             timeout_s=300):
  """Runs one inference of an int8 .tflite under TFLite Micro, in a child process.

  Args:
    model_path: the .tflite file.
    inputs: int8 arrays (one, or a list in the file's input order) with the file's input shapes.
    arena_size: tensor arena in bytes, as a microcontroller build would reserve.
    find_min_arena: also measure the smallest arena that works (bisection, about 25 more loads).
    timeout_s: give up after this long.

  Returns:
    A `TFLMResult`.

  Raises:
    UnsupportedOpError: the file uses an op TFLite Micro lacks (checked before running).
    ArenaTooSmallError: `arena_size` is too small; the message gives the size that works.
    RuntimeCrashError: TFLite Micro aborted or crashed.
    ExportError: bad inputs, a missing file, or another TFLite Micro error.
  """
  info = tflite_inspect.inspect_tflite(model_path)
  check_runnable(info)
  inputs = _check_inputs(info, inputs)
  if int(arena_size) <= 0:
    raise ExportError(f'arena_size={arena_size}; expected a positive number of bytes')
  outputs, result, log = _run_child(model_path, info, inputs, int(arena_size), find_min_arena,
                                    timeout_s)
  return TFLMResult(outputs=outputs, output_names=info.output_names, arena_size=int(arena_size),
                    arena_used_bytes=result['arena_used_bytes'],
                    arena_min_bytes=result.get('arena_min_bytes'), log=log)
