r"""Losses as Keras computes them: the sparse, categorical and binary cross-entropies.

``check_labels`` and ``check_target`` check and shape the truth for these ops and for
:mod:`fastbn.nn.losses`.
"""
import numpy as np

from ..tensor import Function
from .activations import stable_sigmoid

__all__ = ["sparse_categorical_crossentropy", "softmax_sparse_categorical_crossentropy",
           "categorical_crossentropy", "binary_crossentropy"]


def check_labels(labels, output_shape, fn):
    """Integer class indices shaped like ``output_shape[:-1]`` (a trailing 1 dropped)."""
    y = np.asarray(labels)
    if y.ndim == len(output_shape) and y.shape[-1:] == (1,):
        y = y[..., 0]
    if y.shape != output_shape[:-1]:
        raise ValueError(f"{fn}: labels have shape {y.shape}, but the predictions "
                         f"{output_shape}; pass one class index per row, shape "
                         f"{output_shape[:-1]}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.intp)
        else:
            raise TypeError(f"{fn}: labels must be integer class indices, got dtype {y.dtype}")
    k = output_shape[-1]
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{fn}: labels must be in [0, {k}) for {k} classes, got values "
                         f"from {y.min()} to {y.max()}")
    return y


def _pick(a, y):
    """``a[..., y]`` row by row: the entry of each row's label."""
    return np.take_along_axis(a, y[..., None], axis=-1)[..., 0]


class SparseCategoricalCrossentropy(Function):
    """Keras' sparse categorical cross-entropy; see :func:`sparse_categorical_crossentropy`."""

    @staticmethod
    def forward(ctx, output, labels, from_logits=False, epsilon=1e-7):
        fn = "sparse_categorical_crossentropy"
        y = check_labels(labels, output.shape, fn)
        n = max(y.size, 1)
        ctx.from_logits, ctx.n = from_logits, n
        if from_logits:
            z = output - output.max(axis=-1, keepdims=True)
            z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
            ctx.save_for_backward(z, y)
            return np.asarray(-_pick(z, y).sum() / n, dtype=output.dtype)
        s = output.sum(axis=-1)
        qy = _pick(output, y) / s
        inside = (qy >= epsilon) & (qy <= 1 - epsilon)
        qc = np.clip(qy, epsilon, 1 - epsilon)
        ctx.save_for_backward(s, qy, inside, y)
        ctx.k, ctx.dtype = output.shape[-1], output.dtype
        return np.asarray(-np.log(qc).sum() / n, dtype=output.dtype)

    @staticmethod
    def backward(ctx, grad):
        if ctx.from_logits:
            z, y = ctx.saved_tensors
            d = np.exp(z)                                # softmax
            np.put_along_axis(d, y[..., None], _pick(d, y)[..., None] - 1, axis=-1)
            d *= grad / ctx.n
            return d, None
        s, qy, inside, y = ctx.saved_tensors
        # L_i = -log(q_iy), q = p / s:  dL_i/dp_ij = (1 - [j == y_i] / q_iy) / s_i,
        # and 0 on rows whose q_iy the clip holds
        row = np.divide(1.0, s, out=np.zeros_like(s), where=inside)
        d = np.empty(s.shape + (ctx.k,), ctx.dtype)
        d[...] = row[..., None]
        at_label = row - np.divide(row, qy, out=np.zeros_like(row), where=inside)
        np.put_along_axis(d, y[..., None], at_label[..., None].astype(ctx.dtype), axis=-1)
        d *= grad / ctx.n
        return d, None


class SoftmaxSparseCategoricalCrossentropy(Function):
    """Softmax and cross-entropy fused; see :func:`softmax_sparse_categorical_crossentropy`."""

    @staticmethod
    def forward(ctx, logits, labels, epsilon=1e-7):
        y = check_labels(labels, logits.shape, "softmax_sparse_categorical_crossentropy")
        n = max(y.size, 1)
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=-1, keepdims=True)
        logp = _pick(z, y) - np.log(s[..., 0])
        lo, hi = np.log(epsilon), np.log1p(-epsilon)
        inside = (logp >= lo) & (logp <= hi)
        e /= s
        ctx.save_for_backward(e, y, inside)
        ctx.n = n
        return np.asarray(-np.clip(logp, lo, hi).sum() / n, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad):
        p, y, inside = ctx.saved_tensors
        d = p.copy()
        np.put_along_axis(d, y[..., None], _pick(p, y)[..., None] - 1, axis=-1)
        d *= (inside[..., None] * (grad / ctx.n)).astype(d.dtype)
        return d, None


def sparse_categorical_crossentropy(output, labels, from_logits=False, epsilon=1e-7):
    r"""Mean sparse categorical cross-entropy, exactly as Keras computes it.

    .. math::

        L = -\frac{1}{n}\sum_i \log \mathrm{clip}\Big(\frac{p_{i,y_i}}{\sum_j p_{ij}},
            \epsilon, 1 - \epsilon\Big)
        \qquad\text{or, from logits,}\qquad
        L = -\frac{1}{n}\sum_i \mathrm{log\_softmax}(z_i)_{y_i}

    From probabilities each row is renormalized, ``q = p / sum(p)``, and
    ``q[y]`` clipped; the gradient is zero on rows whose ``q[y]`` the clip
    holds. From logits no clip applies.

    Parameters
    ----------
    output : Tensor
        ``(..., classes)`` probabilities (e.g. after a softmax) or logits.
    labels : array_like of int
        Class indices, shape ``output.shape[:-1]`` (a trailing axis of 1 is
        accepted, as in Keras).
    from_logits : bool, default False
        ``output`` holds logits; the log-softmax is fused in, so large logits
        neither overflow nor lose the gradient.
    epsilon : float, default 1e-7
        Keras' ``backend.epsilon()``; the probability clip.

    Returns
    -------
    Tensor
        A scalar in ``output``'s dtype.

    Raises
    ------
    ValueError
        For labels of the wrong shape or outside ``[0, classes)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, sparse_categorical_crossentropy
    >>> p = Tensor(np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]))
    >>> round(float(sparse_categorical_crossentropy(p, [1, 2]).data), 4)   # Keras: 1.177
    1.1769
    >>> z = Tensor(np.array([[1000.0, 0.0]]), requires_grad=True)
    >>> loss = sparse_categorical_crossentropy(z, [1], from_logits=True)
    >>> float(loss.data)
    1000.0
    >>> loss.backward(); z.grad
    array([[ 1., -1.]])
    """
    return SparseCategoricalCrossentropy.apply(output, labels, from_logits=from_logits,
                                               epsilon=epsilon)


def softmax_sparse_categorical_crossentropy(logits, labels, epsilon=1e-7):
    """``sparse_categorical_crossentropy(softmax(logits), labels)``, fused and stable.

    What ``Dense(..., activation="softmax")`` followed by Keras'
    ``"sparse_categorical_crossentropy"`` computes (the probability clip
    included), from the logits in one op: the log-probability comes from a
    log-sum-exp and the gradient is ``(softmax(z) - onehot(y)) / n`` (zero on
    rows whose probability is clipped), instead of ``-1/p`` pushed through
    the softmax Jacobian.

    Parameters
    ----------
    logits : Tensor
        ``(..., classes)``, before the softmax.
    labels : array_like of int
        Class indices, shaped like ``logits.shape[:-1]`` (a trailing 1 allowed).
    epsilon : float, default 1e-7
        Keras' clip of the probability at ``[epsilon, 1 - epsilon]``.

    Returns
    -------
    Tensor
        The mean loss, a scalar.

    Raises
    ------
    ValueError
        If the labels' shape, dtype or values do not fit ``logits``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import (Tensor, softmax, sparse_categorical_crossentropy,
    ...                              softmax_sparse_categorical_crossentropy)
    >>> z = Tensor(np.array([[2.0, 0.5, -1.0]]))
    >>> a = softmax_sparse_categorical_crossentropy(z, [1]).data
    >>> b = sparse_categorical_crossentropy(softmax(z), [1]).data
    >>> bool(np.isclose(a, b))
    True
    """
    return SoftmaxSparseCategoricalCrossentropy.apply(logits, labels, epsilon=epsilon)



def check_target(target, output_shape, fn):
    """``target`` as an array of the prediction's shape (a trailing axis of 1 added or dropped)."""
    t = np.asarray(target)
    if t.ndim == len(output_shape) - 1 and output_shape[-1:] == (1,):
        t = t[..., None]
    elif t.ndim == len(output_shape) + 1 and t.shape[-1:] == (1,):
        t = t[..., 0]
    if t.shape != tuple(output_shape):
        raise ValueError(f"{fn}: targets have shape {t.shape}, but the predictions "
                         f"{tuple(output_shape)}; pass one target per prediction"
                         + (" (one-hot rows; for class indices use "
                            "sparse_categorical_crossentropy)"
                            if fn == "categorical_crossentropy" else ""))
    if t.dtype.kind not in "fiub":
        raise TypeError(f"{fn}: targets must hold numbers, got dtype {t.dtype}")
    return t


class CategoricalCrossentropy(Function):
    """Keras' categorical cross-entropy; see :func:`categorical_crossentropy`."""

    @staticmethod
    def forward(ctx, output, target, from_logits=False, epsilon=1e-7):
        t = check_target(target, output.shape, "categorical_crossentropy").astype(output.dtype)
        ctx.from_logits = from_logits
        if from_logits:
            z = output - output.max(axis=-1, keepdims=True)
            z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
            ctx.save_for_backward(z, t)
            return -(t * z).sum(axis=-1)
        s = output.sum(axis=-1, keepdims=True)
        q = output / s
        qc = np.clip(q, np.asarray(epsilon, q.dtype), np.asarray(1 - epsilon, q.dtype))
        inside = (q >= epsilon) & (q <= 1 - epsilon)
        ctx.save_for_backward(s, q, qc, inside, t)
        return -(t * np.log(qc)).sum(axis=-1)

    @staticmethod
    def backward(ctx, grad):
        g = np.asarray(grad)[..., None]
        if ctx.from_logits:
            z, t = ctx.saved_tensors
            # d/dz_j: softmax_j * sum(t) - t_j
            return g * (np.exp(z) * t.sum(axis=-1, keepdims=True) - t), None
        s, q, qc, inside, t = ctx.saved_tensors
        # L = -sum_k t_k log qc_k, q = p / s: dL/dp_j = (u_j - sum_k u_k q_k) / s,
        # u_k = dL/dq_k = -t_k / qc_k (0 where the clip holds q_k)
        u = np.where(inside, -t / qc, 0).astype(q.dtype)
        d = (u - (u * q).sum(axis=-1, keepdims=True)) / s
        return g * d, None


class BinaryCrossentropy(Function):
    """Keras' binary cross-entropy; see :func:`binary_crossentropy`."""

    @staticmethod
    def forward(ctx, output, target, from_logits=False, epsilon=1e-7):
        t = check_target(target, output.shape, "binary_crossentropy").astype(output.dtype)
        ctx.from_logits = from_logits
        if from_logits:
            sp = np.log1p(np.exp(-np.abs(output)))           # softplus(-|z|)
            ctx.save_for_backward(output, t)
            # softplus(z) = max(z, 0) + sp, softplus(-z) = max(-z, 0) + sp
            return t * (np.maximum(-output, 0) + sp) + (1 - t) * (np.maximum(output, 0) + sp)
        pc = np.clip(output, np.asarray(epsilon, output.dtype),
                     np.asarray(1 - epsilon, output.dtype))
        inside = (output >= epsilon) & (output <= 1 - epsilon)
        ctx.save_for_backward(pc, inside, t)
        return -(t * np.log(pc) + (1 - t) * np.log(1 - pc))

    @staticmethod
    def backward(ctx, grad):
        if ctx.from_logits:
            z, t = ctx.saved_tensors
            return grad * (stable_sigmoid(z) - t), None
        pc, inside, t = ctx.saved_tensors
        d = np.where(inside, (pc - t) / (pc * (1 - pc)), 0).astype(pc.dtype)
        return grad * d, None


def categorical_crossentropy(output, target, from_logits=False, epsilon=1e-7):
    r"""Per-sample categorical cross-entropy of one-hot (or soft) targets, as Keras computes it.

    .. math::

        L_i = -\sum_j t_{ij} \log \mathrm{clip}\Big(\frac{p_{ij}}{\sum_k p_{ik}},
            \epsilon, 1 - \epsilon\Big)
        \qquad\text{or, from logits,}\qquad
        L_i = -\sum_j t_{ij}\, \mathrm{log\_softmax}(z_i)_j

    The gradient is zero where the clip is active; from logits it is a stable
    log-softmax. Targets get no gradient.

    Parameters
    ----------
    output : Tensor
        ``(..., classes)`` probabilities or logits.
    target : array_like
        Same shape: one-hot or soft labels.
    from_logits : bool, default False
    epsilon : float, default 1e-7
        Keras' ``backend.epsilon()``.

    Returns
    -------
    Tensor
        ``output.shape[:-1]``: one loss per sample.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, categorical_crossentropy
    >>> categorical_crossentropy(Tensor(np.array([[0.25, 0.75]])), [[0, 1]]).data.round(4)
    array([0.2877])
    """
    return CategoricalCrossentropy.apply(output, target, from_logits=bool(from_logits),
                                         epsilon=epsilon)


def binary_crossentropy(output, target, from_logits=False, epsilon=1e-7):
    r"""Element-wise binary cross-entropy, as Keras' ``ops.binary_crossentropy`` computes it.

    .. math:: L = -\big(t \log \mathrm{clip}(p, \epsilon, 1 - \epsilon)
              + (1 - t) \log(1 - \mathrm{clip}(p, \epsilon, 1 - \epsilon))\big)

    The gradient is zero where the clip is active. From logits, ``p =
    sigmoid(z)`` in a stable form (``t softplus(-z) + (1 - t) softplus(z)``,
    gradient ``sigmoid(z) - t``). Targets get no gradient.

    Parameters
    ----------
    output : Tensor
        Probabilities, or logits with ``from_logits=True``.
    target : array_like
        Same shape, values in ``[0, 1]``.
    from_logits : bool, default False
    epsilon : float, default 1e-7

    Returns
    -------
    Tensor
        Same shape as ``output`` (not reduced).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, binary_crossentropy
    >>> binary_crossentropy(Tensor(np.array([0.0])), [1.0], from_logits=True).data.round(4)
    array([0.6931])
    """
    return BinaryCrossentropy.apply(output, target, from_logits=bool(from_logits),
                                    epsilon=epsilon)
