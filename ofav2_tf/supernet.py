"""The OFAv2 supernet as a Keras model: all eight variants, one traced graph (DESIGN.md 2.1-2.2).

`OFASupernet(images, arch)` runs the sub-network named by `arch`, a dict of int32 tensors made by
`arch_tensors(config)`. Depth, exit and branch choices are `tf.cond`s and widths/kernels are
tensor-sized slices, so one `tf.function` trace (with `ARCH_SIGNATURE` and images of unknown size)
serves every sub-network and resolution. `all_exits=True` runs the network named by `arch` through
all five stages and returns the logits of every exit (the early-exit full phase and the teacher).
"""

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from ofav2_tf import arch_spec
from ofav2_tf import subnet_config as sc
from ofav2_tf import variants as variants_lib
from ofav2_tf.layers import activations
from ofav2_tf.layers import blocks

ARCH_SIGNATURE = {
    'kernel': tf.TensorSpec([sc.NUM_BLOCKS], tf.int32),
    'expand': tf.TensorSpec([sc.NUM_BLOCKS], tf.int32),
    'depth': tf.TensorSpec([arch_spec.NUM_STAGES], tf.int32),
    'branches': tf.TensorSpec([sc.NUM_BLOCKS], tf.int32),
    'exit': tf.TensorSpec([], tf.int32),
}
IMAGE_SIGNATURE = tf.TensorSpec([None, None, None, 3], tf.float32)


def arch_arrays(config: sc.SubnetConfig) -> dict:
  """The sub-network as int32 numpy arrays (for tf.data pipelines); see `arch_tensors`."""
  branches = config.branches if config.branches is not None else [sc.ALL_BRANCHES] * sc.NUM_BLOCKS
  return {'kernel': np.asarray(config.kernel, np.int32),
          'expand': np.asarray(config.expand, np.int32),
          'depth': np.asarray(config.depth, np.int32),
          'branches': np.asarray(branches, np.int32),
          'exit': np.asarray(config.exit, np.int32)}


def arch_tensors(config: sc.SubnetConfig) -> dict:
  """The int32 tensors the supernet reads a sub-network from (resolution is the image size)."""
  return {key: tf.constant(value) for key, value in arch_arrays(config).items()}


@tf_keras.utils.register_keras_serializable(package='ofav2')
class OFASupernet(tf_keras.Model):
  """Weight-sharing OFAv2 supernet.

  Args:
    variant: Variant name ('SE_B' = original OFA, 'EE_D', ...), see `ofav2_tf.variants`.
    num_classes: Classifier width of every exit.
    width_multiplier: Scales every width (rounded to multiples of 8).
    dropout: Dropout before each classifier.
    bn_momentum: Keras-convention BN momentum (0.9 = PyTorch's 0.1).
    bn_epsilon: BN epsilon.
    kernel_sizes, expand_ratios, depths: The elastic choices the weights are built for.
  """

  def __init__(self, variant: str = 'SE_B', num_classes: int = 1000,
               width_multiplier: float = 1.0, dropout: float = 0.1, bn_momentum: float = 0.9,
               bn_epsilon: float = 1e-5, kernel_sizes: Sequence[int] = (3, 5, 7),
               expand_ratios: Sequence[int] = (3, 4, 6), depths: Sequence[int] = (2, 3, 4),
               **kwargs):
    super().__init__(**kwargs)
    self.variant = variants_lib.get_variant(variant)
    if int(num_classes) < 2:
      raise ValueError(f'num_classes must be at least 2, got {num_classes}')
    self.num_classes = int(num_classes)
    self.width_multiplier = float(width_multiplier)
    self.dropout_rate = float(dropout)
    self.bn_momentum, self.bn_epsilon = float(bn_momentum), float(bn_epsilon)
    self.kernel_sizes = tuple(sorted(int(k) for k in kernel_sizes))
    self.expand_ratios = tuple(sorted(int(e) for e in expand_ratios))
    self.depths = tuple(sorted(int(d) for d in depths))
    self.arch = arch_spec.build_arch_spec(self.width_multiplier, self.expand_ratios)
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)

    self.stem_conv = tf_keras.layers.Conv2D(self.arch.stem_width, 3, strides=2, padding='same',
                                            use_bias=False, name='stem_conv')
    self.stem_bn = tf_keras.layers.BatchNormalization(momentum=self.bn_momentum,
                                                      epsilon=self.bn_epsilon, name='stem_bn')
    self.first_block = blocks.ElasticMBConv(
        self.arch.stem_width, self.arch.stem_width, 1, 'relu', False, kernel_sizes=(3,),
        expand_ratios=(1,), has_expand=False, residual=True, name='first_block', **bn)
    level_cls = blocks.ParallelLevel if self.variant.parallel else blocks.ElasticMBConv
    self.levels = [[blocks.level_from_spec(level_cls, spec, self.kernel_sizes,
                                           self.expand_ratios, name=spec.name, **bn)
                    for spec in stage] for stage in self.arch.blocks]
    self.heads = {}
    for stage in self.exit_stages:
      self.heads[f'exit{stage + 1}'] = blocks.ExitHead(
          self.arch.stage_widths[stage], self.num_classes, self.dropout_rate,
          name=f'exit{stage + 1}', **bn)

  @property
  def exit_stages(self):
    """0-based stages followed by an exit head."""
    return tuple(range(arch_spec.NUM_STAGES)) if self.variant.early_exits else (
        arch_spec.NUM_STAGES - 1,)

  def search_space(self, resolutions: Sequence[int] = sc.DEFAULT_RESOLUTIONS) -> sc.SearchSpace:
    """The full space of sub-networks these weights can run."""
    return sc.SearchSpace.for_variant(self.variant, resolutions, self.kernel_sizes,
                                      self.expand_ratios, self.depths)

  def head(self, stage: int) -> blocks.ExitHead:
    return self.heads[f'exit{stage + 1}']

  # ---- forward ------------------------------------------------------------------------------

  def _level(self, stage, index, x, arch, training):
    b = stage * arch_spec.BLOCKS_PER_STAGE + index
    layer = self.levels[stage][index]
    if self.variant.parallel:
      return layer(x, arch['kernel'][b], arch['expand'][b], arch['branches'][b],
                   training=training)
    return layer(x, arch['kernel'][b], arch['expand'][b], training=training)

  def _next_input(self, ys):
    """Input of the next block position: y_{k-1}, plus y_1..y_{k-3} with dense skips."""
    y = ys[-1]
    if self.variant.dense:
      for earlier in ys[:-2]:
        y = y + earlier
    return y

  def _run_stage(self, stage, x, arch, training):
    """Runs a stage at the depth `arch['depth'][stage]`.

    Optional blocks are flat `tf.cond`s that pass their input through when skipped (no nesting:
    nested conds make the gradient graph much slower to trace); the stage output is then picked
    among the candidates of every depth, which differ only with dense skips.
    """
    depth = arch['depth'][stage]
    ys = []
    for index in range(self.depths[0]):  # always-active blocks
      ys.append(self._level(stage, index, self._next_input(ys) if ys else x, arch, training))
    for index in range(self.depths[0], arch_spec.BLOCKS_PER_STAGE):
      inputs = self._next_input(ys)
      ys.append(tf.cond(depth > index,
                        lambda i=index, v=inputs: self._level(stage, i, v, arch, training),
                        lambda v=inputs: v))
    if not self.variant.dense:
      return ys[-1]  # skipped blocks passed y_d through
    candidates = [self._next_input(ys[:d])
                  for d in range(self.depths[0], arch_spec.BLOCKS_PER_STAGE + 1)]
    return tf.switch_case(depth - self.depths[0], [lambda c=c: c for c in candidates])

  def _stem(self, images, training):
    x = activations.hard_swish(self.stem_bn(self.stem_conv(images), training=training))
    return self.first_block(x, training=training)

  def call(self, images, arch=None, training=None, all_exits=False):
    """Logits of the sub-network `arch` (max network if None); a list of 5 if `all_exits`."""
    if arch is None:
      arch = arch_tensors(self.search_space().max_config())
    x = self._stem(images, training)
    if all_exits:
      if not self.variant.early_exits:
        raise ValueError(f'all_exits needs an early-exit variant; {self.variant.name} has one exit')
      outputs = []
      for stage in range(arch_spec.NUM_STAGES):
        x = self._run_stage(stage, x, arch, training)
        outputs.append(self.head(stage)(x, training=training))
      return outputs
    if not self.variant.early_exits:
      for stage in range(arch_spec.NUM_STAGES):
        x = self._run_stage(stage, x, arch, training)
      return self.head(arch_spec.NUM_STAGES - 1)(x, training=training)
    # Early exits: stages after the exit pass their input through (flat conds, see _run_stage),
    # and only the chosen exit's head runs.
    exit_index = arch['exit'] - 1
    features = [self._run_stage(0, x, arch, training)]
    for stage in range(1, arch_spec.NUM_STAGES):
      features.append(tf.cond(exit_index >= stage,
                              lambda s=stage, v=features[-1]: self._run_stage(s, v, arch, training),
                              lambda v=features[-1]: v))
    return tf.switch_case(exit_index, [
        lambda s=s: self.head(s)(features[s], training=training)
        for s in range(arch_spec.NUM_STAGES)])

  def build_weights(self, resolution: int = 32):
    """Creates every weight with one eager pass of the maximal network (all exits for EE)."""
    images = tf.zeros([1, resolution, resolution, 3])
    arch = arch_tensors(self.search_space().max_config())
    if self.variant.early_exits:
      self(images, arch, training=False, all_exits=True)
    else:
      self(images, arch, training=False)
    return self

  def get_config(self):
    return {'variant': self.variant.name, 'num_classes': self.num_classes,
            'width_multiplier': self.width_multiplier, 'dropout': self.dropout_rate,
            'bn_momentum': self.bn_momentum, 'bn_epsilon': self.bn_epsilon,
            'kernel_sizes': list(self.kernel_sizes), 'expand_ratios': list(self.expand_ratios),
            'depths': list(self.depths), 'name': self.name}


def build_supernet(variant: str, num_classes: int, **kwargs) -> OFASupernet:
  """Builds a supernet with all weights created (ready to load checkpoints or train)."""
  return OFASupernet(variant, num_classes, **kwargs).build_weights()
