"""Cuts a part of a tf_keras functional model out as a standalone functional model.

Early-exit segments (export.segments) and the single-block models of the latency table
(ofav2_tf.latency_table) are parts of an extracted sub-network. Rebuilding them from the supernet
would duplicate the extraction's layer vocabulary; slicing the extracted graph instead guarantees
that a segment or a profiled block is exactly what the deployed network computes.

The slice gets fresh copies of its layers (same config, same weights), so it owns its variables, has
one node per layer, and serialises or converts like any other functional model: the source model is
left untouched. Each layer of the source must be called once (true of extracted models).
"""

from typing import Iterable, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tf_keras

from export.errors import ExportError


def _node(layer):
  nodes = layer.inbound_nodes
  if len(nodes) != 1:
    raise ExportError(f'layer {layer.name!r} is called {len(nodes)} times; slicing needs a model '
                      'whose layers are each called once (an extracted sub-network)')
  return nodes[0]


def _producers(layer):
  """The layers whose outputs `layer` reads, in argument order (InputLayers have none)."""
  if isinstance(layer, tf_keras.layers.InputLayer):
    return []
  return [inbound for inbound, _, _, _ in _node(layer).iterate_inbound()]


def _layer(model, name):
  try:
    return model.get_layer(name)
  except ValueError:
    raise ExportError(f'model {model.name!r} has no layer {name!r}; its layers are named like '
                      f'{[l.name for l in model.layers[:4]]} ...') from None


def slice_model(model, inputs: Mapping[str, str],
                outputs: Sequence[Union[str, Tuple[str, str]]], batch_size: Optional[int] = 1,
                name: Optional[str] = None) -> tf_keras.Model:
  """Builds the part of `model` between some layers' outputs and other layers' outputs.

  Args:
    model: A functional tf_keras model whose layers are each called once.
    inputs: Maps the name of each layer whose output becomes an input of the slice (the model's
      InputLayer for the image) to the name of the new `Input`.
    outputs: Layer names whose outputs the slice returns, in order; a pair (layer name, output
      name) names the output differently from the layer (through an Identity layer, which TFLite
      conversion removes), e.g. ('stage2_block3_residual', 'features2').
    batch_size: Fixed batch size of the new inputs (None for any).
    name: Name of the slice.

  Returns:
    A functional model whose outputs equal `model`'s tensors at `outputs` when fed `model`'s
    tensors at `inputs`.

  Raises:
    ExportError: a named layer does not exist, or the outputs depend on a tensor that is not one of
      the inputs (the message names it).
  """
  boundary = {}
  new_inputs = []
  for source, input_name in inputs.items():
    layer = _layer(model, source)
    shape = tuple(layer.output.shape)[1:]
    tensor = tf_keras.Input(shape, batch_size=batch_size, name=input_name,
                            dtype=layer.output.dtype)
    boundary[layer.name] = tensor
    new_inputs.append(tensor)
  output_specs = [(o, o) if isinstance(o, str) else tuple(o) for o in outputs]

  # Layers needed, in dependency order (depth-first from the outputs, stopping at the inputs).
  order, state = [], {}
  for source, _ in output_specs:
    stack = [(_layer(model, source), False)]
    while stack:
      layer, expanded = stack.pop()
      if layer.name in boundary or state.get(layer.name) == 'done':
        continue
      if expanded:
        state[layer.name] = 'done'
        order.append(layer)
        continue
      if isinstance(layer, tf_keras.layers.InputLayer):
        raise ExportError(f'the slice of {model.name!r} needs model input {layer.name!r}, which is '
                          f'not among its inputs {list(inputs)}')
      stack.append((layer, True))
      for producer in _producers(layer):
        if producer.name not in boundary and state.get(producer.name) != 'done':
          stack.append((producer, False))

  tensors = dict(boundary)
  for layer in order:
    node = _node(layer)
    missing = [p.name for p in _producers(layer) if p.name not in tensors]
    if missing:  # A cycle cannot occur in a functional model; this means an input was skipped.
      raise ExportError(f'layer {layer.name!r} reads {missing}, which the slice does not compute')

    def replace(value):
      history = getattr(value, '_keras_history', None)
      if history is None:
        return value
      return tensors[history.layer.name]

    args = tf.nest.map_structure(replace, node.call_args)
    kwargs = tf.nest.map_structure(replace, node.call_kwargs)
    copy = layer.__class__.from_config(layer.get_config())
    tensors[layer.name] = copy(*args, **kwargs)
    copy.set_weights(layer.get_weights())

  results = []
  for source, output_name in output_specs:
    tensor = tensors[source]
    if output_name != source:
      tensor = tf_keras.layers.Identity(name=output_name)(tensor)
    results.append(tensor)
  return tf_keras.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0],
                        results if len(results) > 1 else results[0],
                        name=name or f'{model.name}_slice')


def layer_group_boundary(model, layer_names: Iterable[str]) -> Tuple[list, list]:
  """The tensors a group of layers reads from outside and the ones it hands on.

  Args:
    model: A functional model.
    layer_names: The layers of the group (e.g. every layer of one block).

  Returns:
    (input layers, output layers): names of the layers outside the group whose outputs the group
    reads, in first-use order; names of the group's layers whose outputs are read outside the group
    or are model outputs.
  """
  group = set(layer_names)
  reads, handed_on = [], []
  # pylint: disable-next=protected-access
  model_outputs = {t._keras_history.layer.name for t in model.outputs}
  readers = {}
  for layer in model.layers:
    for producer in _producers(layer):
      readers.setdefault(producer.name, set()).add(layer.name)
      if layer.name in group and producer.name not in group and producer.name not in reads:
        reads.append(producer.name)
  for layer in model.layers:
    if layer.name in group and (layer.name in model_outputs or
                                readers.get(layer.name, set()) - group):
      handed_on.append(layer.name)
  return reads, handed_on


def slice_layer_group(model, layer_names: Iterable[str], batch_size: Optional[int] = 1,
                      name: Optional[str] = None) -> tf_keras.Model:
  """A model of exactly `layer_names`: one input per tensor read from outside, one output per
  tensor handed on (see `layer_group_boundary`)."""
  names = list(layer_names)
  reads, handed_on = layer_group_boundary(model, names)
  if not handed_on:
    raise ExportError(f'layer group {names[:3]}... of {model.name!r} has no output')
  inputs = {source: f'input_{i}' for i, source in enumerate(reads)}
  return slice_model(model, inputs, handed_on, batch_size=batch_size, name=name)
