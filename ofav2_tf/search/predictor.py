"""Accuracy predictor: a small model from a config's encoding to its measured accuracy.

Search scores tens of thousands of sub-networks; measuring each takes seconds to minutes, so it
ranks them by a predictor fitted on a few hundred to a few thousand measured ones
(`predictor_data`). Two kinds:
  - 'mlp': OFA's predictor, a ReLU MLP (tf_keras, Adam on the mean squared error of standardised
    targets); captures interactions between choices;
  - 'ridge': closed-form ridge regression on the same features; a baseline that is hard to beat on
    small datasets because the one-hot features make accuracy nearly additive.
`select_and_fit` fits both on a seeded split, keeps the kind with the higher held-out Kendall tau
(search only needs the ranking right) and refits it on all data.

Prediction never calls TensorFlow: the MLP's weights are copied to numpy after training, so scoring
a population is a few matrix products (no per-call graph dispatch), and a saved predictor loads
without TensorFlow. Saved files are a single .npz with the weights and a JSON header recording the
encoding (space and feature names); loading for another space fails loudly.
"""

import dataclasses
import json
import os
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import scipy.stats

from export import atomic_write
from ofav2_tf import errors
from ofav2_tf import subnet_config as sc
from ofav2_tf.search import encoding

KINDS = ('mlp', 'ridge')
FORMAT = 'ofav2-accuracy-predictor'
VERSION = 1


class AccuracyPredictor:
  """Predicts the accuracy of configs of one space.

  Args:
    space: The search space (fixes the encoding).
    kind: 'mlp' or 'ridge'.
    hidden: MLP hidden layer widths.
    epochs: MLP training epochs.
    batch_size: MLP batch size.
    learning_rate: MLP Adam learning rate (cosine-decayed to zero over training).
    weight_decay: MLP L2 penalty on kernels.
    ridge_alpha: Ridge penalty.
    seed: Seeds initialisation and shuffling (the MLP's training is then repeatable on CPU).
  """

  def __init__(self, space: sc.SearchSpace, kind: str = 'mlp', hidden: Sequence[int] = (256, 256),
               epochs: int = 300, batch_size: int = 64, learning_rate: float = 1e-3,
               weight_decay: float = 1e-5, ridge_alpha: float = 1.0, seed: int = 0):
    if kind not in KINDS:
      raise errors.ConfigError(f'predictor kind {kind!r} is not valid; valid kinds: {KINDS}')
    if any(int(h) < 1 for h in hidden) or epochs < 1 or batch_size < 1:
      raise errors.ConfigError(f'predictor hidden={tuple(hidden)}, epochs={epochs}, '
                               f'batch_size={batch_size}: all must be >= 1')
    self.space = space
    self.encoder = encoding.Encoder(space)
    self.kind = kind
    self.options = {'hidden': [int(h) for h in hidden], 'epochs': int(epochs),
                    'batch_size': int(batch_size), 'learning_rate': float(learning_rate),
                    'weight_decay': float(weight_decay), 'ridge_alpha': float(ridge_alpha),
                    'seed': int(seed)}
    self.weights: list = []  # [(W, b), ...]; ReLU between layers, linear output.
    self.target_mean = 0.0
    self.target_std = 1.0
    self.train_size = 0

  @property
  def fitted(self) -> bool:
    return bool(self.weights)

  # ---- fitting --------------------------------------------------------------------------------

  def fit(self, configs: Sequence[sc.SubnetConfig], accuracies) -> 'AccuracyPredictor':
    """Fits on measured configs; returns self."""
    accuracies = np.asarray(accuracies, np.float64)
    if len(configs) != len(accuracies):
      raise ValueError(f'{len(configs)} configs but {len(accuracies)} accuracies')
    if len(configs) < 2:
      raise errors.DataError(f'the predictor needs at least 2 measured sub-networks, got '
                             f'{len(configs)}')
    return self.fit_features(self.encoder.encode(configs), accuracies)

  def fit_features(self, features: np.ndarray, targets: np.ndarray) -> 'AccuracyPredictor':
    """Fits on already encoded features."""
    targets = np.asarray(targets, np.float64)
    self.target_mean = float(targets.mean())
    self.target_std = float(targets.std()) or 1.0
    scaled = (targets - self.target_mean) / self.target_std
    if self.kind == 'ridge':
      self.weights = [self._fit_ridge(features, scaled)]
    else:
      self.weights = self._fit_mlp(features, scaled)
    self.train_size = len(targets)
    return self

  def _fit_ridge(self, x, y):
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    xc = x - mean
    gram = xc.T @ xc + self.options['ridge_alpha'] * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xc.T @ y)
    return w[:, None].astype(np.float32), np.array([-mean @ w], np.float32)

  def _fit_mlp(self, x, y):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top

    o = self.options
    seed = o['seed']
    regularizer = tf_keras.regularizers.L2(o['weight_decay']) if o['weight_decay'] else None
    layers = [tf_keras.Input((x.shape[1],))]
    for i, width in enumerate(o['hidden']):
      layers.append(tf_keras.layers.Dense(
          width, activation='relu', kernel_regularizer=regularizer,
          kernel_initializer=tf_keras.initializers.GlorotUniform(seed=seed * 101 + i)))
    layers.append(tf_keras.layers.Dense(
        1, kernel_initializer=tf_keras.initializers.GlorotUniform(seed=seed * 101 + 99)))
    model = tf_keras.Sequential(layers)
    steps = o['epochs'] * -(-len(y) // o['batch_size'])
    schedule = tf_keras.optimizers.schedules.CosineDecay(o['learning_rate'], steps)
    optimizer = tf_keras.optimizers.Adam(schedule)
    data = tf.data.Dataset.from_tensor_slices((np.asarray(x, np.float32),
                                               np.asarray(y, np.float32)[:, None]))
    data = data.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).batch(
        o['batch_size']).repeat(o['epochs'])

    # The whole training runs in one graph: Keras' fit pays ~10 ms of Python per step here,
    # 20x the step itself for a model this small.
    @tf.function(autograph=True)
    def train(dataset):
      for features, targets in dataset:
        with tf.GradientTape() as tape:
          loss = tf.reduce_mean(tf.square(model(features, training=True) - targets))
          loss += tf.add_n(model.losses) if model.losses else 0.0
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    train(data)
    dense = [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Dense)]
    return [(layer.kernel.numpy(), layer.bias.numpy()) for layer in dense]

  # ---- prediction -----------------------------------------------------------------------------

  def predict_features(self, features: np.ndarray) -> np.ndarray:
    """Predicted accuracies (float64) of encoded configs."""
    if not self.fitted:
      raise errors.ConfigError('the accuracy predictor is not fitted; call fit or load first')
    h = np.asarray(features, np.float32)
    for w, b in self.weights[:-1]:
      h = np.maximum(h @ w + b, 0.0)
    w, b = self.weights[-1]
    return (h @ w + b)[:, 0].astype(np.float64) * self.target_std + self.target_mean

  def predict_genomes(self, genomes: np.ndarray) -> np.ndarray:
    """Predicted accuracies of genomes (`genome.Genome` of this space)."""
    return self.predict_features(self.encoder.encode_genomes(genomes))

  def predict(self, configs: Sequence[sc.SubnetConfig]) -> np.ndarray:
    """Predicted accuracies of configs of the space."""
    return self.predict_features(self.encoder.encode(configs))

  __call__ = predict

  # ---- persistence ----------------------------------------------------------------------------

  def _header(self) -> dict:
    return json.loads(json.dumps({
        'format': FORMAT, 'version': VERSION, 'kind': self.kind, 'options': self.options,
        'encoding': self.encoder.describe(), 'target_mean': self.target_mean,
        'target_std': self.target_std, 'train_size': self.train_size,
        'layers': len(self.weights)}))

  def save(self, path) -> str:
    """Writes the predictor to `path` (.npz) atomically; returns the path."""
    if not self.fitted:
      raise errors.ConfigError('cannot save an accuracy predictor that is not fitted')
    path = os.fspath(path)
    if not path.endswith('.npz'):
      raise errors.ConfigError(f'predictor file {path} must end in .npz')
    arrays = {'header': np.array(json.dumps(self._header()))}
    for i, (w, b) in enumerate(self.weights):
      arrays[f'w{i}'], arrays[f'b{i}'] = w, b
    with atomic_write.atomic_path(path, suffix='.npz') as tmp:
      np.savez(tmp, **arrays)
    return path

  @classmethod
  def load(cls, path, space: sc.SearchSpace) -> 'AccuracyPredictor':
    """Loads a saved predictor, checking it encodes `space` exactly as this code would.

    Raises:
      ConfigError: `path` is missing or not a predictor file.
      ArchitectureMismatchError: it was fitted for another space or feature layout.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise errors.ConfigError(f'predictor file {path} does not exist')
    try:
      with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data['header']))
        weights = [(data[f'w{i}'], data[f'b{i}']) for i in range(int(header['layers']))]
    except (OSError, ValueError, KeyError) as e:
      raise errors.ConfigError(f'{path} is not an accuracy predictor file ({e})') from None
    if header.get('format') != FORMAT or header.get('version') != VERSION:
      raise errors.ConfigError(f'{path} is not a version-{VERSION} accuracy predictor file')
    o = header['options']
    predictor = cls(space, header['kind'], o['hidden'], o['epochs'], o['batch_size'],
                    o['learning_rate'], o['weight_decay'], o['ridge_alpha'], o['seed'])
    expected = json.loads(json.dumps(predictor.encoder.describe()))
    if header['encoding'] != expected:
      raise errors.ArchitectureMismatchError(
          f'predictor {path} was fitted for search space {header["encoding"]["space"]}; the '
          f'requested space is {expected["space"]}: refit it for this space')
    predictor.weights = weights
    predictor.target_mean = float(header['target_mean'])
    predictor.target_std = float(header['target_std'])
    predictor.train_size = int(header['train_size'])
    return predictor


# ---- held-out evaluation ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HoldoutReport:
  """Quality of a predictor kind on a seeded held-out split.

  Attributes:
    kind: Predictor kind.
    kendall_tau: Rank correlation of predicted and measured accuracy on the held-out configs.
    rmse: Root mean squared error (accuracy units).
    mae: Mean absolute error.
    train_size: Configs fitted on.
    holdout_size: Configs held out.
    fit_seconds: Wall time of the fit.
    predictions_per_second: Batch throughput of `predict` on configs (encoding included).
  """

  kind: str
  kendall_tau: float
  rmse: float
  mae: float
  train_size: int
  holdout_size: int
  fit_seconds: float
  predictions_per_second: float

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def split(count: int, holdout_fraction: float = 0.2, seed: int = 0) -> Tuple[np.ndarray,
                                                                              np.ndarray]:
  """Seeded (train indices, held-out indices) of `count` items."""
  if not 0 < holdout_fraction < 1:
    raise errors.ConfigError(f'holdout_fraction={holdout_fraction} must lie in (0, 1)')
  order = np.random.default_rng(seed).permutation(count)
  held = max(1, int(round(count * holdout_fraction)))
  if count - held < 2:
    raise errors.DataError(f'{count} measured sub-networks are too few to hold out '
                           f'{holdout_fraction:.0%} and fit on the rest')
  return np.sort(order[held:]), np.sort(order[:held])


def predictions_per_second(predictor: AccuracyPredictor, configs: Sequence[sc.SubnetConfig],
                           repeats: int = 3) -> float:
  """Best-of-`repeats` throughput of `predictor.predict` on `configs` in one batch."""
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    predictor.predict(configs)
    best = min(best, time.perf_counter() - start)
  return len(configs) / max(best, 1e-9)


def holdout_report(space: sc.SearchSpace, configs: Sequence[sc.SubnetConfig], accuracies,
                   kind: str = 'mlp', holdout_fraction: float = 0.2, seed: int = 0,
                   **options) -> Tuple[HoldoutReport, AccuracyPredictor]:
  """Fits a `kind` predictor on a seeded split and measures it on the held-out part.

  Returns:
    The report and the predictor fitted on the training part.
  """
  accuracies = np.asarray(accuracies, np.float64)
  train, held = split(len(configs), holdout_fraction, seed)
  predictor = AccuracyPredictor(space, kind, seed=seed, **options)
  start = time.perf_counter()
  predictor.fit([configs[i] for i in train], accuracies[train])
  fit_seconds = time.perf_counter() - start
  held_configs = [configs[i] for i in held]
  predicted = predictor.predict(held_configs)
  truth = accuracies[held]
  tau = scipy.stats.kendalltau(predicted, truth).statistic if len(held) > 1 else float('nan')
  report = HoldoutReport(kind=kind, kendall_tau=float(tau),
                         rmse=float(np.sqrt(np.mean((predicted - truth) ** 2))),
                         mae=float(np.mean(np.abs(predicted - truth))), train_size=len(train),
                         holdout_size=len(held), fit_seconds=fit_seconds,
                         predictions_per_second=predictions_per_second(predictor, held_configs))
  return report, predictor


def select_and_fit(space: sc.SearchSpace, configs: Sequence[sc.SubnetConfig], accuracies,
                   kinds: Sequence[str] = KINDS, holdout_fraction: float = 0.2, seed: int = 0,
                   refit: bool = True, options: Optional[Dict[str, dict]] = None
                   ) -> Tuple[AccuracyPredictor, Dict[str, HoldoutReport]]:
  """Picks the predictor kind with the best held-out Kendall tau and fits it on all data.

  Args:
    space: The search space.
    configs: Measured sub-networks.
    accuracies: Their accuracies.
    kinds: Kinds to compare.
    holdout_fraction: Share of configs held out.
    seed: Seeds the split and the fits.
    refit: Refit the winner on all configs (else return the one fitted on the training part).
    options: Per-kind keyword arguments for `AccuracyPredictor`.

  Returns:
    (predictor, {kind: HoldoutReport}); the reports describe the held-out split.
  """
  options = options or {}
  reports, fitted = {}, {}
  for kind in kinds:
    reports[kind], fitted[kind] = holdout_report(space, configs, accuracies, kind,
                                                 holdout_fraction, seed, **options.get(kind, {}))
  best = max(kinds, key=lambda k: np.nan_to_num(reports[k].kendall_tau, nan=-2.0))
  predictor = fitted[best]
  if refit:
    predictor = AccuracyPredictor(space, best, seed=seed, **options.get(best, {}))
    predictor.fit(configs, accuracies)
  return predictor, reports
