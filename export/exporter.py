"""One entry point that exports a searched sub-network: every deployable file, checked, one folder.

`export_subnet` is a thin orchestrator over the single-job modules of this package. From a
supernet + sub-network choice (extracted here) or an already extracted model, it writes:

  <name>.keras, <name>_keras3.keras  plain Keras files for tf_keras and Keras 3, each loaded back
                                     in a fresh process (keras_portability);
  saved_model/                       a TF SavedModel, 'serving_default' signature (any batch);
  <name>_float.tflite                float32 TFLite, batch 1, builtin ops (tflite_convert);
  <name>_int8.tflite                 full-integer int8 PTQ (int8 in/out), calibrated on the
                                     representative images (tflite_convert);
  <name>_qat_int8.tflite             optional: int8 after quantization-aware fine-tuning (qat);
  early_exit/                        early-exit variants: one int8 file per segment, manifest.json
                                     (segments), and the multi-output file unless
                                     <name>_int8.tflite already is it (a multi-exit model);
  export_summary.json                what was written (paths relative to the folder, sizes, op
                                     sets, deployment checks), every equivalence check's figures,
                                     and the caller's `metadata` (e.g. why this sub-network).

Each transform is checked against the float Keras model on the same images: the SavedModel and the
float TFLite file must match it (relative error, by default at most 1e-4 of the output's largest
magnitude, else ExportError); int8 files report top-1 agreement with it (quantization changes
predictions, so this is a figure, not a pass/fail). The images are the representative images
unless `check_images` are given (held-out images make the agreement an unbiased estimate).

Atomicity: everything is written into a temporary sibling folder and renamed to `out_dir` only
when every step succeeded; on any error the temporary folder is deleted, so `out_dir` either holds a
complete export or is left as it was. A missing or empty representative dataset is rejected before
anything is created.
"""

import dataclasses
import json
import os
import shutil
from typing import Callable, Optional, Sequence, Union

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from export import atomic_write
from export import keras_portability
from export import litert_runner
from export import qat as qat_lib
from export import segments
from export import tflite_convert
from export import tflite_inspect
from export import tflm_runner
from export.errors import ArenaTooSmallError
from export.errors import ExportError
from ofav2_tf import extraction
from ofav2_tf import supernet as supernet_lib

SUMMARY_NAME = 'export_summary.json'
SUMMARY_FORMAT = 'ofav2-export'
SUMMARY_VERSION = 1
SAVED_MODEL_DIR = 'saved_model'
EARLY_EXIT_DIR = 'early_exit'
DEFAULT_FLOAT_RTOL = 1e-4
DEFAULT_CHECK_IMAGES = 32


@dataclasses.dataclass
class QATOptions:
  """Quantization-aware fine-tuning settings (see `export.qat.quantization_aware_finetune`).

  Attributes:
    train_batches: (images, labels) batches from the training split at the model's resolution
      (e.g. `ofav2_tf.data.pipeline.train_batches(..., resolutions=(r,))`).
    steps: optimizer steps.
    learning_rate: SGD learning rate (small: the network is trained already).
    loss: `loss(labels, logits)`, applied to every output; default cross-entropy on logits.
    freeze_batch_norm: keep the re-calibrated BN statistics.
  """
  train_batches: object
  steps: int = 100
  learning_rate: float = qat_lib.DEFAULT_LEARNING_RATE
  loss: Optional[Callable] = None
  freeze_batch_norm: bool = True


@dataclasses.dataclass
class ExportResult:
  """What `export_subnet` wrote.

  Attributes:
    out_dir: the export folder.
    summary_path: its export_summary.json.
    summary: the summary as a dict (paths relative to `out_dir`).
    model: the float tf_keras model exported.
    qat_model: the quantization-aware model, if QAT ran.
  """
  out_dir: str
  summary_path: str
  summary: dict
  model: tf_keras.Model
  qat_model: Optional[tf_keras.Model] = None

  def path(self, key):
    """Absolute path of a written file by its summary key ('float_tflite', 'int8_tflite', ...)."""
    entry = self.summary['files'].get(key)
    if entry is None:
      raise ExportError(f'this export has no {key!r}; it has {sorted(self.summary["files"])}')
    return os.path.join(self.out_dir, entry['path'])


def _resolve_model(source, config, exits):
  """(float model, supernet or None) from a supernet + config or an extracted model."""
  if isinstance(source, supernet_lib.OFASupernet):
    if config is None:
      raise ExportError('exporting from a supernet needs the sub-network: pass config='
                        'SubnetConfig(...) (e.g. a search result)')
    return extraction.extract(source, config, exits=exits), source
  if isinstance(source, tf_keras.Model):
    if config is not None or exits is not None:
      raise ExportError('config and exits select a sub-network of a supernet; model '
                        f'{source.name!r} is already extracted, pass it without them')
    return source, None
  raise ExportError(f'cannot export a {type(source).__name__}; pass an OFASupernet with config=, '
                    'or an extracted tf_keras model (ofav2_tf.extraction.extract)')


def _as_list(outputs):
  return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _keras_outputs(model, images, batch_size=32):
  """Float Keras outputs on `images`, as a dict by output name."""
  chunks = [_as_list(model(images[i:i + batch_size], training=False))
            for i in range(0, len(images), batch_size)]
  return {name: np.concatenate([np.asarray(c[k]) for c in chunks])
          for k, name in enumerate(model.output_names)}


def _tflite_outputs(path, images):
  runner = litert_runner.LiteRTModel(path)
  per_image = [runner.run(image[np.newaxis]) for image in images]
  return {name: np.concatenate([r[name] for r in per_image]) for name in runner.output_names}


def _relative_error(got, want):
  """Per output: max |got - want| / max |want| (the float tolerance's measure)."""
  return {name: float(np.max(np.abs(got[name] - value)) / max(float(np.max(np.abs(value))), 1e-12))
          for name, value in want.items()}


def _check_float(what, got, want, rtol):
  errors = _relative_error(got, want)
  worst = max(errors, key=errors.get)
  if errors[worst] > rtol:
    raise ExportError(f'{what} output {worst!r} differs from the Keras model by '
                      f'{errors[worst]:.2g} of its largest value (allowed {rtol:g}); the export '
                      'is not faithful')
  return {'max_relative_error': errors, 'rtol': rtol, 'ok': True}


def _agreement(got, want):
  """Per output: top-1 agreement and RMS difference relative to the float logits' RMS spread."""
  result = {}
  for name, value in want.items():
    spread = float(np.sqrt(np.mean((value - value.mean(axis=1, keepdims=True)) ** 2)))
    result[name] = {
        'top1_agreement': float(np.mean(np.argmax(got[name], 1) == np.argmax(value, 1))),
        'rms_error_over_spread': float(np.sqrt(np.mean((got[name] - value) ** 2))) / max(
            spread, 1e-12)}
  return result


def _tensor_summary(tensor, name):
  entry = {'name': name, 'shape': list(tensor.shape), 'dtype': tensor.dtype}
  if tensor.is_quantized and len(tensor.scales) == 1:
    entry.update(scale=tensor.scale, zero_point=tensor.zero_point)
  return entry


def _tflite_summary(path, root, tflm_arena=False, arena_bytes=0):
  """Size, op set and the deployment checks of one .tflite file (TFLM run if `tflm_arena`)."""
  info = tflite_inspect.inspect_tflite(path)
  entry = {'path': os.path.relpath(path, root), 'size_bytes': info.size_bytes,
           'ops': dict(info.op_counts), 'builtin_only': info.builtin_only,
           'inputs': [_tensor_summary(t, n) for t, n in zip(info.inputs, info.input_names)],
           'outputs': [_tensor_summary(t, n) for t, n in zip(info.outputs, info.output_names)]}
  for key, check in (('deployable', tflite_inspect.check_deployable),
                     ('tflm_runnable', tflm_runner.check_runnable)):
    try:
      check(info)
      entry[key] = True
    except ExportError as e:
      entry[key] = str(e).replace(root + os.sep, '')
  if tflm_arena and entry['tflm_runnable'] is True:
    entry.update(_tflm_arena(path, info, root, arena_bytes))
  return entry


def _tflm_arena(path, info, root, arena_bytes=0):
  """Runs an int8 file once under TFLite Micro: its arena, and its match with LiteRT's reference.

  With `arena_bytes` the file must run in that arena, as on the device it is meant for; otherwise
  the default (generous) arena is given and only the smallest working size is measured.
  """
  rng = np.random.default_rng(0)
  inputs = [rng.integers(-128, 128, t.shape).astype(np.int8) for t in info.inputs]
  try:
    result = tflm_runner.run_tflm(path, inputs, arena_size=arena_bytes or
                                  tflm_runner.DEFAULT_ARENA_BYTES, find_min_arena=True)
  except ArenaTooSmallError as e:
    # The temporary folder is gone by the time the caller reads this: name the file as exported.
    raise ArenaTooSmallError(str(e).replace(root + os.sep, '')) from None
  expected = litert_runner.LiteRTModel(path, reference_kernels=True).run_raw(inputs)
  diff = max(int(np.max(np.abs(a.astype(np.int32) - b.astype(np.int32))))
             for a, b in zip(result.outputs, expected))
  entry = {'tflm_arena_bytes': int(result.arena_min_bytes),
           'tflm_arena_used_bytes': int(result.arena_used_bytes), 'tflm_max_step_diff': diff}
  if arena_bytes:
    entry['tflm_arena_checked_bytes'] = int(arena_bytes)
  return entry


def _dir_size(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _save_saved_model(model, path):
  """A SavedModel whose 'serving_default' takes 'image' [N, H, W, C] and returns named outputs."""
  function, holder = tflite_convert.serving_function(model, batch_size=None)
  tf.saved_model.save(holder, path, signatures={'serving_default': function})


def _saved_model_outputs(path, images, input_name):
  loaded = tf.saved_model.load(path)
  serve = loaded.signatures['serving_default']
  return {k: np.asarray(v) for k, v in serve(**{input_name: tf.constant(images)}).items()}


def _prepare_out_dir(out_dir, overwrite):
  out_dir = os.path.abspath(os.fspath(out_dir))
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise ExportError(f'export folder {out_dir} already exists and is not empty; choose another '
                      'folder or pass overwrite=True')
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ExportError(f'export folder {out_dir} is an existing file; choose a folder name')
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  for path in atomic_write.remove_stale(parent, os.path.basename(out_dir)):
    logging.warning('removed %s, left by an interrupted export', path)
  return out_dir, atomic_write.temp_dir(parent, os.path.basename(out_dir))


def _publish(tmp, out_dir):
  """Renames the finished temporary folder to `out_dir`, replacing an old export there."""
  old = None
  if os.path.exists(out_dir):
    old = atomic_write.temp_dir(os.path.dirname(out_dir), os.path.basename(out_dir), 'old')
    os.rmdir(old)
    os.rename(out_dir, old)
  os.rename(tmp, out_dir)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def export_subnet(source, out_dir, representative_images, *, config=None,
                  exits: Union[None, str, Sequence[int]] = None, name: str = 'model',
                  qat: Optional[QATOptions] = None, early_exit: bool = True,
                  check_images=None, check_tflm: bool = True,
                  max_samples: int = tflite_convert.DEFAULT_CALIBRATION_SAMPLES,
                  float_rtol: float = DEFAULT_FLOAT_RTOL, overwrite: bool = False,
                  tflm_arena_bytes: int = 0, metadata: Optional[dict] = None,
                  progress: Optional[Callable[[str], None]] = None) -> ExportResult:
  """Exports a sub-network as Keras, SavedModel, float and int8 TFLite files, with a summary.

  Args:
    source: an `OFASupernet` (with `config`; its BN statistics re-calibrated for that sub-network)
      or an extracted tf_keras model (`ofav2_tf.extraction.extract`).
    out_dir: the export folder; created, must not hold files unless `overwrite`.
    representative_images: preprocessed TRAINING images at the model's resolution for int8
      calibration (a few hundred; any form `tflite_convert.calibration_samples` takes). Missing or
      empty raises ExportError before anything is written.
    config: the `SubnetConfig` to extract from a supernet.
    exits: exits of the exported model (supernet only): None for the config's exit, 'all' or a list
      for a multi-output model (see `extraction.extract`).
    name: file stem of the exported files.
    qat: also write `<name>_qat_int8.tflite` after quantization-aware fine-tuning with these
      options.
    early_exit: for early-exit supernets, also write the early-exit segment files and manifest
      (exits: the model's own if it has several, else every exit up to the config's).
    check_images: images for the equivalence checks; default the first 32 representative images.
    check_tflm: run the int8 files once under TFLite Micro (arena size, match with LiteRT).
    max_samples: calibration images used.
    float_rtol: allowed relative error of the SavedModel and float TFLite outputs.
    overwrite: replace an existing export in `out_dir`.
    tflm_arena_bytes: the TFLite Micro arena of the target device: every int8 file checked under
      TFLite Micro (the main and QAT files, the early-exit segments) must run in it, else
      ArenaTooSmallError (naming the size needed) and nothing is written; 0 only measures the
      smallest arena each file needs.
    metadata: JSON-serialisable facts stored as the summary's 'metadata' (e.g. how the
      sub-network was chosen), so they travel inside the atomically published folder.
    progress: called with the name of each step as it starts (the command line's heartbeat).

  Returns:
    An `ExportResult`.

  Raises:
    ExportError: bad arguments, a model outside the export vocabulary, a failed equivalence or
      portability check; `out_dir` is then left as it was.
    ArenaTooSmallError: a file does not run in `tflm_arena_bytes`.
  """
  if not float_rtol >= 0:
    raise ExportError(f'float_rtol={float_rtol}; expected a relative tolerance >= 0, e.g. 1e-4')
  if (isinstance(tflm_arena_bytes, bool) or not isinstance(tflm_arena_bytes, (int, np.integer))
      or tflm_arena_bytes < 0):
    raise ExportError(f'tflm_arena_bytes={tflm_arena_bytes!r}; expected a number of bytes >= 0 '
                      '(0 measures the smallest arena)')
  if tflm_arena_bytes and not check_tflm:
    raise ExportError(f'tflm_arena_bytes={tflm_arena_bytes} is checked by running TFLite Micro; '
                      'pass check_tflm=True or leave tflm_arena_bytes at 0')
  if metadata is not None:
    try:
      metadata = json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as e:
      raise ExportError(f'metadata must be JSON-serialisable (numbers, strings, lists, dicts): '
                        f'{e}') from None
  model, supernet = _resolve_model(source, config, exits)
  keras_portability.check_vocabulary(model)
  dims = tuple(model.inputs[0].shape[1:])
  if len(model.inputs) != 1 or any(d is None for d in dims):
    raise ExportError(f'model {model.name!r} must have one input of fixed size; got input shapes '
                      f'{[list(i.shape) for i in model.inputs]} (extract at the config resolution)')
  shape = (1,) + tuple(int(d) for d in dims)
  samples = np.concatenate(tflite_convert.calibration_samples(representative_images, shape,
                                                              max_samples))
  if check_images is None:
    check = samples[:DEFAULT_CHECK_IMAGES]
  else:
    check = np.concatenate(tflite_convert.calibration_samples(check_images, shape, 10 ** 9))
  out_dir, tmp = _prepare_out_dir(out_dir, overwrite)
  try:
    summary, qat_model = _write_all(model, supernet, config, tmp, samples, check, name, qat,
                                    early_exit, check_tflm, max_samples, float_rtol,
                                    int(tflm_arena_bytes), progress or (lambda step: None))
    if metadata is not None:
      summary['metadata'] = metadata
    summary_path = atomic_write.write_text(os.path.join(tmp, SUMMARY_NAME),
                                           json.dumps(summary, indent=2) + '\n')
    _publish(tmp, out_dir)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return ExportResult(out_dir=out_dir, summary_path=os.path.join(out_dir, SUMMARY_NAME),
                      summary=summary, model=model, qat_model=qat_model)


def _write_all(model, supernet, config, root, samples, check, name, qat_options, early_exit,
               check_tflm, max_samples, float_rtol, arena_bytes, step):
  """Writes every file into `root` (the temporary folder) and returns (summary, QAT model)."""
  files, checks = {}, {}
  want = _keras_outputs(model, check)
  step('SavedModel')

  saved_model = os.path.join(root, SAVED_MODEL_DIR)
  _save_saved_model(model, saved_model)
  files['saved_model'] = {'path': SAVED_MODEL_DIR, 'size_bytes': _dir_size(saved_model),
                          'signature': 'serving_default', 'input': model.input_names[0],
                          'outputs': list(model.output_names)}
  checks['saved_model'] = _check_float(
      'the SavedModel', _saved_model_outputs(saved_model, check, model.input_names[0]), want,
      float_rtol)

  path = os.path.join(root, f'{name}_float.tflite')
  step('float TFLite conversion')
  tflite_convert.convert_float(model, path)
  files['float_tflite'] = _tflite_summary(path, root)
  checks['float_tflite'] = _check_float(f'{name}_float.tflite', _tflite_outputs(path, check),
                                        want, float_rtol)

  path = os.path.join(root, f'{name}_int8.tflite')
  step(f'int8 TFLite conversion ({min(len(samples), max_samples)} calibration images)')
  tflite_convert.convert_int8(model, samples, path, max_samples=max_samples)
  files['int8_tflite'] = _tflite_summary(path, root, tflm_arena=check_tflm,
                                         arena_bytes=arena_bytes)
  checks['int8_tflite'] = {'vs_float': _agreement(_tflite_outputs(path, check), want)}

  qat_model = None
  if qat_options is not None:
    step(f'quantization-aware fine-tuning ({qat_options.steps} steps) and conversion')
    result = qat_lib.quantization_aware_finetune(
        model, qat_options.train_batches, qat_options.steps, samples,
        learning_rate=qat_options.learning_rate, loss=qat_options.loss,
        freeze_batch_norm=qat_options.freeze_batch_norm, max_range_images=max_samples)
    qat_model = result.model
    path = os.path.join(root, f'{name}_qat_int8.tflite')
    qat_lib.convert_qat_int8(qat_model, samples, path, max_samples=max_samples)
    files['qat_int8_tflite'] = _tflite_summary(path, root, tflm_arena=check_tflm,
                                               arena_bytes=arena_bytes)
    got = _tflite_outputs(path, check)
    simulated = dict(zip(model.output_names, qat_lib.predict(qat_model, check)))
    checks['qat_int8_tflite'] = {
        'steps': qat_options.steps, 'learning_rate': qat_options.learning_rate,
        'final_loss': result.losses[-1] if result.losses else None,
        'vs_float': _agreement(got, want), 'vs_qat_model': _agreement(got, simulated)}

  step('early-exit segments')
  ee = _write_early_exit(model, supernet, config, root, samples, early_exit, check_tflm,
                         max_samples, files['int8_tflite']['path'], arena_bytes)
  if ee is not None:
    files['early_exit'] = ee

  # Last: the slowest step (three fresh Python processes), so a failing conversion fails fast.
  step('Keras 2 and Keras 3 files, loaded back in fresh processes')
  report = keras_portability.save_and_check(model, root, basename=name)
  report.raise_for_failure()
  for key, path in (('keras', report.tf_keras_path), ('keras3', report.keras3_path)):
    files[key] = {'path': os.path.relpath(path, root), 'size_bytes': os.path.getsize(path)}
  checks['keras_portability'] = {
      'ok': report.ok, 'keras3_loads_tf_keras_file_error': report.keras3_direct_error,
      'fresh_process_loads': [{'flavour': c.flavour, 'keras_version': c.keras_version,
                               'max_abs_diff': list(c.max_abs_diff)} for c in report.checks]}

  summary = {
      'format': SUMMARY_FORMAT, 'version': SUMMARY_VERSION,
      'model': {'name': model.name, 'input': model.input_names[0],
                'input_shape': [1] + [int(d) for d in model.inputs[0].shape[1:]],
                'outputs': list(model.output_names)},
      'source': None if supernet is None else {
          'variant': supernet.variant.name, 'num_classes': supernet.num_classes,
          'width_multiplier': supernet.width_multiplier, 'config': config.to_dict()},
      'calibration_images': int(len(samples)), 'check_images': int(len(check)),
      'files': files, 'checks': checks}
  return summary, qat_model


def _write_early_exit(model, supernet, config, root, samples, early_exit, check_tflm,
                      max_samples, main_int8, arena_bytes=0):
  """Early-exit segment files via export.segments; None (or why not) when not applicable.

  The segments are what a microcontroller runs, so a given `arena_bytes` is checked on each of
  them here (export.segments measures their arenas with a generous one).
  """
  if not early_exit:
    return None
  if supernet is None:
    if len(model.outputs) > 1:
      return {'skipped': 'early-exit segments are exported from a supernet and config (the '
                         'manifest records the sub-network and the MACs of each segment)'}
    return None
  if not supernet.variant.early_exits:
    return None
  model_exits = segments.model_exits(model)
  directory = os.path.join(root, EARLY_EXIT_DIR)
  # A multi-exit main model's int8 file already is the multi-output file: not written twice.
  multi_exit_model = len(model_exits) > 1
  result = segments.export_early_exit(
      supernet, config, samples, directory, exits=model_exits if multi_exit_model else None,
      max_samples=max_samples, multi_output=not multi_exit_model, check_tflm=check_tflm)
  files = [_tflite_summary(os.path.join(directory, s.file), root,
                           tflm_arena=bool(check_tflm and arena_bytes), arena_bytes=arena_bytes)
           for s in result.manifest.segments]
  multi = result.manifest.multi_output
  if multi is not None:
    files.append(_tflite_summary(os.path.join(directory, multi.file), root))
  return {'manifest': os.path.relpath(result.manifest_path, root),
          'exits': list(result.manifest.exits), 'files': files,
          'multi_output': (os.path.join(EARLY_EXIT_DIR, multi.file) if multi is not None
                           else main_int8),
          'arena_bytes': [s.arena_bytes for s in result.manifest.segments]}


__all__ = ['export_subnet', 'ExportResult', 'QATOptions', 'SUMMARY_NAME']
