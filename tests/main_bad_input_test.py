"""`python -m ofav2_tf.main` on bad input: one line naming the problem, no traceback, nothing written."""
# bazel: size=large

import json
import os

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from tests import run_fixture


def run_main(*args):
  return run_fixture.run_main(*args, timeout=300)


class BadInputTest(parameterized.TestCase):

  def assert_one_line_error(self, code, lines, *needles):
    text = '\n'.join(lines)
    self.assertEqual(code, 2, msg=text)
    self.assertNotIn('Traceback', text)
    self.assertNotIn('FATAL', text)
    errors = [line for line in lines if line.startswith('error:')]
    self.assertLen(errors, 1, msg=text)
    for needle in needles:
      self.assertIn(needle, errors[0])

  def _run_dir(self):
    return os.path.join(self.create_tempdir().full_path, 'run')

  @parameterized.named_parameters(
      ('unknown_variant', ['--variant=EE_X'], ['--variant', 'EE_D']),
      ('unknown_phase', ['--variant=SE_B', '--phases=full,kernal'], ['kernal', 'kernel']),
      ('phase_of_another_variant', ['--variant=SE_B', '--phases=full,height1'],
       ['height1', 'does not apply to variant SE_B']),
      ('unknown_dataset', ['--dataset=fashion_mnst'], ['fashion_mnst', 'fashion_mnist']),
      ('zero_steps', ['--phase_steps=full=0'], ['--phase_steps', 'positive']),
      ('negative_batch', ['--batch_size=-4'], ['--batch_size', '-4']),
      ('negative_epochs', ['--epoch_scale=-1'], ['--epoch_scale']),
      ('unknown_mode', ['--mode=trian'], ['trian', 'train']),
      ('even_kernel', ['--kernel_sizes=3,4'], ['kernel_sizes (3, 4)', 'odd']),
      ('depth_beyond_a_stage', ['--depths=2,9'], ['depths (2, 9)', '1..4']),
      ('eval_resolution_not_trained', ['--resolutions=24,28', '--eval_resolutions=32'],
       ['[32]', 'valid: 24,28']),
      ('multi_worker_driver', ['--distribution=multi_worker'], ['multi_worker', 'mirrored']),
      ('one_phase_without_steps', ['--epoch_scale=0', '--phases=full'],
       ['phase full gets 0 steps', '--phase_steps']),
      ('image_folder_missing', ['--dataset=image_folder:/no/such/folder'],
       ['/no/such/folder does not exist', '<root>/train/<class>']),
      ('evaluate_without_a_run', ['--mode=evaluate'],
       ['holds no run (no config.json)', '--mode=train']),
  )
  def test_flag_mistakes(self, argv, needles):
    run_dir = self._run_dir()
    code, lines, _ = run_main(f'--run_dir={run_dir}', *argv)
    self.assert_one_line_error(code, lines, *needles)
    self.assertFalse(os.path.exists(run_dir))

  def test_unknown_flag_in_a_flagfile(self):
    flagfile = self.create_tempfile('bad.cfg', content='--variant=EE_D\n--learning_rat=0.1\n')
    code, lines, stdout = run_main(f'--flagfile={flagfile.full_path}')
    self.assertEqual(lines, ["error: Unknown command line flag 'learning_rat' (--helpfull lists "
                             "every flag)"])
    self.assertEqual((code, stdout), (2, ''))

  @parameterized.named_parameters(
      ('unknown_flag', ['--bogus=1'], ["'bogus'", '--helpfull lists every flag']),
      ('misspelt_flag', ['--batchsize=3'], ["'batchsize'", 'Did you mean: batch_size']),
      ('zero_batch', ['--batch_size=0'], ['--batch_size=0', 'not a positive integer']),
      ('not_a_number', ['--batch_size=abc'], ['--batch_size=abc', "'abc'"]),
      ('unknown_enum_value', ['--variant=XX'], ['--variant=XX', 'SE_B|', 'EE_D']),
      ('negative_budget', ['--budgets=flash<=-5'],
       ['flash<=-5', 'must be a positive number', '<objective><=<limit>']),
      ('malformed_budget', ['--budgets=flash<5'], ['flash<5', 'must look like']),
      ('positional_argument', ['train'], ["unexpected arguments ['train']", '--flag']),
      ('missing_flagfile', ['--flagfile=/no/such/file.cfg'], ['/no/such/file.cfg']),
      ('unknown_teacher', ['--teacher=bogus'], ['--teacher=bogus', 'pet|fixed|none']),
      ('unknown_eval_split', ['--eval_split=train'], ['--eval_split=train', 'validation|test']),
      ('phase_lr_not_a_number', ['--phase_lr=full=abc'], ["'abc' is not a float"]),
      ('phase_map_unknown_form', ['--phase_steps=full:4'], ['full:4']),
      ('resolutions_not_integers', ['--resolutions=abc'], ['--resolutions', 'positive integers']),
      ('zero_width', ['--width_multiplier=0'], ['--width_multiplier=0', '>= 0.05']),
      ('validation_fraction_too_big', ['--validation_fraction=1.5'], ['range [0.0, 0.9]']),
      ('unknown_objective', ['--objectives=mac,flash'],
       ["unknown cost objective 'mac'", 'macs, params']),
      ('no_objective', ['--objectives='], ['--objectives is empty', 'macs']),
      ('budget_of_an_unknown_objective', ['--budgets=flsh<=5'], ["'flsh'", 'flash']),
      ('population_too_small', ['--population=2'], ['--population=2', '>= 4']),
  )
  def test_flag_parsing_errors_are_one_line_and_nothing_else(self, argv, needles):
    # absl's own parser printed `FATAL Flags parsing error` and a pointer to the help, exit 1.
    run_dir = self._run_dir()
    code, lines, stdout = run_main(f'--run_dir={run_dir}', *argv)
    self.assertLen(lines, 1, msg='\n'.join(lines))
    self.assertTrue(lines[0].startswith('error: '), msg=lines[0])
    self.assert_one_line_error(code, lines, *needles)
    self.assertEqual(stdout, '')
    self.assertFalse(os.path.exists(run_dir))

  @parameterized.named_parameters(
      ('positional_line', '--variant=EE_D\ntrain\n', ["unexpected arguments ['train']"]),
      ('bad_value', '--batch_size=abc\n', ['--batch_size=abc']),
      ('nested_missing_flagfile', '--flagfile=/no/such/nested.cfg\n', ['/no/such/nested.cfg']),
  )
  def test_flagfile_mistakes(self, content, needles):
    flagfile = self.create_tempfile('preset.cfg', content=content)
    run_dir = self._run_dir()
    code, lines, stdout = run_main(f'--flagfile={flagfile.full_path}', f'--run_dir={run_dir}')
    self.assertLen(lines, 1, msg='\n'.join(lines))
    self.assert_one_line_error(code, lines, *needles)
    self.assertEqual(stdout, '')
    self.assertFalse(os.path.exists(run_dir))

  @parameterized.named_parameters(
      ('corrupt_config_evaluate', '{bad', ['--mode=evaluate'], ['config.json is corrupt']),
      ('corrupt_config_train', '{bad', [], ['config.json is corrupt', 'another --run_dir']),
      ('untrained_run_evaluate', None, ['--mode=evaluate'], ['has no trained phase yet']),
      ('untrained_run_export', None, ['--mode=export'],
       ['no sub-network to export', '--mode=search first']),
  )
  def test_run_folder_mistakes(self, config_text, argv, needles):
    run_dir = self._run_dir()
    if config_text is None:  # a run folder whose training never checkpointed
      os.makedirs(run_dir)
      from ofav2_tf import run_config  # pylint: disable=g-import-not-at-top
      config = run_config.RunConfig(num_classes=10, resolutions=(24, 28, 32),
                                    eval_resolutions=(24, 32))
      with open(os.path.join(run_dir, 'config.json'), 'w') as f:
        json.dump(config.to_dict(), f)
    else:
      os.makedirs(run_dir)
      with open(os.path.join(run_dir, 'config.json'), 'w') as f:
        f.write(config_text)
    before = sorted(os.listdir(run_dir))
    code, lines, _ = run_main(f'--run_dir={run_dir}', *argv)
    self.assert_one_line_error(code, lines, *needles)
    self.assertEqual(sorted(os.listdir(run_dir)), before)

  def test_run_dir_that_is_a_file(self):
    path = self.create_tempfile('not_a_folder').full_path
    code, lines, _ = run_main(f'--run_dir={path}')
    self.assert_one_line_error(code, lines, path, 'is not a folder')

  def test_missing_dataset_directory(self):
    missing = os.path.join(self.create_tempdir().full_path, 'no_such_folder')
    run_dir = self._run_dir()
    code, lines, _ = run_main(f'--run_dir={run_dir}', '--dataset=fashion_mnist',
                              f'--data_dir={missing}')
    self.assert_one_line_error(code, lines, missing, 'dataset-fashion-mnist')
    self.assertFalse(os.path.exists(run_dir))

  def test_corrupt_image_file(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    root = self.create_tempdir().full_path
    for split in ('train', 'test'):
      for cls in ('a', 'b'):
        os.makedirs(os.path.join(root, split, cls))
        for i in range(4):
          pixels = np.full((16, 16, 3), 40 + 100 * (cls == 'b'), np.uint8)
          tf.io.write_file(os.path.join(root, split, cls, f'{i}.png'), tf.io.encode_png(pixels))
    bad = os.path.join(root, 'train', 'b', 'broken.jpg')
    with open(bad, 'wb') as f:
      f.write(b'\xff\xd8\xff\xe0 not really a jpeg')
    run_dir = self._run_dir()
    code, lines, _ = run_main(f'--run_dir={run_dir}', f'--dataset=image_folder:{root}')
    self.assert_one_line_error(code, lines, 'broken.jpg')
    self.assertFalse(os.path.exists(run_dir))

  def test_run_folder_of_another_architecture(self):
    run_dir = self._run_dir()
    os.makedirs(run_dir)
    config = {'variant': 'EE_D', 'num_classes': 10, 'width_multiplier': 0.5,
              'kernel_sizes': [3, 5, 7], 'expand_ratios': [3, 4, 6], 'depths': [2, 3, 4],
              'dataset': 'fashion_mnist', 'resolutions': [24, 28, 32]}
    path = os.path.join(run_dir, 'config.json')
    with open(path, 'w') as f:
      json.dump(config, f)
    before = sorted(os.listdir(run_dir))
    code, lines, _ = run_main(f'--run_dir={run_dir}', '--variant=EE_D', '--width_multiplier=1.0')
    self.assert_one_line_error(code, lines, 'width_multiplier: run has 0.5, flags ask for 1.0')
    self.assertEqual(sorted(os.listdir(run_dir)), before)
    with open(path) as f:
      self.assertEqual(json.load(f), config)


if __name__ == '__main__':
  absltest.main()
