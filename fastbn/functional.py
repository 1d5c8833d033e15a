"""TEMPORARY placeholder: plain NumPy implementation with the final signatures.

Being replaced by the Numba kernels; the signatures and return conventions are final.
"""
import numpy as np


def _feats(ndim, axis):
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes))


def _b(v, ndim, feats, shape):
    s = [1] * ndim
    for a in feats:
        s[a] = shape[a]
    return np.asarray(v, dtype=np.float64).reshape(s)


def moments(x, axis=None, *, keepdims=False, ddof=0):
    x = np.asarray(x)
    xd = x.astype(np.float64)
    m = xd.mean(axis=axis, keepdims=True)
    n = xd.size // m.size
    v = ((xd - m) ** 2).sum(axis=axis, keepdims=keepdims) / (n - ddof)
    if not keepdims:
        m = m.reshape(v.shape)
    return m.astype(x.dtype), v.astype(x.dtype)


def batch_norm_forward(x, gamma, beta, *, axis=-1, epsilon=1e-3, training=True,
                       moving_mean=None, moving_variance=None, momentum=0.99):
    x = np.asarray(x)
    f = _feats(x.ndim, axis)
    red = tuple(a for a in range(x.ndim) if a not in f)
    fshape = tuple(x.shape[a] for a in f)
    xd = x.astype(np.float64)
    if training:
        mean = xd.mean(axis=red, keepdims=True)
        var = ((xd - mean) ** 2).mean(axis=red, keepdims=True)
        if moving_mean is not None:
            moving_mean[...] = moving_mean * momentum + mean.reshape(fshape) * (1 - momentum)
            moving_variance[...] = moving_variance * momentum + var.reshape(fshape) * (1 - momentum)
    else:
        mean = _b(moving_mean, x.ndim, f, x.shape)
        var = _b(moving_variance, x.ndim, f, x.shape)
    invstd = 1.0 / np.sqrt(var + epsilon)
    y = (xd - mean) * invstd
    if gamma is not None:
        y = y * _b(gamma, x.ndim, f, x.shape)
    if beta is not None:
        y = y + _b(beta, x.ndim, f, x.shape)
    return y.astype(x.dtype), mean.reshape(fshape), invstd.reshape(fshape)


def batch_norm_backward(dy, x, mean, invstd, gamma, *, axis=-1, training=True):
    x = np.asarray(x)
    f = _feats(x.ndim, axis)
    red = tuple(a for a in range(x.ndim) if a not in f)
    fshape = tuple(x.shape[a] for a in f)
    n = x.size // max(1, int(np.prod(fshape)))
    xd = x.astype(np.float64)
    m = _b(mean, x.ndim, f, x.shape)
    s = _b(invstd, x.ndim, f, x.shape)
    g = 1.0 if gamma is None else _b(gamma, x.ndim, f, x.shape)
    xhat = (xd - m) * s
    dy = np.asarray(dy, dtype=np.float64)
    db = dy.sum(axis=red, keepdims=True)
    dg = (dy * xhat).sum(axis=red, keepdims=True)
    dx = g * s * (dy - db / n - xhat * dg / n) if training else g * s * dy
    return dx.astype(x.dtype), dg.reshape(fshape).astype(x.dtype), db.reshape(fshape).astype(x.dtype)
