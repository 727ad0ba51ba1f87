"""ofav2_tf: OFAv2 (Once-For-All with early exits, dense skips and parallel blocks) in TensorFlow/Keras.

The package is organised as small modules with one job each; see README.md for the map.
"""
