"""The run report: one Markdown file gathering what every mode wrote into a run folder.

Each section reads its mode's own JSON files and links its plots, and is left out (with a line
saying which command would produce it) when that mode has not run, so the report of a run that was
only trained is still true. Nothing here recomputes a figure: the report is a view of the files,
and a reader can trace every number back to the JSON it came from.
"""

import datetime
import json
import os
from typing import List, Optional

from export import atomic_write
from ofav2_tf import phase_report
from ofav2_tf import random_subnets

REPORT_FILE = 'report.md'


def _read(path: str) -> Optional[dict]:
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _pct(value) -> str:
  return '-' if value is None else f'{100 * float(value):.2f}%'


def _num(value, digits: int = 0) -> str:
  if value is None:
    return '-'
  return f'{float(value):,.{digits}f}'


def _image(lines: List[str], root: str, relative: str, caption: str) -> None:
  if os.path.isfile(os.path.join(root, relative)):
    lines.append(f'![{caption}]({relative})')
    lines.append('')


def _training(root: str) -> List[str]:
  lines = ['## Training (progressive shrinking)', '']
  metrics = _read(os.path.join(root, 'metrics.json'))
  if not metrics or not metrics.get('phases'):
    return lines + ['Not trained yet: `--mode=train`.', '']
  phases = metrics['phases']
  early_exits = any(p.get('exit_accuracy') for p in phases)
  lines += [f'{metrics["variant"]} with teacher `{metrics["teacher"]}` on {metrics["dataset"]}. '
            'After each phase, on the evaluation split (BN re-calibrated): the max network, and '
            'the best, mean and minimum over the `n` uniform sub-networks evaluated (the '
            'paper\'s protocol, a spread over every dimension the phase unlocked).', '',
            '```', phase_report.table(phases, early_exits), '```', '']
  _image(lines, root, 'phases.png', 'accuracy per phase')
  total = sum(p.get('seconds', 0) for p in phases)
  lines += [f'Training time: {total / 60:.1f} min over {len(phases)} phases.', '']
  return lines


def _random_subnets(root: str) -> List[str]:
  result = _read(os.path.join(root, random_subnets.RESULT_FILE))
  if not result or not result.get('summary'):
    return []
  s, meta = result['summary'], result.get('metadata', {})
  top = result['max_network']
  images = meta.get('images') or 'all'
  lines = ['## Random sub-networks', '',
           f'{s["count"]} random sub-networks of phase {meta.get("phase", "?")}\'s space with exit '
           f'>= {meta.get("min_exit", 1)} (seed {meta.get("seed", "?")}), each BN re-calibrated on '
           f'{meta.get("calibration_images", "?")} training images and scored on {images} '
           f'{meta.get("split", "test")} images (`{random_subnets.RESULT_FILE}`).', '',
           '| | top-1 | gap to the max network |', '|---|---|---|',
           f'| max network `{top["config"]}` | {_pct(s["max_network_accuracy"])} | |',
           f'| median | {_pct(s["median"])} | {_pct(s["median_gap"])} |',
           f'| worst `{s["worst_config"]}` | {_pct(s["worst"])} | {_pct(s["worst_gap"])} |',
           f'| best `{s["best_config"]}` | {_pct(s["best"])} | '
           f'{_pct(s["max_network_accuracy"] - s["best"])} |', '',
           '| exit | sub-networks | median | min | max | median gap |', '|---|---|---|---|---|---|']
  for k, e in sorted(s.get('per_exit', {}).items(), key=lambda item: int(item[0])):
    lines.append(f'| {k} | {e["count"]} | {_pct(e["median"])} | {_pct(e["min"])} | '
                 f'{_pct(e["max"])} | {_pct(e["median_gap"])} |')
  lines.append('')
  _image(lines, root, random_subnets.PLOT_FILE, 'random sub-networks: accuracy against MACs')
  return lines


def _latency(root: str) -> List[str]:
  check = _read(os.path.join(root, 'latency', 'latency_check.json'))
  if not check:
    return []
  lines = ['## Latency table', '']
  mare = check.get('mean_abs_relative_error')
  lines += [f'Latency lookup table measured with LiteRT on this machine '
            f'(`latency/latency_table.json`). On {len(check.get("configs", []))} random sub-networks '
            f'measured whole, the mean absolute relative error of the table\'s prediction is '
            f'{_pct(mare)}.', '']
  return lines


def _search(root: str) -> List[str]:
  lines = ['## Search', '']
  summary = _read(os.path.join(root, 'search', 'search_summary.json'))
  result = _read(os.path.join(root, 'search', 'pareto.json'))
  if not summary or not result:
    return lines + ['Not searched yet: `--mode=search`.', '']
  predictor = summary['predictor']
  chosen = predictor['kinds'][predictor['chosen']]
  budgets = ', '.join(f'{k} <= {_num(v)}' for k, v in result['budgets'].items()) or 'none'
  lines += [f'Objectives: accuracy (max) and {", ".join(result["objectives"])} (min); budgets: '
            f'{budgets}.', '',
            f'Accuracy predictor: `{predictor["chosen"]}` on {predictor["samples"]} sub-networks '
            f'measured on validation; held-out Kendall tau {chosen["kendall_tau"]:.3f}, MAE '
            f'{_pct(chosen["mae"])} ({chosen.get("folds", 1)}-fold cross-validation over '
            f'{chosen["holdout_size"]}).', '',
            f'NSGA-II: {summary["nsga_evaluations"]} networks in {summary["nsga_seconds"]:.1f} s; '
            f'{summary["front_size"]} on the Pareto front.', '']
  costs = list(dict.fromkeys(list(result['objectives']) + list(result['budgets'])))
  header = '| kind | sub-network | ' + ' | '.join(costs) + ' | predicted | validation | test |'
  lines += [header, '|' + '---|' * (len(costs) + 5)]
  rows = [c for c in result['front'] + result.get('uniform', []) + [result.get('baseline')]
          if c and c.get('measured_accuracy') is not None]
  for c in rows:
    lines.append(f'| {c["label"]} | `{c["config"]}` | '
                 + ' | '.join(_num(c['costs'].get(n), 3 if n == 'latency' else 0) for n in costs)
                 + f' | {_pct(c["predicted_accuracy"])} | {_pct(c["measured_accuracy"])} | '
                 f'{_pct(c.get("test_accuracy"))} |')
  lines.append('')
  _image(lines, root, 'search/pareto.png', 'Pareto front')
  return lines


def _export(root: str) -> List[str]:
  lines = ['## Export', '']
  summary = _read(os.path.join(root, 'export', 'export_summary.json'))
  if not summary:
    return lines + ['Not exported yet: `--mode=export`.', '']
  choice = summary.get('metadata', {}).get('choice', {})
  if choice.get('config'):
    lines += [f'Sub-network: `{choice["config"]}` ({choice.get("source", "")}).', '']
    if choice.get('costs'):
      lines += ['Costs: ' + ', '.join(f'{k} {_num(v)}' for k, v in choice['costs'].items()) +
                f'; validation {_pct(choice.get("measured_accuracy"))}, test '
                f'{_pct(choice.get("test_accuracy"))} (measured through the supernet).', '']
  lines += ['Files and checks are listed in `export/export_summary.json`.', '']
  files = summary.get('files', {})
  if files:
    lines += ['| file | bytes |', '|---|---|']
    for key, entry in files.items():
      if isinstance(entry, dict) and 'path' in entry:
        lines.append(f'| `{entry["path"]}` | {_num(entry.get("size_bytes"))} |')
    lines.append('')
  return lines


def _benchmark(root: str) -> List[str]:
  lines = ['## Device checks', '']
  bench = _read(os.path.join(root, 'benchmark', 'benchmark.json'))
  if not bench:
    return lines + ['Not benchmarked yet: `--mode=benchmark`.', '']
  table = os.path.join(root, 'benchmark', 'device_table.md')
  if os.path.isfile(table):
    with open(table, encoding='utf-8') as f:
      lines += [f.read().strip(), '']
  ratio = bench.get('int8_vs_float_latency_ratio_1thread')
  if ratio is not None:
    lines += [f'LiteRT latency at 1 thread, float median over int8 median: {ratio:.2f} '
              f'({"int8 faster" if ratio > 1 else "int8 not faster"} on this machine).', '']
  _image(lines, root, 'benchmark/early_exit.png', 'early-exit threshold sweep')
  return lines


def _stages(root: str) -> List[str]:
  stages = _read(os.path.join(root, 'stages.json'))
  if not stages:
    return []
  lines = ['## Time per stage (`--mode=all`)', '', '| stage | minutes |', '|---|---|']
  lines += [f'| {k} | {v / 60:.1f} |' for k, v in stages['stages'].items()]
  return lines + [f'| total | {stages["total_seconds"] / 60:.1f} |', '']


def build(run_dir: str) -> str:
  """The Markdown text of the report of `run_dir`."""
  config = _read(os.path.join(run_dir, 'config.json')) or {}
  lines = [f'# OFAv2 run report: {os.path.basename(os.path.abspath(run_dir))}', '',
           f'Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC from the '
           'files of this run folder.', '']
  if config:
    lines += [f'Variant {config.get("variant")}, width {config.get("width_multiplier")}, dataset '
              f'{config.get("dataset")}, resolutions {config.get("resolutions")}, teacher '
              f'{config.get("teacher")}, seed {config.get("seed")}.', '']
  for section in (_training, _random_subnets, _latency, _search, _export, _benchmark, _stages):
    lines += section(run_dir)
  return '\n'.join(lines).rstrip() + '\n'


def write(run_dir: str) -> str:
  """Writes `<run_dir>/report.md` atomically and returns its path."""
  return atomic_write.write_text(os.path.join(run_dir, REPORT_FILE), build(run_dir))
