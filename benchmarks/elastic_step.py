"""Benchmark: the supernet's elastic training step against static extracted models.

For each variant (default SE_B and EE_D) at one resolution and batch size, it times one training
step (forward, label-smoothed CE, gradients, SGD update) of
  - the supernet running its max, min and random sub-networks (one traced step for all), and
  - the static extracted Keras models of the max and min sub-networks (their own traced steps),
interleaving the measurements so machine noise hits both sides alike, and prints one JSON line
with medians (seconds), the supernet step's trace count, and the ratios
supernet/static (max, min) and random/max.

Usage: python -m benchmarks.elastic_step [--variants=SE_B,EE_D] [--resolution=64] [--batch=64]
"""

import json
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import elastic_step
from ofav2_tf import extraction
from ofav2_tf import supernet as supernet_lib

_VARIANTS = flags.DEFINE_list('variants', ['SE_B', 'EE_D'], 'Supernet variants to measure.')
_RESOLUTION = flags.DEFINE_integer('resolution', 64, 'Input resolution.', lower_bound=32)
_BATCH = flags.DEFINE_integer('batch', 64, 'Batch size.', lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed steps per measurement.', lower_bound=3)
_CLASSES = flags.DEFINE_integer('num_classes', 200, 'Classifier width.', lower_bound=2)


def _static_step(model, num_classes):
  optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
  optimizer.build(model.trainable_variables)

  @tf.function
  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_mean(tf_keras.losses.categorical_crossentropy(
          tf.one_hot(labels, num_classes), logits, from_logits=True, label_smoothing=0.1))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  return step


def _timed(fn, *args):
  start = time.perf_counter()
  fn(*args).numpy()
  return time.perf_counter() - start


def measure(variant, resolution, batch, repeats, num_classes):
  tf_keras.utils.set_random_seed(0)
  net = supernet_lib.build_supernet(variant, num_classes)
  space = net.search_space(resolutions=(resolution,))
  max_config, min_config = space.max_config(), space.min_config().replace(
      exit=max(space.exits))  # min of the backbone, ending at the last exit like the max
  rng = np.random.default_rng(0)
  randoms = [space.sample(rng) for _ in range(repeats)]
  images = tf.random.stateless_normal([batch, resolution, resolution, 3], [0, 0])
  labels = tf.random.stateless_uniform([batch], [0, 1], 0, num_classes, tf.int32)
  step = elastic_step.ElasticTrainStep(net)
  start = time.perf_counter()
  step(images, labels, max_config).numpy()
  trace_seconds = time.perf_counter() - start
  statics = {}
  for name, config in (('max', max_config), ('min', min_config)):
    static_step = _static_step(extraction.extract(net, config), num_classes)
    static_step(images, labels).numpy()  # trace
    statics[name] = static_step
  for config in (min_config, randoms[0]):
    step(images, labels, config).numpy()  # warm up every path once
  times = {key: [] for key in ('supernet_max', 'static_max', 'supernet_min', 'static_min',
                               'supernet_random')}
  for i in range(repeats):
    times['supernet_max'].append(_timed(step, images, labels, max_config))
    times['static_max'].append(_timed(statics['max'], images, labels))
    times['supernet_min'].append(_timed(step, images, labels, min_config))
    times['static_min'].append(_timed(statics['min'], images, labels))
    times['supernet_random'].append(_timed(step, images, labels, randoms[i]))
  medians = {key: statistics.median(values) for key, values in times.items()}
  return {
      'variant': variant,
      'median_seconds': {k: round(v, 4) for k, v in medians.items()},
      'trace_count': step.trace_count,
      'trace_seconds': round(trace_seconds, 1),
      'ratio_supernet_over_static_max': round(medians['supernet_max'] / medians['static_max'], 3),
      'ratio_supernet_over_static_min': round(medians['supernet_min'] / medians['static_min'], 3),
      'ratio_random_over_max': round(medians['supernet_random'] / medians['supernet_max'], 3),
  }


def main(argv):
  del argv
  results = [measure(v, _RESOLUTION.value, _BATCH.value, _REPEATS.value, _CLASSES.value)
             for v in _VARIANTS.value]
  print(json.dumps({'benchmark': 'elastic_step', 'resolution': _RESOLUTION.value,
                    'batch': _BATCH.value, 'repeats': _REPEATS.value,
                    'threads': tf.config.threading.get_intra_op_parallelism_threads() or 'default',
                    'results': results}))


if __name__ == '__main__':
  app.run(main)
