"""The phase table: order per variant, and sampling that follows each phase's allowed values."""
# bazel: size=small

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ofav2_tf import errors
from ofav2_tf import phases
from ofav2_tf import subnet_config as sc
from ofav2_tf import variants


class PhasesTest(tf.test.TestCase, parameterized.TestCase):

  def test_schedules(self):
    names = lambda v: [p.name for p in phases.schedule(v)]  # noqa: E731
    base = ['full', 'kernel', 'depth1', 'depth2', 'expand1', 'expand2']
    self.assertEqual(names('SE_B'), base)
    self.assertEqual(names('SE_D'), base)
    self.assertEqual(names('SE_P'), base[:2] + ['level1', 'level2'] + base[2:])
    self.assertEqual(names('EE_D'), base[:2] + ['height1', 'height2', 'height3', 'height4']
                     + base[2:])
    self.assertLen(names('EE_DP'), 12)

  def test_unknown_phase(self):
    with self.assertRaisesRegex(errors.RegistryError, "unknown phase 'kernal'; valid phases: full"):
      phases.PHASES.get('kernal')

  @parameterized.named_parameters((v, v) for v in ('SE_B', 'EE_DP', 'SE_P', 'EE_D'))
  def test_sampling_follows_the_phase_table(self, variant):
    full = sc.SearchSpace.for_variant(variant)
    expected = {  # phase: (kernels, min branch count, lowest exit, depths, expands)
        'full': ({7}, 3, 5, {4}, {6}), 'kernel': ({3, 5, 7}, 3, 5, {4}, {6}),
        'level1': ({3, 5, 7}, 2, 5, {4}, {6}), 'level2': ({3, 5, 7}, 1, 5, {4}, {6}),
        'height1': ({3, 5, 7}, 1, 4, {4}, {6}), 'height2': ({3, 5, 7}, 1, 3, {4}, {6}),
        'height3': ({3, 5, 7}, 1, 2, {4}, {6}), 'height4': ({3, 5, 7}, 1, 1, {4}, {6}),
        'depth1': ({3, 5, 7}, 1, 1, {3, 4}, {6}), 'depth2': ({3, 5, 7}, 1, 1, {2, 3, 4}, {6}),
        'expand1': ({3, 5, 7}, 1, 1, {2, 3, 4}, {4, 6}),
        'expand2': ({3, 5, 7}, 1, 1, {2, 3, 4}, {3, 4, 6}),
    }
    variant_spec = variants.get_variant(variant)
    rng = np.random.default_rng(0)
    for phase in phases.schedule(variant):
      kernels, min_branches, lowest_exit, depths, expands = expected[phase.name]
      space = phase.space(full)
      seen = collections.defaultdict(set)
      for _ in range(400):
        config = space.sample(rng)
        full.validate(config)
        seen['kernel'].update(config.kernel)
        seen['expand'].update(config.expand)
        seen['depth'].update(config.depth)
        seen['exit'].add(config.exit)
        if config.branches is not None:
          seen['branches'].update(config.branches)
      self.assertEqual(seen['kernel'], kernels, phase.name)
      self.assertEqual(seen['expand'], expands, phase.name)
      self.assertEqual(seen['depth'], depths, phase.name)
      exits = set(range(lowest_exit, 6)) if variant_spec.early_exits else {5}
      self.assertEqual(seen['exit'], exits, phase.name)
      if variant_spec.parallel:
        patterns = {p for p in range(1, 8) if bin(p).count('1') >= min_branches}
        self.assertEqual(seen['branches'], patterns, phase.name)

  def test_sub_networks_per_step_and_reference_budget(self):
    self.assertEqual([p.subnets_per_step for p in phases.schedule('EE_DP')],
                     [1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 4, 4])
    self.assertEqual(phases.PHASES.get('height4').reference_lr, 0.015)
    self.assertTrue(phases.PHASES.get('expand1').unlocks_expand)
    self.assertFalse(phases.PHASES.get('depth2').unlocks_expand)


if __name__ == '__main__':
  tf.test.main()
