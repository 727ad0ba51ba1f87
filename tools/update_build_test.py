# bazel: size=small
"""Tests for tools/update_build.py, the BUILD generator.

CI trusts the generator to keep BUILD in step with the sources, so its import
resolution, markers and cycle handling are checked on small synthetic trees.
"""

import os
import textwrap

from absl.testing import absltest

from tools import update_build


class UpdateBuildTest(absltest.TestCase):

  def make_tree(self, files):
    """Writes {path: source} under a fresh directory and returns its path."""
    root = self.create_tempdir().full_path
    for path, text in files.items():
      full = os.path.join(root, path)
      os.makedirs(os.path.dirname(full), exist_ok=True)
      with open(full, 'w') as f:
        f.write(textwrap.dedent(text))
    return root

  def modules(self, root):
    return {m.key: m for m in (update_build.analyse(root, p) for p in update_build.find_sources(root))}

  def test_import_forms_resolve_to_modules_and_packages(self):
    root = self.make_tree({
        'ofav2_tf/__init__.py': '',
        'ofav2_tf/errors.py': '',
        'ofav2_tf/registry.py': 'from ofav2_tf import errors\n',
        'ofav2_tf/layers/__init__.py': 'from ofav2_tf.layers.blocks import Block\n',
        'ofav2_tf/layers/blocks.py': 'from .. import registry\nfrom . import ops\nimport numpy as np\n',
        'ofav2_tf/layers/ops.py': 'def f():\n  import tensorflow as tf\n  import json\n',
        'export/tflite_convert.py': 'import ofav2_tf.layers.ops\nfrom ofav2_tf import layers\n',
        'tests/helper.py': '',
        'tests/convert_test.py': 'import export.tflite_convert\nfrom tests import helper\n',
    })
    mods = self.modules(root)
    self.assertEqual(mods['ofav2_tf/registry'].deps, {'ofav2_tf/__init__', 'ofav2_tf/errors'})
    self.assertEqual(mods['ofav2_tf/layers/__init__'].deps,
                     {'ofav2_tf/__init__', 'ofav2_tf/layers/blocks'})
    self.assertEqual(mods['ofav2_tf/layers/blocks'].deps,
                     {'ofav2_tf/layers/__init__', 'ofav2_tf/registry', 'ofav2_tf/layers/ops'})
    self.assertEqual(mods['ofav2_tf/layers/blocks'].external, {'numpy'})
    # Lazy imports count; the standard library does not.
    self.assertEqual(mods['ofav2_tf/layers/ops'].external, {'tensorflow'})
    # export/ has no __init__.py: a namespace package, no edge to invent.
    self.assertEqual(mods['export/tflite_convert'].deps,
                     {'ofav2_tf/layers/ops', 'ofav2_tf/layers/__init__'})
    self.assertTrue(mods['tests/convert_test'].is_test)
    self.assertTrue(mods['tests/helper'].testonly)
    self.assertFalse(mods['tests/helper'].is_test)
    self.assertEqual(mods['tests/convert_test'].deps, {'export/tflite_convert', 'tests/helper'})

  def test_child_script_named_in_a_string_is_a_dependency(self):
    root = self.make_tree({
        'export/runner.py': ("import os, subprocess, sys\n"
                             "_CHILD = os.path.join(os.path.dirname(__file__), '_child.py')\n"
                             "_TOOL = 'tools/gen.py'\n"
                             "_NOT_OURS = 'setup.py'\n"),
        'export/_child.py': 'import keras\n',
        'tools/gen.py': '',
    })
    mods = self.modules(root)
    self.assertEqual(mods['export/runner'].deps, {'export/_child', 'tools/gen'})

  def test_module_run_with_dash_m_is_a_dependency(self):
    root = self.make_tree({
        'ofav2_tf/__init__.py': '',
        'ofav2_tf/main.py': '',
        'ofav2_tf/lazy.py': '',
        'tests/main_test.py': ("import subprocess, sys\n"
                               "subprocess.run([sys.executable, '-m', 'ofav2_tf.main'])\n"
                               "_REGISTRY = {'lazy': 'ofav2_tf.lazy'}\n"
                               "_NOT_OURS = ['-m', 'pytest']\n"),
    })
    mods = self.modules(root)
    # Only the name after '-m' counts; a bare dotted string is a lazy-import name.
    self.assertEqual(mods['tests/main_test'].deps, {'ofav2_tf/main'})

  def test_lazy_deps_marker_adds_the_modules_a_registry_imports_by_name(self):
    root = self.make_tree({
        'ofav2_tf/__init__.py': '',
        'ofav2_tf/main.py': '# bazel: lazy_deps=ofav2_tf/modes/*.py\n',
        'ofav2_tf/modes/__init__.py': "MODULES = ('ofav2_tf.modes.train',)\n",
        'ofav2_tf/modes/train.py': 'from ofav2_tf import modes\n',
    })
    mods = self.modules(root)
    self.assertEqual(mods['ofav2_tf/main'].deps,
                     {'ofav2_tf/__init__', 'ofav2_tf/modes/__init__', 'ofav2_tf/modes/train'})

  def test_lazy_deps_marker_that_matches_nothing_is_an_error(self):
    root = self.make_tree({'ofav2_tf/__init__.py': '',
                           'ofav2_tf/main.py': '# bazel: lazy_deps=ofav2_tf/gone/*.py\n'})
    with self.assertRaisesRegex(update_build.BuildError, 'matches no project'):
      self.modules(root)

  def test_missing_project_module_is_reported(self):
    root = self.make_tree({
        'ofav2_tf/__init__.py': '',
        'ofav2_tf/a.py': ('from ofav2_tf import not_written_yet\nimport ofav2_tf.gone\n'
                          'from ofav2_tf.b import CONSTANT, helper, Klass\n'),
        'ofav2_tf/b.py': 'CONSTANT: int = 1\ndef helper(): pass\nclass Klass: pass\n',
    })
    _, warnings = update_build.generate(root)
    self.assertLen(warnings, 2)
    self.assertIn('ofav2_tf.gone', warnings[0])
    self.assertIn('ofav2_tf.not_written_yet', warnings[1])

  def test_test_marker_sets_size_tags_and_data(self):
    root = self.make_tree({
        'ofav2_tf/__init__.py': '',
        'tests/e2e_test.py': '# bazel: size=large tags=slow,exclusive data=tests/testdata/*.bin\n',
        'tests/quick_test.py': '"""Doc."""\n',
    })
    text, _ = update_build.generate(root)
    e2e = text[text.index('name = "tests/e2e_test"'):]
    e2e = e2e[:e2e.index(')\n')]
    self.assertIn('size = "large"', e2e)
    self.assertIn('"exclusive",\n        "slow",', e2e)
    self.assertIn('data = [":test_data"] + glob(["tests/testdata/*.bin"])', e2e)
    quick = text[text.index('name = "tests/quick_test"'):]
    self.assertIn('size = "medium"', quick[:quick.index(')\n')])

  def test_bad_markers_are_errors_naming_the_line(self):
    for marker, line, message in [
        ('# bazel: size=huge', 2, "size='huge'"),
        ('# bazel: sise=large', 2, "unknown key 'sise'"),
        ('# bazel: slow', 2, 'expected key=value'),
        ('# bazel: shard_count=0', 2, 'positive integer'),
        ('# bazel: size=small\n# bazel: tags=slow', 3, 'second `# bazel:` line'),
    ]:
      with self.subTest(marker=marker):
        root = self.make_tree({'tests/x_test.py': f'"""Doc."""\n{marker}\n'})
        with self.assertRaisesRegex(update_build.BuildError, f'tests/x_test.py:{line}: .*{message}'):
          update_build.generate(root)

  def test_import_cycle_shares_sources_instead_of_a_bazel_cycle(self):
    root = self.make_tree({
        'ofav2_tf/__init__.py': 'from ofav2_tf import a\n',
        'ofav2_tf/a.py': 'from ofav2_tf import b\n',
        'ofav2_tf/b.py': 'import ofav2_tf\nfrom export import c\n',
        'export/c.py': '',
    })
    text, _ = update_build.generate(root)
    for member in ('ofav2_tf/__init__', 'ofav2_tf/a', 'ofav2_tf/b'):
      block = text[text.index(f'name = "{member}"'):]
      block = block[:block.index(')\n')]
      self.assertIn('"ofav2_tf/__init__.py",\n        "ofav2_tf/a.py",\n        "ofav2_tf/b.py",\n    ],',
                    block)
      # Outside the cycle, deps stay ordinary edges.
      self.assertIn('deps = [":export/c"]', block)

  def test_output_is_deterministic_and_check_detects_staleness(self):
    root = self.make_tree({'ofav2_tf/__init__.py': '', 'ofav2_tf/z.py': '', 'ofav2_tf/a.py': ''})
    self.assertEqual(update_build.main(['--root', root]), 0)
    with open(os.path.join(root, 'BUILD')) as f:
      first = f.read()
    self.assertEqual(update_build.main(['--root', root, '--check']), 0)
    self.assertLess(first.index('"ofav2_tf/a"'), first.index('"ofav2_tf/z"'))
    with open(os.path.join(root, 'ofav2_tf/new.py'), 'w') as f:
      f.write('from ofav2_tf import a\n')
    self.assertEqual(update_build.main(['--root', root, '--check']), 1)
    self.assertEqual(update_build.main(['--root', root]), 0)
    self.assertEqual(update_build.main(['--root', root, '--check']), 0)


if __name__ == '__main__':
  absltest.main()
