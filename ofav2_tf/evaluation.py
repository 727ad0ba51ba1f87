"""Evaluation of sub-networks: BN re-calibration, top-1 accuracy, per exit, and the uniform grid.

Every evaluation goes through extraction: the sub-network is extracted to its static Keras model,
that model's BN statistics are re-calibrated on training images, and accuracy is measured on it.
What is evaluated is therefore exactly what would be exported (DESIGN.md 2.3, evaluation protocol).
"""

import dataclasses
from typing import Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from ofav2_tf import bn_calibration
from ofav2_tf import extraction
from ofav2_tf import losses
from ofav2_tf import subnet_config as sc


@dataclasses.dataclass
class SubnetResult:
  """Accuracy of one sub-network (per exit when several exits were evaluated)."""

  config: sc.SubnetConfig
  accuracy: float
  exit_accuracy: Optional[dict] = None
  images: int = 0

  def as_dict(self) -> dict:
    return {'config': self.config.to_string(), 'accuracy': self.accuracy,
            'exit_accuracy': self.exit_accuracy, 'images': self.images}


def accuracy(model, batches: Iterable, ensemble: bool = False) -> tuple:
  """Top-1 accuracy of `model` over (images, labels) batches.

  Returns (accuracy of the model's prediction, {output index: accuracy} for multi-output models,
  number of images). The prediction of a multi-exit model is the last output, or with `ensemble`
  the argmax of the exits' weighted logit sum (the early-exit full network's prediction).
  """
  predict = tf.function(lambda x: model(x, training=False))
  correct, per_output, seen = 0, None, 0
  for images, labels in batches:
    outputs = predict(images)
    labels = np.asarray(labels)
    if isinstance(outputs, (list, tuple)):
      per = [np.argmax(o.numpy(), -1) == labels for o in outputs]
      per_output = [0] * len(per) if per_output is None else per_output
      per_output = [a + int(p.sum()) for a, p in zip(per_output, per)]
      final = (losses.ensemble_logits(outputs) if ensemble and len(outputs) == 5
               else outputs[-1])
    else:
      final = outputs
    correct += int((np.argmax(np.asarray(final), -1) == labels).sum())
    seen += len(labels)
  if seen == 0:
    raise ValueError('no evaluation images')
  exit_acc = None if per_output is None else {i: c / seen for i, c in enumerate(per_output)}
  return correct / seen, exit_acc, seen


def evaluate_subnet(supernet, config: sc.SubnetConfig, calibration: Iterable, batches: Iterable,
                    exits=None) -> SubnetResult:
  """Extracts `config`, re-calibrates its BN on `calibration` batches, measures top-1.

  Args:
    supernet: The trained supernet.
    config: The sub-network.
    calibration: Image batches (training images at `config.resolution`) for BN re-calibration.
    batches: (images, labels) batches at `config.resolution`.
    exits: As for `extraction.extract`; with several exits, per-exit accuracies are reported
      (keyed by exit number) and the headline accuracy is the deepest exit's.
  """
  model = extraction.extract(supernet, config, exits=exits)
  bn_calibration.recalibrate(model, calibration)
  acc, per_output, seen = accuracy(model, batches)
  exit_acc = None
  if per_output is not None:
    numbers = extraction.resolve_exits(supernet, config, exits)
    exit_acc = {numbers[i]: a for i, a in per_output.items()}
  return SubnetResult(config, acc, exit_acc, seen)


def uniform_grid(space: sc.SearchSpace, resolutions: Sequence[int],
                 kernels: Optional[Sequence[int]] = None) -> List[sc.SubnetConfig]:
  """The paper's uniform sub-networks of a phase's space at the evaluation resolutions.

  `kernels` optionally thins the kernel axis to bound the cost on small machines.
  """
  configs = []
  for config in space.uniform_grid(resolutions=resolutions):
    if kernels is None or config.kernel[0] in kernels:
      configs.append(config)
  return configs
