"""Datasets, loaded the way Keras loads them.

``from fastbn.datasets import mnist; mnist.load_data()`` returns the same
arrays as ``keras.datasets.mnist.load_data()``. Every file is checked against a
SHA-256 before it is parsed and cached atomically; see :mod:`fastbn.datasets.mnist`.
"""
from . import mnist

__all__ = ["mnist"]
