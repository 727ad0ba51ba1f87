"""Per-phase results of a run: the table printed at the end, `metrics.json` and `phases.png`.

The plot shows, per phase, the best, mean and worst uniform sub-network (the paper's protocol) and,
for early-exit variants, the accuracy of every exit of the maximal network, so a reader sees at a
glance where accuracy was lost or recovered along the schedule.
"""

import os
from typing import List

from ofav2_tf import run_folder as run_folder_lib


def table(results: List[dict], early_exits: bool) -> str:
  """A fixed-width table of the phases (what the demo prints)."""
  header = f'{"phase":9s} {"steps":>6s} {"sec":>6s} {"val(max)":>9s} {"best":>7s} {"mean":>7s} ' \
           f'{"min":>7s}  best uniform sub-network'
  if early_exits:
    header += '  | exits 1-5 of the max net'
  lines = [header, '-' * len(header)]
  for r in results:
    line = (f'{r["phase"]:9s} {r["steps"]:6d} {r["seconds"]:6.0f} {r["best_validation"]:9.4f} '
            f'{r["uniform_best"]:7.4f} {r["uniform_mean"]:7.4f} {r["uniform_min"]:7.4f}  '
            f'{r["best_uniform"]["label"]}')
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
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = [r['phase'] for r in results]
  x = range(len(results))
  fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(results) + 2), 4))
  ax.fill_between(x, [r['uniform_min'] for r in results], [r['uniform_best'] for r in results],
                  alpha=0.2, label='uniform sub-networks (min-best)')
  ax.plot(x, [r['uniform_best'] for r in results], 'o-', label='best uniform')
  ax.plot(x, [r['uniform_mean'] for r in results], 's--', label='mean uniform')
  if results and results[0].get('exit_accuracy'):
    for k in sorted(results[0]['exit_accuracy'], key=int):
      ax.plot(x, [r.get('exit_accuracy', {}).get(k) for r in results], ':', alpha=0.7,
              label=f'max net, exit {k}')
  ax.set_xticks(list(x))
  ax.set_xticklabels(names, rotation=30)
  ax.set_ylabel('top-1')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
