"""The per-phase table, phases.png and the report's training section, for new and old results."""
# bazel: size=small

import json
import os
import tempfile

from absl.testing import absltest

from ofav2_tf import phase_report
from ofav2_tf import report


def _row(label, accuracy, macs):
  return {'config': label.replace(' ', '-'), 'label': label, 'accuracy': accuracy, 'macs': macs,
          'params': 1000, 'images': 500}


def _result(name, rows, max_row=True, exits=None):
  best = max(rows, key=lambda r: r['accuracy'])
  result = {'phase': name, 'steps': 4, 'seconds': 25.4, 'best_validation': 0.86, 'uniform': rows,
            'best_uniform': best, 'uniform_best': best['accuracy'],
            'uniform_mean': sum(r['accuracy'] for r in rows) / len(rows),
            'uniform_min': min(r['accuracy'] for r in rows)}
  if max_row:
    result['uniform_max'] = max(rows, key=lambda r: r['macs'])
  if exits:
    result['exit_accuracy'] = exits
  return result


ROWS = [_row('k3 e3 d2 x1 r40', 0.31, 100), _row('k5 e4 d3 x3 r40', 0.74, 900),
        _row('k7 e6 d4 x4 r40', 0.893, 1800), _row('k7 e6 d4 x5 r40', 0.871, 2000)]
EXITS = {'1': 0.81, '2': 0.87, '3': 0.89, '4': 0.893, '5': 0.871}


class PhaseReportTest(absltest.TestCase):

  def test_table_columns(self):
    text = phase_report.table([_result('expand2', ROWS, exits=EXITS)], early_exits=True)
    header, rule, line = text.splitlines()
    self.assertEqual(header.split()[:10], ['phase', 'steps', 'sec', 'val', 'max-net', 'best',
                                           'mean', 'min', 'n', '|'])
    self.assertLen(rule, len(header))
    cells = line.split()
    # max-net is the max network's row, not the best one: here exit 4 beats exit 5.
    self.assertEqual(cells[:9], ['expand2', '4', '25', '0.8600', '0.8710', '0.8930', '0.7035',
                                 '0.3100', '4'])
    self.assertEqual(line.split('|')[1].split(), ['0.810', '0.870', '0.890', '0.893', '0.871'])

  def test_results_without_uniform_max_still_read(self):
    # metrics.json written before uniform_max: the max network is the row with most MACs.
    old = _result('kernel', ROWS[::-1], max_row=False)
    self.assertEqual(phase_report.max_network(old), ROWS[-1])
    self.assertIn(' 0.8710 ', phase_report.table([old], early_exits=False))
    no_rows = dict(old, uniform=[])
    self.assertIsNone(phase_report.max_network(no_rows))
    self.assertIn('       - ', phase_report.table([no_rows], early_exits=False))

    root = tempfile.mkdtemp(dir=self.create_tempdir().full_path)
    phases = [old, _result('expand2', ROWS, exits=EXITS)]
    with open(os.path.join(root, 'metrics.json'), 'w') as f:
      json.dump({'variant': 'EE_D', 'teacher': 'pet', 'dataset': 'fashion_mnist',
                 'phases': phases}, f)
    phase_report.plot(phases, os.path.join(root, 'phases.png'), 'title')
    self.assertGreater(os.path.getsize(os.path.join(root, 'phases.png')), 1000)
    text = report.build(root)
    self.assertIn('## Training', text)
    self.assertIn(phase_report.table(phases, early_exits=True), text)
    self.assertIn('![accuracy per phase](phases.png)', text)
    self.assertNotIn('Random sub-networks', text)


if __name__ == '__main__':
  absltest.main()
