"""Every command-line flag of `python -m ofav2_tf.main`, defined in one place, with validators.

All flags are optional with defaults, so tests and library code can import this module without
parsing a command line; `main` decides which ones a mode needs. Validators check what a single flag
can check (enums, bounds, the syntax of lists, `name=value` maps and budgets) when the command line
or a flagfile is parsed, so a typo fails before any data is read. Checks that need several flags at
once (a phase name that does not apply to the variant, a resolution outside the supernet's range)
live in `run_config.RunConfig.validate`.

Presets are flagfiles in `flags/` (`--flagfile=flags/demo_fashion_mnist.cfg`); later flags on the
command line override them.
"""

from absl import flags

from ofav2_tf import errors
from ofav2_tf import variants as variants_lib
from ofav2_tf.search import objectives as objectives_lib

FLAGS = flags.FLAGS

# The names of teacher.TEACHER_MODES, listed here so that parsing flags does not import TensorFlow
# (tests/run_config_test.py checks that the two agree).
TEACHER_MODES = ('pet', 'fixed', 'none')
DISTRIBUTIONS = ('default', 'mirrored', 'multi_worker')
EVAL_SPLITS = ('validation', 'test')
LATENCY_DTYPES = ('float32', 'int8')


def _positive_ints(values) -> bool:
  return values is None or all(int(v) > 0 for v in values)


def _int_list(values) -> bool:
  try:
    return values is None or all(int(v) == float(v) for v in values)
  except (TypeError, ValueError):
    return False


def parse_phase_map(entries, value_type=float) -> dict:
  """Parses ['kernel=40', 'full=100'] into {'kernel': 40.0, 'full': 100.0}.

  Raises:
    ValueError: An entry is not `name=value` or its value has the wrong type or is not positive.
  """
  result = {}
  for entry in entries or ():
    name, sep, value = str(entry).partition('=')
    if not sep or not name.strip():
      raise ValueError(f'{entry!r} is not of the form phase=value')
    try:
      number = value_type(value)
    except ValueError:
      raise ValueError(f'{entry!r}: {value!r} is not a {value_type.__name__}') from None
    if number <= 0:
      raise ValueError(f'{entry!r}: the value must be positive')
    result[name.strip()] = number
  return result


def _map_validator(value_type):
  def check(entries):
    try:
      parse_phase_map(entries, value_type)
      return True
    except ValueError as e:
      raise flags.ValidationError(str(e)) from None
  return check


def _budgets_valid(entries) -> bool:
  # The search's own parser, so that the flag and the search accept exactly the same budgets.
  try:
    objectives_lib.parse_budgets(entries)
    return True
  except errors.OFAError as e:
    raise flags.ValidationError(str(e)) from None


def _objectives_valid(names) -> bool:
  # The search's own registry, so that an unknown name lists the valid ones.
  if not names:
    raise flags.ValidationError('--objectives is empty; valid: '
                                f'{", ".join(objectives_lib.OBJECTIVES.names())}')
  try:
    for name in names:
      objectives_lib.get_objective(name.strip())
    return True
  except errors.OFAError as e:
    raise flags.ValidationError(f'--objectives: {e}') from None


_defined = False


def define_flags() -> None:
  """Defines the flags (idempotent: the test suite imports several modules that call it)."""
  global _defined
  if _defined:
    return
  _defined = True

  # What to do and where.
  flags.DEFINE_string('mode', 'train',
                      'What to run: train, evaluate, profile, search, export, benchmark, report, or all '
                      '(train, search, export, benchmark and report in turn).')
  flags.DEFINE_string('run_dir', None,
                      'Run folder: resolved flags, logs, TensorBoard events, checkpoints, metrics. '
                      'Starting the same command again resumes the run in it.')
  flags.DEFINE_integer('seed', 0, 'Seed of the data order, augmentation, sub-network sampling and '
                       'initial weights.', lower_bound=0)

  # Data.
  flags.DEFINE_string('dataset', 'fashion_mnist',
                      'Dataset: fashion_mnist, tiny_imagenet, image_folder:<root>, tfds:<name>.')
  flags.DEFINE_string('data_dir', None, 'Where the dataset is stored or prepared (see README).')
  flags.DEFINE_string('manual_dir', None,
                      'Folder holding a manually downloaded archive (tiny-imagenet-200.zip/.tar.gz).')
  flags.DEFINE_boolean('download', True, 'Allow downloading data that is not found locally.')
  flags.DEFINE_float('validation_fraction', 0.15,
                     'Share of the training set held out for checkpoint selection.',
                     lower_bound=0.0, upper_bound=0.9)
  flags.DEFINE_list('resolutions', None,
                    'Training input sizes (one per batch); default: 48..64 step 4 for Tiny '
                    'ImageNet-sized data, else the native size -4..+4 step 4.')
  flags.DEFINE_integer('batch_size', 64, 'Global training batch size.', lower_bound=1)

  # Architecture (these define the weights; a run folder refuses other values).
  flags.DEFINE_enum('variant', 'EE_D', variants_lib.VARIANTS.names(),
                    'Supernet variant: SE/EE (single/early exits) x B/D/P/DP.')
  flags.DEFINE_float('width_multiplier', 1.0, 'Scales every width.', lower_bound=0.05)
  flags.DEFINE_float('dropout', 0.1, 'Dropout before each classifier.', lower_bound=0.0,
                     upper_bound=0.9)
  flags.DEFINE_list('kernel_sizes', ['3', '5', '7'], 'Elastic depthwise kernel sizes.')
  flags.DEFINE_list('expand_ratios', ['3', '4', '6'], 'Elastic expand ratios.')
  flags.DEFINE_list('depths', ['2', '3', '4'], 'Elastic stage depths.')

  # Schedule and optimisation.
  flags.DEFINE_list('phases', None,
                    'Phases to run, in schedule order (default: every phase of the variant). '
                    'Must start at `full` and follow the schedule without gaps.')
  flags.DEFINE_enum('teacher', 'pet', TEACHER_MODES,
                    'pet: max sub-network of the previous phase (OFAv2); fixed: the full-phase '
                    'network (OFA); none: no distillation.')
  flags.DEFINE_float('epoch_scale', 1.0,
                     "Multiplies every phase's reference epochs (DESIGN.md 2.3).", lower_bound=0.0)
  flags.DEFINE_list('phase_epochs', None, 'Per-phase epochs overriding the scaled reference, '
                    'e.g. full=10,kernel=5.')
  flags.DEFINE_list('phase_steps', None, 'Per-phase optimizer steps overriding epochs, '
                    'e.g. full=300,kernel=100.')
  flags.DEFINE_integer('steps_per_epoch', 0,
                       'Optimizer steps per epoch; 0 = training images / batch size.', lower_bound=0)
  flags.DEFINE_float('lr_scale', 1.0, 'Multiplies every reference learning rate.',
                     lower_bound=0.0)
  flags.DEFINE_list('phase_lr', None, 'Per-phase base learning rates, e.g. full=0.1.')
  flags.DEFINE_float('warmup_scale', 1.0, "Multiplies every phase's reference warm-up epochs.",
                     lower_bound=0.0)
  flags.DEFINE_float('momentum', 0.9, 'SGD momentum (Nesterov).', lower_bound=0.0,
                     upper_bound=0.999)
  flags.DEFINE_float('weight_decay', 3e-5, 'L2 on conv/dense kernels (not BN, not biases).',
                     lower_bound=0.0)
  flags.DEFINE_float('label_smoothing', 0.1, 'Label smoothing.', lower_bound=0.0,
                     upper_bound=0.5)
  flags.DEFINE_float('kd_weight', 1.0, 'Weight of the distillation term.', lower_bound=0.0)
  flags.DEFINE_bool('sandwich', False,
                    'Phases with n >= 2 sub-networks per step train the phase\'s max network in '
                    'every step (and its min network when n >= 3), phases with n = 1 in every '
                    'other step; the others stay random.')
  flags.DEFINE_integer('checkpoint_every_steps', 0,
                       'Save a resumable checkpoint (and validate) every N steps; 0 = once per '
                       'epoch.', lower_bound=0)
  flags.DEFINE_integer('validation_images', 1000,
                       'Validation images scored at every checkpoint to pick the best one.',
                       lower_bound=1)

  # Evaluation (paper protocol; bounded by flags on small machines).
  flags.DEFINE_list('eval_resolutions', None,
                    'Resolutions of the uniform sub-networks; default: smallest and largest '
                    'training resolution (the paper: 48,64).')
  flags.DEFINE_integer('eval_max_subnets', 0,
                       'Evaluate at most this many uniform sub-networks per phase, evenly spread '
                       'over the grid (max and min included); 0 = the whole grid.', lower_bound=0)
  flags.DEFINE_integer('final_eval_images', 0,
                       'Test images per sub-network in the evaluation of the run\'s last phase '
                       '(the figure a run is judged by); 0 = the whole split.', lower_bound=0)
  flags.DEFINE_integer('eval_images', 0, 'Test images per sub-network in the evaluation after each '
                       'phase but the last; 0 = the whole split.',
                       lower_bound=0)
  flags.DEFINE_integer('calibration_images', 2000,
                       'Training images for BN re-calibration of each evaluated sub-network.',
                       lower_bound=1)
  flags.DEFINE_enum('eval_split', 'test', EVAL_SPLITS,
                    'Split of the per-phase report (the official validation set is `test`).')
  flags.DEFINE_string('phase', None,
                      'evaluate mode: the phase whose best checkpoint is evaluated (default: the '
                      'last completed one).')
  flags.DEFINE_list('subnets', None, 'evaluate mode: sub-network strings to evaluate instead of '
                    'the uniform grid.')
  flags.DEFINE_integer('random_subnets', 0,
                       'evaluate mode: measure this many random sub-networks of the phase\'s space '
                       '(BN re-calibrated, cached in the run folder, resumable) instead of the '
                       'uniform grid; writes random_subnets.json and .png.', lower_bound=0)
  flags.DEFINE_integer('random_min_exit', 1,
                       'evaluate mode: lowest exit of the random sub-networks.', lower_bound=1,
                       upper_bound=5)
  flags.DEFINE_integer('random_images', 0,
                       'evaluate mode: images of --eval_split per random sub-network; 0 = the '
                       'whole split.', lower_bound=0)
  flags.DEFINE_integer('random_calibration_images', 0,
                       'evaluate mode: training images for the BN re-calibration of each random '
                       'sub-network; 0 = --calibration_images.', lower_bound=0)

  # Latency table (profile mode; the search's latency objective).
  flags.DEFINE_string('latency_table', None,
                      'Latency lookup table: written by --mode=profile, read by the search when a '
                      'latency objective or budget is used (default <run_dir>/latency/'
                      'latency_table.json).')
  flags.DEFINE_integer('latency_threads', 1, 'LiteRT CPU threads of the latency table.',
                       lower_bound=1)
  flags.DEFINE_enum('latency_dtype', 'int8', LATENCY_DTYPES,
                    'Block models timed for the latency table (int8 is what ships).')
  flags.DEFINE_integer('latency_runs', 30, 'Timed invokes per block model.', lower_bound=1)
  flags.DEFINE_integer('latency_calibration_subnets', 8,
                       'Random sub-networks measured whole to choose and fit the table\'s '
                       'correction to its block sums (per-block overhead, weight streaming); 0 '
                       'keeps the plain sum.', lower_bound=0)
  flags.DEFINE_integer('latency_check_subnets', 20,
                       'Random sub-networks measured whole to report the table\'s error; 0 skips.',
                       lower_bound=0)

  # Search.
  flags.DEFINE_integer('predictor_samples', 200,
                       'Random sub-networks evaluated on validation (after BN re-calibration) for '
                       'the accuracy predictor, besides the uniform grid; cached in the run folder.',
                       lower_bound=10)
  flags.DEFINE_integer('predictor_validation_images', 0,
                       'Validation images each predictor sub-network is scored on; 0 = '
                       '--validation_images. The predictor ranks sub-networks a point or two '
                       'apart, so it needs more images than picking a checkpoint does.',
                       lower_bound=0)
  flags.DEFINE_integer('predictor_calibration_images', 0,
                       'BN re-calibration images of each predictor sub-network; 0 = '
                       '--calibration_images. Fewer than ~500 add noise of about a point.',
                       lower_bound=0)
  flags.DEFINE_list('objectives', ['macs'],
                    'Costs the search minimises next to maximising accuracy: macs, params, '
                    'peak_activation, flash, arena, latency.')
  flags.DEFINE_list('budgets', None,
                    'Hard limits, e.g. flash<=262144,arena<=65536,macs<=2e6 (bytes, MACs, ms).')
  flags.DEFINE_integer('population', 100, 'NSGA-II population.', lower_bound=4)
  flags.DEFINE_integer('generations', 100, 'NSGA-II generations.', lower_bound=1)
  flags.DEFINE_integer('baseline_generations', 100,
                       "Generations of OFA's single-objective evolution (the baseline).",
                       lower_bound=1)
  flags.DEFINE_integer('reevaluate', 8,
                       'Pareto sub-networks (spread over the first objective) measured on the '
                       'validation and test sets after the search.', lower_bound=1)

  # Export and benchmark.
  flags.DEFINE_string('export_subnet', None,
                      'Sub-network to export: a config string, or "pareto:<i>" (the i-th of the '
                      'saved Pareto front); default the most accurate Pareto sub-network (measured '
                      'accuracy) within the budgets.')
  flags.DEFINE_integer('representative_images', 300,
                       'Training images calibrating int8 quantization.', lower_bound=1)
  flags.DEFINE_integer('qat_steps', 0,
                       'Quantization-aware fine-tuning steps before the extra QAT int8 file; 0 '
                       'skips QAT.', lower_bound=0)
  flags.DEFINE_integer('tflm_arena_bytes', 0,
                       'TFLite Micro arena for the device checks; 0 finds the smallest that works.',
                       lower_bound=0)
  flags.DEFINE_integer('benchmark_images', 1000,
                       'Test images for the accuracy of each exported file and the early-exit '
                       'threshold sweep.', lower_bound=1)
  flags.DEFINE_integer('benchmark_runs', 50, 'Timed LiteRT invokes per file and thread count.',
                       lower_bound=1)

  # Execution.
  flags.DEFINE_enum('distribution', 'default', DISTRIBUTIONS,
                    'tf.distribute strategy: default (one device), mirrored (local devices), '
                    'multi_worker (TF_CONFIG).')
  flags.DEFINE_integer('cpu_devices', 0,
                       'Split the CPU into this many logical devices (for mirrored on a CPU-only '
                       'machine); 0 = leave as is.', lower_bound=0)
  flags.DEFINE_boolean('traceback', False,
                       'On a failure, print the traceback under the one error: line (a bug\'s '
                       'traceback is always kept in the run\'s log.txt or a temporary file).')
  flags.DEFINE_integer('verbose', 1, 'Keras progress display: 0 silent, 1 progress bar, '
                       '2 one line per checkpoint chunk.', lower_bound=0, upper_bound=2)

  for name in ('kernel_sizes', 'expand_ratios', 'depths', 'resolutions', 'eval_resolutions'):
    flags.register_validator(
        name, lambda v: _int_list(v) and _positive_ints(v),
        message=f'--{name} must be a comma-separated list of positive integers')
  flags.register_validator('phase_epochs', _map_validator(float))
  flags.register_validator('phase_steps', _map_validator(int))
  flags.register_validator('phase_lr', _map_validator(float))
  flags.register_validator('budgets', _budgets_valid)
  flags.register_validator('objectives', _objectives_valid)
