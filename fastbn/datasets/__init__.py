"""Datasets, loaded the way Keras loads them.

``from fastbn.datasets import mnist; mnist.load_data()`` returns the same
arrays as ``keras.datasets.mnist.load_data()``. The decoded arrays are checked
against a SHA-256 and cached atomically; see :mod:`fastbn.datasets.mnist`.
``kmnist.load_data()`` gives Kuzushiji-MNIST in the same form.
"""
from . import kmnist, mnist

__all__ = ["mnist", "kmnist"]
