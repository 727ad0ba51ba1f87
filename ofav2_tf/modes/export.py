"""`--mode=export`: one sub-network of a trained run as checked Keras and int8 TFLite files.

The sub-network is `--export_subnet`: a config string (validated against the sub-networks the
restored phase trained), `pareto:<i>` (the i-th of the search's front in
`<run_dir>/search/pareto.json`), or by default the front's most accurate candidate. Its BN
statistics are re-calibrated inside the supernet on the run's calibration images (the same images
and crops as evaluation and search, so the exported network is the one they scored), then
`export.exporter.export_subnet` writes `<run_dir>/export/` atomically: a failed export leaves the
previous one, or nothing. Why this sub-network was exported travels in the export's summary
(`metadata.choice`), inside the same atomic folder.

int8 quantization is calibrated on `--representative_images` training images with the evaluation
transform (what the device sees, not augmented crops), while the int8-vs-float agreement is measured
on held-out test images so that it is not flattered by the calibration set.

Choice errors (a typo in the config, no Pareto file, a bad index) are found before the data is read
and the supernet is restored, so they fail in seconds.
"""

import dataclasses
import os
import time
from typing import Optional

import numpy as np

from export import errors as export_errors
from ofav2_tf import arch_spec
from ofav2_tf import errors
from ofav2_tf import progress
from ofav2_tf import subnet_config as sc
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common
from ofav2_tf.search import pareto as pareto_lib

EXPORT_DIR = 'export'
PARETO_PREFIX = 'pareto:'
CHECK_IMAGES = 200
_BATCH = 100


@dataclasses.dataclass(frozen=True)
class Choice:
  """The sub-network to export and where it came from (kept with the export).

  Attributes:
    config: The sub-network.
    source: 'config' (a string given by the user), 'pareto_index' (`pareto:<i>`) or
      'pareto_most_accurate' (the default).
    pareto_file: The Pareto result it came from, if any.
    index: Its position in that result's front.
    candidate: The Pareto candidate (costs, predicted and measured accuracies).
    variant: The variant the Pareto result was searched for.
  """
  config: sc.SubnetConfig
  source: str
  pareto_file: Optional[str] = None
  index: Optional[int] = None
  candidate: Optional[pareto_lib.Candidate] = None
  variant: Optional[str] = None

  def as_dict(self) -> dict:
    data = {'config': self.config.to_string(), 'config_dict': self.config.to_dict(),
            'source': self.source}
    if self.candidate is not None:
      c = self.candidate
      data.update(pareto_file=self.pareto_file, pareto_index=self.index, label=c.label,
                  costs=dict(c.costs), predicted_accuracy=c.predicted_accuracy,
                  measured_accuracy=c.measured_accuracy, accuracy=c.accuracy,
                  test_accuracy=getattr(c, 'test_accuracy', None))
    return data

  def describe(self) -> str:
    """One line for the log."""
    if self.candidate is None:
      return 'given by --export_subnet'
    c = self.candidate
    kind = 'predicted' if c.measured_accuracy is None else 'measured'
    costs = ', '.join(f'{k} {v:,.0f}' for k, v in c.costs.items())
    how = 'the most accurate' if self.source == 'pareto_most_accurate' else 'chosen'
    return f'Pareto candidate {self.index}, {how}: {kind} accuracy {c.accuracy:.4f}, {costs}'


pareto_path = common.pareto_path


def _load_front(path: str, spec: str):
  if not os.path.isfile(path):
    raise errors.ConfigError(
        f'{spec}: there is no search result {path}; run --mode=search on this run first, or '
        'pass --export_subnet=<sub-network string>')
  result = pareto_lib.ParetoResult.load(path)
  if not result.front:
    raise errors.ConfigError(f'{spec}: the search result {path} has an empty Pareto front (no '
                             'sub-network met the budgets); search again with looser --budgets, '
                             'or pass --export_subnet=<sub-network string>')
  return result


def most_accurate(front) -> int:
  """Index of the front's most accurate candidate.

  Measured accuracies win over predicted ones: when the search measured some candidates, only
  those compete, because the predictor's estimates are biased upwards for the networks it ranks
  best and would crowd out the ones known to be good. Ties go to the earlier (cheaper) candidate.
  """
  measured = [i for i, c in enumerate(front) if c.measured_accuracy is not None]
  pool = measured or range(len(front))
  return max(pool, key=lambda i: (front[i].accuracy, -i))


def choose(spec: Optional[str], run_dir: str) -> Choice:
  """The sub-network `--export_subnet=spec` names (not yet checked against the run's space).

  Raises:
    ConfigError: the string does not parse, there is no Pareto result, or the index is not one
      of the front's.
  """
  spec = (spec or '').strip()
  if spec and not spec.startswith(PARETO_PREFIX):
    try:
      return Choice(sc.SubnetConfig.parse(spec), 'config')
    except errors.ConfigError as e:
      raise errors.ConfigError(f'--export_subnet={spec}: {e}; or pass pareto:<i> for the i-th '
                               'sub-network of the search result') from None
  path = pareto_path(run_dir)
  if not spec:
    if not os.path.isfile(path):
      raise errors.ConfigError(
          f'no sub-network to export: --export_subnet is not given and there is no search result '
          f'{path}; run --mode=search first, or pass --export_subnet=<sub-network string> or '
          'pareto:<i>')
    result = _load_front(path, 'default export (most accurate Pareto sub-network)')
    index = most_accurate(result.front)
    return Choice(result.front[index].config, 'pareto_most_accurate', path, index,
                  result.front[index], result.variant)
  text = spec[len(PARETO_PREFIX):].strip()
  if not text.isdigit():
    raise errors.ConfigError(f'--export_subnet={spec}: expected pareto:<i> with i a whole number '
                             '>= 0 (the position in the Pareto front), e.g. pareto:0')
  result = _load_front(path, f'--export_subnet={spec}')
  index = int(text)
  if index >= len(result.front):
    raise errors.ConfigError(
        f'--export_subnet={spec}: the Pareto front in {path} has {len(result.front)} '
        f'sub-network(s); valid indices are 0..{len(result.front) - 1}')
  return Choice(result.front[index].config, 'pareto_index', path, index, result.front[index],
                result.variant)


def check_choice(choice: Choice, run) -> sc.SubnetConfig:
  """The chosen config, validated against what the restored phase of the run trained."""
  if choice.variant is not None and choice.variant != run.config.variant:
    raise errors.ConfigError(
        f'search result {choice.pareto_file} is for variant {choice.variant}, but run '
        f'{run.folder.path} is {run.config.variant}; search this run again (--mode=search)')
  try:
    return run.space.validate(choice.config)
  except errors.ConfigError as e:
    where = ('--export_subnet' if choice.candidate is None else
             f'Pareto candidate {choice.index} of {choice.pareto_file}')
    raise errors.ConfigError(
        f'{where} is outside what phase {run.plan.name} of this run trained: {e}') from None


def _all_stages(config: sc.SubnetConfig, supernet) -> sc.SubnetConfig:
  """`config` running every stage: its own choices up to its exit, the largest ones after."""
  full = supernet.search_space(resolutions=(config.resolution,)).max_config(config.resolution)
  kernel, expand, depth = list(config.kernel), list(config.expand), list(config.depth)
  branches = None if config.branches is None else list(config.branches)
  for stage in range(config.exit, arch_spec.NUM_STAGES):
    depth[stage] = full.depth[stage]
    for b in range(stage * arch_spec.BLOCKS_PER_STAGE, (stage + 1) * arch_spec.BLOCKS_PER_STAGE):
      kernel[b], expand[b] = full.kernel[b], full.expand[b]
      if branches is not None:
        branches[b] = full.branches[b]
  return config.replace(kernel=kernel, expand=expand, depth=depth, exit=arch_spec.NUM_STAGES,
                        branches=branches)


def recalibrate(supernet, splits, config: sc.SubnetConfig, calibration_images: int,
                seed: int) -> int:
  """Re-estimates the supernet's BN statistics for `config`; returns the images used.

  Uses the images and crops `phase_eval.Evaluator` uses, so the exported network is the one that
  evaluation and search scored. Early-exit variants run every exit head: the early-exit segments
  export the heads before the config's exit too, and their BN statistics must be the
  sub-network's as well.
  """
  from ofav2_tf import bn_calibration  # pylint: disable=g-import-not-at-top
  from ofav2_tf import supernet as supernet_lib  # pylint: disable=g-import-not-at-top
  from ofav2_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  images = pipeline.calibration_images(splits, calibration_images, seed)
  batches = pipeline.calibration_batches(splits, images, config.resolution, seed=seed)
  if supernet.variant.early_exits:
    arch = supernet_lib.arch_tensors(_all_stages(config, supernet))
    forward = lambda x: supernet(x, arch, training=True, all_exits=True)  # noqa: E731
  else:
    arch = supernet_lib.arch_tensors(config)
    forward = lambda x: supernet(x, arch, training=True)  # noqa: E731
  return bn_calibration.recalibrate(supernet, batches, forward)


def _images(splits, resolution: int, split: str, count: int) -> np.ndarray:
  """A class-stratified sample of `count` images of `split`, evaluation-transformed."""
  from ofav2_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  batch = min(count, _BATCH)
  chunks = [x.numpy() for x, _ in pipeline.eval_batches(splits, batch, resolution, split=split,
                                                        images=count)]
  if not chunks:
    return np.zeros((0, resolution, resolution, 3), np.float32)
  return np.concatenate(chunks)[:count]


def representative_images(splits, resolution: int, count: int) -> np.ndarray:
  """Training images calibrating int8: evaluation transform, since that is what a device sees.

  Raises:
    DataError: the training split gives no images.
  """
  images = _images(splits, resolution, 'train', count)
  if not len(images):
    raise errors.DataError(
        f'the train split of {splits.name} gave no images to calibrate int8 quantization with '
        f'(--representative_images={count}); check the dataset (--dataset, --data_dir)')
  return images


def check_images(splits, resolution: int, count: int = CHECK_IMAGES) -> np.ndarray:
  """Held-out test images for the equivalence and int8 agreement checks (possibly none)."""
  return _images(splits, resolution, 'test', count)


def _size(n: int) -> str:
  return f'{n / 1024:,.1f} KiB' if n >= 1024 else f'{n} B'


def summary_lines(summary: dict) -> list:
  """A few lines for the log: files and sizes, float error, int8 agreement, TFLite Micro arenas."""
  files, checks = summary['files'], summary['checks']
  ee = files.get('early_exit') or {}
  listed = [(v['path'], v['size_bytes'], v.get('tflm_arena_bytes'))
            for v in files.values() if 'path' in v]
  segments = [f for f in ee.get('files', ()) if f['path'] != ee.get('multi_output')]
  arenas = list(ee.get('arena_bytes', ())) + [None] * len(segments)
  listed += [(f['path'], f['size_bytes'], a) for f, a in zip(segments, arenas)]
  listed += [(f['path'], f['size_bytes'], None) for f in ee.get('files', ())
             if f['path'] == ee.get('multi_output')]
  width = max(len(p) for p, _, _ in listed)
  lines = ['  files:']
  for path, size, arena in listed:
    line = f'    {path:<{width}} {_size(size):>12}'
    if arena is not None:
      line += f'  TFLite Micro arena {arena:,} B'
    lines.append(line)
  float_errors = {k: max(checks[k]['max_relative_error'].values())
                  for k in ('float_tflite', 'saved_model') if k in checks}
  lines.append('  float vs Keras, max relative error: ' +
               ', '.join(f'{k} {v:.2g}' for k, v in float_errors.items()))
  for key in ('int8_tflite', 'qat_int8_tflite'):
    if key in checks:
      agreement = ', '.join(f'{name} {v["top1_agreement"]:.3f}'
                            for name, v in checks[key]['vs_float'].items())
      lines.append(f'  {files[key]["path"]} top-1 agreement with float: {agreement} '
                   f'({summary["check_images"]} check images)')
  return lines


@MODES.register('export')
def export(flag_values):
  f = flag_values
  folder = common.open_run_folder(f.run_dir)
  choice = choose(f.export_subnet, folder.path)
  run = common.load_trained_run(f.run_dir, f.phase, common.eval_overrides(f))
  config = check_choice(choice, run)
  folder.log(f'Exporting {config.to_string()} ({choice.describe()}) from phase {run.plan.name}')
  started = time.perf_counter()

  # Data first: a missing or empty dataset must fail before anything is computed or written.
  representative = representative_images(run.splits, config.resolution, f.representative_images)
  check = check_images(run.splits, config.resolution)
  if not len(check):
    folder.log('  the test split is empty: the int8 agreement is measured on the representative '
               'images (biased upwards)')
    check = None
  used = recalibrate(run.supernet, run.splits, config, run.config.calibration_images,
                     run.config.seed)
  folder.log(f'  BN statistics re-calibrated on {used} training images; int8 calibrated on '
             f'{len(representative)} training images')

  from export import exporter  # pylint: disable=g-import-not-at-top
  qat = None
  if f.qat_steps > 0:
    from ofav2_tf.data import pipeline  # pylint: disable=g-import-not-at-top
    qat = exporter.QATOptions(
        train_batches=pipeline.train_batches(run.splits, run.config.batch_size,
                                             (config.resolution,), run.config.seed),
        steps=f.qat_steps)
  metadata = {'choice': choice.as_dict(), 'run_dir': folder.path, 'phase': run.plan.name,
              'bn_calibration_images': used, 'representative_images': len(representative),
              'check_split': 'test' if check is not None else 'train'}
  try:
    with progress.Heartbeat(folder.log, 'export') as heartbeat:
      result = exporter.export_subnet(
          run.supernet, folder.file(EXPORT_DIR), representative, config=config,
          check_images=check, qat=qat, max_samples=len(representative), overwrite=True,
          tflm_arena_bytes=f.tflm_arena_bytes, metadata=metadata,
          progress=lambda step: heartbeat.update(step=step))
  except export_errors.ArenaTooSmallError as e:
    raise export_errors.ArenaTooSmallError(
        f'--tflm_arena_bytes={f.tflm_arena_bytes}: {e}; nothing was exported (give at least that '
        'size, or 0 to measure the smallest arena)') from None
  folder.log(f'Exported to {result.out_dir} in {time.perf_counter() - started:.0f} s')
  for line in summary_lines(result.summary):
    folder.log(line)
  return result.summary
