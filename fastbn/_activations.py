"""ELU and GELU dispatch for :mod:`fastbn.autograd` (float32 ELU, exact GELU;
see :mod:`fastbn.kernels.activations` for why and how)."""
import numpy as np

from . import kernels as K
from ._bn import dispatch

def elu_forward(x, alpha):
    """``elu(x)`` of a float32 array via the vectorized kernel; returns a new array."""
    xc = np.ascontiguousarray(x)
    y = np.empty_like(xc)
    dispatch.run(K._elu_forward, xc)(xc.reshape(-1), float(alpha), y.reshape(-1))
    return y


def elu_backward(x, grad, alpha):
    """The ELU gradient ``grad * elu'(x)`` of a float32 array."""
    xc, gc = np.ascontiguousarray(x), np.ascontiguousarray(grad)
    dx = np.empty_like(xc)
    dispatch.run(K._elu_backward, xc)(xc.reshape(-1), gc.reshape(-1), float(alpha), dx.reshape(-1))
    return dx


def gelu_forward(x):
    """Exact ``gelu(x) = x * Phi(x)`` (NumPy has no ``erf``); returns a new array."""
    xc = np.ascontiguousarray(x)
    y = np.empty_like(xc)
    dispatch.run(K._gelu_forward, xc)(xc.reshape(-1), y.reshape(-1))
    return y


def gelu_backward(x, grad):
    """The exact GELU gradient ``grad * (Phi(x) + x phi(x))``."""
    xc = np.ascontiguousarray(x)
    gc = np.ascontiguousarray(grad, dtype=xc.dtype)
    dx = np.empty_like(xc)
    dispatch.run(K._gelu_backward, xc)(xc.reshape(-1), gc.reshape(-1), dx.reshape(-1))
    return dx
