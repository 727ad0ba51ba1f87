"""`--mode=benchmark`: device checks of a run's exported sub-network (`<run_dir>/export/`).

Reads what `--mode=export` wrote (`export_summary.json`, the .tflite files, `early_exit/`) and
writes `<run_dir>/benchmark/`:

  benchmark.json        every figure below, per file, plus the int8/float latency ratio and the
                        early-exit cascade's MAC saving at its chosen threshold;
  device_table.md       one Markdown row per file: size, accuracy, latency, TFLite Micro arena;
  early_exit.json       the cascade's threshold sweep (`export.cascade.sweep`);
  early_exit.png        accuracy against mean MACs and mean latency over the sweep;
  litert_benchmark/     the `litert-benchmark` tool's JSON result and log for every file.

Per file: LiteRT latency (median and p90 at 1 and 2 threads; XNNPACK, what phones run) and top-1 on
`--benchmark_images` test images preprocessed with the evaluation transform at the model's
resolution (every exit of a multi-output file). Every int8 file and segment also runs once under
TFLite Micro in a child process (`export.tflm_runner`): the smallest arena that works (or
`--tflm_arena_bytes`, where too small is an error), and its outputs against LiteRT's reference
kernels on the same int8 input, in quantization steps (TFLite Micro's kernels mirror the reference
ones, not XNNPACK, so that is the comparison that should agree to within one step). Segment k's
input is what a device chaining the segments feeds it: segment k-1's int8 feature output for a real
test image, requantized when the two were calibrated differently (`export.cascade`).

The chosen early-exit threshold is written into the export's manifest, since that is what a device
reads. TFLite Micro runs first so that a too-small `--tflm_arena_bytes` fails before the slow
measurements; everything is written into a temporary sibling folder renamed to `benchmark/` at the
end, so an error leaves the previous `benchmark/` (or none) and no partial files.
"""

import dataclasses
import json
import os
import shutil
import time
from typing import List, Optional

import numpy as np

from export import atomic_write
from ofav2_tf import errors
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common

EXPORT_DIR = 'export'
BENCHMARK_DIR = 'benchmark'
TOOL_DIR = 'litert_benchmark'
THREADS = (1, 2)
FORMAT = 'ofav2-benchmark'
VERSION = 1
_IMAGE_BATCH = 250


@dataclasses.dataclass
class _File:
  """One .tflite file to measure.

  Attributes:
    key: Its name in benchmark.json ('float_tflite', 'int8_tflite', 'qat_int8_tflite',
      'multi_exit_tflite', 'segment1_exit1', ...).
    path: Absolute path.
    rel: Path relative to the export folder.
    segment: The manifest entry of a segment file, else None.
    position: The segment's position in the chain.
  """
  key: str
  path: str
  rel: str
  segment: object = None
  position: int = -1


def _load_summary(export_dir: str, run_dir: str) -> dict:
  from export import exporter  # pylint: disable=g-import-not-at-top
  path = os.path.join(export_dir, exporter.SUMMARY_NAME)
  if not os.path.isfile(path):
    what = 'no export folder' if not os.path.isdir(export_dir) else f'no {exporter.SUMMARY_NAME}'
    raise errors.ConfigError(f'run {run_dir} has {what} ({export_dir}); run --mode=export first '
                             f'(--mode=export --run_dir={run_dir})')
  with open(path, encoding='utf-8') as f:
    try:
      summary = json.load(f)
    except json.JSONDecodeError as e:
      raise errors.ConfigError(f'{path} is not valid JSON ({e}); run --mode=export again') \
          from None
  if not isinstance(summary, dict) or summary.get('format') != exporter.SUMMARY_FORMAT:
    raise errors.ConfigError(f'{path} is not an export summary (format '
                             f'{exporter.SUMMARY_FORMAT!r} expected); run --mode=export again')
  return summary


def _check_source(summary: dict, config, export_dir: str) -> None:
  """Refuses an export of another network: its accuracy on this run's data would mean nothing."""
  source = summary.get('source') or {}
  model = summary['model']
  if source and (source.get('variant'), source.get('num_classes')) != (config.variant,
                                                                       config.num_classes):
    raise errors.ConfigError(
        f'{export_dir} holds an export of {source.get("variant")} with '
        f'{source.get("num_classes")} classes, but this run is {config.variant} with '
        f'{config.num_classes} classes; run --mode=export again for this run')
  shape = model.get('input_shape')
  if not (isinstance(shape, list) and len(shape) == 4 and shape[1] == shape[2] and shape[3] == 3):
    raise errors.ConfigError(f'{export_dir}: export summary gives input shape {shape}; expected '
                             '[1, r, r, 3]; run --mode=export again')


def _files(summary: dict, export_dir: str):
  """(files to measure, manifest path or None, why there is no cascade or None)."""
  from export import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  entries = summary.get('files', {})
  files = []
  for key in ('float_tflite', 'int8_tflite', 'qat_int8_tflite'):
    if key in entries:
      files.append(_File(key, os.path.join(export_dir, entries[key]['path']), entries[key]['path']))
  if not any(f.key == 'int8_tflite' for f in files):
    raise errors.ConfigError(f'{export_dir} has no int8 file (export_summary.json lists '
                             f'{sorted(entries)}); run --mode=export again')
  early = entries.get('early_exit')
  manifest_path, no_cascade = None, None
  if not early:
    no_cascade = 'the export has no early-exit segments (single-exit variant)'
  elif 'manifest' not in early:
    no_cascade = early.get('skipped', 'the export summary lists no early-exit manifest')
  else:
    manifest_path = os.path.join(export_dir, early['manifest'])
    multi = early.get('multi_output')
    if multi and all(f.rel != multi for f in files):
      files.append(_File('multi_exit_tflite', os.path.join(export_dir, multi), multi))
    manifest = manifest_lib.Manifest.load(manifest_path)
    directory = os.path.dirname(manifest_path)
    for position, segment in enumerate(manifest.segments):
      path = os.path.join(directory, segment.file)
      files.append(_File(os.path.splitext(segment.file)[0], path,
                         os.path.relpath(path, export_dir), segment, position))
  missing = [f.rel for f in files if not os.path.isfile(f.path)]
  if missing:
    raise errors.ConfigError(f'{export_dir} is incomplete: {", ".join(missing)} missing; run '
                             '--mode=export again')
  return files, manifest_path, no_cascade


def _test_images(splits, resolution: int, count: int):
  """`count` test images (fewer if the split is smaller) with the evaluation transform."""
  from ofav2_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  batches = pipeline.eval_batches(splits, _IMAGE_BATCH, resolution, split='test', images=count)
  images, labels = [], []
  for x, y in batches:
    images.append(x.numpy())
    labels.append(y.numpy())
  if not images:
    raise errors.DataError(f'the test split of {splits.name} is empty; the benchmark needs '
                           'labelled test images')
  return (np.concatenate(images)[:count].astype(np.float32),
          np.concatenate(labels)[:count].astype(np.int64))


def _exit_number(name: str) -> Optional[int]:
  return int(name[4:]) if name.startswith('exit') and name[4:].isdigit() else None


def _accuracy(path: str, images, labels) -> dict:
  """Top-1 of every output of a file, run image by image (batch 1) as exported."""
  from export import litert_runner  # pylint: disable=g-import-not-at-top
  runner = litert_runner.LiteRTModel(path, num_threads=2)
  names = list(runner.output_names)
  hits = np.zeros(len(names))
  for image, label in zip(images, labels):
    outputs = runner.run(image[np.newaxis])
    hits += [int(np.argmax(outputs[n]) == label) for n in names]
  # Exit order, not the file's output order (the converter may reorder outputs).
  order = sorted(range(len(names)), key=lambda i: (_exit_number(names[i]) is None,
                                                   _exit_number(names[i]) or 0, i))
  per_output = {names[i]: float(hits[i] / len(labels)) for i in order}
  # The sub-network's answer is its last exit's (the largest exit number, else the last output).
  numbered = [(_exit_number(n), n) for n in names if _exit_number(n) is not None]
  final = max(numbered)[1] if numbered else names[-1]
  result = {'accuracy': per_output[final], 'output': final, 'images': int(len(labels))}
  if len(names) > 1:
    result['exit_accuracy'] = per_output
  return result


def _chain_inputs(files: List[_File], image) -> dict:
  """Each segment's int8 input for one image, chained through LiteRT's reference kernels.

  Returns:
    Segment key -> (int8 input, LiteRT reference outputs on it).
  """
  from export import litert_runner  # pylint: disable=g-import-not-at-top
  from export import quantization  # pylint: disable=g-import-not-at-top
  result = {}
  previous = None  # (manifest entry, raw outputs by name)
  for f in sorted((f for f in files if f.segment is not None), key=lambda f: f.position):
    dest = f.segment.inputs[0]
    if previous is None:
      value = quantization.quantize(image[np.newaxis], dest.scale, dest.zero_point,
                                    np.dtype(dest.dtype))
    else:
      entry, raw = previous
      out = entry.output(entry.features)
      value = raw[entry.features]
      if (out.scale, out.zero_point) != (dest.scale, dest.zero_point):
        value = quantization.quantize(quantization.dequantize(value, out.scale, out.zero_point),
                                      dest.scale, dest.zero_point, np.dtype(dest.dtype))
    reference = litert_runner.LiteRTModel(f.path, reference_kernels=True)
    outputs = reference.run_raw(value)
    result[f.key] = (value, outputs)
    previous = (f.segment, dict(zip(reference.output_names, outputs)))
  return result


def _tflm(f: _File, image, chained: dict, arena_bytes: int) -> dict:
  """Runs one int8 file under TFLite Micro; its arena and its match with LiteRT's reference."""
  from export import litert_runner  # pylint: disable=g-import-not-at-top
  from export import tflite_inspect  # pylint: disable=g-import-not-at-top
  from export import tflm_runner  # pylint: disable=g-import-not-at-top
  from export.errors import ArenaTooSmallError  # pylint: disable=g-import-not-at-top
  from export.errors import ExportError  # pylint: disable=g-import-not-at-top
  info = tflite_inspect.inspect_tflite(f.path)
  try:
    tflm_runner.check_runnable(info)
  except ExportError as e:
    return {'skipped': str(e)}
  if f.segment is not None:
    inputs, expected = chained[f.key]
  else:
    reference = litert_runner.LiteRTModel(f.path, reference_kernels=True)
    inputs = reference.quantize_inputs(image[np.newaxis])
    expected = reference.run_raw(inputs)
  try:
    if arena_bytes:
      result = tflm_runner.run_tflm(f.path, inputs, arena_size=arena_bytes)
    else:
      result = tflm_runner.run_tflm(f.path, inputs, find_min_arena=True)
  except ArenaTooSmallError as e:
    raise ArenaTooSmallError(f'--tflm_arena_bytes={arena_bytes} is too small: {e}; give a '
                             'larger arena, or 0 to find the smallest that works') from None
  diff = max(int(np.max(np.abs(got.astype(np.int32) - want.astype(np.int32))))
             for got, want in zip(result.outputs, expected))
  return {'arena_bytes': int(arena_bytes or result.arena_min_bytes),
          'arena_found': not arena_bytes, 'arena_used_bytes': int(result.arena_used_bytes),
          'max_step_diff_vs_litert': diff, 'within_one_step': diff <= 1,
          'compared_on': 'one test image (segments: chained from it), LiteRT reference kernels'}


def _latency(path: str, runs: int) -> dict:
  from export import litert_runner  # pylint: disable=g-import-not-at-top
  stats = litert_runner.measure_latency(path, THREADS, runs=runs)
  return {str(t): {'median_ms': s.median_ms, 'p90_ms': s.p90_ms, 'mean_ms': s.mean_ms,
                   'min_ms': s.min_ms, 'runs': s.runs, 'warmup': s.warmup}
          for t, s in stats.items()}


def _tool(f: _File, out_dir: str, runs: int) -> dict:
  from export import litert_runner  # pylint: disable=g-import-not-at-top
  path = os.path.join(out_dir, TOOL_DIR, f.key + '.json')
  result = litert_runner.run_benchmark_tool(f.path, path, num_threads=1, num_runs=runs)
  return {'json': os.path.join(TOOL_DIR, f.key + '.json'), 'num_threads': 1,
          **{k: result['latency'][k] for k in ('median_ms', 'avg_ms', 'p5_ms', 'p95_ms', 'init_ms')
             if k in result.get('latency', {})}}


def _plot(sweep, path: str, title: str) -> None:
  """Accuracy against mean MACs and mean latency over the thresholds, the choice marked."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg', force=False)
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = sweep.rows
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  panels = ((axes[0], 'mean_macs', 'mean MACs per image'),
            (axes[1], 'mean_latency_ms', 'mean LiteRT latency per image (ms, 1 thread)'))
  for ax, field, label in panels:
    xs = [getattr(r, field) for r in rows]
    points = ax.scatter(xs, [r.accuracy for r in rows], c=[r.threshold for r in rows],
                        cmap='viridis', s=14, zorder=3)
    ax.plot(xs, [r.accuracy for r in rows], '-', color='tab:gray', lw=0.8, zorder=2)
    base = sweep.baseline
    ax.scatter([getattr(base, field)], [base.accuracy], marker='s', s=60, color='tab:blue',
               zorder=4, label='every segment (no early exit)')
    chosen = sweep.chosen
    text = 'baseline' if chosen.threshold is None else f'threshold {chosen.threshold:.2f}'
    ax.scatter([getattr(chosen, field)], [chosen.accuracy], marker='*', s=220, color='tab:red',
               zorder=5, label=f'chosen: {text}, MAC saving {100 * chosen.mac_saving:.1f}%')
    ax.set_xlabel(label)
    ax.set_ylabel('top-1')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7, loc='best')
  fig.colorbar(points, ax=axes[1], label='confidence threshold')
  fig.suptitle(title)
  fig.tight_layout()
  with atomic_write.atomic_path(path, suffix='.png') as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)


def _cell(value, fmt='{:.3f}'):
  return '-' if value is None else fmt.format(value)


def _device_table(report: dict) -> str:
  """The Markdown table of device_table.md."""
  # No heading: the run report embeds this file under its own.
  arena = 'as given' if report['tflm_arena_bytes_flag'] else 'the smallest that works'
  r = report['resolution']
  lines = [f'Device checks of {report["model"]["name"]} at {r}x{r}: top-1 on {report["images"]} '
           f'test images; LiteRT latency over {report["runs"]} runs at 1 and 2 threads (1T, 2T); '
           f'TFLite Micro arena {arena}.', '',
           '| file | size (KiB) | top-1 | median 1T (ms) | p90 1T (ms) | median 2T (ms) | '
           'p90 2T (ms) | TFLM arena (KiB) |',
           '|---|---:|---|---:|---:|---:|---:|---:|']
  for entry in report['files'].values():
    acc = entry.get('accuracy')
    if acc is None:
      top1 = '-'
    elif 'exit_accuracy' in acc:
      top1 = ', '.join(f'{n} {v:.3f}' for n, v in acc['exit_accuracy'].items())
    else:
      top1 = f'{acc["accuracy"]:.3f}'
    if entry.get('chain_exit_accuracy') is not None:
      top1 = f'exit{entry["exit"]} {entry["chain_exit_accuracy"]:.3f} (chain)'
    lat = entry['latency']
    tflm = entry.get('tflm')
    arena = ('-' if tflm is None else 'n/a' if 'skipped' in tflm
             else f'{tflm["arena_bytes"] / 1024:.1f}')
    lines.append(f'| {entry["path"]} | {entry["size_bytes"] / 1024:.1f} | {top1} | '
                 f'{_cell(lat["1"]["median_ms"])} | {_cell(lat["1"]["p90_ms"])} | '
                 f'{_cell(lat["2"]["median_ms"])} | {_cell(lat["2"]["p90_ms"])} | {arena} |')
  lines.append('')
  ratio = report.get('int8_vs_float_latency_ratio_1thread')
  if ratio is not None:
    lines.append(f'int8 vs float latency (1 thread, float median / int8 median): {ratio:.2f}x')
  early = report.get('early_exit')
  if early and 'mac_saving' in early:
    threshold = 'none (always run every segment)' if early['threshold'] is None else \
        f'{early["threshold"]:.2f}'
    lines.append(f'Early-exit cascade: threshold {threshold}, top-1 {early["accuracy"]:.3f} '
                 f'(every segment: {early["baseline_accuracy"]:.3f}), MAC saving '
                 f'{100 * early["mac_saving"]:.1f}%, mean latency '
                 f'{early["mean_latency_ms"]:.3f} ms (every segment: '
                 f'{early["baseline_latency_ms"]:.3f} ms)')
  return '\n'.join(lines) + '\n'


def _publish(tmp: str, out_dir: str) -> None:
  """Renames the finished temporary folder to `out_dir`, replacing an old one whole."""
  old = None
  if os.path.exists(out_dir):
    old = atomic_write.temp_dir(os.path.dirname(out_dir), BENCHMARK_DIR, 'old')
    os.rmdir(old)
    os.rename(out_dir, old)
  os.rename(tmp, out_dir)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


@MODES.register('benchmark')
def benchmark(flag_values):
  folder = common.open_run_folder(flag_values.run_dir)
  config = folder.load_config()
  export_dir = folder.file(EXPORT_DIR)
  summary = _load_summary(export_dir, folder.path)
  _check_source(summary, config, export_dir)
  files, manifest_path, no_cascade = _files(summary, export_dir)
  resolution = int(summary['model']['input_shape'][1])
  splits = common.load_dataset(config)
  images, labels = _test_images(splits, resolution, flag_values.benchmark_images)
  folder.log(f'Benchmarking {export_dir}: {len(files)} .tflite files, {len(images)} test images '
             f'at {resolution}x{resolution}, {flag_values.benchmark_runs} timed runs per file and '
             f'thread count')
  out_dir = folder.file(BENCHMARK_DIR)
  for path in atomic_write.remove_stale(folder.path, BENCHMARK_DIR):
    folder.log(f'Removed {path}, left by an interrupted benchmark')
  tmp = atomic_write.temp_dir(folder.path, BENCHMARK_DIR)
  try:
    report, sweep = _measure(flag_values, folder, summary, files, manifest_path, no_cascade,
                             images, labels, resolution, tmp)
    atomic_write.write_text(os.path.join(tmp, 'benchmark.json'),
                            json.dumps(report, indent=2) + '\n')
    atomic_write.write_text(os.path.join(tmp, 'device_table.md'), _device_table(report))
    if sweep is not None:  # Last before publishing: the only write outside benchmark/.
      from export import cascade as cascade_lib  # pylint: disable=g-import-not-at-top
      cascade_lib.write_thresholds(manifest_path, sweep)
    _publish(tmp, out_dir)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  _print_summary(folder, report, out_dir)
  return report


def _measure(flag_values, folder, summary, files, manifest_path, no_cascade, images, labels,
             resolution, tmp):
  """Every measurement, files written into `tmp`; returns (benchmark.json's content, sweep)."""
  from export import tflite_inspect  # pylint: disable=g-import-not-at-top
  from ofav2_tf import latency_table  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  runs = flag_values.benchmark_runs
  entries = {}
  for f in files:
    info = tflite_inspect.inspect_tflite(f.path)
    entries[f.key] = {'path': f.rel, 'size_bytes': int(info.size_bytes),
                      'input_dtype': info.inputs[0].dtype,
                      'outputs': list(info.output_names)}
    if f.segment is not None:
      entries[f.key].update(exit=f.segment.exit, segment=f.position + 1,
                            macs=int(f.segment.macs),
                            cumulative_macs=int(f.segment.cumulative_macs))

  # TFLite Micro first: a too-small --tflm_arena_bytes fails before the slow measurements.
  int8 = [f for f in files if entries[f.key]['input_dtype'] == 'int8']
  chained = _chain_inputs(files, images[0])
  for i, f in enumerate(int8, 1):
    folder.log(f'[TFLite Micro {i}/{len(int8)}] {f.rel}')
    entries[f.key]['tflm'] = result = _tflm(f, images[0], chained, flag_values.tflm_arena_bytes)
    if 'skipped' in result:
      folder.log(f'  not runnable under TFLite Micro: {result["skipped"]}')
    else:
      folder.log(f'  arena {result["arena_bytes"]} bytes, max difference from LiteRT '
                 f'{result["max_step_diff_vs_litert"]} quantization step(s)')
      if not result['within_one_step']:
        folder.log(f'  warning: {f.rel} differs from LiteRT by more than one quantization step '
                   'under TFLite Micro')

  for i, f in enumerate(files, 1):
    what = 'latency' if f.segment is not None else f'latency, top-1 on {len(images)} images'
    folder.log(f'[LiteRT {i}/{len(files)}] {f.rel}: {what}, litert-benchmark tool')
    entry = entries[f.key]
    entry['latency'] = _latency(f.path, runs)
    if f.segment is None:
      entry['accuracy'] = _accuracy(f.path, images, labels)
    entry['litert_benchmark'] = _tool(f, tmp, runs)
    line = ', '.join(f'{t} thread(s) median {v["median_ms"]:.3f} ms (p90 {v["p90_ms"]:.3f})'
                     for t, v in entry['latency'].items())
    if 'accuracy' in entry:
      line = f'top-1 {entry["accuracy"]["accuracy"]:.4f}; ' + line
    folder.log(f'  {line}')

  machine = latency_table.machine_description(1)
  machine.pop('threads', None)
  report = {'format': FORMAT, 'version': VERSION, 'export': os.path.relpath(
      folder.file(EXPORT_DIR), folder.path), 'model': summary['model'],
            'source': summary.get('source'), 'resolution': resolution, 'split': 'test',
            'images': int(len(images)), 'runs': int(runs), 'threads': list(THREADS),
            'tflm_arena_bytes_flag': int(flag_values.tflm_arena_bytes), 'machine': machine,
            'files': entries}
  float_entry, int8_entry = entries.get('float_tflite'), entries['int8_tflite']
  report['int8_vs_float_latency_ratio_1thread'] = (
      float_entry['latency']['1']['median_ms'] / int8_entry['latency']['1']['median_ms']
      if float_entry else None)
  if 'qat_int8_tflite' in entries and float_entry:
    report['qat_int8_vs_float_latency_ratio_1thread'] = (
        float_entry['latency']['1']['median_ms'] /
        entries['qat_int8_tflite']['latency']['1']['median_ms'])
  arenas = [e['tflm']['arena_bytes'] for e in entries.values()
            if 'arena_bytes' in e.get('tflm', {})]
  report['tflm_max_arena_bytes'] = max(arenas) if arenas else None
  report['tflm_max_step_diff_vs_litert'] = max(
      (e['tflm']['max_step_diff_vs_litert'] for e in entries.values()
       if 'max_step_diff_vs_litert' in e.get('tflm', {})), default=None)

  sweep = None
  if manifest_path is None:
    report['early_exit'] = {'skipped': no_cascade}
    report['early_exit_mac_saving'] = None
  else:
    report['early_exit'], sweep = _cascade(folder, files, entries, manifest_path, images, labels,
                                           tmp)
    report['early_exit_mac_saving'] = sweep.chosen.mac_saving
  report['seconds'] = time.perf_counter() - start
  return report, sweep


def _cascade(folder, files, entries, manifest_path, images, labels, tmp):
  """The threshold sweep of the segment chain; early_exit.json and early_exit.png in `tmp`."""
  from export import cascade as cascade_lib  # pylint: disable=g-import-not-at-top
  folder.log(f'Early-exit cascade: threshold sweep on {len(images)} test images')
  segments = [f for f in files if f.segment is not None]
  cascade = cascade_lib.Cascade(manifest_path, num_threads=1)
  # Segment latencies were just measured (1 thread, like the cascade's interpreters).
  latency = {f.segment.exit: entries[f.key]['latency']['1']['median_ms'] for f in segments}
  sweep = cascade_lib.sweep(cascade, images, labels, segment_latency_ms=latency)
  for f in segments:
    entries[f.key]['chain_exit_accuracy'] = sweep.exit_accuracy[f.segment.exit]
  data = sweep.to_dict()
  data['manifest'] = os.path.relpath(manifest_path, folder.path)
  atomic_write.write_text(os.path.join(tmp, 'early_exit.json'), json.dumps(data, indent=2) + '\n')
  _plot(sweep, os.path.join(tmp, 'early_exit.png'),
        f'Early-exit cascade ({len(images)} test images, exits {cascade.exits})')
  summary = sweep.summary()
  summary.update(threshold_written=True, json='early_exit.json', plot='early_exit.png',
                 exits=list(cascade.exits), manifest=data['manifest'])
  return summary, sweep


def _print_summary(folder, report: dict, out_dir: str) -> None:
  folder.log('Benchmark summary:')
  for entry in report['files'].values():
    parts = [f'{entry["size_bytes"] / 1024:.1f} KiB']
    if 'accuracy' in entry:
      parts.append(f'top-1 {entry["accuracy"]["accuracy"]:.4f}')
    elif 'chain_exit_accuracy' in entry:
      parts.append(f'exit {entry["exit"]} top-1 {entry["chain_exit_accuracy"]:.4f} (chain)')
    parts.append(f'{entry["latency"]["1"]["median_ms"]:.3f} ms (1 thread)')
    tflm = entry.get('tflm')
    if tflm and 'arena_bytes' in tflm:
      parts.append(f'TFLM arena {tflm["arena_bytes"]} B')
    folder.log(f'  {entry["path"]}: {", ".join(parts)}')
  ratio = report.get('int8_vs_float_latency_ratio_1thread')
  if ratio is not None:
    folder.log(f'  int8 is {ratio:.2f}x the speed of float (1 thread, medians)')
  early = report['early_exit']
  if 'mac_saving' in early:
    threshold = 'none' if early['threshold'] is None else f'{early["threshold"]:.2f}'
    folder.log(f'  early exit: threshold {threshold} (written to {early["manifest"]}), top-1 '
               f'{early["accuracy"]:.4f} vs {early["baseline_accuracy"]:.4f} without, MAC saving '
               f'{100 * early["mac_saving"]:.1f}%')
  else:
    folder.log(f'  early exit: {early["skipped"]}')
  folder.log(f'  -> {out_dir} (benchmark.json, device_table.md)')
