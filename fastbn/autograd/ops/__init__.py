"""Differentiable operations, one module per family; importing it binds the Tensor operators.

- :mod:`~fastbn.autograd.ops.math`: ``add sub mul div neg matmul dense sum mean reshape
  transpose abs``
- :mod:`~fastbn.autograd.ops.activations`: ``relu leaky_relu elu tanh sigmoid softmax
  log_softmax selu gelu silu swish softplus``
- :mod:`~fastbn.autograd.ops.losses`: ``sparse_categorical_crossentropy
  softmax_sparse_categorical_crossentropy categorical_crossentropy binary_crossentropy``
- :mod:`~fastbn.autograd.ops.normalization`: ``batch_norm dropout``
- :mod:`~fastbn.autograd.ops.conv`: ``conv2d max_pool2d avg_pool2d global_average_pool2d``

Each op is one :class:`~fastbn.autograd.Function` subclass in its family's
module (``forward`` and ``backward``), applied by the lowercase function that
documents it. This package also binds ``+ - * / @``, unary ``-`` and the
methods ``sum``, ``mean``, ``reshape``, ``transpose``, ``T``, ``relu``,
``tanh`` and ``sigmoid`` onto :class:`~fastbn.autograd.Tensor`, so that the
tape never imports its ops.
"""
import numpy as np

from . import activations, conv, losses, math, normalization
from .activations import (elu, gelu, leaky_relu, log_softmax, relu, selu, sigmoid, silu, softmax,
                          softplus, swish, tanh)
from .conv import avg_pool2d, conv2d, global_average_pool2d, max_pool2d
from .losses import (binary_crossentropy, categorical_crossentropy,
                     softmax_sparse_categorical_crossentropy, sparse_categorical_crossentropy)
from .math import (abs, add, dense, div, matmul, mean, mul, neg, reshape, sub, sum,
                   transpose)
from .normalization import batch_norm, dropout
from ..tensor import Tensor

__all__ = (math.__all__ + activations.__all__ + losses.__all__ + normalization.__all__
           + conv.__all__)


# Bound onto Tensor here, where the ops live (early tinygrad's ``register``), so that
# tensor.py imports nothing from this package and an operator costs no import per call.
def _radd(self, other):
    return add(other, self)


def _rsub(self, other):
    return sub(other, self)


def _rmul(self, other):
    return mul(other, self)


def _rtruediv(self, other):
    return div(other, self)


def _rmatmul(self, other):
    return matmul(other, self)


def _sum(self, axis=None, keepdims=False):
    """Sum over ``axis`` (see :func:`fastbn.autograd.sum`).

    Parameters
    ----------
    axis : int or tuple of ints, optional
        The axes to reduce; all axes when None.
    keepdims : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    Tensor
    """
    return sum(self, axis=axis, keepdims=keepdims)


def _mean(self, axis=None, keepdims=False):
    """Mean over ``axis`` (see :func:`fastbn.autograd.mean`).

    Parameters
    ----------
    axis : int or tuple of ints, optional
        The axes to reduce; all axes when None.
    keepdims : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    Tensor
    """
    return mean(self, axis=axis, keepdims=keepdims)


def _reshape(self, *shape):
    """Reshape (see :func:`fastbn.autograd.reshape`); ``t.reshape(2, 3)`` works too.

    Parameters
    ----------
    *shape : int or tuple of ints
        The new shape, as one tuple or as separate ints.

    Returns
    -------
    Tensor
    """
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = shape[0]
    return reshape(self, shape)


def _transpose(self, *axes):
    """Permute axes (see :func:`fastbn.autograd.transpose`).

    Parameters
    ----------
    *axes : int or tuple of ints
        A permutation, as one tuple or as separate ints; none reverses the axes.

    Returns
    -------
    Tensor
    """
    if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
        axes = axes[0]
    return transpose(self, axes or None)


def _T(self):
    """All axes reversed."""
    return transpose(self, None)


def _relu(self):
    """``max(x, 0)``.

    Returns
    -------
    Tensor
    """
    return relu(self)


def _tanh(self):
    """Hyperbolic tangent.

    Returns
    -------
    Tensor
    """
    return tanh(self)


def _sigmoid(self):
    """Logistic sigmoid.

    Returns
    -------
    Tensor
    """
    return sigmoid(self)


def _register():
    """Bind the operators and methods above onto :class:`Tensor`."""
    operators = {"__add__": add, "__radd__": _radd, "__sub__": sub, "__rsub__": _rsub,
                 "__mul__": mul, "__rmul__": _rmul, "__truediv__": div,
                 "__rtruediv__": _rtruediv, "__neg__": neg, "__matmul__": matmul,
                 "__rmatmul__": _rmatmul}
    methods = {"sum": _sum, "mean": _mean, "reshape": _reshape, "transpose": _transpose,
               "relu": _relu, "tanh": _tanh, "sigmoid": _sigmoid}
    for name, fn in operators.items():
        setattr(Tensor, name, fn)
    for name, fn in methods.items():
        fn.__name__, fn.__qualname__, fn.__module__ = name, f"Tensor.{name}", Tensor.__module__
        setattr(Tensor, name, fn)
    _T.__name__, _T.__qualname__, _T.__module__ = "T", "Tensor.T", Tensor.__module__
    Tensor.T = property(_T)


_register()
