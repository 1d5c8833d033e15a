"""Masked statistics (``mask=``, ``where=``).

A mask selects sample positions: it is constant along the feature axes, so the
masked statistics are the rows kernels' statistics of the selected positions,
read in place through their row indices when ``x`` is C-contiguous with the
features last (:func:`selected_stats`), else gathered into one contiguous
``(selected, *features)`` array first. Both keep the kernels' accuracy
(float64 chunks, Chan's merge, offsets) and their bitwise determinism for any
thread count (chunks of selected rows, never of threads).
"""
import numpy as np

from .. import kernels as K
from .._axes import layout, normalize_axis
from . import checked, dispatch, plans
from .checks import check_momentum, check_moving, check_training, features, float_input
from .dispatch import kernel_view
from .moving import update_moving_numpy, warn_overflow

def sample_mask(mask, x, feats, name, fn):
    """``mask`` as a boolean array over ``x``'s non-feature axes (in order).

    Accepted: an array broadcastable to ``x`` that does not vary along the
    feature axes, or one shaped like ``x`` without them (Keras' mask).
    """
    m = np.asarray(mask)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} has dtype {m.dtype}; pass booleans (True: use)")
    m = m.astype(bool, copy=False)
    other = tuple(s for a, s in enumerate(x.shape) if a not in feats)
    if m.shape == other and m.ndim != x.ndim:
        return m
    try:
        full = np.broadcast_to(m, x.shape)
    except ValueError:
        raise ValueError(f"{fn}: {name} of shape {m.shape} does not broadcast to x of shape "
                         f"{x.shape}; pass one value per sample position, shape "
                         f"{other}") from None
    first = full[tuple(0 if a in feats else slice(None) for a in range(x.ndim))]
    keep = tuple(None if a in feats else slice(None) for a in range(x.ndim))
    if not np.array_equal(np.broadcast_to(first[keep], x.shape), full):
        raise ValueError(f"{fn}: {name} varies along the feature axes {feats}; a mask selects "
                         f"whole sample positions (the same for every feature)")
    return np.ascontiguousarray(first)


def keras_mask(mask, x, feats, fn):
    """``mask`` for the masked forward and backward: ``(m, None)``, ``m`` over the
    non-feature axes as :func:`sample_mask` gives it, or ``(None, w)``, ``w`` a boolean
    array shaped like ``x`` that varies along the feature axes.

    The second is Keras 3's rule for a mask :func:`sample_mask` refuses: one axis less
    than ``x``, given a trailing axis and broadcast to ``x`` (a ``(batch, time)`` mask
    with ``axis=1`` selects, for feature ``t``, the batches ``mask[:, t]`` keeps); a
    mask neither rule takes raises :func:`sample_mask`'s error.
    """
    try:
        return sample_mask(mask, x, feats, "mask", fn), None
    except ValueError as e:
        m = np.asarray(mask).astype(bool)
        if m.ndim != x.ndim - 1:
            raise
        try:
            w = np.broadcast_to(m[..., None], x.shape)
        except ValueError:
            raise e from None
    first = w[tuple(0 if a in feats else slice(None) for a in range(x.ndim))]
    keep = tuple(None if a in feats else slice(None) for a in range(x.ndim))
    if np.array_equal(np.broadcast_to(first[keep], x.shape), w):
        return np.ascontiguousarray(first), None
    return None, w


def _feature_sums(v, feats):
    """Sums of ``v`` (float64) over the non-feature axes, in the features' order."""
    rest = tuple(a for a in range(v.ndim) if a not in feats)
    return np.transpose(np.sum(v, axis=rest, dtype=np.float64, keepdims=True), rest + feats
                        ).reshape(tuple(v.shape[a] for a in feats))


def _broadcast_features(v, x, feats):
    """A features-shaped ``v`` as an array that broadcasts against ``x``."""
    shape = [1] * x.ndim
    for a in feats:
        shape[a] = x.shape[a]
    return np.asarray(v).reshape(shape) if list(feats) == sorted(feats) else np.transpose(
        np.asarray(v).reshape((1,) * (x.ndim - len(feats)) + v.shape),
        np.argsort([a for a in range(x.ndim) if a not in feats] + list(feats)))


def _per_feature_stats(xk, feats, w):
    """``(count, mean, var)`` per feature of the positions ``w`` selects (NumPy float64);
    a feature with none selected gets 0 and 0, as Keras' ``sum / (count + 1e-7)`` does."""
    count = _feature_sums(w, feats)
    safe = np.maximum(count, 1)
    mean = _feature_sums(np.where(w, xk, 0), feats) / safe
    d = np.where(w, xk - _broadcast_features(mean, xk, feats), 0)
    var = _feature_sums(np.square(d, dtype=np.float64), feats) / safe
    return count, mean, var


def selected_stats(xk, feats, m):
    """``(n, mean, m2)`` (float64, kernel order) of the positions ``m`` selects, read in
    place through their row indices, or None when ``xk`` is not C-contiguous with
    trailing feature axes (such a mask goes through :func:`gather` instead), or
    selects nothing.

    Not gathering them first saves a copy of the selected positions and a
    pass over it: a training forward on (8192, 1024) fp32 with a mask keeping
    75% (``docs/scripts/mask_cost.py``) took 1.07x the unmasked one, against
    1.70x gathered.
    """
    if not xk.flags.c_contiguous or feats != tuple(range(xk.ndim - len(feats), xk.ndim)):
        return None
    rows = np.flatnonzero(m)
    if rows.size == 0:
        return None
    x2 = xk.reshape(m.size, -1)
    if x2.shape[1] == 0:
        return None
    shift = K._finite_shift(x2[rows[0]])
    mean, m2 = dispatch.run(K._moments_rows_at, x2)(x2, rows, shift,
                                                    K.rows_per_chunk(rows.size, x2.shape[1]))
    return rows.size, mean + shift, m2


def gather(x, feats, m):
    """The selected positions of ``x``: a C-contiguous ``(count, *features)`` array."""
    rest = [a for a in range(x.ndim) if a not in feats]
    xt = np.transpose(x, rest + list(feats))
    return np.ascontiguousarray(xt[m])


def masked_moments(x, axis, keepdims, ddof, where):
    fn = "moments"
    xk, _ = float_input(x, "x", fn)
    reduced = normalize_axis(axis, xk.ndim, fn=fn, allow_none=True)
    feats = tuple(a for a in range(xk.ndim) if a not in reduced)
    m = sample_mask(where, xk, feats, "where", fn)
    stats = selected_stats(xk, feats, m) if feats else None
    if stats is not None:                          # the same bits as batch_norm_forward(mask=)
        count, mean_k, m2_k = stats
        if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (int, np.integer, float)):
            raise TypeError(f"{fn}: ddof must be a number, got {ddof!r}")
        if count - ddof <= 0:
            raise ValueError(f"{fn}: ddof={ddof} leaves no degrees of freedom for {count} "
                             f"element(s) per result (need N - ddof > 0)")
        lay = layout(xk, feats)
        dtype = np.asarray(x).dtype
        mean = lay.from_kernel(mean_k).astype(dtype)
        var = lay.from_kernel(m2_k / (count - ddof)).astype(dtype)
    else:
        sel = gather(xk, feats, m)
        if sel.shape[0] == 0:
            raise ValueError(f"{fn}: where= selects no elements; there is nothing to average")
        mean, var = checked.moments(sel.astype(np.asarray(x).dtype, copy=False)
                                    if np.asarray(x).dtype == np.float16 else sel, 0, False, ddof)
    if keepdims:
        kshape = tuple(1 if a in reduced else s for a, s in enumerate(xk.shape))
        mean, var = np.reshape(mean, kshape), np.reshape(var, kshape)
    return mean, var


def masked_forward(x, gamma, beta, axis, epsilon, training, moving_mean, moving_variance,
                   momentum, out, mask):
    """:func:`fastbn.batch_norm_forward` with ``mask``: the statistics of the selected positions
    normalise every position (Keras); a batch with none selected gives zeros."""
    fn = "batch_norm_forward"
    check_training(training, fn)
    if not training:                               # inference: a mask changes nothing
        res = plans.planned_forward(x, gamma, beta, axis, epsilon, False, moving_mean,
                                    moving_variance, momentum, out)
        if res is not None:
            return res
        return checked.batch_norm_forward(x, gamma, beta, axis, epsilon, False, moving_mean,
                                          moving_variance, momentum, out=out)
    xk, out_dtype = float_input(x, "x", fn)
    feats = features(xk, axis, fn)
    momentum = check_momentum(momentum, fn)
    m, w = keras_mask(mask, xk, feats, fn)
    fshape = tuple(xk.shape[a] for a in feats)
    if (moving_mean is None) != (moving_variance is None):
        raise ValueError(f"{fn}: pass both moving_mean and moving_variance, or neither")
    if moving_mean is not None:
        for name, arr in (("moving_mean", moving_mean), ("moving_variance", moving_variance)):
            check_moving(arr, fshape, name, fn, axis)
    if w is not None:                              # Keras' mask, varying along the features
        count, mean, var = _per_feature_stats(xk, feats, w)   # float64, as on the paths below
        y, mean_out, invstd = checked.batch_norm_forward(x, gamma, beta, axis, epsilon, False,
                                                         mean, var, momentum, out=out)
        if moving_mean is not None:
            if sum(update_moving_numpy(arr, batch, momentum)
                   for arr, batch in ((moving_mean, mean), (moving_variance, var))):
                warn_overflow(None, moving_mean, moving_variance, var.reshape(-1), momentum,
                              fn)
        return y, mean_out, invstd
    stats = selected_stats(xk, feats, m)
    if stats is not None:
        count, mean_k, m2_k = stats
        lay = layout(xk, feats)                    # kernel order: the features' C order
    else:
        sel = gather(xk, feats, m)
        count = sel.shape[0]
        if count:
            lay = layout(sel, tuple(range(1, sel.ndim)))   # float64 statistics, as unmasked
            mean_k, m2_k = dispatch.stats(kernel_view(lay, sel), lay)
    if count == 0:                                 # nothing to take statistics from
        y = np.zeros(xk.shape, out_dtype) if out is None else out
        if out is not None:
            out[...] = 0
        zeros = np.zeros(fshape, xk.dtype)
        return y, zeros, zeros.copy()
    mean, var = lay.from_kernel(mean_k), lay.from_kernel(m2_k / count)
    y, mean_out, invstd = checked.batch_norm_forward(x, gamma, beta, axis, epsilon, False,
                                                     mean, var, momentum, out=out)
    if moving_mean is not None:
        if sum(update_moving_numpy(arr, batch, momentum)
               for arr, batch in ((moving_mean, mean), (moving_variance, var))):
            warn_overflow(lay, moving_mean, moving_variance, m2_k / count, momentum, fn)
    return y, mean_out, invstd


def masked_backward(dy, x, mean, invstd, gamma, axis, training, out, mask):
    """:func:`fastbn.batch_norm_backward` with ``mask``: the statistics' gradient reaches the
    selected positions only, ``dx = gamma s (dy - m (dbeta + xhat dgamma) / n)``."""
    fn = "batch_norm_backward"
    check_training(training, fn)
    dx, dgamma, dbeta = checked.batch_norm_backward(dy, x, mean, invstd, gamma, axis, False,
                                                    out=out)
    if not training:
        return dx, dgamma, dbeta
    xk, _ = float_input(x, "x", fn)
    feats = features(xk, axis, fn)
    m, w = keras_mask(mask, xk, feats, fn)
    if w is not None:                              # per feature: n and the mask vary
        n = _broadcast_features(np.maximum(_feature_sums(w, feats), 1), xk, feats)
        def fv(v):                                 # feature-shaped -> against x, float64
            return _broadcast_features(np.asarray(v, np.float64), xk, feats)
        s = fv(invstd)
        g = 1.0 if gamma is None else fv(gamma)
        xhat = (xk - fv(mean)) * s
        corr = g * s * (fv(dbeta) + xhat * fv(dgamma)) / n
        dx -= (corr * w).astype(dx.dtype)
        return dx, dgamma, dbeta
    n = int(np.count_nonzero(m))
    if n == 0:                                     # the forward gave constant zeros
        dx[...] = 0
        return dx, np.zeros_like(dgamma), np.zeros_like(dbeta)
    if (xk.flags.c_contiguous and dx.flags.c_contiguous and dx.dtype == xk.dtype
            and feats == tuple(range(xk.ndim - len(feats), xk.ndim))):
        # in place through the selected rows (kernels._masked_grad_rows): 1.9x
        # the unmasked backward on (8192, 1024), against 9.7x for the NumPy pass below
        f64 = lambda v: np.ascontiguousarray(v, np.float64).reshape(-1)   # noqa: E731
        s, dg, db = f64(invstd), f64(dgamma), f64(dbeta)
        g = s if gamma is None else f64(gamma) * s
        x2, dx2 = xk.reshape(m.size, -1), dx.reshape(m.size, -1)
        dispatch.run(K._masked_grad_rows, x2)(x2, np.flatnonzero(m), f64(mean), g * db / n,
                                              g * s * dg / n, dx2, K.ROWS_PER_CHUNK)
        return dx, dgamma, dbeta
    rest = [a for a in range(xk.ndim) if a not in feats]
    order = rest + list(feats)
    inv = np.argsort(order)

    def feature_view(v):                         # feature-shaped -> broadcast against x
        return np.transpose(np.asarray(v, np.float64).reshape((1,) * len(rest) + v.shape), inv)
    s = feature_view(np.asarray(invstd))
    g = 1.0 if gamma is None else feature_view(np.asarray(gamma))
    xhat = (xk - feature_view(np.asarray(mean))) * s
    corr = g * s * (feature_view(dbeta) + xhat * feature_view(dgamma)) / n
    mk = np.transpose(m.reshape(m.shape + (1,) * len(feats)), inv)
    dx -= (corr * mk).astype(dx.dtype)
    return dx, dgamma, dbeta
