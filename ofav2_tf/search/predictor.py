"""Accuracy predictor: a small model from a config's encoding to its measured accuracy.

Search scores tens of thousands of sub-networks; measuring each takes seconds to minutes, so it
ranks them by a predictor fitted on a few hundred to a few thousand measured ones
(`predictor_data`). Two kinds:
  - 'mlp': OFA's predictor, a ReLU MLP (Adam on the mean squared error of standardised targets,
    in numpy); captures interactions between choices;
  - 'ridge': closed-form ridge regression on the same features; a baseline that is hard to beat on
    small datasets because the one-hot features make accuracy nearly additive.
`select_and_fit` cross-validates both (seeded k-fold), keeps the kind with the higher out-of-fold
Kendall tau (search only needs the ranking right) and fits it on all data.

Neither fitting nor prediction calls TensorFlow: scoring a population is a few matrix products (no
per-call graph dispatch), and a saved predictor loads without TensorFlow. Saved files are a single
.npz with the weights and a JSON header recording the encoding (space and feature names); loading
for another space fails loudly.
"""

import dataclasses
import functools
import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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
    ridge_alpha: Ridge penalty on standardised features; None picks it from `RIDGE_ALPHAS` by
      an inner cross-validation on the training data (closed-form fits, so this costs little).
    seed: Seeds initialisation and shuffling (the MLP's training is then repeatable on CPU).
  """

  def __init__(self, space: sc.SearchSpace, kind: str = 'mlp', hidden: Sequence[int] = (256, 256),
               epochs: int = 300, batch_size: int = 64, learning_rate: float = 1e-3,
               weight_decay: float = 1e-5, ridge_alpha: Optional[float] = None, seed: int = 0):
    if kind not in KINDS:
      raise errors.ConfigError(f'predictor kind {kind!r} is not valid; valid kinds: {KINDS}')
    if ridge_alpha is not None and not ridge_alpha > 0:
      raise errors.ConfigError(f'ridge_alpha={ridge_alpha} must be > 0 (or None: chosen by '
                               f'cross-validation)')
    if any(int(h) < 1 for h in hidden) or epochs < 1 or batch_size < 1:
      raise errors.ConfigError(f'predictor hidden={tuple(hidden)}, epochs={epochs}, '
                               f'batch_size={batch_size}: all must be >= 1')
    self.space = space
    self.encoder = encoding.Encoder(space)
    self.kind = kind
    self.options = {'hidden': [int(h) for h in hidden], 'epochs': int(epochs),
                    'batch_size': int(batch_size), 'learning_rate': float(learning_rate),
                    'weight_decay': float(weight_decay),
                    'ridge_alpha': None if ridge_alpha is None else float(ridge_alpha),
                    'seed': int(seed)}
    self.weights: list = []  # [(W, b), ...]; ReLU between layers, linear output.
    self.target_mean = 0.0
    self.target_std = 1.0
    self.train_size = 0
    self.fitted_ridge_alpha: Optional[float] = None  # set by a ridge fit (chosen or given)

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
    # Standardised features: one penalty then means the same for a rare choice (e.g. a one-hot
    # column of a deep block that only runs at the last exit) as for a frequent one.
    x = np.asarray(x, np.float64)
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    alpha = self.options['ridge_alpha']
    if alpha is None:
      alpha = _ridge_alpha_by_cv(z, y, seed=self.options['seed'])
    self.fitted_ridge_alpha = float(alpha)
    w = _ridge_solve(z, y, alpha) / std
    return w[:, None].astype(np.float32), np.array([-mean @ w], np.float32)

  def _fit_mlp(self, x, y):
    """Adam on the mean squared error, L2 on kernels, cosine-decayed rate; all in numpy.

    numpy rather than tf_keras: the network is tiny, and a search fits it six times (five
    cross-validation folds and the final fit). Each tf.function trace took seconds in a fresh
    process and over half a minute in the search process, which also holds the supernet's
    graphs; a numpy step takes well under a millisecond.
    """
    o = self.options
    rng = np.random.default_rng(o['seed'])
    sizes = [x.shape[1]] + list(o['hidden']) + [1]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
      limit = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform, as Keras' Dense.
      params += [rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32),
                 np.zeros(fan_out, np.float32)]
    first, second = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    beta1, beta2, epsilon = np.float32(0.9), np.float32(0.999), np.float32(1e-7)
    # float32: a third of float64's time per step here, and what prediction runs in anyway.
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)[:, None]
    batch, count = o['batch_size'], len(y)
    steps = o['epochs'] * -(-count // batch)
    step = 0
    for _ in range(o['epochs']):
      order = rng.permutation(count)
      for begin in range(0, count, batch):
        rows = order[begin:begin + batch]
        grads = _mlp_gradients(params, x[rows], y[rows], o['weight_decay'])
        step += 1
        rate = np.float32(o['learning_rate'] * 0.5 * (1.0 + np.cos(np.pi * step / steps)))
        for i, g in enumerate(grads):
          first[i] = beta1 * first[i] + (1 - beta1) * g
          second[i] = beta2 * second[i] + (1 - beta2) * g * g
          corrected = first[i] / (1 - beta1 ** step)
          params[i] -= rate * corrected / (np.sqrt(second[i] / (1 - beta2 ** step)) + epsilon)
    return [(params[i], params[i + 1]) for i in range(0, len(params), 2)]

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


def _mlp_gradients(params, x, y, weight_decay):
  """Gradients of mean((mlp(x) - y)^2) + weight_decay * sum(kernel^2) w.r.t. [W0, b0, W1, ...].

  The network is ReLU hidden layers and a linear output, the layout `predict_features` runs.
  """
  activations, h = [x], x
  for i in range(0, len(params) - 2, 2):
    h = np.maximum(h @ params[i] + params[i + 1], 0.0)
    activations.append(h)
  delta = 2.0 * (h @ params[-2] + params[-1] - y) / len(y)
  grads = [None] * len(params)
  for i in range(len(params) - 2, -1, -2):
    grads[i] = activations[i // 2].T @ delta + 2.0 * weight_decay * params[i]
    grads[i + 1] = delta.sum(0)
    if i:
      delta = (delta @ params[i].T) * (activations[i // 2] > 0)
  return grads


RIDGE_ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _ridge_solve(z, y, alpha):
  """Ridge weights of centred targets `y` on centred features `z` (no intercept)."""
  return np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ y)


def _ridge_alpha_by_cv(z, y, folds: int = 5, seed: int = 0) -> float:
  """The `RIDGE_ALPHAS` value whose inner out-of-fold predictions rank `y` best (Kendall tau).

  The best penalty depends on how many sub-networks were measured and how noisy their accuracy
  is (validation images), which vary between runs, so it is chosen per fit rather than fixed.
  It is chosen by ranking, the only thing the search uses, not by squared error (on the demo's
  predictor data the two choices ranked held-out sub-networks within 0.02 tau of each other).
  """
  if len(y) < 2 * folds:
    return 1.0
  parts = fold_indices(len(y), folds, seed + 7)
  predicted = np.zeros((len(RIDGE_ALPHAS), len(y)))
  for held in parts:
    train = np.setdiff1d(np.arange(len(y)), held)
    zm, ym = z[train].mean(0), y[train].mean()
    for i, alpha in enumerate(RIDGE_ALPHAS):
      predicted[i, held] = (z[held] - zm) @ _ridge_solve(z[train] - zm, y[train] - ym, alpha) + ym
  taus = [np.nan_to_num(scipy.stats.kendalltau(p, y).statistic, nan=-2.0) for p in predicted]
  return float(RIDGE_ALPHAS[int(np.argmax(taus))])


# ---- held-out evaluation ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HoldoutReport:
  """Quality of a predictor kind under seeded k-fold cross-validation.

  Every measured config is predicted once by a model that did not see it (the fold that held it
  out), and the scores are computed over all those out-of-fold predictions. With ~100 measured
  configs a single 80/20 split would rank only 20 of them, and its Kendall tau varies by +-0.1
  from one seed to the next; pooling all folds ranks every config and is far steadier.

  Attributes:
    kind: Predictor kind.
    kendall_tau: Rank correlation of out-of-fold predictions and measured accuracy.
    rmse: Root mean squared error (accuracy units).
    mae: Mean absolute error.
    train_size: Configs each fold's model was fitted on (the smallest fold's complement).
    holdout_size: Configs predicted while held out (all of them).
    folds: Number of folds.
    fit_seconds: Mean wall time of one fold's fit.
    predictions_per_second: Batch throughput of `predict` on configs (encoding included).
  """

  kind: str
  kendall_tau: float
  rmse: float
  mae: float
  train_size: int
  holdout_size: int
  folds: int
  fit_seconds: float
  predictions_per_second: float

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


DEFAULT_FOLDS = 5


def fold_indices(count: int, folds: int = DEFAULT_FOLDS, seed: int = 0) -> List[np.ndarray]:
  """Seeded partition of range(count) into `folds` held-out index sets of near-equal size."""
  if folds < 2:
    raise errors.ConfigError(f'folds={folds}: cross-validation needs at least 2 folds')
  if count < 2 * folds:
    raise errors.DataError(f'{count} measured sub-networks are too few for {folds}-fold '
                           f'cross-validation; measure at least {2 * folds}')
  order = np.random.default_rng(seed).permutation(count)
  return [np.sort(part) for part in np.array_split(order, folds)]


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
                   kind: str = 'mlp', folds: int = DEFAULT_FOLDS, seed: int = 0,
                   on_fold: Optional[Callable[[int], None]] = None, **options) -> HoldoutReport:
  """Cross-validates a `kind` predictor: `folds` fits, each scored on the configs it left out.

  `on_fold(i)` is called as fold i (from 0) starts, for a progress display.
  """
  accuracies = np.asarray(accuracies, np.float64)
  parts = fold_indices(len(configs), folds, seed)
  predicted = np.zeros_like(accuracies)
  seconds = []
  predictor = None
  for index, held in enumerate(parts):
    if on_fold is not None:
      on_fold(index)
    train = np.setdiff1d(np.arange(len(configs)), held)
    predictor = AccuracyPredictor(space, kind, seed=seed, **options)
    start = time.perf_counter()
    predictor.fit([configs[i] for i in train], accuracies[train])
    seconds.append(time.perf_counter() - start)
    predicted[held] = predictor.predict([configs[i] for i in held])
  tau = scipy.stats.kendalltau(predicted, accuracies).statistic
  return HoldoutReport(kind=kind, kendall_tau=float(tau),
                       rmse=float(np.sqrt(np.mean((predicted - accuracies) ** 2))),
                       mae=float(np.mean(np.abs(predicted - accuracies))),
                       train_size=len(configs) - max(len(p) for p in parts),
                       holdout_size=len(configs), folds=len(parts),
                       fit_seconds=float(np.mean(seconds)),
                       predictions_per_second=predictions_per_second(predictor, configs))


def select_and_fit(space: sc.SearchSpace, configs: Sequence[sc.SubnetConfig], accuracies,
                   kinds: Sequence[str] = KINDS, folds: int = DEFAULT_FOLDS, seed: int = 0,
                   options: Optional[Dict[str, dict]] = None,
                   on_fold: Optional[Callable[[str, int], None]] = None
                   ) -> Tuple[AccuracyPredictor, Dict[str, HoldoutReport]]:
  """Picks the predictor kind with the best cross-validated Kendall tau and fits it on all data.

  Args:
    space: The search space.
    configs: Measured sub-networks.
    accuracies: Their accuracies.
    kinds: Kinds to compare.
    folds: Cross-validation folds.
    seed: Seeds the folds and the fits.
    options: Per-kind keyword arguments for `AccuracyPredictor`.
    on_fold: Called as (kind, fold index) when each cross-validation fit starts.

  Returns:
    (predictor fitted on all configs, {kind: HoldoutReport}).
  """
  options = options or {}
  reports = {}
  for kind in kinds:
    report_fold = None if on_fold is None else functools.partial(on_fold, kind)
    reports[kind] = holdout_report(space, configs, accuracies, kind, folds, seed,
                                   on_fold=report_fold, **options.get(kind, {}))
  best = max(kinds, key=lambda k: np.nan_to_num(reports[k].kendall_tau, nan=-2.0))
  predictor = AccuracyPredictor(space, best, seed=seed, **options.get(best, {}))
  return predictor.fit(configs, accuracies), reports
