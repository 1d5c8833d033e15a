"""Datasets, loaded the way Keras loads them.

``from fastbn.datasets import mnist; mnist.load_data()`` returns the same
arrays as ``keras.datasets.mnist.load_data()``. The decoded arrays are checked
against a SHA-256 and cached atomically; see :mod:`fastbn.datasets.mnist`.
"""
from . import mnist

__all__ = ["mnist"]
