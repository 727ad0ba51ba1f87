"""Shared helpers for the tests: small supernets with realistic statistics."""

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import bn_calibration
from ofav2_tf import supernet as supernet_lib


def perturbed_supernet(variant, num_classes=10, seed=0, **kwargs):
  """A built supernet whose BN scales and kernel transforms are moved off their initial values.

  Freshly initialised BN scales (1) and kernel transforms (identity) would hide slicing and
  transform bugs in equivalence tests.
  """
  tf_keras.utils.set_random_seed(seed)  # weights independent of test order
  net = supernet_lib.build_supernet(variant, num_classes, **kwargs)
  rng = np.random.default_rng(seed)
  for w in net.weights:
    if any(key in w.name for key in ('gamma', 'beta', 'transform')):
      w.assign(w.numpy() + rng.normal(0, 0.1, w.shape).astype(np.float32))
  # Untrained classifiers give logits of +-40; scale them to the few units of a trained network
  # so that absolute tolerances on logits mean what they say.
  for head in net.heads.values():
    head.classifier.kernel.assign(head.classifier.kernel * 0.1)
  return net


def images(batch, resolution, seed=0):
  return tf.random.stateless_normal([batch, resolution, resolution, 3], [seed, 1])


def calibrate(net, config, batch=8, seed=0, all_exits=False):
  """Re-calibrates BN for `config` on random images so activations keep a sane scale."""
  arch = supernet_lib.arch_tensors(config)
  batches = [images(batch, config.resolution, seed + i) for i in range(2)]
  bn_calibration.recalibrate(
      net, batches, lambda x: net(x, arch, training=True, all_exits=all_exits))
  return batches


def as_float64(model):
  """A float64 copy of a functional model, to compare transforms without float32 round-off."""
  config = model.get_config()
  for layer in config['layers']:
    layer['config']['dtype'] = 'float64'
  clone = tf_keras.Model.from_config(config)
  clone.set_weights([w.astype(np.float64) for w in model.get_weights()])
  return clone


def assert_stratified_sample(test, splits, split, count, seeds=(0, 1)):
  """Asserts that `eval_batches(images=count)` draws a seeded, class-stratified sample.

  The sample's class histogram must match the split's shares to within one image per class, the
  same seed must give the same images, and another seed other images (when the split allows).
  """
  from ofav2_tf.data import pipeline  # pylint: disable=g-import-not-at-top

  def sample(seed):
    batches = pipeline.eval_batches(splits, 64, 32, split=split, images=count, sample_seed=seed)
    pairs = [(x.numpy(), y.numpy()) for x, y in batches]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])

  whole = np.concatenate([y.numpy() for _, y in pipeline.eval_batches(splits, 512, 32,
                                                                      split=split)])
  classes = np.arange(splits.num_classes)
  share = np.array([(whole == c).sum() for c in classes]) * count / len(whole)
  images, labels = sample(seeds[0])
  test.assertLen(labels, count)
  histogram = np.array([(labels == c).sum() for c in classes])
  test.assertLessEqual(float(np.abs(histogram - share).max()), 1.0,
                       f'{split} sample of {count}: {histogram.tolist()} vs {share.tolist()}')
  again_images, again_labels = sample(seeds[0])
  test.assertAllEqual(again_labels, labels)
  test.assertAllClose(again_images, images)
  other_images, _ = sample(seeds[1])
  if count < len(whole):
    test.assertNotAllClose(np.sort(other_images.reshape(count, -1).sum(1)),
                           np.sort(images.reshape(count, -1).sum(1)))
