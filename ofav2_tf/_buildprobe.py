"""Throwaway probe for the build tooling."""
from ofav2_tf import registry
from ofav2_tf import errors as E
import numpy as np

def f():
  return registry.Registry('x')
