"""Exporter: turns an extracted sub-network (a plain tf_keras model) into deployable files.

Modules, one job each:
  tflite_convert      float32 and full-integer int8 TFLite conversion (batch 1, builtin ops only).
  tflite_inspect      reads a .tflite flatbuffer: ops, tensors, quantization, output order by name.
  quantization        int8 <-> float using a tensor's own scale and zero point.
  litert_runner       runs a .tflite under LiteRT, measures latency, drives the litert-benchmark tool.
  tflm_runner         runs an int8 .tflite under TFLite Micro in a child process, reports its arena.
  keras_portability   saves a .keras file per Keras generation and proves both load in fresh processes.
  keras3_config       rewrites a tf_keras functional config into one Keras 3 deserializes.
  qat                 quantization-aware fine-tuning (tfmot, custom quantize configs) and its int8 file.
  exporter            export_subnet: every deployable file of one sub-network, atomically, checked.
  toy_model           a small early-exit model in the extraction's layer vocabulary, for tests and demos.
  errors              ExportError and its kinds (all OFAError: printed as one line, no traceback).
  atomic_write        temporary name + rename, so no half-written file is ever left behind.
  _tflm_child.py, _keras_child.py   scripts the runners start in fresh processes (never imported).

Nothing is imported here so that `import export.tflite_inspect` stays cheap (no TensorFlow).
"""
