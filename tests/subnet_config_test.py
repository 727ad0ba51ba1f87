"""SubnetConfig and SearchSpace: validation, serialisation, named configs, seeded sampling."""
# bazel: size=small

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import subnet_config as sc
from ofav2_tf import variants


class SubnetConfigTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters((v, v) for v in variants.VARIANTS.names())
  def test_json_and_string_round_trip(self, variant):
    space = sc.SearchSpace.for_variant(variant)
    rng = np.random.default_rng(0)
    for config in [space.max_config(), space.min_config()] + [space.sample(rng) for _ in range(20)]:
      self.assertEqual(sc.SubnetConfig.from_json(config.to_json()), config)
      self.assertEqual(sc.SubnetConfig.from_string(config.to_string()), config)
      self.assertEqual(sc.SubnetConfig.parse(config.to_string()), config)
      self.assertEqual(sc.SubnetConfig.parse(config.to_json()), config)
      space.validate(config)

  def test_string_form_is_readable(self):
    space = sc.SearchSpace.for_variant('SE_P')
    text = space.uniform(5, 4, 3, branches=sc.BRANCH_MBCONV | sc.BRANCH_TRANSFORM).to_string()
    self.assertTrue(text.startswith('r64-x5-d3:k5e4+mt.k5e4+mt'), text)

  def test_validation_names_field_and_valid_values(self):
    space = sc.SearchSpace.for_variant('SE_B')
    good = space.max_config()
    cases = {
        'kernel[5] (stage 2, block 2) = 9': good.replace(kernel=good.kernel[:5] + (9,) + good.kernel[6:]),
        'expand[0] (stage 1, block 1) = 5': good.replace(expand=(5,) + good.expand[1:]),
        'depth[2] (stage 3) = 1': good.replace(depth=(4, 4, 1, 4, 4)),
        'resolution = 50': good.replace(resolution=50),
        'exit = 3': good.replace(exit=3),
    }
    for expected, config in cases.items():
      with self.assertRaisesRegex(errors.ConfigError, expected.replace('[', r'\[').replace(
          ']', r'\]').replace('(', r'\(').replace(')', r'\)')) as cm:
        space.validate(config)
      self.assertIn('valid values', str(cm.exception))

  def test_resolution_error_lists_valid_resolutions(self):
    space = sc.SearchSpace.for_variant('EE_D')
    with self.assertRaisesRegex(errors.ConfigError, 'valid values: 48, 52, 56, 60, 64'):
      space.validate(space.max_config().replace(resolution=100))

  def test_branches_required_only_for_parallel_variants(self):
    parallel = sc.SearchSpace.for_variant('SE_P')
    base = sc.SearchSpace.for_variant('SE_B')
    with self.assertRaisesRegex(errors.ConfigError, 'branches is missing'):
      parallel.validate(base.max_config())
    with self.assertRaisesRegex(errors.ConfigError, 'no parallel blocks'):
      base.validate(parallel.max_config())
    with self.assertRaisesRegex(errors.ConfigError, 'branch letter'):
      sc.SubnetConfig.from_string(parallel.max_config().to_string().replace('+mct', '+mxt', 1))

  def test_malformed_input_gives_config_errors(self):
    for text in ('', 'r64', '{"kernel": [7]}', '{not json', 'r64-x5-d4:k7e6'):
      with self.assertRaises(errors.ConfigError):
        sc.SubnetConfig.parse(text)
    with self.assertRaisesRegex(errors.ConfigError, 'unknown sub-network field'):
      sc.SubnetConfig.from_dict({**sc.SearchSpace().max_config().to_dict(), 'width': 3})

  def test_unknown_variant(self):
    with self.assertRaisesRegex(errors.RegistryError, 'unknown variant .*valid variants: SE_B'):
      sc.SearchSpace.for_variant('XX_B')

  def test_canonical_ignores_unused_values(self):
    space = sc.SearchSpace.for_variant('EE_B')
    a = space.min_config().replace(exit=2)
    b = a.replace(kernel=(3, 3, 7, 7) + (3,) * 4 + (7,) * 12, depth=(2, 2, 4, 3, 4))
    self.assertNotEqual(a, b)
    self.assertEqual(a.canonical(), b.canonical())
    self.assertNotEqual(a.canonical(), a.replace(exit=3).canonical())

  def test_uniform_grid_covers_the_space(self):
    space = sc.SearchSpace.for_variant('EE_DP', resolutions=(48, 64))
    grid = list(space.uniform_grid())
    self.assertLen(grid, 3 * 3 * 3 * 3 * 5 * 2)
    self.assertLen(set(grid), len(grid))
    self.assertEqual({c.branches[0] for c in grid}, {1, 3, 7})

  def test_restrict_accepts_only_subsets(self):
    space = sc.SearchSpace.for_variant('EE_DP')
    phase = space.restrict(kernel_sizes=(3, 5, 7), exits=(4, 5), branch_patterns=(3, 5, 6, 7))
    self.assertEqual(phase.exits, (4, 5))
    with self.assertRaisesRegex(errors.ConfigError, r'outside the space; valid values: \[3, 4, 6\]'):
      space.restrict(expand_ratios=(2, 3))
    with self.assertRaisesRegex(errors.ConfigError, 'unknown search-space dimension'):
      space.restrict(widths=(1,))

  def test_sampling_is_seeded_and_covers_allowed_values_only(self):
    space = sc.SearchSpace.for_variant('EE_DP').restrict(
        depths=(3, 4), exits=(2, 3, 4, 5), branch_patterns=(3, 5, 6, 7), expand_ratios=(4, 6))
    first = [space.sample(np.random.default_rng(42)) for _ in range(3)]
    self.assertEqual(first, [space.sample(np.random.default_rng(42)) for _ in range(3)])
    rng = np.random.default_rng(1)
    counts = collections.defaultdict(collections.Counter)
    for _ in range(300):
      config = space.sample(rng)
      space.validate(config)
      counts['kernel'].update(config.kernel)
      counts['expand'].update(config.expand)
      counts['depth'].update(config.depth)
      counts['branches'].update(config.branches)
      counts['exit'][config.exit] += 1
      counts['resolution'][config.resolution] += 1
    self.assertEqual(set(counts['kernel']), {3, 5, 7})
    self.assertEqual(set(counts['expand']), {4, 6})
    self.assertEqual(set(counts['depth']), {3, 4})
    self.assertEqual(set(counts['branches']), {3, 5, 6, 7})
    self.assertEqual(set(counts['exit']), {2, 3, 4, 5})
    self.assertEqual(set(counts['resolution']), set(sc.DEFAULT_RESOLUTIONS))


if __name__ == '__main__':
  tf.test.main()
