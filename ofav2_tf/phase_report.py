"""Per-phase results of a run: the table printed at the end, `metrics.json` and `phases.png`.

Every phase shows what it did to the small networks, not only to the max network: the table and the
plot give, per phase, the max network's accuracy and the best, mean and worst over the spread of the
uniform grid the phase evaluated (`phase_eval.thin_grid`) and, for early-exit variants, every exit
of the max network, so a reader sees at a glance where accuracy was lost or recovered along the
schedule. Results written before `uniform_max` existed still read: the max network is then the row
with the most MACs, as it always is.
"""

import os
from typing import List, Optional

from ofav2_tf import run_folder as run_folder_lib


def max_network(result: dict) -> Optional[dict]:
  """The max network's row of a phase result (older results: the uniform row with most MACs)."""
  if result.get('uniform_max'):
    return result['uniform_max']
  rows = [r for r in result.get('uniform', ()) if r.get('macs') is not None]
  return max(rows, key=lambda r: r['macs']) if rows else None


def _accuracy(row: Optional[dict]) -> Optional[float]:
  return None if row is None else row.get('accuracy')


def _cell(value: Optional[float], width: int) -> str:
  return f'{"-":>{width}s}' if value is None else f'{value:{width}.4f}'


def table(results: List[dict], early_exits: bool) -> str:
  """A fixed-width table of the phases (what the demo prints).

  Columns: steps and seconds of the phase, the best checkpoint's validation score (mean top-1 of
  the phase's max and min networks, what picked the checkpoint), then on the evaluation split the max network, the best, mean and worst of the `n`
  uniform sub-networks evaluated, and for early-exit variants exits 1-5 of the max network.
  """
  header = (f'{"phase":9s} {"steps":>6s} {"sec":>6s} {"val":>9s} {"max-net":>8s} '
            f'{"best":>7s} {"mean":>7s} {"min":>7s} {"n":>3s}')
  if early_exits:
    header += '  | exits 1-5 of the max net'
  lines = [header, '-' * len(header)]
  for r in results:
    line = (f'{r["phase"]:9s} {r["steps"]:6d} {r["seconds"]:6.0f} {r["best_validation"]:9.4f} '
            f'{_cell(_accuracy(max_network(r)), 8)} {r["uniform_best"]:7.4f} '
            f'{r["uniform_mean"]:7.4f} {r["uniform_min"]:7.4f} {len(r.get("uniform", ())):3d}')
    if early_exits and r.get('exit_accuracy'):
      line += '  | ' + ' '.join(f'{r["exit_accuracy"][k]:.3f}'
                                for k in sorted(r['exit_accuracy'], key=int))
    lines.append(line)
  return '\n'.join(lines)


def write(folder: run_folder_lib.RunFolder, results: List[dict], config) -> None:
  """Rewrites metrics.json and phases.png from the results so far."""
  run_folder_lib.write_json_atomic(folder.file('metrics.json'), {
      'variant': config.variant, 'teacher': config.teacher, 'dataset': config.dataset,
      'phases': results})
  plot(results, folder.file('phases.png'), f'{config.variant} ({config.teacher}) on '
       f'{config.dataset}')


def plot(results: List[dict], path: str, title: str) -> None:
  """Per phase: the band from worst to best uniform sub-network, its mean, the max network."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = [f'{r["phase"]}\n(n={len(r.get("uniform", ()))})' for r in results]
  x = list(range(len(results)))
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(results) + 2), 4.5))
  ax.fill_between(x, [r['uniform_min'] for r in results], [r['uniform_best'] for r in results],
                  alpha=0.2, color='tab:blue', label='uniform sub-networks, min to max')
  ax.plot(x, [r['uniform_best'] for r in results], '^-', color='tab:blue', label='best uniform')
  ax.plot(x, [r['uniform_mean'] for r in results], 's--', color='tab:blue', label='mean uniform')
  ax.plot(x, [r['uniform_min'] for r in results], 'v-', color='tab:blue', alpha=0.6,
          label='worst uniform')
  ax.plot(x, [_accuracy(max_network(r)) for r in results], 'o-', color='tab:red',
          label='max network')
  if any(r.get('exit_accuracy') for r in results):
    exits = sorted({k for r in results for k in r.get('exit_accuracy') or {}}, key=int)
    for k in exits:
      ax.plot(x, [(r.get('exit_accuracy') or {}).get(k) for r in results], ':', alpha=0.6,
              label=f'max net, exit {k}')
  ax.set_xticks(x)
  ax.set_xticklabels(names, rotation=30, fontsize=8)
  ax.set_ylabel('top-1')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='lower left', ncol=2)
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
