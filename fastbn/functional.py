"""Public NumPy-level API: moments and batch-norm forward / backward.

Each function here is a thin front of the engine in :mod:`fastbn._bn`, which
validates the input, maps it onto the kernels' canonical layout through
:mod:`fastbn._axes`, calls a kernel from :mod:`fastbn.kernels` and restores
the caller's shape. Statistics are accumulated in float64 in fixed-size
chunks merged with Chan's formula: stable on offset data and bitwise
independent of the number of threads.
"""
from . import _bn

__all__ = ["moments", "batch_norm_forward", "batch_norm_backward"]


def moments(x, axis=None, *, keepdims=False, ddof=0, where=None):
    r"""Mean and variance over ``axis``, NumPy-style, stable and parallel.

    .. math::

        \mu = \frac{1}{N}\sum_i x_i, \qquad
        \sigma^2 = \frac{1}{N - \mathrm{ddof}} \sum_i (x_i - \mu)^2

    computed in float64 as per-chunk ``(count, mean, M2)`` merged with Chan's
    formula, so float32 input with a large offset keeps its variance (NumPy's
    float32 ``x.var(axis=0)`` does not) and the variance is never negative.

    Parameters
    ----------
    x : array_like
        float32 or float64 (float16 is computed in float32), at least 1-d.
    axis : None, int or tuple of ints, optional
        Axes to **reduce** (NumPy semantics); None reduces all of them.
    keepdims : bool, optional
        Keep the reduced axes with length one, as NumPy does.
    ddof : int, optional
        Delta degrees of freedom: the divisor is ``N - ddof`` (0: biased).
    where : array_like of bool, optional
        NumPy's name: only the elements where it is True count. It selects
        positions along the reduced axes, so it must not vary along the kept
        ones: broadcastable to ``x`` (e.g. ``(N, T, 1)`` for ``(N, T, C)``
        reduced over ``(0, 1)``) or shaped like ``x`` without the kept axes
        (``(N, T)``, Keras' mask). The selected positions go through the same
        kernels, so accuracy and bitwise determinism are those of the plain call.

    Returns
    -------
    mean, var : ndarray or scalar
        In ``x``'s dtype, shaped like ``x`` without the reduced axes.

    Raises
    ------
    TypeError
        For a dtype other than float16/32/64, or a non-integer axis.
    ValueError
        For 0-d input, an axis out of range or repeated, nothing to reduce
        over, or ``ddof`` that leaves no degrees of freedom.

    Examples
    --------
    >>> import numpy as np, fastbn
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> mean, var = fastbn.moments(x, axis=0)
    >>> mean, var
    (array([2., 4.]), array([1., 4.]))
    >>> [float(v) for v in fastbn.moments(x)]
    [3.0, 3.5]
    >>> fastbn.moments(x, axis=0, where=np.array([[True], [False]]))[0]
    array([1., 2.])
    """
    if where is not None:
        return _bn.masked_moments(x, axis, keepdims, ddof, where)
    return _bn.moments(x, axis, keepdims, ddof)


def batch_norm_forward(x, gamma, beta, *, axis=-1, epsilon=1e-3, training=True,
                       moving_mean=None, moving_variance=None, momentum=0.99, out=None,
                       mask=None):
    r"""Batch normalization, forward: ``y = gamma * (x - mean) * invstd + beta``.

    .. math::

        \hat x = (x - \mu)\,(\sigma^2 + \epsilon)^{-1/2}, \qquad
        y = \gamma \hat x + \beta

    with ``mean`` :math:`\mu` and biased variance :math:`\sigma^2` taken per
    feature over every axis **not** in ``axis`` (Keras semantics), or, with
    ``training=False``, the moving statistics.

    Parameters
    ----------
    x : array_like
        float32 or float64 (float16 is computed in float32), at least 2-d in
        practice: ``axis`` may not cover every dimension.
    gamma, beta : array_like or None
        Scale and offset, shaped like ``x`` along ``axis`` (for ``axis=(1, 2)``
        on ``(N, 28, 28)``: ``(28, 28)``). None means no scale / no offset.
    axis : int or tuple of ints, default -1
        The **feature** axes that are kept; negative values count from the end.
    epsilon : float, default 1e-3
        Added to the variance (Keras' default; PyTorch uses 1e-5).
    training : bool, default True
        True: batch statistics, and the moving statistics, when given, are
        updated **in place**:
        ``moving = moving * momentum + batch * (1 - momentum)`` with the biased
        batch variance (Keras). False: the moving statistics are used (and
        required).
    moving_mean, moving_variance : ndarray, optional
        Feature-shaped float arrays. PyTorch keeps an *unbiased* running
        variance and its momentum ``m`` is ``1 - momentum`` here.
    momentum : float, default 0.99
        Keras' momentum, in [0, 1].
    out : ndarray, optional
        Where to write ``y``: shaped like ``x``, of ``x``'s dtype, writable;
        it may be ``x`` itself (in place). An ``out`` that shares memory with
        an input in any other way gets the result a fresh array would (as with
        NumPy's ufuncs), through a temporary. Reusing one output across calls
        avoids page-faulting a fresh array each time, which on (8192, 1024)
        float32 costs about as much as the kernels (see the benchmarks).
    mask : array_like of bool, optional
        Keras' mask: one value per sample position, shaped like ``x`` without
        the feature axes (or broadcastable to ``x`` and constant along them).
        In training the statistics (and the moving statistics' update) come
        from the positions where it is True only, and normalise every
        position; with none True the output is zeros and the moving
        statistics stay. In inference it changes nothing. On C-contiguous
        ``x`` with the features last the selected positions are read in
        place, and a training forward with a mask keeping 75% costs about
        what one without does (1.0-1.1x on (8192, 1024) and NHWC
        (32, 56, 56, 64) float32, ``docs/scripts/mask_cost.py``); other
        layouts copy them first.

    Returns
    -------
    y : ndarray
        Shaped and laid out like ``x``, in ``x``'s dtype (``out`` when given).
    mean, invstd : ndarray
        The statistics used, feature-shaped, in float64 (the precision they
        are computed in, so that :func:`batch_norm_backward` is exact): pass
        them to the backward pass. ``invstd = 1 / sqrt(var + epsilon)``.

    Raises
    ------
    TypeError
        If ``x``'s dtype is not float16/32/64; if ``axis`` is not an int or a
        tuple of ints; if ``gamma``, ``beta`` or the moving statistics are
        not real numbers; if ``training`` is not a bool, or ``epsilon`` or
        ``momentum`` not a number (bools are not; 0-d arrays are); or, in
        training, if ``moving_mean`` or ``moving_variance`` is not a float
        ``numpy.ndarray`` (it is updated in place).
    ValueError
        For 0-d ``x``; an axis out of range or repeated, no feature axis, or
        feature axes that cover every dimension; ``gamma``, ``beta`` or
        moving statistics not shaped like ``x`` along ``axis``; only one of
        ``moving_mean`` and ``moving_variance``; no elements per feature;
        missing moving statistics or a negative ``moving_variance`` in
        inference; ``epsilon`` negative or not finite; ``momentum`` outside
        [0, 1]; read-only moving statistics in training; or, in training,
        one value per feature with ``epsilon=0`` (``0 * inf``: pass
        ``epsilon > 0``).

    Warns
    -----
    RuntimeWarning
        In training with one value per feature: the variance is 0 and the
        output is ``beta`` (as in Keras; PyTorch raises instead).

    Examples
    --------
    >>> import numpy as np, fastbn
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)
    >>> y, mean, invstd = fastbn.batch_norm_forward(x, None, None, epsilon=0.0)
    >>> y
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    >>> mean
    array([ 2., 20.])
    >>> mm, mv = np.zeros(2), np.ones(2)
    >>> _ = fastbn.batch_norm_forward(x, None, None, moving_mean=mm,
    ...                               moving_variance=mv, momentum=0.9)
    >>> mm
    array([0.2, 2. ])
    """
    if mask is not None:
        return _bn.masked_forward(x, gamma, beta, axis, epsilon, training, moving_mean,
                                  moving_variance, momentum, out, mask)
    if training is True or training is False:
        res = _bn.planned_forward(x, gamma, beta, axis, epsilon, training, moving_mean,
                                  moving_variance, momentum, out)
        if res is not None:
            return res
    return _bn.batch_norm_forward(x, gamma, beta, axis, epsilon, training, moving_mean,
                                  moving_variance, momentum, out=out)


def batch_norm_backward(dy, x, mean, invstd, gamma, *, axis=-1, training=True, out=None,
                        mask=None):
    r"""Backward pass of batch normalization: gradients with respect to x, gamma and beta.

    With :math:`\hat x = (x - \mu)\,s` (``s = invstd``), ``N`` elements per
    feature and sums over them:

    .. math::

        \frac{\partial L}{\partial\beta} = \sum dy, \qquad
        \frac{\partial L}{\partial\gamma} = \sum dy\,\hat x, \\
        \frac{\partial L}{\partial x} = \gamma s \Big(dy
            - \frac{1}{N}\frac{\partial L}{\partial\beta}
            - \frac{\hat x}{N}\frac{\partial L}{\partial\gamma}\Big)
        \quad\text{(training)}, \qquad
        \frac{\partial L}{\partial x} = \gamma s\, dy \quad\text{(frozen)}.

    One reduction pass (``sum(dy)``, ``sum(dy * (x - mean))``) and one
    elementwise pass that recomputes :math:`\hat x` from ``mean`` and
    ``invstd``, so nothing the size of ``x`` needs saving from the forward.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss w.r.t. the forward output, shaped like ``x``.
    x : array_like
        The forward input.
    mean, invstd : array_like
        The statistics returned by :func:`batch_norm_forward`.
    gamma : array_like or None
        The scale used in the forward pass (None: no scale).
    axis : int or tuple of ints, default -1
        The feature axes, as in the forward pass.
    training : bool, default True
        True: full gradient, ``mean`` and ``invstd`` depend on ``x``. False:
        they are constants (frozen statistics, e.g. fine-tuning).
    out : ndarray, optional
        Where to write ``dx``: shaped like ``x``, of ``x``'s dtype, writable;
        it may be ``dy`` or ``x`` itself (in place); one that shares memory with
        an input in any other way gets the result a fresh array would, through
        a temporary. In place saves an array but costs
        time: the compiled loops check at run time that what they write does
        not overlap what they read, and when it does they run unvectorized.
    mask : array_like of bool, optional
        The forward pass's ``mask``: in training the statistics' part of the
        gradient reaches the selected positions only,
        :math:`dx = \gamma s (dy - m (\partial L/\partial\beta + \hat x\,
        \partial L/\partial\gamma) / n)`, ``n`` the selected count and
        ``dgamma``/``dbeta`` sums over every position (each output depends on them).

    Returns
    -------
    dx : ndarray
        Shaped and laid out like ``x``, in ``x``'s dtype (``out`` when given).
    dgamma, dbeta : ndarray
        Feature-shaped, in ``x``'s dtype, but float32 for float16 ``x``: sums
        over the batch overflow float16 (65504) where ``dx`` does not. PyTorch
        does the same for float16 input with float32 parameters (its mixed
        precision; with float16 parameters it returns float16, ``inf`` for a
        sum of 100,000 ones), as does Keras' ``mixed_float16`` policy, which
        keeps batch-norm variables in float32. Returned even when ``gamma``
        is None.

    Raises
    ------
    TypeError
        If ``x``'s or ``dy``'s dtype is not float16/32/64; if ``axis`` is not
        an int or a tuple of ints; if ``mean``, ``invstd`` or ``gamma`` are not
        real numbers; if ``training`` is not a bool.
    ValueError
        For 0-d ``x``; ``dy`` not shaped like ``x``; an axis out of range or
        repeated, no feature axis, or feature axes that cover every
        dimension; ``mean``, ``invstd`` or ``gamma`` not shaped like ``x``
        along ``axis``; or no elements per feature.

    Examples
    --------
    >>> import numpy as np, fastbn
    >>> x = np.array([[1.0], [2.0], [4.0]])
    >>> y, mean, invstd = fastbn.batch_norm_forward(x, None, None)
    >>> dx, dgamma, dbeta = fastbn.batch_norm_backward(np.ones_like(x), x, mean, invstd, None)
    >>> bool(np.abs(dx).max() < 1e-12), dbeta
    (True, array([3.]))
    """
    if mask is not None:
        return _bn.masked_backward(dy, x, mean, invstd, gamma, axis, training, out, mask)
    if training is True:
        res = _bn.planned_backward(dy, x, mean, invstd, gamma, axis, out)
        if res is not None:
            return res
    return _bn.batch_norm_backward(dy, x, mean, invstd, gamma, axis, training, out=out)
