"""Channel sorting by importance before each expand phase (DESIGN.md 2.1, OFA's re-organisation).

A smaller expand ratio keeps a block's first middle channels, so the most important channels must
come first. Importance of middle channel j is the L1 norm of the projection weights that read it.
The permutation is applied to every tensor that touches the middle channels (expand conv outputs
and their BN, depthwise kernel and BN, squeeze-excite weights, projection inputs), which leaves the
maximal network's function unchanged. Squeeze-excite hidden units are sorted the same way, by the L1
norm of the weights that read them.
"""

import numpy as np

from ofav2_tf.layers import blocks


def _permute(variable, order, axis):
  variable.assign(np.take(variable.numpy(), order, axis=axis))


def _permute_bn(bn, order):
  for variable in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance):
    _permute(variable, order, 0)


def sort_block(block: blocks.ElasticMBConv) -> np.ndarray:
  """Sorts one block's middle channels in place; returns the permutation applied."""
  project = block.project_conv.kernel.numpy()  # [1, 1, mid, out]
  importance = np.abs(project).sum(axis=(0, 1, 3))
  order = np.argsort(-importance, kind='stable')
  if block.has_expand:
    _permute(block.expand_conv.kernel, order, 3)
    _permute_bn(block.expand_bn, order)
  _permute(block.depthwise.depthwise_kernel, order, 2)
  _permute_bn(block.depthwise_bn, order)
  if block.use_se:
    se = block.se
    _permute(se.reduce_kernel, order, 0)
    _permute(se.expand_kernel, order, 1)
    _permute(se.expand_bias, order, 0)
    hidden_order = np.argsort(-np.abs(se.expand_kernel.numpy()).sum(axis=1), kind='stable')
    _permute(se.reduce_kernel, hidden_order, 1)
    _permute(se.reduce_bias, hidden_order, 0)
    _permute(se.expand_kernel, hidden_order, 0)
  _permute(block.project_conv.kernel, order, 2)
  return order


def elastic_blocks(supernet):
  """Every elastic MBConv block of the supernet (the MBConv branch of parallel levels)."""
  for stage in supernet.levels:
    for level in stage:
      yield level.mbconv if isinstance(level, blocks.ParallelLevel) else level


def sort_channels(supernet) -> None:
  """Sorts the middle channels of every elastic block of `supernet` in place."""
  for block in elastic_blocks(supernet):
    sort_block(block)
