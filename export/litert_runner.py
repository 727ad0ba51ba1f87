"""Runs a .tflite file under LiteRT (the phone runtime) and measures its latency.

Inputs and outputs are converted with the file's own quantization parameters, and outputs are named
from the file's serving signature (the converter may reorder them; see `tflite_inspect`).

Kernels: LiteRT's default CPU path (XNNPACK) is what phones run and what latency is measured with.
Its int8 rounding differs slightly from the reference kernels that TFLite Micro mirrors (a few
quantization steps on deep nets), so comparisons with TFLite Micro use `reference_kernels=True`.

The LiteRT wheel ships the `litert-benchmark` command (module
`ai_edge_litert.tools.benchmark_litert_model`), a Python port of the C++ benchmark_model tool that
runs a file's first signature through `CompiledModel`; `run_benchmark_tool` drives it and keeps its
JSON result.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from ai_edge_litert import interpreter as litert

from export import atomic_write
from export import quantization
from export import tflite_inspect
from export.errors import ExportError

BENCHMARK_TOOL = 'litert-benchmark'
BENCHMARK_MODULE = 'ai_edge_litert.tools.benchmark_litert_model'


def _model_bytes(model):
  if isinstance(model, (bytes, bytearray)):
    return bytes(model)
  path = os.fspath(model)
  if not os.path.isfile(path):
    raise ExportError(f'TFLite file {path} does not exist; pass the path of an exported .tflite')
  with open(path, 'rb') as f:
    return f.read()


class LiteRTModel:
  """A .tflite file loaded in a LiteRT interpreter.

  Attributes:
    info: the file's `tflite_inspect.ModelInfo` (tensors, quantization, output names).
    num_threads: CPU threads the interpreter uses.
  """

  def __init__(self, model, num_threads=1, reference_kernels=False, delegate=True):
    """Loads a model.

    Args:
      model: path to a .tflite file, or its bytes.
      num_threads: CPU threads for the interpreter.
      reference_kernels: use TFLite's reference kernels (slow, bit-compatible with TFLite Micro)
        instead of the optimized default (XNNPACK).
      delegate: with optimized kernels, apply LiteRT's default XNNPACK delegate (what users get
        by default); False runs TFLite's own builtin kernels, which are faster than XNNPACK for
        the small demo networks on x86 (measured by benchmarks/search_export.py).
    """
    if int(num_threads) < 1:
      raise ExportError(f'num_threads={num_threads}; expected 1 or more')
    data = _model_bytes(model)
    self.info = tflite_inspect.inspect_tflite(data)
    self.num_threads = int(num_threads)
    if reference_kernels:
      resolver = litert.OpResolverType.BUILTIN_REF
    elif delegate:
      resolver = litert.OpResolverType.AUTO
    else:
      resolver = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    self._interpreter = litert.Interpreter(model_content=data, num_threads=self.num_threads,
                                           experimental_op_resolver_type=resolver)
    self._interpreter.allocate_tensors()
    self._inputs = self._interpreter.get_input_details()
    self._outputs = self._interpreter.get_output_details()
    # Interpreter details come in subgraph order, like `info.inputs`/`info.outputs`; check anyway,
    # since the names are attached by position.
    if ([d['index'] for d in self._outputs] != [t.index for t in self.info.outputs] or
        [d['index'] for d in self._inputs] != [t.index for t in self.info.inputs]):
      raise ExportError(f'{self.info.source}: LiteRT tensor order differs from the flatbuffer')

  @property
  def output_names(self):
    return self.info.output_names

  def _check_inputs(self, inputs, quantized):
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
      inputs = [inputs]
    if len(inputs) != len(self.info.inputs):
      raise ExportError(f'{self.info.source} takes {len(self.info.inputs)} inputs, got {len(inputs)}')
    arrays = []
    for value, tensor in zip(inputs, self.info.inputs):
      value = np.asarray(value)
      if tuple(value.shape) != tensor.shape:
        raise ExportError(f'{self.info.source} input {tensor.name!r} has shape {list(tensor.shape)}; '
                          f'got {list(value.shape)}')
      if quantized and value.dtype != tflite_inspect.dtype_of(tensor):
        raise ExportError(f'{self.info.source} input {tensor.name!r} is {tensor.dtype}; '
                          f'got {value.dtype}')
      arrays.append(value)
    return arrays

  def run_raw(self, inputs):
    """Runs one inference on inputs already in the file's dtypes.

    Args:
      inputs: one array, or a list of arrays in the file's input order.

    Returns:
      Output arrays in the file's output order (pair with `output_names`), in the file's dtypes.
    """
    for value, detail in zip(self._check_inputs(inputs, quantized=True), self._inputs):
      self._interpreter.set_tensor(detail['index'], value)
    self._interpreter.invoke()
    return [self._interpreter.get_tensor(d['index']).copy() for d in self._outputs]

  def quantize_inputs(self, inputs):
    """Converts float inputs to the file's input dtypes with the file's own parameters."""
    out = []
    for value, tensor in zip(self._check_inputs(inputs, quantized=False), self.info.inputs):
      if tensor.is_quantized:
        out.append(quantization.quantize(value, tensor.scale, tensor.zero_point,
                                         tflite_inspect.dtype_of(tensor)))
      else:
        out.append(value.astype(tflite_inspect.dtype_of(tensor)))
    return out

  def dequantize_outputs(self, outputs):
    """Converts raw outputs (file order) to float32 with the file's own parameters."""
    return [quantization.dequantize(v, t.scale, t.zero_point) if t.is_quantized
            else np.asarray(v, np.float32) for v, t in zip(outputs, self.info.outputs)]

  def run(self, inputs):
    """Runs one inference on float inputs.

    Args:
      inputs: one float array shaped like the input (batch 1), or a list in input order.

    Returns:
      A dict from output name (the Keras output name, read from the file's signature) to float32
      array, in the file's output order.
    """
    raw = self.run_raw(self.quantize_inputs(inputs))
    return dict(zip(self.output_names, self.dequantize_outputs(raw)))

  def invoke_times_ms(self, inputs, runs, warmup):
    """Sets raw `inputs` once, then times `runs` invokes after `warmup` untimed ones."""
    for value, detail in zip(self._check_inputs(inputs, quantized=True), self._inputs):
      self._interpreter.set_tensor(detail['index'], value)
    for _ in range(warmup):
      self._interpreter.invoke()
    times = np.empty(runs)
    for i in range(runs):
      start = time.perf_counter()
      self._interpreter.invoke()
      times[i] = (time.perf_counter() - start) * 1000.0
    return times

  def random_inputs(self, seed=0):
    """Inputs of the right shapes and dtypes, for timing."""
    rng = np.random.default_rng(seed)
    out = []
    for t in self.info.inputs:
      dtype = tflite_inspect.dtype_of(t)
      if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out.append(rng.integers(info.min, info.max, t.shape, endpoint=True).astype(dtype))
      else:
        out.append(rng.normal(0.0, 1.0, t.shape).astype(dtype))
    return out


@dataclasses.dataclass(frozen=True)
class LatencyStats:
  """Wall-clock time of one `invoke`, over `runs` runs after `warmup` discarded ones."""
  num_threads: int
  runs: int
  warmup: int
  median_ms: float
  p90_ms: float
  mean_ms: float
  min_ms: float


def measure_latency(model, num_threads=(1, 2), runs=50, warmup=10, seed=0, delegate=True):
  """Measures LiteRT inference latency for each thread count.

  Median and 90th percentile rather than the mean: a loaded machine adds rare long outliers that
  would dominate a mean but not what a user sees most of the time.

  Args:
    model: path to a .tflite file, or its bytes.
    num_threads: thread counts to measure, e.g. (1, 2).
    runs: timed runs per thread count.
    warmup: untimed runs first (allocation, caches, XNNPACK packing).
    seed: seeds the random input.
    delegate: apply the default XNNPACK delegate (see `LiteRTModel`).

  Returns:
    A dict from thread count to `LatencyStats`.
  """
  if int(runs) < 1 or int(warmup) < 0:
    raise ExportError(f'runs={runs}, warmup={warmup}; expected runs >= 1 and warmup >= 0')
  data = _model_bytes(model)
  result = {}
  for threads in num_threads:
    runner = LiteRTModel(data, num_threads=threads, delegate=delegate)
    times = runner.invoke_times_ms(runner.random_inputs(seed), int(runs), int(warmup))
    result[int(threads)] = LatencyStats(
        num_threads=int(threads), runs=int(runs), warmup=int(warmup),
        median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)),
        mean_ms=float(times.mean()), min_ms=float(times.min()))
  return result


def benchmark_tool_command():
  """The command line that starts the LiteRT benchmark tool, or None if it is not installed.

  Prefers the `litert-benchmark` console script; falls back to running its module with this
  interpreter (same code, e.g. when the scripts directory is not on PATH).
  """
  exe = shutil.which(BENCHMARK_TOOL)
  if exe:
    return [exe]
  try:
    import importlib.util  # pylint: disable=g-import-not-at-top
    if importlib.util.find_spec(BENCHMARK_MODULE) is not None:
      return [sys.executable, '-m', BENCHMARK_MODULE]
  except ImportError:
    pass
  return None


def run_benchmark_tool(model_path, result_json, num_threads=1, num_runs=50, warmup_runs=5,
                       timeout_s=600):
  """Runs the LiteRT benchmark tool on a file and keeps its JSON result and log.

  The tool runs the file's first signature; exported files have 'serving_default', which is checked
  first so a file without one fails here with a clear message rather than inside the tool.

  Args:
    model_path: the .tflite file.
    result_json: where the tool's JSON result is written (atomically); its console output goes to
      the same name with '.log' appended.
    num_threads: CPU threads.
    num_runs: timed runs.
    warmup_runs: untimed runs first.
    timeout_s: give up after this long.

  Returns:
    The tool's result as a dict (latency in ms under 'latency': avg, median, p5, p95, ...).

  Raises:
    ExportError: the tool is missing, the file has no signature, or the tool failed.
  """
  info = tflite_inspect.inspect_tflite(model_path)
  if not info.signatures:
    raise ExportError(f'{model_path} has no signature; the benchmark tool needs one (export it with '
                      'export.tflite_convert, which adds serving_default)')
  command = benchmark_tool_command()
  if command is None:
    raise ExportError(f'the LiteRT benchmark tool ({BENCHMARK_TOOL}) is not installed; '
                      'pip install ai-edge-litert')
  result_json = os.fspath(result_json)
  with atomic_write.atomic_path(result_json, suffix='.json') as tmp:
    args = command + [f'--model={os.fspath(model_path)}', f'--num_threads={int(num_threads)}',
                      f'--num_runs={int(num_runs)}', f'--warmup_runs={int(warmup_runs)}',
                      f'--result_json={tmp}']
    try:
      proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
      raise ExportError(f'{BENCHMARK_TOOL} on {model_path} did not finish in {timeout_s} s') from e
    atomic_write.write_text(result_json + '.log', proc.stdout + proc.stderr)
    if proc.returncode != 0 or not os.path.isfile(tmp):
      last = (proc.stderr.strip() or proc.stdout.strip() or 'no output').splitlines()[-1]
      raise ExportError(f'{BENCHMARK_TOOL} failed on {model_path} (exit {proc.returncode}): {last}')
    with open(tmp) as f:
      result = json.load(f)
  return result
