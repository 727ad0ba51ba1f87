"""Runs an exported early-exit chain with LiteRT and chooses its confidence threshold.

The cascade runs the segment files in order and stops at the first exit whose confidence reaches
that exit's threshold; the last exit always answers. Confidence is the largest softmax probability
of the exit's dequantized logits (the manifest's 'max_softmax'): cheap on a device, and the standard
early-exit criterion. Feature maps pass between segments as int8; when segment k's feature output
and segment k+1's input were calibrated to different quantization parameters, the values are
requantized (dequantize with the output's, quantize with the input's), as a device must.

Threshold sweep (`sweep`): every segment runs once on every image and the per-exit logits are kept;
each threshold's outcome (exit taken, prediction, MACs) is then derived from the cache, so a sweep
over a hundred thresholds costs one pass. Latency per segment is measured once with LiteRT (median
over timed runs of the file, like `litert_runner.measure_latency`); a threshold's latency for an
image is the sum of the measured latencies of the segments it actually runs, and the reported mean
latency averages that over the images. Requantization between segments is not included (a few
thousand int8 operations at most).
"""

import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from export import litert_runner
from export import manifest as manifest_lib
from export import quantization
from export.errors import ExportError

DEFAULT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0001, 0.01))
DEFAULT_MAX_ACCURACY_DROP = 0.01  # one percentage point


def confidence(logits) -> np.ndarray:
  """Max softmax probability along the last axis (float64, numerically stable)."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  p = np.exp(z)
  return (p / p.sum(axis=-1, keepdims=True)).max(axis=-1)


@dataclasses.dataclass(frozen=True)
class CascadeResult:
  """One cascade inference.

  Attributes:
    prediction: Predicted class.
    exit: The exit that answered.
    confidence: That exit's max softmax probability.
    macs: MACs spent (every segment run).
    logits: That exit's dequantized logits.
  """

  prediction: int
  exit: int
  confidence: float
  macs: int
  logits: np.ndarray


class Cascade:
  """An early-exit export loaded in LiteRT interpreters, one per segment.

  Args:
    manifest: Path of the export's manifest.json.
    num_threads: CPU threads per interpreter.
    reference_kernels: Use TFLite's reference kernels (as TFLite Micro does) instead of XNNPACK.
  """

  def __init__(self, manifest: Union[str, os.PathLike], num_threads: int = 1,
               reference_kernels: bool = False):
    self.manifest_path = os.fspath(manifest)
    self.manifest = manifest_lib.Manifest.load(self.manifest_path)
    self.directory = os.path.dirname(os.path.abspath(self.manifest_path))
    self.num_threads = int(num_threads)
    self.models = []
    for entry in self.manifest.segments:
      model = litert_runner.LiteRTModel(self.path(entry), num_threads=num_threads,
                                        reference_kernels=reference_kernels)
      self._check_matches(entry, model)
      self.models.append(model)

  def path(self, entry) -> str:
    return os.path.join(self.directory, entry.file)

  @staticmethod
  def _check_matches(entry, model):
    names = [t.name for t in entry.outputs]
    if list(model.output_names) != names or [t.index for t in model.info.inputs] != [
        t.tensor_index for t in entry.inputs]:
      raise ExportError(f'{entry.file} does not match its manifest entry (outputs '
                        f'{list(model.output_names)}, manifest says {names}); re-export it')

  @property
  def exits(self) -> List[int]:
    return [s.exit for s in self.manifest.segments]

  def _link(self, position, raw_features):
    """Segment `position`'s int8 input from the previous segment's raw feature output."""
    source = self.manifest.segments[position - 1]
    out = source.output(source.features)
    dest = self.manifest.segments[position].inputs[0]
    if (out.scale, out.zero_point) == (dest.scale, dest.zero_point):
      return raw_features
    values = quantization.dequantize(raw_features, out.scale, out.zero_point)
    return quantization.quantize(values, dest.scale, dest.zero_point, np.dtype(dest.dtype))

  def _image_input(self, image):
    image = np.asarray(image, np.float32)
    if image.ndim == 3:
      image = image[np.newaxis]
    return self.models[0].quantize_inputs(image)[0]

  def _segments(self, image):
    """Yields (position, entry, dequantized logits) segment by segment (lazily)."""
    current = self._image_input(image)
    for position, (entry, model) in enumerate(zip(self.manifest.segments, self.models)):
      if position:
        current = self._link(position, current)
      raw = dict(zip(model.output_names, model.run_raw(current)))
      logits_tensor = entry.output(entry.logits)
      yield position, entry, quantization.dequantize(raw[entry.logits], logits_tensor.scale,
                                                     logits_tensor.zero_point)[0]
      if entry.features is not None:
        current = raw[entry.features]

  def run_all(self, image) -> Dict[int, np.ndarray]:
    """Every exit's dequantized logits for one float image [H, W, 3] (runs every segment)."""
    return {entry.exit: logits for _, entry, logits in self._segments(image)}

  def run(self, image, thresholds: Union[None, float, Mapping[int, Optional[float]]] = None
          ) -> CascadeResult:
    """Classifies one image, stopping at the first confident exit.

    Args:
      image: Float image [H, W, 3] or [1, H, W, 3], preprocessed like the training input.
      thresholds: None for the manifest's thresholds; one value for every exit; or a dict per exit
        (None for an exit = never stop there).

    Returns:
      A `CascadeResult`.
    """
    per_exit = self.manifest.with_thresholds(thresholds).thresholds if thresholds is not None \
        else self.manifest.thresholds
    last = len(self.manifest.segments) - 1
    for position, entry, logits in self._segments(image):
      conf = float(confidence(logits))
      threshold = per_exit.get(entry.exit)
      if position == last or (threshold is not None and conf >= threshold):
        return CascadeResult(prediction=int(np.argmax(logits)), exit=entry.exit, confidence=conf,
                             macs=entry.cumulative_macs, logits=logits)
    raise AssertionError('unreachable: the last segment always answers')

  def segment_latency_ms(self, runs: int = 50, warmup: int = 10) -> Dict[int, float]:
    """Median LiteRT latency of each segment file, with this cascade's thread count."""
    result = {}
    for entry in self.manifest.segments:
      stats = litert_runner.measure_latency(self.path(entry), (self.num_threads,), runs, warmup)
      result[entry.exit] = stats[self.num_threads].median_ms
    return result


@dataclasses.dataclass(frozen=True)
class SweepRow:
  """The cascade's outcome on the sweep images for one threshold.

  Attributes:
    threshold: Shared threshold of every exit but the last; None = the always-last baseline.
    accuracy: Top-1 accuracy (fraction).
    mean_macs: MACs per image.
    mean_latency_ms: Latency per image (sum of the measured latencies of the segments run).
    exit_histogram: Exit -> number of images answered there.
    mac_saving: 1 - mean_macs / baseline MACs.
  """

  threshold: Optional[float]
  accuracy: float
  mean_macs: float
  mean_latency_ms: float
  exit_histogram: Dict[int, int]
  mac_saving: float

  def to_dict(self) -> dict:
    data = dataclasses.asdict(self)
    data['exit_histogram'] = {str(k): v for k, v in self.exit_histogram.items()}
    return data


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """A threshold sweep.

  Attributes:
    rows: One row per threshold, in increasing threshold order.
    baseline: The always-last row (every segment runs).
    chosen: The row with the largest MAC saving whose accuracy is within `max_accuracy_drop` of
      the baseline's (the baseline itself if no threshold qualifies).
    exit_accuracy: Exit -> top-1 accuracy of that exit alone.
    segment_latency_ms: Exit -> measured latency of its segment.
    max_accuracy_drop: The accuracy tolerance used for `chosen` (fraction).
    images: Number of images swept.
  """

  rows: tuple
  baseline: SweepRow
  chosen: SweepRow
  exit_accuracy: Dict[int, float]
  segment_latency_ms: Dict[int, float]
  max_accuracy_drop: float
  images: int

  def summary(self) -> dict:
    """What the manifest keeps: the choice and the baseline it was judged against."""
    return {'threshold': self.chosen.threshold, 'accuracy': self.chosen.accuracy,
            'mean_macs': self.chosen.mean_macs, 'mean_latency_ms': self.chosen.mean_latency_ms,
            'mac_saving': self.chosen.mac_saving,
            'exit_histogram': {str(k): v for k, v in self.chosen.exit_histogram.items()},
            'baseline_accuracy': self.baseline.accuracy, 'baseline_macs': self.baseline.mean_macs,
            'baseline_latency_ms': self.baseline.mean_latency_ms,
            'exit_accuracy': {str(k): v for k, v in self.exit_accuracy.items()},
            'max_accuracy_drop': self.max_accuracy_drop, 'images': self.images}

  def to_dict(self) -> dict:
    return {**self.summary(), 'rows': [r.to_dict() for r in self.rows],
            'segment_latency_ms': {str(k): v for k, v in self.segment_latency_ms.items()}}


def _outcome(threshold, confidences, predictions, labels, cum_macs, cum_latency, exits,
             baseline_macs):
  """Derives one threshold's row from the cached per-exit confidences [N, E] and predictions."""
  n, count = confidences.shape
  if threshold is None:
    taken = np.full(n, count - 1)
  else:
    confident = confidences[:, :-1] >= threshold
    # First confident exit, else the last one.
    taken = np.where(confident.any(axis=1), confident.argmax(axis=1), count - 1)
  rows = np.arange(n)
  correct = predictions[rows, taken] == labels
  histogram = {exits[i]: int(np.sum(taken == i)) for i in range(count)}
  mean_macs = float(np.mean(cum_macs[taken]))
  return SweepRow(threshold=threshold, accuracy=float(np.mean(correct)), mean_macs=mean_macs,
                  mean_latency_ms=float(np.mean(cum_latency[taken])), exit_histogram=histogram,
                  mac_saving=1.0 - mean_macs / baseline_macs if baseline_macs else 0.0)


def choose(rows: Sequence[SweepRow], baseline: SweepRow,
           max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> SweepRow:
  """The row with the fewest MACs whose accuracy stays within `max_accuracy_drop` of `baseline`.

  Ties go to the higher accuracy, then the higher threshold (the safer choice).
  """
  eligible = [r for r in rows if r.accuracy >= baseline.accuracy - max_accuracy_drop - 1e-12]
  eligible.append(baseline)
  return min(eligible, key=lambda r: (r.mean_macs, -r.accuracy,
                                      -(r.threshold if r.threshold is not None else 2.0)))


def sweep(cascade: Cascade, images, labels, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
          max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP, latency_runs: int = 50,
          segment_latency_ms: Optional[Mapping[int, float]] = None) -> SweepResult:
  """Evaluates shared thresholds on a labelled image set and picks one (see module docstring).

  Args:
    cascade: The loaded export.
    images: Float images [N, H, W, 3], preprocessed like the training input.
    labels: Integer labels [N].
    thresholds: Shared thresholds to evaluate, each in [0, 1].
    max_accuracy_drop: Largest accuracy loss (fraction; 0.01 = one point) accepted for the choice.
    latency_runs: Timed runs per segment for the latency measurement.
    segment_latency_ms: Exit -> latency to use instead of measuring (e.g. from a device).

  Returns:
    A `SweepResult`.
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels).astype(np.int64).reshape(-1)
  if images.ndim != 4 or len(images) != len(labels) or not len(images):
    raise ExportError(f'sweep needs images [N, H, W, 3] and N labels; got images '
                      f'{list(images.shape)} and {len(labels)} labels')
  bad = [t for t in thresholds if t is None or not 0.0 <= float(t) <= 1.0]
  if bad:
    raise ExportError(f'thresholds {bad} are not probabilities; give values in [0, 1]')
  exits = cascade.exits
  logits = [cascade.run_all(image) for image in images]
  stacked = np.stack([np.stack([per_image[e] for e in exits]) for per_image in logits])  # [N,E,C]
  confidences = confidence(stacked)
  predictions = stacked.argmax(axis=-1)
  if segment_latency_ms is None:
    segment_latency_ms = cascade.segment_latency_ms(runs=latency_runs)
  missing = [e for e in exits if e not in segment_latency_ms]
  if missing:
    raise ExportError(f'segment_latency_ms lacks exits {missing}; give one value per exit {exits}')
  cum_latency = np.cumsum([float(segment_latency_ms[e]) for e in exits])
  cum_macs = np.array([s.cumulative_macs for s in cascade.manifest.segments], np.float64)
  args = (confidences, predictions, labels, cum_macs, cum_latency, exits, cum_macs[-1])
  baseline = _outcome(None, *args)
  rows = tuple(_outcome(float(t), *args) for t in sorted(set(float(t) for t in thresholds)))
  exit_accuracy = {e: float(np.mean(predictions[:, i] == labels)) for i, e in enumerate(exits)}
  return SweepResult(rows=rows, baseline=baseline,
                     chosen=choose(rows, baseline, max_accuracy_drop),
                     exit_accuracy=exit_accuracy,
                     segment_latency_ms={e: float(segment_latency_ms[e]) for e in exits},
                     max_accuracy_drop=float(max_accuracy_drop), images=len(images))


def write_thresholds(manifest_path, result: SweepResult) -> manifest_lib.Manifest:
  """Stores the sweep's chosen threshold (every exit but the last) and its summary in the manifest.

  The baseline choice (no threshold qualified) stores None: the cascade then always runs to the end.
  """
  manifest = manifest_lib.Manifest.load(manifest_path)
  updated = manifest.with_thresholds(result.chosen.threshold, sweep=result.summary())
  updated.save(manifest_path)
  return updated
