"""Latency lookup table (LUT): predicted LiteRT latency of any sub-network without building it.

Search ranks tens of thousands of sub-networks by measured-device latency, far too many to convert
and time. `profile` measures, once per machine, a small TFLite model for every distinct block of the
space (stem, fixed first block, each MBConv block shape, the parallel branches and additions, each
exit head; `ofav2_tf.block_shapes`), for the resolutions asked for. Each block model is cut out of a
real extracted sub-network (`export.graph_slice`), so it contains exactly the ops the deployed
network runs for that block.

A whole network is not exactly the sum of its blocks timed alone, for two measured reasons:
- every timed block model pays the fixed cost of an invoke (dispatch, the Python call, tensors
  crossing the model boundary) that a whole network pays once: `overhead_ms` per block;
- a block timed alone keeps its weights in the core's L2 cache between invokes, while a network
  whose weights overflow L2 reads the rest from the shared cache or memory on every invoke.
  Measured here (width 1.0, 64 px, float32): the uniform k3/e3 network with all five heads
  (19.6 MB of weights) took 2.65 ms whole against 1.55 ms for the sum of its blocks, the k7/e6 one
  17.3 against 13.8 ms. On the demo's int8 width-0.5 supernet (L2 1 MiB per core), networks with
  0.2-0.8 MB of weights ran at 1.00-1.10x their block sums and those with 1.04-1.15 MB at
  1.16-1.23x. This costs `ms_per_streamed_mb` per MB of weights beyond L2 (`streamed_mb`).
So the prediction is
  predicted = sum of block entries - (blocks - 1) * overhead_ms + streamed MB * ms_per_streamed_mb,
with the constants fitted once per table on `calibration_networks` random sub-networks converted
and timed whole (`LatencyTable.calibration` keeps them). Whether either term is worth fitting
depends on the network and machine, so `fit_correction` picks the plain sum, the overhead alone or
both by leave-one-out error on those networks (`LatencyTable.correction` records the choice).
Version 1 tables fitted both terms always, on all the weights: on the demo's supernet one
calibration network with 1.15 MB set 0.72 ms per MB, which over-predicted networks with 0.8 MB
(still in L2) by up to 75%, and the table's error on 20 random networks was 15.2%.

Measured (EE_D, width 1.0, 200 classes, 64 px, float32, 1 thread, this shared 2-core VM): profiling
took 126 s for 107 entries plus 4 calibration networks (overhead -0.01 ms, 0.066 ms per MB); on 20
other random sub-networks (0.24-7.1 ms) the mean absolute relative error was 10.2% (median 4%;
worst +41% on a 0.24 ms exit-1 network and -37% on one with four 7x7 kernels). Earlier tables
measured while the machine was busier gave 13-46%: LiteRT's XNNPACK 7x7 depthwise kernel is 15-30x
slower than its 5x5 one here and its time varies with load (1.4-2.4 ms for one layer), which
dominates both the latency of k7 networks and the error. On the demo's trained int8 supernet
(EE_D, width 0.5, 10 classes, 32-40 px, 1 thread), 2026-11-27: 246 entries, 3 passes and 8
calibration networks in 282 s; correction 'none'; 2.3% error on 20 random networks (worst 10.1%)
and 4.3% on 20 others (worst 12.2%).

Statistic: each entry is the *minimum* over `passes` x `rounds` fresh interpreters of `runs` timed
invokes each (`statistic='median'` takes the median of the per-interpreter medians instead); the
passes go over every entry in turn, so one slow spell of the host cannot spoil all of an entry's
rounds (`_SpreadTimer`). On the shared 2-core
machine this was built on, a network's per-interpreter median drifted by up to 35% between rounds
(4.7-6.2 ms) while its minimum stayed within 2% (4.55-4.65 ms); thread CPU time drifted like wall
time, so the variation is contention for the core (and its caches), not preemption. The minimum is
the repeatable figure; validation uses the table's statistic.

Profiling defaults to float32 files and 1 thread; int8 (`dtype='int8'`, the microcontroller format,
calibrated on random inputs since only speed matters here) and more threads are options. The table
stores the machine it was measured on, because entries from one machine say nothing about another.

Cost: one extraction per (resolution, kernel, expand) choice, one conversion (~1 s) and the timing
per distinct block (blocks 2-4 of a stage share entries), plus the calibration networks. Measured on
this machine for EE_D at width 1.0, one resolution: 107 entries in about 2-3 minutes. `validate`
compares predictions with measurements of other random sub-networks.
"""

import dataclasses
import importlib.metadata
import itertools
import json
import os
import platform
import time
from typing import Callable, Dict, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from export import atomic_write
from export import graph_slice
from export import litert_runner
from export import tflite_convert
from ofav2_tf import block_shapes
from ofav2_tf import errors
from ofav2_tf import extraction
from ofav2_tf import subnet_config as sc

DTYPES = ('float32', 'int8')
STATISTICS = ('min', 'median')
FORMAT = 'ofav2-latency-table'
VERSION = 2  # 2: the streaming term counts only weights beyond the L2 cache.


def l2_cache_bytes(cpu_dir: str = '/sys/devices/system/cpu/cpu0/cache') -> Optional[int]:
  """Bytes of the first core's level-2 data or unified cache (Linux sysfs); None if unknown."""
  def read(index, name):
    with open(os.path.join(cpu_dir, index, name), encoding='utf-8') as f:
      return f.read().strip()

  try:
    indexes = sorted(os.listdir(cpu_dir))
  except OSError:
    return None
  for index in indexes:
    try:
      if read(index, 'level') != '2' or read(index, 'type') == 'Instruction':
        continue
      size = read(index, 'size')
    except OSError:
      continue
    units = {'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3}
    if size[-1:].upper() in units and size[:-1].isdigit():
      return int(size[:-1]) * units[size[-1].upper()]
    if size.isdigit():
      return int(size)
  return None


def machine_description(num_threads: int) -> dict:
  """Where a table was measured: platform, CPU model, core count, threads, runtime versions."""
  cpu = platform.processor() or 'unknown'
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.lower().startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass

  def version(package):
    try:
      return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      return None

  return {'platform': platform.platform(), 'machine': platform.machine(), 'cpu': cpu,
          'cpu_count': os.cpu_count(), 'l2_cache_bytes': l2_cache_bytes(),
          'threads': int(num_threads),
          'litert': version('ai-edge-litert'), 'tensorflow': tf.__version__,
          'python': platform.python_version()}


def convert_block(model, dtype: str = 'float32', seed: int = 0) -> bytes:
  """Converts a (possibly multi-input) block model to TFLite at batch 1 for timing.

  `export.tflite_convert` takes single-input models; additions have several inputs, so the block
  models are converted here with the same settings (concrete function, builtin ops only). int8 is
  calibrated on random normal inputs: ranges do not change the speed of the int8 kernels.
  """
  if dtype not in DTYPES:
    raise errors.ConfigError(f'latency table dtype {dtype!r} is not valid; valid: {DTYPES}')
  specs = [tf.TensorSpec((1,) + tuple(int(d) for d in t.shape[1:]), tf.float32, name=name)
           for t, name in zip(model.inputs, model.input_names)]

  @tf.function(input_signature=specs, autograph=False)
  def serve(*inputs):
    return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

  holder = tf.Module()
  holder.variables_to_save = list(model.variables)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()],
                                                              holder)
  if dtype == 'int8':
    rng = np.random.default_rng(seed)
    samples = [[rng.normal(0, 1, s.shape).astype(np.float32) for s in specs] for _ in range(8)]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  else:
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return tflite_convert.run_converter(converter)



class _SpreadTimer:
  """Times models in `passes` passes, so each model's rounds are spread over the whole job.

  The shared host's slow spells last seconds to minutes, longer than the fraction of a second the
  rounds of one model take back to back; so they all land in the same spell, and the minimum over
  them does not help. Measured on the demo's int8 supernet: the same whole network took 0.66 ms in
  one check and 0.40 ms in another, and a check run in a slow spell found 8 of 20 networks 18-46%
  slower than their block sums. `add` times a model's first pass at once (for the progress
  display); `finish` re-times every model `passes - 1` more times, each pass after all the others'
  work, and returns `statistic` over every round of every pass.

  Each round is a fresh interpreter because one instance can be consistently slower than others
  (measured here: the same depthwise block took 0.48 ms in most instances and 0.81 ms in one).
  With 'min' an entry is the fastest invoke of all rounds, with 'median' the median of the
  per-round medians.
  """

  def __init__(self, num_threads: int, runs: int, warmup: int, rounds: int, statistic: str,
               passes: int):
    self._num_threads, self._runs, self._warmup = int(num_threads), int(runs), int(warmup)
    self._rounds, self._statistic_name, self._passes = int(rounds), statistic, int(passes)
    self._models, self._values = {}, {}

  @classmethod
  def for_table(cls, settings: dict) -> '_SpreadTimer':
    return cls(settings['num_threads'], settings['runs'], settings['warmup'], settings['rounds'],
               settings['statistic'], settings['passes'])

  def _time_pass(self, key):
    for _ in range(self._rounds):
      stats = litert_runner.measure_latency(self._models[key], (self._num_threads,),
                                            runs=self._runs, warmup=self._warmup)
      self._values[key].append(getattr(stats[self._num_threads], f'{self._statistic_name}_ms'))

  def _statistic(self, key) -> float:
    values = self._values[key]
    return float(np.min(values) if self._statistic_name == 'min' else np.median(values))

  def add(self, key, data: bytes) -> float:
    """Keeps `data` under `key`, times its first pass and returns that pass's figure."""
    self._models[key], self._values[key] = data, []
    self._time_pass(key)
    return self._statistic(key)

  def finish(self) -> dict:
    """Times the remaining passes over every model; key -> ms over all passes."""
    for _ in range(self._passes - 1):
      for key in self._models:
        self._time_pass(key)
    return {key: self._statistic(key) for key in self._models}


@dataclasses.dataclass
class LatencyTable:
  """Block latencies of one supernet on one machine.

  Attributes:
    entries: Block key (`BlockShape.key`) -> latency in ms of its block model (see the module
      docstring for the statistic), invoke overhead included.
    overhead_ms: Per-block invoke overhead, calibrated on whole networks (module docstring);
      0 when the chosen correction leaves it out.
    ms_per_streamed_mb: Cost per MB of the network's weights beyond the core's L2 cache
      (`streamed_mb`), calibrated likewise.
    settings: What was profiled: variant, num_classes, width_multiplier, expand_ratios,
      kernel_sizes, profiled_expand_ratios, resolutions, exits, dtype, num_threads, runs,
      warmup, rounds, passes, statistic.
    machine: `machine_description()` of the machine measured on.
    calibration: The whole networks the two constants were fitted on: config, measured_ms,
      block_sum_ms, blocks, weight_mb, streamed_mb.
    correction: The correction `fit_correction` chose: name (a key of `CORRECTIONS`) and
      leave_one_out_mare per candidate scored.
    profile_seconds: Wall time the profiling took.
  """

  entries: Dict[str, float]
  overhead_ms: float
  settings: dict
  machine: dict
  ms_per_streamed_mb: float = 0.0
  calibration: list = dataclasses.field(default_factory=list)
  correction: dict = dataclasses.field(default_factory=dict)
  profile_seconds: float = 0.0

  def blocks(self, config: sc.SubnetConfig, exits: Optional[Sequence[int]] = None):
    s = self.settings
    return block_shapes.network_blocks(config, s['variant'], s['num_classes'],
                                       s['width_multiplier'], s['expand_ratios'], exits)

  def missing(self, config: sc.SubnetConfig, exits: Optional[Sequence[int]] = None) -> list:
    """Keys of `config`'s blocks that the table lacks."""
    return sorted({b.key for b in self.blocks(config, exits)} - set(self.entries))

  def block_sum_ms(self, config: sc.SubnetConfig, exits: Optional[Sequence[int]] = None
                   ) -> float:
    """Sum of the entries of `config`'s blocks (overhead not removed).

    Raises:
      ConfigError: a block of `config` was not profiled (e.g. a resolution outside the table's).
    """
    total = 0.0
    for block in self.blocks(config, exits):
      entry = self.entries.get(block.key)
      if entry is None:
        raise errors.ConfigError(
            f'latency table has no entry for {block.scope} ({block.key}); it was profiled for '
            f'resolutions {self.settings["resolutions"]}, kernels {self.settings["kernel_sizes"]}, '
            f'expand ratios {self.settings["profiled_expand_ratios"]}: profile the missing values')
      total += entry
    return total

  def weight_mb(self, config: sc.SubnetConfig, exits: Optional[Sequence[int]] = None) -> float:
    """Megabytes of weights of the deployed network, at the table's dtype."""
    per_weight = 1 if self.settings['dtype'] == 'int8' else 4
    return sum(b.weights for b in self.blocks(config, exits)) * per_weight / 1e6

  def streamed_mb(self, config: sc.SubnetConfig, exits: Optional[Sequence[int]] = None
                  ) -> float:
    """Megabytes of weights beyond the L2 cache of the table's machine (all of them if unknown).

    A block timed alone keeps its weights in L2 between invokes; a whole network whose weights
    overflow it reads the rest from L3 on every invoke (module docstring).
    """
    cache_mb = (self.machine.get('l2_cache_bytes') or 0) / 1e6
    return max(0.0, self.weight_mb(config, exits) - cache_mb)

  def network_row(self, config: sc.SubnetConfig, exits: Optional[Sequence[int]] = None) -> dict:
    """What the correction reads of a network: block_sum_ms, blocks, weight_mb, streamed_mb."""
    return {'block_sum_ms': self.block_sum_ms(config, exits),
            'blocks': len(self.blocks(config, exits)),
            'weight_mb': self.weight_mb(config, exits),
            'streamed_mb': self.streamed_mb(config, exits)}

  def predict(self, config: sc.SubnetConfig, exits: Optional[Sequence[int]] = None) -> float:
    """Predicted latency in ms of the extracted model of `config` (heads of `exits` included)."""
    return _corrected(self.network_row(config, exits),
                      {'overhead': self.overhead_ms, 'streaming': self.ms_per_streamed_mb})

  def to_dict(self) -> dict:
    return {'format': FORMAT, 'version': VERSION, 'machine': self.machine,
            'settings': self.settings, 'overhead_ms': self.overhead_ms,
            'ms_per_streamed_mb': self.ms_per_streamed_mb, 'calibration': self.calibration,
            'correction': self.correction,
            'profile_seconds': self.profile_seconds, 'entries': dict(sorted(self.entries.items()))}

  @classmethod
  def from_dict(cls, data: dict, source: str = '<dict>') -> 'LatencyTable':
    if not isinstance(data, dict) or data.get('format') != FORMAT:
      raise errors.ConfigError(f'{source} is not a latency table (format {FORMAT!r} expected)')
    if data.get('version') != VERSION:
      raise errors.ConfigError(f'{source} has latency table version {data.get("version")}; this '
                               f'code reads version {VERSION}: profile again (--mode=profile)')
    missing = [k for k in ('machine', 'settings', 'overhead_ms', 'entries') if k not in data]
    if missing:
      raise errors.ConfigError(f'latency table {source} lacks field(s) {missing}')
    return cls(entries={str(k): float(v) for k, v in data['entries'].items()},
               overhead_ms=float(data['overhead_ms']), settings=data['settings'],
               machine=data['machine'],
               ms_per_streamed_mb=float(data.get('ms_per_streamed_mb', 0.0)),
               calibration=list(data.get('calibration', [])),
               correction=dict(data.get('correction', {})),
               profile_seconds=float(data.get('profile_seconds', 0.0)))

  def save(self, path) -> str:
    """Writes the table as JSON, atomically."""
    return atomic_write.write_text(path, json.dumps(self.to_dict(), indent=1) + '\n')

  @classmethod
  def load(cls, path) -> 'LatencyTable':
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise errors.ConfigError(f'latency table {path} does not exist; build one with '
                               'ofav2_tf.latency_table.profile')
    with open(path, encoding='utf-8') as f:
      try:
        data = json.load(f)
      except json.JSONDecodeError as e:
        raise errors.ConfigError(f'latency table {path} is not valid JSON: {e}') from None
    return cls.from_dict(data, path)


def _profiling_configs(space: sc.SearchSpace, resolution: int):
  """Configs whose blocks together cover every block key of `space` at `resolution`.

  Uniform maximal-depth networks reach every block position; one per (kernel, expand) pair covers
  the MBConv shapes, with all branches active (every branch kind, 3-input sums) and, once, a
  two-branch pattern (2-input sums).
  """
  exit_number = max(space.exits)
  full = max(space.branch_patterns, key=sc.branch_count) if space.parallel else None
  for k, e in itertools.product(space.kernel_sizes, space.expand_ratios):
    yield space.uniform(k, e, max(space.depths), exit_number, resolution, full)
  if space.parallel:
    pairs = [p for p in space.branch_patterns if sc.branch_count(p) == 2]
    if pairs:
      yield space.uniform(space.kernel_sizes[0], space.expand_ratios[0], max(space.depths),
                          exit_number, resolution, pairs[0])


def _check_settings(dtype, num_threads, runs, warmup, rounds, statistic, passes):
  if dtype not in DTYPES:
    raise errors.ConfigError(f'latency table dtype {dtype!r} is not valid; valid: {DTYPES}')
  if statistic not in STATISTICS:
    raise errors.ConfigError(f'latency statistic {statistic!r} is not valid; valid: {STATISTICS}')
  if min(int(num_threads), int(runs), int(rounds), int(passes)) < 1 or int(warmup) < 0:
    raise errors.ConfigError(f'num_threads={num_threads}, runs={runs}, warmup={warmup}, '
                             f'rounds={rounds}, passes={passes}; expected num_threads, runs, '
                             'rounds, passes >= 1 and warmup >= 0')


def profile(supernet, space: Optional[sc.SearchSpace] = None,
            resolutions: Optional[Sequence[int]] = None, num_threads: int = 1,
            dtype: str = 'float32', runs: int = 30, warmup: int = 5, rounds: int = 3,
            statistic: str = 'min', passes: int = 3, calibration_networks: int = 8, seed: int = 1,
            progress: Optional[Callable[[int, str, float], None]] = None) -> LatencyTable:
  """Measures every distinct block of `space` with LiteRT on this machine.

  Args:
    supernet: A built `OFASupernet` (weights only matter for int8 calibration ranges).
    space: The sub-networks to cover (a restriction of the supernet's space); default all of it.
    resolutions: Input sizes to cover; default the space's.
    num_threads: LiteRT CPU threads.
    dtype: 'float32' or 'int8' block models.
    runs: Timed invokes per interpreter.
    warmup: Untimed invokes first.
    rounds: Fresh interpreters per entry and pass (see `_SpreadTimer`).
    passes: Times each entry is timed, in passes over all entries (see `_SpreadTimer`).
    statistic: 'min' or 'median' of each interpreter's runs (see the module docstring).
    calibration_networks: Random sub-networks of `space` timed whole to choose and fit the
      correction (`fit_correction`; 0 keeps the plain block sum).
    seed: Seeds the calibration draw (`validate` draws with its own seed, default 0).
    progress: Called as progress(entries_done, key, ms) after each entry's first pass, with
      that pass's figure; the final entries take every pass into account.

  Returns:
    A `LatencyTable`.
  """
  _check_settings(dtype, num_threads, runs, warmup, rounds, statistic, passes)
  start = time.perf_counter()
  full_space = supernet.search_space(resolutions=resolutions or sc.DEFAULT_RESOLUTIONS)
  space = full_space if space is None else space
  if resolutions is not None:
    space = dataclasses.replace(space, resolutions=tuple(resolutions))
  exits = list(space.exits)

  timer = _SpreadTimer(num_threads, runs, warmup, rounds, statistic, passes)
  entries = {}
  for resolution in space.resolutions:
    for config in _profiling_configs(space, resolution):
      blocks = block_shapes.network_blocks(config, supernet.variant, supernet.num_classes,
                                           supernet.width_multiplier, supernet.expand_ratios,
                                           exits)
      todo = {}
      for block in blocks:
        if block.key not in entries:
          todo.setdefault(block.key, block)
      if not todo:
        continue
      model = extraction.extract(supernet, config, exits=exits if len(exits) > 1 else None)
      for key, block in todo.items():
        names = [layer.name for layer in model.layers if block.owns_layer(layer.name)]
        if not names:
          raise errors.ConfigError(f'extracted model has no layers for block {block.scope}')
        part = graph_slice.slice_layer_group(model, names, name='block')
        entries[key] = timer.add(key, convert_block(part, dtype))
        logging.info('latency table: %s = %.4f ms (first pass)', key, entries[key])
        if progress is not None:
          progress(len(entries), key, entries[key])
  settings = {'variant': supernet.variant.name, 'num_classes': supernet.num_classes,
              'width_multiplier': supernet.width_multiplier,
              'expand_ratios': list(supernet.expand_ratios),
              'kernel_sizes': list(space.kernel_sizes),
              'profiled_expand_ratios': list(space.expand_ratios),
              'resolutions': list(space.resolutions), 'exits': exits, 'dtype': dtype,
              'num_threads': int(num_threads), 'runs': int(runs), 'warmup': int(warmup),
              'rounds': int(rounds), 'passes': int(passes), 'statistic': statistic}
  entries = timer.finish()
  table = LatencyTable(entries=entries, overhead_ms=0.0, settings=settings,
                       machine=machine_description(num_threads))
  calibrate(table, supernet, space, int(calibration_networks), seed)
  table.profile_seconds = time.perf_counter() - start
  return table


def _measure_networks(table: LatencyTable, supernet, configs) -> list:
  """Converts the whole extracted models of `configs`, then times them with the table's settings.

  All are converted first, so their timing passes are spread over the time the others take.
  """
  timer = _SpreadTimer.for_table(table.settings)
  for i, config in enumerate(configs):
    timer.add(i, convert_block(extraction.extract(supernet, config), table.settings['dtype']))
  measured = timer.finish()
  return [measured[i] for i in range(len(configs))]


def _sample(table: LatencyTable, supernet, count: int, seed: int,
            space: Optional[sc.SearchSpace] = None) -> list:
  """Random sub-networks within the table's profiled choices."""
  s = table.settings
  if space is None:
    space = supernet.search_space(resolutions=s['resolutions']).restrict(
        kernel_sizes=s['kernel_sizes'], expand_ratios=s['profiled_expand_ratios'],
        exits=s['exits'])
  rng = np.random.default_rng(seed)
  return [space.sample(rng) for _ in range(int(count))]


# The correction terms a calibration may fit, simplest first; see `fit_correction`.
CORRECTIONS = {
    'none': (),
    'overhead': ('overhead',),
    'overhead+streaming': ('overhead', 'streaming'),
}


def _correction_features(row: dict, terms) -> list:
  """Per-term regressors: measured - block sum = sum of coefficient * feature."""
  features = {'overhead': -(row['blocks'] - 1), 'streaming': row['streamed_mb']}
  return [features[t] for t in terms]


def _fit_terms(rows: Sequence[dict], terms) -> Optional[dict]:
  """Relative least squares of the `terms` on `rows`; None when the fit is not physical.

  Rows are weighted by 1 / measured so the fit minimises relative error, the figure validation
  reports; unweighted, the largest network sets the constants for all. A negative weight cost
  (streaming weights making a network faster) is rejected rather than clipped.
  """
  coefficients = {'overhead': 0.0, 'streaming': 0.0}
  if terms:
    scale = np.array([1.0 / r['measured_ms'] for r in rows])
    a = np.array([_correction_features(r, terms) for r in rows], np.float64) * scale[:, None]
    y = np.array([r['measured_ms'] - r['block_sum_ms'] for r in rows]) * scale
    solution, *_ = np.linalg.lstsq(a, y, rcond=None)
    coefficients.update(zip(terms, (float(v) for v in solution)))
  if coefficients['streaming'] < 0:
    return None
  return coefficients


def _corrected(row: dict, coefficients: dict) -> float:
  """The prediction: block sum - (blocks - 1) * overhead + streamed MB * streaming cost."""
  return (row['block_sum_ms'] - (row['blocks'] - 1) * coefficients['overhead'] +
          row['streamed_mb'] * coefficients['streaming'])


def fit_correction(rows: Sequence[dict]) -> dict:
  """Chooses and fits the whole-network correction by leave-one-out error on `rows`.

  Which correction a table needs depends on the network and the machine: the weight-streaming
  term is worth 40% on a float32 width-1.0 network with 20 MB of weights, and little on an int8
  width-0.5 one whose 0.1-1.2 MB mostly fit in L2. There, a calibration set with one network
  beyond L2 cannot tell a streaming cost from noise, and fitting both terms always (version 1,
  on all weights) let that network (3.0 ms against a 2.5 ms block sum) raise other networks'
  predictions by up to 75%. So each candidate of `CORRECTIONS` is scored by the mean absolute
  relative error of its leave-one-out predictions, and the simplest one with the lowest score
  wins. A candidate is scored only when each leave-one-out fit has more rows than coefficients
  and every fit is physical (`_fit_terms`).

  Args:
    rows: Whole networks measured: dicts with measured_ms, block_sum_ms, blocks, streamed_mb.

  Returns:
    {'correction': name, 'overhead_ms', 'ms_per_streamed_mb', 'leave_one_out_mare': {name: MARE}}.
  """
  rows = list(rows)
  if not rows:
    return {'correction': 'none', 'overhead_ms': 0.0, 'ms_per_streamed_mb': 0.0,
            'leave_one_out_mare': {}}
  fits, scores = {}, {}
  for name, terms in CORRECTIONS.items():
    if terms and len(rows) - 1 <= len(terms):
      continue
    full = _fit_terms(rows, terms)
    held_out_fits = [_fit_terms(rows[:i] + rows[i + 1:], terms) for i in range(len(rows))]
    if full is None or None in held_out_fits:
      continue
    fits[name] = full
    scores[name] = float(np.mean([abs(_corrected(row, fit) - row['measured_ms']) /
                                  row['measured_ms'] for row, fit in zip(rows, held_out_fits)]))
  best = min(scores, key=lambda n: (scores[n], list(CORRECTIONS).index(n)))
  coefficients = fits[best]
  return {'correction': best, 'overhead_ms': coefficients['overhead'],
          'ms_per_streamed_mb': coefficients['streaming'], 'leave_one_out_mare': scores}


def calibrate(table: LatencyTable, supernet, space: Optional[sc.SearchSpace] = None,
              count: int = 8, seed: int = 1) -> LatencyTable:
  """Times `count` random whole networks and fits the table's correction to them (in place).

  See `fit_correction` for the choice between the plain block sum, a per-block overhead, and an
  overhead plus a per-MB weight cost; `table.correction` records which won and why.
  """
  configs = _sample(table, supernet, max(int(count), 0), seed, space)
  table.calibration = []
  for config, measured in zip(configs, _measure_networks(table, supernet, configs)):
    table.calibration.append({'config': str(config), 'measured_ms': measured,
                              **table.network_row(config)})
  fit = fit_correction(table.calibration)
  table.overhead_ms, table.ms_per_streamed_mb = fit['overhead_ms'], fit['ms_per_streamed_mb']
  table.correction = {'name': fit['correction'], 'leave_one_out_mare': fit['leave_one_out_mare']}
  return table


@dataclasses.dataclass(frozen=True)
class ValidationResult:
  """Predicted against measured latency of real sub-networks.

  Attributes:
    configs: The sub-networks (compact strings).
    predicted_ms: Table predictions.
    measured_ms: LiteRT latency of the converted extracted models, with the table's settings.
    relative_errors: (predicted - measured) / measured per sub-network.
    mean_abs_relative_error: Mean of |relative_errors| (the acceptance figure).
    max_abs_relative_error: Largest |relative error|.
  """

  configs: tuple
  predicted_ms: tuple
  measured_ms: tuple
  relative_errors: tuple
  mean_abs_relative_error: float
  max_abs_relative_error: float

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def validate(table: LatencyTable, supernet, count: int = 20, seed: int = 0,
             space: Optional[sc.SearchSpace] = None,
             configs: Optional[Sequence[sc.SubnetConfig]] = None) -> ValidationResult:
  """Compares the table's predictions with measurements of `count` random sub-networks.

  Each sub-network is extracted, converted (the table's dtype; int8 calibrated on random inputs)
  and timed with the table's threads, runs, warmup, rounds, passes and statistic.

  Args:
    table: The table (profiled for `supernet`'s architecture on this machine).
    supernet: The supernet the table was profiled for.
    count: Random sub-networks to draw when `configs` is None.
    seed: Seeds the draw.
    space: Space to draw from; default the table's kernels, expand ratios, resolutions and exits
      within the supernet's space.
    configs: Explicit sub-networks instead of a random draw.
  """
  s = table.settings
  if (s['variant'], s['num_classes'], s['width_multiplier']) != (
      supernet.variant.name, supernet.num_classes, supernet.width_multiplier):
    raise errors.ConfigError(
        f'latency table is for {s["variant"]} ({s["num_classes"]} classes, width '
        f'{s["width_multiplier"]}); the supernet is {supernet.variant.name} '
        f'({supernet.num_classes} classes, width {supernet.width_multiplier})')
  if configs is None:
    configs = _sample(table, supernet, count, seed, space)
  predicted = [table.predict(config) for config in configs]
  measured = _measure_networks(table, supernet, configs)
  predicted, measured = np.array(predicted), np.array(measured)
  rel = (predicted - measured) / measured
  return ValidationResult(configs=tuple(str(c) for c in configs),
                          predicted_ms=tuple(float(v) for v in predicted),
                          measured_ms=tuple(float(v) for v in measured),
                          relative_errors=tuple(float(v) for v in rel),
                          mean_abs_relative_error=float(np.mean(np.abs(rel))),
                          max_abs_relative_error=float(np.max(np.abs(rel))))
