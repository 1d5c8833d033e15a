"""Keras-shaped layers, ``Sequential``, optimizers, losses and initializers.

Keras code runs by changing its imports::

    from fastbn import nn
    model = nn.Sequential([nn.Flatten(input_shape=[28, 28]),
                           nn.BatchNormalization(),
                           nn.Dense(300, activation="elu", kernel_initializer="he_normal"),
                           nn.Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="SGD",
                  metrics=["accuracy"])

Layers compute with :mod:`fastbn.autograd` in float32; batch normalization
runs on fastbn's kernels.

Examples
--------
>>> import numpy as np
>>> from fastbn import nn
>>> nn.set_random_seed(0)
>>> model = nn.Sequential([nn.Dense(4, activation="relu", input_shape=(2,)),
...                        nn.BatchNormalization(), nn.Dense(2, activation="softmax")])
>>> model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
...               metrics=["accuracy"])
>>> x = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
>>> h = model.fit(x, (x[:, 0] > 0).astype(int), epochs=2, verbose=0)
>>> sorted(h.history)
['accuracy', 'loss']
"""
from . import (activations, callbacks, constraints, initializers, losses, models,
               optimizers, regularizers, training, utils)
from .layers import (Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout,
                     Flatten, GlobalAveragePooling2D, Input, Layer, LeakyReLU, Masking,
                     MaxPooling2D, Variable)
from .losses import SparseCategoricalCrossentropy
from .models import History, Sequential
from .optimizers import SGD, Adam, Optimizer, RMSprop
from .utils import clear_session, set_random_seed

__all__ = ["Sequential", "History", "Layer", "Variable", "Input", "Dense",
           "BatchNormalization", "Activation", "LeakyReLU", "Masking", "Flatten", "Dropout",
           "Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
           "Optimizer", "SGD", "Adam", "RMSprop", "SparseCategoricalCrossentropy",
           "set_random_seed", "clear_session",
           "activations", "callbacks", "constraints", "initializers", "losses", "models",
           "optimizers", "regularizers", "training", "utils"]
