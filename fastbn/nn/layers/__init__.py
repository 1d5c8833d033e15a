"""Layers with Keras' names, arguments and defaults, by Keras' families.

:mod:`~fastbn.nn.layers.base` (``Layer``, ``Variable``),
:mod:`~fastbn.nn.layers.core` (``Input``, ``Dense``, ``Activation``, ...),
:mod:`~fastbn.nn.layers.normalization` (``BatchNormalization``),
:mod:`~fastbn.nn.layers.convolutional` (``Conv2D``) and
:mod:`~fastbn.nn.layers.pooling`; every layer is also here, as
``fastbn.nn.layers.Dense``.
"""
from ._utils import FLOATX
from .base import Layer, Variable
from .convolutional import Conv2D
from .core import Activation, Dense, Dropout, Flatten, Input, LeakyReLU, Masking
from .normalization import BatchNormalization
from .pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D

__all__ = ["Variable", "Layer", "Input", "Dense", "BatchNormalization", "Activation", "Masking",
           "LeakyReLU", "Flatten", "Dropout", "Conv2D", "MaxPooling2D", "AveragePooling2D",
           "GlobalAveragePooling2D"]
