"""RunConfig: the per-phase plan, schedule checks, architecture refusal, and the flag validators."""
# bazel: size=small

from absl import flags
from absl.testing import absltest

from ofav2_tf import errors
from ofav2_tf import flag_defs
from ofav2_tf import phases
from ofav2_tf import run_config as rc


class PlanTest(absltest.TestCase):

  def test_reference_budget_scaled(self):
    config = rc.RunConfig(variant='EE_D', batch_size=64, resolutions=(48,), epoch_scale=0.01)
    plans = config.plan(train_images=6400)  # 100 steps per epoch
    names = [p.name for p in plans]
    self.assertEqual(names, [p.name for p in phases.schedule('EE_D')])
    kernel = plans[names.index('kernel')]
    # (120 + 5 warm-up) reference epochs * 0.01 * 100 steps; warm-up keeps its 5/125 share.
    self.assertEqual(kernel.steps, 125)
    self.assertEqual(kernel.warmup_steps, 5)
    self.assertAlmostEqual(kernel.lr, 0.03)
    self.assertEqual(plans[names.index('expand2')].subnets_per_step, 4)
    self.assertEqual(plans[0].warmup_steps, 0)

  def test_overrides(self):
    config = rc.RunConfig(variant='SE_B', resolutions=(48,), phase_steps={'full': 7},
                          phase_epochs={'kernel': 2}, phase_lr={'kernel': 0.5}, lr_scale=2.0,
                          steps_per_epoch=10, phases=('full', 'kernel'))
    full, kernel = config.plan(train_images=10 ** 6)
    self.assertEqual((full.steps, full.lr), (7, 0.16))
    self.assertEqual((kernel.steps, kernel.lr), (20, 0.5))
    self.assertEqual(kernel.folder_name, '01_kernel')

  def test_phases_must_be_a_prefix_of_the_variant_schedule(self):
    with self.assertRaisesRegex(errors.ConfigError, 'does not apply to variant SE_B'):
      rc.RunConfig(variant='SE_B', phases=('full', 'height1')).schedule()
    with self.assertRaisesRegex(errors.ConfigError, 'prefix of the schedule'):
      rc.RunConfig(variant='SE_B', phases=('full', 'depth1')).schedule()
    with self.assertRaisesRegex(errors.RegistryError, 'kernel'):
      rc.RunConfig(variant='SE_B', phases=('full', 'kernal')).schedule()

  def test_zero_steps_is_refused(self):
    config = rc.RunConfig(variant='SE_B', resolutions=(48,), epoch_scale=0.0)
    with self.assertRaisesRegex(errors.ConfigError, 'phase full gets 0 steps'):
      config.plan(train_images=640)

  def test_validate_names_bad_values(self):
    with self.assertRaisesRegex(errors.ConfigError, 'eval_resolutions'):
      rc.RunConfig(resolutions=(24, 28), eval_resolutions=(64,)).validate()
    with self.assertRaisesRegex(errors.RegistryError, 'variant'):
      rc.RunConfig(variant='XX_B', resolutions=(28,)).validate()
    with self.assertRaisesRegex(errors.ConfigError, '--teacher must be one of pet, fixed, none'):
      rc.RunConfig(teacher='ofa', resolutions=(28,)).validate()

  def test_teacher_flag_lists_exactly_the_teacher_registry(self):
    from ofav2_tf import teacher  # pylint: disable=g-import-not-at-top
    self.assertCountEqual(flag_defs.TEACHER_MODES, teacher.TEACHER_MODES.names())

  def test_round_trip_and_architecture_check(self):
    config = rc.RunConfig(variant='EE_D', num_classes=10, resolutions=(24, 28),
                          phase_steps={'full': 3})
    again = rc.RunConfig.from_dict(config.to_dict())
    self.assertEqual(again.to_dict(), config.to_dict())
    rc.check_same_architecture(config.architecture(), again.architecture(), '/run')
    other = rc.RunConfig(variant='EE_D', num_classes=10, width_multiplier=0.5)
    with self.assertRaisesRegex(errors.ArchitectureMismatchError,
                                r'width_multiplier: run has 1.0, flags ask for 0.5'):
      rc.check_same_architecture(config.architecture(), other.architecture(), '/run')


class FlagValidatorTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    flag_defs.define_flags()
    self.saved = flags.FLAGS.flag_values_dict()

  def tearDown(self):
    for name in ('phase_steps', 'batch_size', 'resolutions', 'variant'):
      flags.FLAGS[name].value = self.saved[name]
    super().tearDown()

  def test_phase_maps(self):
    self.assertEqual(flag_defs.parse_phase_map(['full=3', 'kernel=2'], int),
                     {'full': 3, 'kernel': 2})
    for bad in (['full'], ['full=-1'], ['full=x'], ['=3']):
      with self.assertRaises(ValueError):
        flag_defs.parse_phase_map(bad, int)

  def test_bad_values_are_refused_when_parsed(self):
    for argv in (['--phase_steps=full=0'], ['--batch_size=0'], ['--resolutions=28,-4'],
                 ['--variant=XX_B']):
      with self.assertRaises(flags.IllegalFlagValueError, msg=str(argv)):
        flags.FLAGS(['prog'] + argv)


if __name__ == '__main__':
  absltest.main()
