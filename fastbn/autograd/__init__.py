"""A thin autograd tape over NumPy arrays, with batch norm from :mod:`fastbn.functional`.

:class:`Tensor` wraps an ndarray and records the operations applied to it;
:meth:`Tensor.backward` walks the record in reverse topological order and
accumulates gradients. Each operation is a :class:`Function` with a
``forward`` and a ``backward`` (see :mod:`fastbn.autograd.ops`).

Examples
--------
>>> import numpy as np
>>> from fastbn import autograd as ag
>>> w = ag.Tensor(np.array([[1.0], [-1.0]]), requires_grad=True)
>>> x = np.array([[1.0, 2.0], [3.0, 1.0]])
>>> loss = ag.relu(x @ w).mean()
>>> loss.backward()
>>> w.grad
array([[1.5],
       [0.5]])
"""
from .ops import (AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D, avg_pool2d, conv2d,
                  global_average_pool2d, max_pool2d)
from .ops import (BatchNorm, Dense, Dropout, ELU, LeakyReLU, LogSoftmax, MatMul, Mean, Mul,
                  Neg, ReLU, Reshape, Sigmoid, Softmax, SoftmaxSparseCategoricalCrossentropy,
                  SparseCategoricalCrossentropy, Sub, Sum, Tanh, Transpose, Add, Div,
                  add, batch_norm, dense, div, dropout, elu, leaky_relu, log_softmax, matmul,
                  mean, mul, neg, relu, reshape, sigmoid, softmax,
                  softmax_sparse_categorical_crossentropy, sparse_categorical_crossentropy, sub,
                  sum, tanh, transpose)
from .ops import (GELU, SELU, Abs, BinaryCrossentropy, CategoricalCrossentropy, SiLU,
                  Softplus, abs, binary_crossentropy, categorical_crossentropy, gelu, selu,
                  silu, softplus, swish)
from .tensor import Function, Tensor, primitive, enable_grad, is_grad_enabled, no_grad, unbroadcast

__all__ = ["Tensor", "Function", "primitive", "no_grad", "enable_grad", "is_grad_enabled", "unbroadcast",
           "add", "sub", "mul", "div", "neg", "matmul", "dense", "sum", "mean", "reshape",
           "transpose", "relu", "leaky_relu", "elu", "tanh", "sigmoid", "softmax",
           "log_softmax", "sparse_categorical_crossentropy",
           "softmax_sparse_categorical_crossentropy", "dropout", "batch_norm",
           "Add", "Sub", "Mul", "Div", "Neg", "MatMul", "Dense", "Sum", "Mean", "Reshape",
           "Transpose", "ReLU", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax",
           "SparseCategoricalCrossentropy", "SoftmaxSparseCategoricalCrossentropy", "Dropout",
           "BatchNorm", "conv2d", "max_pool2d", "avg_pool2d", "global_average_pool2d",
           "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D",
           "abs", "selu", "gelu", "silu", "swish", "softplus",
           "categorical_crossentropy", "binary_crossentropy", "Abs", "SELU", "GELU", "SiLU",
           "Softplus", "CategoricalCrossentropy", "BinaryCrossentropy"]
