"""`--mode=search` and `--mode=report` on a tiny trained run: files, budgets, caching, bad input."""
# bazel: size=enormous tags=slow

import json
import os
import shutil
import tempfile

from absl.testing import absltest

from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf.modes import common
from ofav2_tf.search import objectives
from ofav2_tf.search import pareto
from tests import run_fixture

_SEARCH_FLAGS = ('--predictor_samples=12', '--population=12', '--generations=4',
                 '--baseline_generations=3', '--reevaluate=3', '--validation_images=48',
                 '--eval_images=48', '--calibration_images=32', '--objectives=macs,flash',
                 '--budgets=flash<=1000000', '--predictor_validation_images=64',
                 '--predictor_calibration_images=40')


class SearchModeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='modes_search_test_')
    cls.run_dir = run_fixture.trained_run(cls.root)
    code, cls.lines, _ = run_fixture.run_main('--mode=search', f'--run_dir={cls.run_dir}',
                                              *_SEARCH_FLAGS)
    assert code == 0, '\n'.join(cls.lines[-30:])

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _search_file(self, name):
    return os.path.join(self.run_dir, 'search', name)

  def test_front_respects_budgets_and_is_measured(self):
    result = pareto.ParetoResult.load(self._search_file('pareto.json'))
    self.assertEqual(result.objectives, ['macs', 'flash'])
    self.assertEqual(result.budgets, {'flash': 1000000.0})
    self.assertNotEmpty(result.front)
    config = run_folder_lib.RunFolder(self.run_dir).load_config()
    context = objectives.CostContext(config.variant, config.num_classes, config.width_multiplier,
                                     expand_ratios=config.expand_ratios)
    space = common.phase_space(config, result.settings['phase'])
    for candidate in result.front:
      space.validate(candidate.config)
      flash = objectives.get_objective('flash')(context, candidate.config)
      self.assertLessEqual(flash, 1000000)
      self.assertEqual(candidate.costs['flash'], flash)
    # No front member is dominated by another (higher or equal accuracy and both costs lower).
    for a in result.front:
      for b in result.front:
        if a is b:
          continue
        dominated = (b.predicted_accuracy >= a.predicted_accuracy and
                     b.costs['macs'] <= a.costs['macs'] and b.costs['flash'] <= a.costs['flash']
                     and (b.predicted_accuracy, b.costs['macs'], b.costs['flash']) !=
                     (a.predicted_accuracy, a.costs['macs'], a.costs['flash']))
        self.assertFalse(dominated, f'{a.config.to_string()} dominated by {b.config.to_string()}')
    measured = [c for c in result.candidates() if c.measured_accuracy is not None]
    self.assertGreaterEqual(len(measured), 3)
    for c in measured:
      self.assertBetween(c.measured_accuracy, 0.0, 1.0)
      self.assertBetween(c.test_accuracy, 0.0, 1.0)
    self.assertIsNotNone(result.baseline)
    self.assertIsNotNone(result.baseline.measured_accuracy)
    self.assertLessEqual(result.baseline.costs['flash'], 1000000)
    self.assertTrue(os.path.getsize(self._search_file('pareto.png')) > 1000)

  def test_predictor_report_and_cache(self):
    with open(self._search_file('predictor_report.json')) as f:
      report = json.load(f)
    self.assertEqual(report['samples'], 12)
    self.assertIn(report['chosen'], report['kinds'])
    with open(self._search_file('predictor_data/predictor_data.jsonl')) as f:
      self.assertLen(f.readlines(), 12)
    # The predictor's data were scored with their own image counts, not the run's (48 and 32).
    with open(self._search_file('predictor_data/meta.json')) as f:
      metadata = json.load(f)['metadata']
    self.assertEqual(metadata['validation_images'], 64)
    self.assertEqual(metadata['calibration_images'], 40)
    self.assertEqual(report['kinds'][report['chosen']]['holdout_size'], 12)
    # A second search reuses the cached evaluations: the cache does not grow.
    code, lines, _ = run_fixture.run_main('--mode=search', f'--run_dir={self.run_dir}',
                                          *_SEARCH_FLAGS)
    self.assertEqual(code, 0, '\n'.join(lines[-20:]))
    with open(self._search_file('predictor_data/predictor_data.jsonl')) as f:
      self.assertLen(f.readlines(), 12)

  def test_report_mode(self):
    code, lines, _ = run_fixture.run_main('--mode=report', f'--run_dir={self.run_dir}')
    self.assertEqual(code, 0, '\n'.join(lines[-20:]))
    with open(os.path.join(self.run_dir, 'report.md')) as f:
      text = f.read()
    self.assertIn('## Training', text)
    self.assertIn('full', text)
    self.assertIn('## Search', text)
    self.assertIn('Kendall tau', text)
    self.assertIn('search/pareto.png', text)
    self.assertIn('Not exported yet', text)

  def _assert_one_error(self, args, *needles):
    before = sorted(os.listdir(self.run_dir))
    code, lines, _ = run_fixture.run_main(*args)
    self.assertEqual(code, 2, '\n'.join(lines))
    errors = [line for line in lines if line.startswith('error:')]
    self.assertLen(errors, 1, '\n'.join(lines))
    self.assertNotIn('Traceback', '\n'.join(lines))
    for needle in needles:
      self.assertIn(needle, errors[0])
    self.assertEqual(sorted(os.listdir(self.run_dir)), before)

  def test_impossible_budget_names_the_smallest_cost(self):
    self._assert_one_error(['--mode=search', f'--run_dir={self.run_dir}', '--budgets=flash<=1000'],
                           'flash<=1000', 'impossible', 'smallest sub-network needs', 'bytes')

  def test_unknown_objective(self):
    self._assert_one_error(['--mode=search', f'--run_dir={self.run_dir}', '--objectives=speed'],
                           "'speed'", 'macs')

  def test_latency_without_table(self):
    self._assert_one_error(['--mode=search', f'--run_dir={self.run_dir}',
                            '--objectives=latency'], '--mode=profile')

  def test_run_folder_without_run(self):
    empty = os.path.join(self.root, 'empty')
    os.makedirs(empty, exist_ok=True)
    code, lines, _ = run_fixture.run_main('--mode=search', f'--run_dir={empty}')
    self.assertEqual(code, 2)
    self.assertIn('no config.json', '\n'.join(lines))


if __name__ == '__main__':
  absltest.main()
