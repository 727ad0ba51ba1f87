"""Root pytest configuration: makes absltest/tf.test modules behave under pytest.

The tests are written as absltest / tf.test modules so that Bazel can run each
one as a plain script (`tf.test.main()` parses absl flags there). pytest imports
them instead, so nothing parses flags, and absltest helpers such as
`create_tempdir()` then fail with UnparsedFlagAccessError. Marking the flags as
parsed (with their defaults) gives the same behaviour as under Bazel.

It also applies the `# bazel: ... tags=slow` marker that tools/update_build.py
reads for Bazel as a pytest `slow` marker on every test of that module, so
"slow" means the same thing to `bazel test --config=fast` and to
`pytest -m "not slow"` (`make test-fast`), from one line in the test file.
"""

import functools
import importlib.util
import os

import pytest

_ROOT = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config):
  del config  # Unused.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@functools.lru_cache(maxsize=None)
def _update_build():
  """Loads tools/update_build.py by path: `tools` is too generic a name to import."""
  spec = importlib.util.spec_from_file_location(
      '_ofav2_update_build', os.path.join(_ROOT, 'tools', 'update_build.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@functools.lru_cache(maxsize=None)
def _bazel_tags(path):
  with open(path, encoding='utf-8') as f:
    source = f.read()
  return tuple(_update_build().parse_marker(source, path).get('tags', ()))


def _is_tf_test_session(item):
  """tf.test.TestCase.test_session is a deprecated context manager, not a test.

  pytest collects it from every tf.test.TestCase class and reports it as
  skipped ("Not a test."), once per class; dropping it keeps the summary's
  skip and deselect counts about the project's own tests.
  """
  obj = getattr(item, 'obj', None)
  return getattr(obj, '__qualname__', '') == 'TensorFlowTestCase.test_session'


def pytest_collection_modifyitems(config, items):
  del config  # Unused.
  items[:] = [item for item in items if not _is_tf_test_session(item)]
  for item in items:
    if 'slow' in _bazel_tags(str(item.path)):
      item.add_marker(pytest.mark.slow)
