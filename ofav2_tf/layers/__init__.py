"""Elastic Keras layers of the OFAv2 supernet (weights held at maximum size, sliced at run time)."""
