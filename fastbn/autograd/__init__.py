"""A thin autograd tape over NumPy arrays, with batch norm from :mod:`fastbn.functional`.

:class:`Tensor` wraps an ndarray and records the operations applied to it;
:meth:`Tensor.backward` walks the record in reverse topological order and
accumulates gradients. Each operation is a :class:`Function` with a
``forward`` and a ``backward``, applied by the lowercase function of its
name (``relu``, ``conv2d`` ...); they live in :mod:`fastbn.autograd.ops`,
one module per family.

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
from .ops import (abs, add, avg_pool2d, batch_norm, binary_crossentropy,
                  categorical_crossentropy, conv2d, dense, div, dropout, elu, gelu,
                  global_average_pool2d, leaky_relu, log_softmax, matmul, max_pool2d, mean, mul,
                  neg, relu, reshape, selu, sigmoid, silu, softmax,
                  softmax_sparse_categorical_crossentropy, softplus,
                  sparse_categorical_crossentropy, sub, sum, swish, tanh, transpose)
from .tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad, unbroadcast

__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "unbroadcast",
           "add", "sub", "mul", "div", "neg", "matmul", "dense", "sum", "mean", "reshape",
           "transpose", "abs", "relu", "leaky_relu", "elu", "tanh", "sigmoid", "softmax",
           "log_softmax", "selu", "gelu", "silu", "swish", "softplus",
           "sparse_categorical_crossentropy", "softmax_sparse_categorical_crossentropy",
           "categorical_crossentropy", "binary_crossentropy", "dropout", "batch_norm",
           "conv2d", "max_pool2d", "avg_pool2d", "global_average_pool2d"]
