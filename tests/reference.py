"""Plain NumPy float64 reference for fastbn: the textbook formulas, nothing clever.

Everything here is computed in float64 with NumPy's own reductions on a
float64 copy, so it is the independent "truth" the kernels are compared with.
Axis conventions match fastbn: ``moments`` takes the *reduced* axes (NumPy),
``batch_norm_*`` take the *feature* axes that are kept (Keras).
"""
import numpy as np


def feature_axes(ndim, axis):
    """Sorted, non-negative feature axes of a batch-norm ``axis`` argument."""
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes))


def reduced_axes(ndim, axis):
    feats = feature_axes(ndim, axis)
    return tuple(a for a in range(ndim) if a not in feats)


def _bcast(v, ndim, feats):
    """Reshape a feature-shaped array so it broadcasts against x."""
    shape = [1] * ndim
    v = np.asarray(v, dtype=np.float64)
    for k, a in enumerate(feats):
        shape[a] = v.shape[k]
    return v.reshape(shape)


def moments(x, axis=None, ddof=0, keepdims=False):
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=axis, keepdims=True)
    n = x.size // mean.size if mean.size else 0
    var = ((x - mean) ** 2).sum(axis=axis, keepdims=keepdims) / (n - ddof)
    if not keepdims:
        mean = mean.reshape(var.shape)
    return mean, var


def batch_norm_forward(x, gamma=None, beta=None, axis=-1, epsilon=1e-3,
                       training=True, moving_mean=None, moving_variance=None):
    """Return ``(y, mean, invstd)`` in float64, feature-shaped statistics."""
    x = np.asarray(x, dtype=np.float64)
    feats = feature_axes(x.ndim, axis)
    red = reduced_axes(x.ndim, axis)
    if training:
        mean = x.mean(axis=red, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=red, keepdims=True)
    else:
        mean = _bcast(moving_mean, x.ndim, feats)
        var = _bcast(moving_variance, x.ndim, feats)
    invstd = 1.0 / np.sqrt(var + epsilon)
    y = (x - mean) * invstd
    if gamma is not None:
        y = y * _bcast(gamma, x.ndim, feats)
    if beta is not None:
        y = y + _bcast(beta, x.ndim, feats)
    fshape = tuple(x.shape[a] for a in feats)
    return y, mean.reshape(fshape), invstd.reshape(fshape)


def batch_norm_backward(dy, x, mean, invstd, gamma=None, axis=-1, training=True):
    """Return ``(dx, dgamma, dbeta)`` in float64.

    With ``xhat = (x - mean) * invstd`` and N elements per feature:
    ``dbeta = sum(dy)``, ``dgamma = sum(dy * xhat)``, and in training
    ``dx = gamma * invstd * (dy - dbeta / N - xhat * dgamma / N)``;
    with frozen statistics ``dx = gamma * invstd * dy``.
    """
    dy = np.asarray(dy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    feats = feature_axes(x.ndim, axis)
    red = reduced_axes(x.ndim, axis)
    n = x.size // max(1, int(np.prod([x.shape[a] for a in feats])))
    m = _bcast(mean, x.ndim, feats)
    s = _bcast(invstd, x.ndim, feats)
    g = 1.0 if gamma is None else _bcast(gamma, x.ndim, feats)
    xhat = (x - m) * s
    dbeta = dy.sum(axis=red, keepdims=True)
    dgamma = (dy * xhat).sum(axis=red, keepdims=True)
    if training:
        dx = g * s * (dy - dbeta / n - xhat * dgamma / n)
    else:
        dx = g * s * dy
    fshape = tuple(x.shape[a] for a in feats)
    return dx, dgamma.reshape(fshape), dbeta.reshape(fshape)


# ------------------------------------------------------ convolution, pooling
def _same(size, k, s):
    """Keras' 'same' padding: (output length, padding before, padding after)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def conv2d(x, kernel, bias=None, strides=(1, 1), padding="valid"):
    """Textbook NHWC cross-correlation in float64: a loop over output pixels."""
    x = np.asarray(x, np.float64)
    kh, kw, _, f = kernel.shape
    sh, sw = strides
    if padding == "same":
        _, t, b = _same(x.shape[1], kh, sh)
        _, l, r = _same(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    ho = (x.shape[1] - kh) // sh + 1
    wo = (x.shape[2] - kw) // sw + 1
    y = np.zeros((x.shape[0], ho, wo, f))
    for i in range(ho):
        for j in range(wo):
            win = x[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
            y[:, i, j, :] = np.tensordot(win, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return y if bias is None else y + bias


def conv2d_grads(x, kernel, dy, strides=(1, 1), padding="valid"):
    """``(db, dk, dx)`` of :func:`conv2d` for the output gradient ``dy``, by the
    same loop over output pixels (each window's share added), in float64."""
    x = np.asarray(x, np.float64)
    kh, kw, _, f = kernel.shape
    sh, sw = strides
    t = l = 0
    if padding == "same":
        _, t, b = _same(x.shape[1], kh, sh)
        _, l, r = _same(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    dk = np.zeros(kernel.shape)
    dxp = np.zeros(x.shape)
    for i in range(dy.shape[1]):
        for j in range(dy.shape[2]):
            win = (slice(None), slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
            dk += np.tensordot(x[win], dy[:, i, j, :], axes=([0], [0]))
            dxp[win] += np.tensordot(dy[:, i, j, :], kernel, axes=([1], [3]))
    dx = dxp[:, t:x.shape[1] - b, l:x.shape[2] - r] if padding == "same" else dxp
    return dy.sum(axis=(0, 1, 2)), dk, dx


def pool2d(x, pool, strides, padding, reduce):
    """Textbook NHWC max (``reduce=np.max``) or mean pooling in float64; padded
    places are NaN and ignored (never a maximum, not counted in a mean)."""
    x = np.asarray(x, np.float64)
    kh, kw = pool
    sh, sw = strides
    if padding == "same":
        _, t, b = _same(x.shape[1], kh, sh)
        _, l, r = _same(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=np.nan)
    ho = (x.shape[1] - kh) // sh + 1
    wo = (x.shape[2] - kw) // sw + 1
    y = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    nan = {np.max: np.nanmax, np.mean: np.nanmean}[reduce]
    for i in range(ho):
        for j in range(wo):
            y[:, i, j, :] = nan(x[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :], axis=(1, 2))
    return y
