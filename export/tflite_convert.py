"""Float32 and full-integer int8 TFLite conversion of a static tf_keras model.

The files must run unchanged under LiteRT, the LiteRT benchmark tool and TFLite Micro, hence:
- a fixed batch of 1: the model is traced with input shape [1, H, W, C], so no dimension is dynamic
  (TFLite Micro cannot resize, and a dynamic batch forces runtime shape propagation on phones);
- builtin ops only: float files allow TFLITE_BUILTINS, int8 files TFLITE_BUILTINS_INT8, never Flex
  (select TF ops), which neither microcontrollers nor the stock runtimes provide;
- int8 input and output for int8 files, so a device feeds raw int8 pixels and reads int8 logits;
- a 'serving_default' signature whose output names are the Keras output names, which is how outputs
  are matched to exits after conversion (the converter may reorder them) and what the benchmark
  tool runs.

Conversion goes through a concrete function whose variables are held by a bare `tf.Module`. Handing
the Keras model itself to the converter makes it write a Keras SavedModel internally, which traces
every layer's call again: measured on the 100-layer toy model, 28 s per conversion against 5 s.
"""

import itertools
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from export import atomic_write
from export import tflite_inspect
from export.errors import ExportError

DEFAULT_CALIBRATION_SAMPLES = 200


def _static_input_shape(model, batch_size):
  if len(model.inputs) != 1:
    raise ExportError(f'model {model.name!r} has {len(model.inputs)} inputs; the exporter handles '
                      'image classifiers with exactly 1 input')
  shape = tuple(model.inputs[0].shape)[1:]
  if any(d is None for d in shape):
    raise ExportError(f'model {model.name!r} input shape {[None, *shape]} has unknown dimensions; '
                      'build it with a fixed resolution, e.g. Input((64, 64, 3))')
  return (batch_size,) + tuple(int(d) for d in shape)


def serving_function(model, batch_size=1):
  """Traces `model` for inference at a fixed batch size.

  Args:
    model: a tf_keras model with one image input.
    batch_size: leading dimension baked into the trace (1 for every exported file).

  Returns:
    A concrete function taking the image named after the Keras input and returning a dict from
    Keras output name to output tensor, and a `tf.Module` tracking the model's variables (what the
    converter saves alongside the function).
  """
  shape = _static_input_shape(model, batch_size)
  input_name = model.input_names[0]
  output_names = list(model.output_names)

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=input_name)])
  def serve(image):
    outputs = model(image, training=False)
    if not isinstance(outputs, (list, tuple)):
      outputs = [outputs]
    return dict(zip(output_names, outputs))

  holder = tf.Module()
  holder.variables_to_save = list(model.variables)
  return serve.get_concrete_function(), holder


# Start of the line TF's C++ quantizer prints to file descriptor 2 on every int8 conversion
# ('fully_quantize: 0, inference_type: 6, ...'); TF_CPP_MIN_LOG_LEVEL does not cover it.
_QUANTIZER_DUMP = 'fully_quantize: '


def run_converter(converter) -> bytes:
  """`converter.convert()`, with the quantizer's parameter dump dropped from stderr.

  The dump is one line per int8 conversion, which is noise in an export (a dozen conversions)
  and floods a latency profile (hundreds). The process's stderr is captured at the descriptor
  level during the call, since the line comes from C++; everything else it holds (converter
  warnings, errors) is written back to stderr afterwards, in order.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      return converter.convert()
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode('utf-8', 'replace').splitlines(True)
              if not line.startswith(_QUANTIZER_DUMP)]
      if kept:  # Back to the descriptor it was written to, not to a replaced sys.stderr.
        os.write(2, ''.join(kept).encode('utf-8'))


def _converter(model):
  function, holder = serving_function(model)
  return tf.lite.TFLiteConverter.from_concrete_functions([function], holder)


def _finish(data, path):
  """Checks the export contract before anything is written, then writes atomically."""
  tflite_inspect.check_deployable(tflite_inspect.inspect_tflite(data))
  if path is not None:
    atomic_write.write_bytes(path, data)
  return data


def convert_float(model, path=None):
  """Converts `model` to a float32 TFLite flatbuffer with batch 1 and builtin ops only.

  Args:
    model: a static tf_keras functional model with one image input.
    path: where to write the file (atomically); None to only return the bytes.

  Returns:
    The flatbuffer bytes.
  """
  converter = _converter(model)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return _finish(run_converter(converter), path)


def calibration_samples(images, input_shape, max_samples=DEFAULT_CALIBRATION_SAMPLES):
  """Collects calibration inputs of shape [1, H, W, C] from what the user handed in.

  Accepts what a data pipeline naturally yields: single images [H, W, C], batches [N, H, W, C]
  (split into samples), and (image, label) pairs (the label is dropped), as numpy arrays or tensors,
  from an iterable, a tf.data.Dataset, or a zero-argument callable returning either.

  Args:
    images: the representative images (already preprocessed like the model's training input).
    input_shape: the model's input shape with batch, e.g. (1, 64, 64, 3).
    max_samples: stop after this many samples; calibration quality saturates at a few hundred.

  Returns:
    A list of float32 arrays of shape `input_shape`.

  Raises:
    ExportError: no images were given, or one has the wrong shape.
  """
  if images is None:
    raise ExportError('int8 conversion needs a representative dataset; pass real training images '
                      f'of shape {list(input_shape[1:])} (a few hundred)')
  if callable(images) and not hasattr(images, '__iter__'):
    images = images()
  try:
    iterator = iter(images)
  except TypeError as e:
    raise ExportError(f'representative dataset of type {type(images).__name__} is not iterable; '
                      'pass an iterable, a tf.data.Dataset or a generator function of images') from e
  want = tuple(input_shape[1:])
  samples = []
  for item in iterator:
    if isinstance(item, (tuple, list)):
      item = item[0]
    array = np.asarray(item, dtype=np.float32)
    if array.shape == want:
      array = array[np.newaxis]
    if array.ndim != len(want) + 1 or array.shape[1:] != want:
      raise ExportError(f'representative image of shape {list(np.shape(item))} does not fit the model '
                        f'input; expected {list(want)} or a batch [N, {", ".join(map(str, want))}]')
    for sample in array:
      samples.append(sample[np.newaxis])
      if len(samples) >= max_samples:
        return samples
  if not samples:
    raise ExportError('representative dataset is empty; int8 calibration needs real images of shape '
                      f'{list(want)} (a few hundred)')
  return samples


def convert_int8(model, representative_images, path=None, max_samples=DEFAULT_CALIBRATION_SAMPLES):
  """Converts `model` to a full-integer int8 TFLite flatbuffer (int8 input and output, batch 1).

  Post-training quantization: activation ranges come from running `representative_images` through
  the float graph, so they must be real, preprocessed training images; random noise gives ranges that
  clip real activations.

  Args:
    model: a static tf_keras functional model with one image input.
    representative_images: see `calibration_samples`.
    path: where to write the file (atomically); None to only return the bytes.
    max_samples: number of calibration images used.

  Returns:
    The flatbuffer bytes.

  Raises:
    ExportError: missing or empty representative dataset, wrong image shape.
  """
  shape = _static_input_shape(model, 1)
  samples = calibration_samples(representative_images, shape, max_samples)
  converter = _converter(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: ([s] for s in samples)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.inference_input_type = tf.int8
  converter.inference_output_type = tf.int8
  data = run_converter(converter)
  info = tflite_inspect.inspect_tflite(data)
  not_int8 = [t.name for t in itertools.chain(info.inputs, info.outputs) if t.dtype != 'int8']
  if not_int8:
    raise ExportError(f'int8 conversion of {model.name!r} left float inputs/outputs {not_int8}')
  return _finish(data, path)
