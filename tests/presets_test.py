"""The presets in `flags/`: every line a comment or one known flag, given once, with a valid value.

A flagfile is read line by line and a later line overrides an earlier one, so a line of prose that
lost its `#` (`--mode=all trains every phase, ...`) is silently a flag value until a later line
hides it. These checks catch such an edit without running the preset.
"""
# bazel: size=small

import glob
import os
import re

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized

from ofav2_tf import flag_defs

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PRESETS = sorted(glob.glob(os.path.join(_ROOT, 'flags', '*.cfg')))
_FLAG_LINE = re.compile(r'^--(?P<name>[a-z][a-z0-9_]*)(=(?P<value>\S+))?$')
# Modes of `ofav2_tf.modes.MODES`, spelt out so this test does not import TensorFlow.
_MODES = ('train', 'evaluate', 'profile', 'search', 'export', 'benchmark', 'report', 'all')


def _flag_lines(path):
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if line and not line.startswith('#'):
        yield lineno, line


class PresetsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    flag_defs.define_flags()

  def test_there_are_presets(self):
    self.assertGreaterEqual(len(_PRESETS), 4)

  @parameterized.named_parameters(
      (os.path.basename(p)[:-len('.cfg')], p) for p in _PRESETS)
  def test_every_line_is_one_known_flag_given_once(self, path):
    seen = {}
    for lineno, line in _flag_lines(path):
      where = f'{os.path.basename(path)}:{lineno}'
      match = _FLAG_LINE.match(line)
      self.assertIsNotNone(match, f'{where}: not a comment and not one --flag[=value]: {line!r}')
      name, value = match.group('name'), match.group('value')
      self.assertIn(name, flags.FLAGS, f'{where}: unknown flag --{name}')
      self.assertNotIn(name, seen, f'{where}: --{name} already given at line {seen.get(name)}')
      seen[name] = lineno
      flag = flags.FLAGS[name]
      if value is None:
        self.assertIsInstance(flag, flags.BooleanFlag, f'{where}: --{name} needs a value')
        continue
      try:
        parsed = flag.parser.parse(value)
      except (ValueError, TypeError) as e:
        self.fail(f'{where}: --{name}={value}: {e}')
      if name == 'mode':
        self.assertIn(parsed, _MODES, f'{where}: unknown mode')


if __name__ == '__main__':
  absltest.main()
