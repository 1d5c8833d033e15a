"""Public NumPy-level API: moments and batch-norm forward / backward.

Every function here validates its input, maps it onto the kernels' canonical
layout through :mod:`fastbn._axes`, calls a kernel from :mod:`fastbn.kernels`
and restores the caller's shape. Statistics are accumulated in float64 in
fixed-size chunks merged with Chan's formula: stable on offset data and
bitwise independent of the number of threads.
"""
import math
import os
import warnings

import numba
import numpy as np

from . import _config, _workers
from . import kernels as K
from ._axes import layout, normalize_axis

__all__ = ["moments", "batch_norm_forward", "batch_norm_backward"]

#: dtypes the kernels take as they are (native byte order)
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F64 = np.dtype(np.float64)
_COMPUTE = {np.dtype(np.float32): np.float32, np.dtype(np.float64): np.float64,
            np.dtype(np.float16): np.float32}


# ----------------------------------------------------------------- validation
def _float_input(x, name, fn):
    """``x`` as an ndarray the kernels take (float32/64), and the dtype to return."""
    a = np.asarray(x)
    orig = a.dtype
    compute = _COMPUTE.get(orig)
    if compute is None:
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}; fastbn computes in float32 or "
                        f"float64 (float16 is computed in float32). Convert it first, "
                        f"e.g. {name}.astype(np.float32)")
    if a.ndim == 0:
        raise ValueError(f"{fn}: {name} is 0-d; it needs at least one axis")
    if a.dtype != compute:
        a = a.astype(compute)
    return a, orig


def _feature_array(v, shape, name, fn, axis):
    """Validate a feature-shaped array (gamma, beta, mean, ...) and return it."""
    a = np.asarray(v)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}; it must be real numbers")
    if a.shape != shape:
        raise ValueError(f"{fn}: {name} has shape {a.shape}, but x has shape {shape} "
                         f"along axis={axis!r}, so {name} must have shape {shape}")
    return a


def _features(x, axis, fn):
    """Feature axes of a batch-norm ``axis`` (Keras: the axes that are kept)."""
    feats = normalize_axis(axis, x.ndim, fn=fn)
    if not feats:
        raise ValueError(f"{fn}: axis={axis!r} names no feature axis; pass the axis "
                         f"(or axes) that hold the features, e.g. axis=-1")
    if len(feats) == x.ndim:
        raise ValueError(f"{fn}: axis={axis!r} covers every dimension of the "
                         f"{x.ndim}-d input, leaving nothing to compute statistics over. "
                         f"batch_norm axis names the features that are kept (Keras); "
                         f"for NumPy-style reduced axes use fastbn.moments")
    return feats


#: Largest per-feature working set (bytes) for the fused per-feature kernels:
#: twice the 512 KiB L2 of one core here, the rest served by the shared L3.
#: At 784 KiB per feature (NCHW (32, 64, 56, 56) backward, (64, 32, 56, 56)
#: forward) fused was 1.28x faster than split, interleaved, 2026-12-02.
FUSE_BYTES = 1 << 20
#: ... and fewest features: one task per feature must keep every thread busy.
FUSE_MIN_FEATURES = 16


def _serial(xk, arrays=1):
    """Whether the kernel-layout array ``xk`` is too small to share between threads.

    Below ``SERIAL_BELOW`` elements; but rows of fewer than 64 rows, one row
    chunk that threads would split into column blocks, below
    ``ROWS_SERIAL_BELOW`` elements, half that when the pass reads ``arrays`` =
    2 (the fused backward). (Rows of 64 to 128 are one chunk only below
    ``SERIAL_BELOW`` elements: :func:`fastbn.kernels.rows_per_chunk`.) Every
    array, in a forked child of a process whose thread pool had started
    (:data:`fastbn._config.FORKED`).
    """
    if _config.FORKED:
        return True
    if xk.ndim == 2 and xk.shape[0] < K.SHARE_MIN_ROWS:
        return xk.size < _config.ROWS_SERIAL_BELOW // arrays
    return xk.size < _config.SERIAL_BELOW


def _kernel_view(lay, a):
    """``a`` (shaped like the input) in kernel layout, as the kernels take it.

    Numba compiles a kernel once per argument type, and an array's type holds
    its layout (C-contiguous, Fortran-ordered or any strides). A small array
    (one the serial kernels take) whose kernel view is not C-contiguous is
    therefore copied into one that is: the copy costs microseconds, a new
    variant of a fused kernel 3-18 s of compilation in each new environment.
    The same numbers either way: a kernel's arithmetic does not depend on where
    its elements are stored. Large arrays keep their strided view (no copy the
    size of the input), except a Fortran-ordered 2-D one (a ``dy`` laid out
    unlike ``x``) or a batch of them (a channels-last ``dy`` for an NCHW
    ``x``), which the kernels read a cache line per element: those are copied
    through tiles (:func:`fastbn.kernels._copy_tiles`), in parallel, and so are
    small ones of 2^15 elements or more (NumPy's transposing copy is serial and
    reads one side with a stride). Read-only arrays are not copied (their own
    variant, once). Whole calls against the strided kernels of 6a7d680,
    ``docs/scripts/ab_layouts.py --rounds 15 --calls 40``, 2026-12-02 16:46
    UTC, median speed-up (range over rounds): sliced x (64, 300) 1.15x forward,
    1.24x backward; (128, 784) 1.64x, 0.86x (0.59-1.35); planes (8, 16, 256)
    0.96x, 0.98x. A Fortran-ordered dy, backward: (64, 300) 1.34x, (128, 784)
    1.03x (0.74-1.39), (1024, 784) 1.86x, (8192, 1024) 1.51x, (4096, 1024)
    float64 1.08x.
    """
    v = lay.view(a)
    if not _copied(v):
        return v
    if not _transposed(v) or v.size < _config.SERIAL_BELOW:
        return v.copy()
    dense = np.empty(v.shape, v.dtype)
    if v.ndim == 2:
        K._copy_tiles.parallel(v[np.newaxis], dense[np.newaxis])
    else:
        K._copy_tiles.parallel(v, dense)
    return dense


def _copied(v):
    """Whether :func:`_kernel_view` hands the kernels a copy of the kernel view ``v``."""
    return not v.flags.c_contiguous and (_serial(v) or _transposed(v))


def _transposed(v):
    """Whether the kernel view ``v`` is a Fortran-ordered matrix (rows layout) or
    a batch of them (planes layout: a channels-last array for channels-first
    kernels), which the kernels would read a cache line per element."""
    if v.ndim == 2:
        return v.flags.f_contiguous
    return v.ndim == 3 and v.strides[1] == v.itemsize and v.strides[2] == v.shape[1] * v.itemsize


def _run(kern, xk, arrays=1):
    """The parallel kernel, or its serial twin for inputs too small to share."""
    return kern.serial if _serial(xk, arrays) else kern.parallel


def _cols(xk, arrays=1):
    """Columns per task for a rows-layout array (only splits work, never a result).

    Serially, whole rows of up to 1024 columns, and whole rows of any length
    when they fit one row chunk (the fused kernels then take one task loop per
    pass, which is what a serial call wants: on (60, 2100) and (32, 4000)
    fp32, whole rows were 1.00-1.04x as fast forward and 1.06-1.10x backward
    as 1024-column blocks, whose one-chunk path was 0.93-0.95x); in parallel,
    enough column blocks for every thread when there are few row chunks, but
    never blocks under 256 columns: (128, 784) fp32 forward, serial, took
    66 us with 64-column blocks and 22 us with whole rows.
    """
    return _split(xk, arrays)[1]


def _split(xk, arrays=1):
    """The rows kernels' last two arguments for ``xk``: its rows per chunk
    (:func:`fastbn.kernels.rows_per_chunk`, which decides the order of the
    sums) and :func:`_cols` (which only splits the work)."""
    n, c = xk.shape
    chunk = K.rows_per_chunk(n, c)
    chunks = -(-n // chunk)
    if _serial(xk, arrays):
        return chunk, (K.COLS_PER_BLOCK if chunks > 1 else max(c, K.COLS_PER_BLOCK))
    want = -(-_num_threads() // chunks)
    return chunk, min(K.COLS_PER_BLOCK, max(256, _line_multiple(-(-c // want))))


try:                                       # Numba's private thread-pool module
    from numba.np.ufunc import parallel as _numba_parallel
except ImportError:                        # pragma: no cover - another Numba layout
    _numba_parallel = None


def _num_threads():
    """``numba.get_num_threads()``, without the two locks it takes on every call
    (2.4 us against 0.3 us) once Numba's thread pool is running: the same C
    getter, read directly, or the public function where that getter is not
    there. A test holds the two to the same answer. 1, without asking Numba,
    in a forked child (:data:`fastbn._config.FORKED`)."""
    if _config.FORKED:
        return 1
    if getattr(_numba_parallel, "_is_initialized", False):
        get = getattr(_numba_parallel, "_get_num_threads", None)
        if get is not None:
            return get()
    return numba.get_num_threads()


def _fuse(xk, lay, arrays):
    """Which fused kernel runs, if any: ``"planes"``, ``"rows"`` or None.

    ``arrays`` is how many inputs the pass reads (forward 1, backward 2).
    Planes fuse one task per feature when a feature's data fit in cache. Rows
    (one column per feature) always run both passes in one call: the split
    kernels' tasks without the Python between them. Whole calls on F
    ((256, 28, 28), axis (1, 2): rows of 784) 1.33x forward, 1.16x backward
    against the split kernels; (8192, 1024) and (100352, 64) 1.02-1.05x.
    Fused and split kernels give the same bits (a test holds them to it), so
    the choice only changes the speed. Ratios: both paths interleaved in one
    process, 2 threads, 2026-12-02.
    """
    if lay.kind == "planes":
        if (lay.channels >= FUSE_MIN_FEATURES
                and lay.count * xk.itemsize * arrays <= FUSE_BYTES):
            return "planes"
    elif lay.group == 1 and xk.size:
        return "rows"
    return None


def _line_multiple(cols):
    """``cols`` rounded up to a multiple of 16, so that two threads' column blocks
    do not share a cache line of the output (16 float32 = 64 bytes) when rows
    start on one. Free, but no measured gain here: (128, 784) fp32 affine, 2
    threads, 29 us with 392-column blocks and 28 us with 400 (an earlier 90 us
    was this VM's slow second vCPU, not false sharing)."""
    return -(-cols // 16) * 16


def _shift(xk, lay):
    """One value of each feature (its first), float64, per kernel column.

    The kernels accumulate ``x - shift`` (see :mod:`fastbn.kernels.moments`);
    a non-finite first value would poison the whole feature, so it becomes 0.
    """
    if lay.kind == "planes":
        return K._finite_shift(xk[0, :, 0])
    if lay.group > 1:
        return np.repeat(K._finite_shift(xk[0, ::lay.group]), lay.group)
    if lay.fold > 1:
        return np.tile(K._finite_shift(xk[0, :lay.channels]), lay.fold)
    return K._finite_shift(xk[0])


def _stats(xk, lay):
    """Kernel-order float64 ``(mean, m2)`` of a kernel-layout array."""
    shift = _shift(xk, lay)
    if lay.kind == "planes":
        return _run(K._moments_planes, xk)(xk, shift, K.PLANE_CHUNK)
    mean, m2 = _run(K._moments_rows, xk)(xk, shift, *_split(xk))
    if lay.group > 1 or lay.fold > 1:
        return K._merge_columns(mean, m2, float(xk.shape[0]), lay.channels, *lay.column_steps,
                                shift)
    return mean + shift, m2


def _per_column(lay, *vectors):
    """Per-feature vectors as kernel-column vectors: repeated for each of a
    feature's ``group`` adjacent columns, or tiled ``fold`` times."""
    if lay.group > 1:
        return tuple(np.repeat(v, lay.group) for v in vectors)
    if lay.fold > 1:
        return tuple(np.tile(v, lay.fold) for v in vectors)
    return vectors


def _affine(xk, mean, scale, shift, yk, lay):
    if lay.kind == "planes":
        _run(K._affine_planes, xk)(xk, mean, scale, shift, yk, K.PLANE_CHUNK)
    else:
        mean, scale, shift = _per_column(lay, mean, scale, shift)
        _run(K._affine_rows, xk)(xk, mean, scale, shift, yk, *_split(xk))


def _grad_sums(dyk, xk, mean, lay):
    if lay.kind == "planes":
        return _run(K._grad_sums_planes, xk)(dyk, xk, mean, K.PLANE_CHUNK)
    (mean,) = _per_column(lay, mean)
    sum_g, sum_gx = _run(K._grad_sums_rows, xk)(dyk, xk, mean, *_split(xk))
    if lay.group > 1 or lay.fold > 1:
        steps = lay.column_steps
        return (K._sum_columns(sum_g, lay.channels, *steps),
                K._sum_columns(sum_gx, lay.channels, *steps))
    return sum_g, sum_gx


def _grad_x(dyk, xk, mean, p, q, r, dxk, lay):
    if lay.kind == "planes":
        _run(K._grad_x_planes, xk)(dyk, xk, mean, p, q, r, dxk, K.PLANE_CHUNK)
    else:
        mean, p, q, r = _per_column(lay, mean, p, q, r)
        _run(K._grad_x_rows, xk)(dyk, xk, mean, p, q, r, dxk, *_split(xk))


# ---------------------------------------------------------------- public API
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
        return _masked_moments(x, axis, keepdims, ddof, where)
    return _moments(x, axis, keepdims, ddof)


def _moments(x, axis, keepdims, ddof, merge=None):
    """:func:`moments`, with the ``merge`` hook of :func:`_batch_norm_forward`
    (:mod:`fastbn.distributed`): this process's ``x`` may then have no elements."""
    fn = "moments"
    xk_in, out_dtype = _float_input(x, "x", fn)
    reduced = normalize_axis(axis, xk_in.ndim, fn=fn, allow_none=True)
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (int, np.integer, float)):
        raise TypeError(f"{fn}: ddof must be a number, got {ddof!r}")
    feats = tuple(a for a in range(xk_in.ndim) if a not in reduced)
    lay = layout(xk_in, feats)
    c, n = lay.channels, lay.count
    if c and n == 0 and merge is None:
        raise ValueError(f"{fn}: x of shape {xk_in.shape} has no elements along "
                         f"axis={axis!r}; there is nothing to average")
    mean_k, m2_k = (_stats(_kernel_view(lay, xk_in), lay) if c and n
                    else (np.zeros(c), np.zeros(c)))
    if merge is not None:
        n, mean_k, m2_k = merge(lay, n, mean_k, m2_k)
    if c and n - ddof <= 0:
        where = " over all ranks" if merge is not None else ""
        raise ValueError(f"{fn}: ddof={ddof} leaves no degrees of freedom for {n} "
                         f"element(s) per result{where} (need N - ddof > 0)")
    mean = lay.from_kernel(mean_k)
    var = lay.from_kernel(m2_k / (n - ddof)) if c else mean.copy()
    if keepdims:
        kshape = tuple(1 if a in reduced else s for a, s in enumerate(xk_in.shape))
        mean, var = mean.reshape(kshape), var.reshape(kshape)
    mean, var = mean.astype(out_dtype), var.astype(out_dtype)
    if mean.ndim == 0:
        return mean[()], var[()]
    return mean, var


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
        return _masked_forward(x, gamma, beta, axis, epsilon, training, moving_mean,
                               moving_variance, momentum, out, mask)
    if training is True or training is False:
        res = _planned_forward(x, gamma, beta, axis, epsilon, training, moving_mean,
                               moving_variance, momentum, out)
        if res is not None:
            return res
    return _batch_norm_forward(x, gamma, beta, axis, epsilon, training, moving_mean,
                               moving_variance, momentum, out=out)


def _batch_norm_forward(x, gamma, beta, axis, epsilon, training, moving_mean, moving_variance,
                        momentum, merge=None, out=None):
    """:func:`batch_norm_forward`, with a hook for :mod:`fastbn.distributed`.

    ``merge(lay, n, mean_k, m2_k) -> (n, mean_k, m2_k)``, given in training,
    turns this process's batch statistics into those of the global batch;
    this process's ``x`` may then have no rows.
    """
    fn = "batch_norm_forward"
    xk_in, out_dtype = _float_input(x, "x", fn)
    feats = _features(xk_in, axis, fn)
    epsilon = _check_epsilon(epsilon, fn)
    momentum = _check_momentum(momentum, fn)
    _check_training(training, fn)
    lay = layout(xk_in, feats)
    fshape = lay.feature_shape
    if gamma is not None:
        gamma = _feature_array(gamma, fshape, "gamma", fn, axis)
    if beta is not None:
        beta = _feature_array(beta, fshape, "beta", fn, axis)
    if (moving_mean is None) != (moving_variance is None):
        raise ValueError(f"{fn}: pass both moving_mean and moving_variance, or neither")
    if training:
        if moving_mean is not None:
            for name, arr in (("moving_mean", moving_mean), ("moving_variance", moving_variance)):
                _check_moving(arr, fshape, name, fn, axis)
    else:
        if moving_mean is None:
            raise ValueError(f"{fn}: training=False normalizes with the moving statistics; "
                             f"pass moving_mean= and moving_variance=")
        moving_mean = _feature_array(moving_mean, fshape, "moving_mean", fn, axis)
        moving_variance = _feature_array(moving_variance, fshape, "moving_variance", fn, axis)
        if moving_variance.size and moving_variance.min() < 0:   # np.any: 3x slower
            raise ValueError(f"{fn}: moving_variance has negative entries")
    c, n = lay.channels, lay.count
    if c and n == 0 and merge is None:
        raise ValueError(f"{fn}: x of shape {xk_in.shape} has no elements per feature "
                         f"(axis={axis!r}); batch statistics need at least one")
    y, yk = _output(out, xk_in, out_dtype, lay, fn, (),
                    (gamma, beta, moving_mean, moving_variance))
    xk = _kernel_view(lay, xk_in)
    if training and merge is None and n == 1:
        if epsilon == 0:
            raise ValueError(f"{fn}: only one value per feature in x of shape "
                             f"{xk_in.shape} and epsilon=0: the batch variance is 0, so "
                             f"1 / sqrt(variance + epsilon) is infinite and the output "
                             f"0 * inf would be NaN. Pass epsilon > 0 (Keras' default is "
                             f"1e-3; the output is then beta) or more than one sample")
        warnings.warn(f"{fn}: only one value per feature in x of shape {xk_in.shape}; "
                      f"the batch variance is 0 and the output equals beta (Keras "
                      f"behaviour)", RuntimeWarning, stacklevel=2)
    gamma_k, shift = _affine_vectors(lay, gamma, beta, xk.dtype)
    fused = _fuse(xk, lay, 1) if training and merge is None else None
    if fused:
        mean_k, var_k, invstd_k = stats = np.empty((3, c))
        if fused == "planes":
            _run(K._forward_planes_fused, xk)(xk, _shift(xk, lay), gamma_k, shift,
                                              float(epsilon), yk, stats, K.PLANE_CHUNK)
        else:
            _run(K._forward_rows_fused, xk)(xk, gamma_k, shift, float(epsilon), yk, stats,
                                            *_split(xk))
            if training is True and xk_in is x:
                _remember_plan(x, axis, lay, xk)
    elif training:
        mean_k, m2_k = _stats(xk, lay) if c and n else (np.zeros(c), np.zeros(c))
        if merge is not None:
            n, mean_k, m2_k = merge(lay, n, mean_k, m2_k)
        var_k = m2_k / max(n, 1)
    else:
        mean_k, var_k = _moving_kernel_vectors(lay, moving_mean, moving_variance)
        if training is False and merge is None and xk_in is x and _fuse(xk, lay, 1) == "rows":
            _remember_plan(x, axis, lay, xk)
    if not fused:
        invstd_k, scale_k = K._invstd_scale(var_k, gamma_k, float(epsilon))
        _affine(xk, mean_k, scale_k, shift, yk, lay)
    mean, invstd = lay.from_kernel(mean_k), lay.from_kernel(invstd_k)
    if training and moving_mean is not None:
        if _update_moving(lay, moving_mean, mean_k, moving_variance, var_k, float(momentum)):
            _warn_overflow(lay, moving_mean, moving_variance, var_k, momentum, fn)
    elif training and xk.dtype == _F64 and c:
        _check_variance(var_k, lay, fn)
    return _finish(y, out, xk_in, out_dtype, lay), mean, invstd


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
        return _masked_backward(dy, x, mean, invstd, gamma, axis, training, out, mask)
    if training is True:
        res = _planned_backward(dy, x, mean, invstd, gamma, axis, out)
        if res is not None:
            return res
    return _batch_norm_backward(dy, x, mean, invstd, gamma, axis, training, out=out)


def _batch_norm_backward(dy, x, mean, invstd, gamma, axis, training, reduce=None, out=None):
    """:func:`batch_norm_backward`, with a hook for :mod:`fastbn.distributed`.

    ``reduce(lay, n, sum_g, sum_gx) -> (n, sum_g, sum_gx)``, given in
    training, sums the two per-feature sums and the count over the global
    batch; ``dx`` uses the totals, ``dgamma``/``dbeta`` stay this process's
    share. This process's ``x`` may then have no rows.
    """
    fn = "batch_norm_backward"
    _check_training(training, fn)
    xk_in, out_dtype = _float_input(x, "x", fn)
    dy_in, _ = _float_input(dy, "dy", fn)
    if dy_in.shape != xk_in.shape:
        raise ValueError(f"{fn}: dy has shape {dy_in.shape} but x has shape {xk_in.shape}; "
                         f"dy is the gradient of the forward output and must be shaped like x")
    if dy_in.dtype != xk_in.dtype:
        dy_in = dy_in.astype(xk_in.dtype)
    feats = _features(xk_in, axis, fn)
    lay = layout(xk_in, feats)
    fshape = lay.feature_shape
    mean_k = lay.to_kernel(_feature_array(mean, fshape, "mean", fn, axis))
    invstd_k = lay.to_kernel(_feature_array(invstd, fshape, "invstd", fn, axis))
    if gamma is not None:
        gamma = _feature_array(gamma, fshape, "gamma", fn, axis)
    gamma_k = _gamma_vector(lay, gamma, _param_dtype(xk_in.dtype, gamma))
    c, n = lay.channels, lay.count
    if c and n == 0 and reduce is None:
        raise ValueError(f"{fn}: x of shape {xk_in.shape} has no elements per feature")
    xk = _kernel_view(lay, xk_in)
    dyk = _kernel_view(lay, dy_in)
    dx, dxk = _output(out, xk_in, out_dtype, lay, fn, (dy_in,), (mean, invstd, gamma))
    fused = _fuse(xk, lay, 2) if training and reduce is None else None
    if fused:
        # dgamma, dbeta in the dtype returned (float64 for float16 input, then rounded once
        # to float32)
        dgamma_k, dbeta_k = grads = np.empty(
            (2, c), out_dtype if out_dtype == xk.dtype else np.float64)
        if fused == "planes":
            _run(K._backward_planes_fused, xk)(dyk, xk, mean_k, invstd_k, gamma_k, dxk, grads,
                                               K.PLANE_CHUNK)
        else:
            _run(K._backward_rows_fused, xk, 2)(dyk, xk, mean_k, invstd_k, gamma_k, dxk, grads,
                                                *_split(xk, 2))
            if training is True and xk_in is x:
                _remember_plan(x, axis, lay, xk)
    else:
        sum_g, sum_gx = (_grad_sums(dyk, xk, mean_k, lay) if c and n
                         else (np.zeros(c), np.zeros(c)))
        dbeta_k = sum_g
        dgamma_k = sum_gx * invstd_k
    if not training:                          # dx = p * dy: no need to read x again
        _affine(dyk, np.zeros(c), gamma_k * invstd_k, np.zeros(c), dxk, lay)
    elif not fused:
        tot_g, tot_gx = sum_g, sum_gx
        if reduce is not None:                # the global batch's sums (fastbn.distributed)
            n, tot_g, tot_gx = reduce(lay, n, sum_g, sum_gx)
        p, q, r = K._grad_coeffs(gamma_k, invstd_k, tot_g, tot_gx, float(n))
        _grad_x(dyk, xk, mean_k, p, q, r, dxk, lay)
    pdtype = np.float32 if out_dtype == np.float16 else out_dtype   # as PyTorch's float32
    return (_finish(dx, out, xk_in, out_dtype, lay), lay.from_kernel(dgamma_k, pdtype),
            lay.from_kernel(dbeta_k, pdtype))


# -------------------------------------------------------------- planned calls
# A training step calls batch norm on the same shapes again and again, and so
# does inference. The first call of each takes the checked path above; when
# its input maps onto rows with one column per feature (plain (N, C), axis -1;
# or F's (256, 28, 28), axis (1, 2): the fused rows kernels in training) it
# leaves a plan: the layout, the kernels and the column splits. Later calls
# with the same (shape, strides, dtype, axis, threads) and arguments of the
# plain kinds (float arrays of the feature shape or None, a float epsilon and
# momentum, no out= or one the kernels write as it is; a dy laid out unlike x
# goes through _kernel_view, as in the checked path) run the plan: the same
# kernels on the same arguments, so the same bits. Arguments of any other kind
# take the checked path, so bad ones fail with its errors. Whole calls,
# planned against checked, interleaved in one process, two runs, 2026-12-02,
# forward / backward: (2, 300) 1.41-1.45x / 1.34-1.37x (26-30 us checked,
# 18-22 us planned); A (128, 784) 1.12-1.18x / 1.06-1.09x; B (256, 300)
# 1.32-1.36x / 1.24-1.29x; F 1.16-1.23x / 1.17-1.21x. With out=: forward
# 1.74x, 1.57x, 1.43x on (2, 300), A, B. Inference: 1.39-1.50x on (2, 300),
# 1.22-1.29x on A, 1.35-1.40x on B, 1.27-1.42x on F.

class _Plan:
    __slots__ = ("lay", "fshape", "dense", "chunk", "forward", "forward_cols", "affine",
                 "backward", "backward_cols", "moving", "f64")

    def __init__(self, lay, xk):
        self.lay = lay
        self.fshape = lay.feature_shape
        self.dense = _serial(xk)            # arrays must be C-contiguous (_kernel_view)
        self.chunk, self.forward_cols = _split(xk)
        self.forward = _run(K._forward_rows_fused, xk)
        self.affine = _run(K._affine_rows, xk)    # inference: the same split as forward
        self.backward, self.backward_cols = _run(K._backward_rows_fused, xk, 2), _cols(xk, 2)
        self.moving = lay._fident           # moving statistics update in kernel order
        self.f64 = xk.dtype == _F64         # a batch variance can overflow (_check_variance)


#: plans by (shape, strides, dtype, axis, threads); emptied when full, and in a
#: forked child (a plan holds the parent's choice of parallel kernels)
_PLANS = {}
_PLANS_MAX = 256
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_PLANS.clear)


def _plan_key(x, axis):
    """The plan key of a call on ``x`` with ``axis``, or None when no plan applies
    (only ndarrays, and an int or a tuple of ints: ``True == 1``, and a bool
    axis must still fail)."""
    if type(x) is not np.ndarray:
        return None
    if type(axis) is not int:
        if type(axis) is not tuple or any(type(a) is not int for a in axis):
            return None
    return x.shape, x.strides, x.dtype, axis, _num_threads()


def _remember_plan(x, axis, lay, xk):
    """Keep a plan for calls like this checked one (rows, one column per feature)."""
    key = _plan_key(x, axis)
    if key is None or lay.copies or lay.interleaved or lay.count < 2:
        return                              # (one value per feature warns every call)
    if _copied(lay.view(x)):
        return                              # _kernel_view copies it: the checked path does
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = _Plan(lay, xk)


def _plain_vector(v, fshape):
    """Whether ``v`` is None or a float ndarray of shape ``fshape``."""
    return v is None or (type(v) is np.ndarray and v.shape == fshape and v.dtype.kind == "f")


def _moving_vector(v, fshape):
    """Whether ``v`` is a moving statistic the kernels update in place as it is."""
    return (type(v) is np.ndarray and v.shape == fshape and v.flags.writeable
            and _kernel_vector(v))


def _planned(x, axis, out, same=(), others=()):
    """``(plan, output, its kernel view)`` for a call on ``x`` with ``axis``, or None.

    The output is a fresh array, or ``out`` itself when the kernels write it as
    it is (:func:`_direct_view`, the checked path's rule: F's ``(256, 28, 28)``,
    axis ``(1, 2)``, with ``out=``, planned instead of checked, against 01a9dbc,
    ``docs/scripts/ab_layouts.py --rounds 15 --calls 40``, 2026-12-02 20:01 UTC:
    forward 1.27x, inference 1.42x, backward 1.22x). Any other ``out`` takes the
    checked path, which decides; so does an ``out`` that overlaps what the call
    reads (:func:`_overlaps`: ``x`` and the ``same`` arrays, unless it is exactly
    one of them, and the ``others``).
    """
    key = _plan_key(x, axis)
    plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        return None
    if out is None:
        return (plan, *plan.lay.empty(x.dtype))
    if not (type(out) is np.ndarray and out.shape == x.shape and out.dtype == x.dtype
            and out.flags.writeable):
        return None
    kv = _direct_view(out, x, plan.lay)
    if kv is None or _overlaps(out, (x, *same), others):
        return None
    return plan, out, kv


def _planned_forward(x, gamma, beta, axis, epsilon, training, moving_mean, moving_variance,
                     momentum, out):
    """:func:`batch_norm_forward` by a plan, or None."""
    planned = _planned(x, axis, out, (), (gamma, beta, moving_mean, moving_variance))
    if planned is None:
        return None
    fn = "batch_norm_forward"
    epsilon = _check_epsilon(epsilon, fn)   # x and axis are good (a plan holds them), so
    momentum = _check_momentum(momentum, fn)    # these are the checked path's first errors too
    plan, y, yk = planned
    fshape = plan.fshape
    if not (_plain_vector(gamma, fshape) and _plain_vector(beta, fshape)):
        return None
    if training:
        if moving_mean is not None or moving_variance is not None:
            if not (plan.moving and _moving_vector(moving_mean, fshape)
                    and _moving_vector(moving_variance, fshape)):
                return None
    elif not (moving_mean is not None and moving_variance is not None
              and _plain_vector(moving_mean, fshape) and _plain_vector(moving_variance, fshape)):
        return None
    lay = plan.lay
    gamma_k, shift = _affine_vectors(lay, gamma, beta, x.dtype)
    if training:
        mean_k, var_k, invstd_k = stats = np.empty((3, lay.channels))
        plan.forward(lay.view(x), gamma_k, shift, epsilon, yk, stats, plan.chunk,
                     plan.forward_cols)
        if moving_mean is not None:
            if K._update_moving_pair(_flat(moving_mean), mean_k, _flat(moving_variance), var_k,
                                     momentum):
                _warn_overflow(lay, moving_mean, moving_variance, var_k, momentum, fn)
        elif plan.f64:
            _check_variance(var_k, lay, fn)
    else:
        mean_k, invstd_k, scale_k = stats = np.empty((3, lay.channels))
        if not K._inference_vectors(_own_dtype_vector(lay, moving_mean),
                                    _own_dtype_vector(lay, moving_variance), gamma_k, epsilon,
                                    stats):
            return None                     # negative variances: the checked path says so
        plan.affine(lay.view(x), *_per_column(lay, mean_k, scale_k, shift), yk,
                    plan.chunk, plan.forward_cols)
    return y, lay.from_kernel(mean_k), lay.from_kernel(invstd_k)


def _planned_backward(dy, x, mean, invstd, gamma, axis, out):
    """:func:`batch_norm_backward` (training) by a plan, or None."""
    planned = _planned(x, axis, out, (dy,), (mean, invstd, gamma))
    if (planned is None or type(dy) is not np.ndarray or dy.shape != x.shape
            or dy.dtype != x.dtype):
        return None
    plan, dx, dxk = planned
    fshape = plan.fshape
    if not (mean is not None and invstd is not None and _plain_vector(mean, fshape)
            and _plain_vector(invstd, fshape) and _plain_vector(gamma, fshape)):
        return None
    lay = plan.lay
    invstd_k = lay.to_kernel(invstd)
    gamma_k = _gamma_vector(lay, gamma, _param_dtype(x.dtype, gamma))
    dgamma, dbeta = grads = np.empty((2, lay.channels), x.dtype)
    plan.backward(_kernel_view(lay, dy), lay.view(x), lay.to_kernel(mean), invstd_k, gamma_k,
                  dxk, grads, plan.chunk, plan.backward_cols)
    return dx, lay.from_kernel(dgamma, x.dtype), lay.from_kernel(dbeta, x.dtype)


# ----------------------------------------------------------- adapters' calls
# fastbn.torch runs a training step's batch norm through the plans above, with
# arguments it makes itself (NumPy views of float32/float64 tensors, feature
# vectors of its parameters) and PyTorch's running statistics: these skip the
# public functions' keyword handling and re-checks, and give the adapter what
# it needs in one call each. A first call on a shape goes through
# batch_norm_forward, which checks everything and leaves the plan. (32, 64)
# fp32, 2 threads, 2026-12-06: forward 7.6 us against 9.1 us for
# batch_norm_forward with moving statistics of zeros at momentum 0 (what
# fastbn.torch called), backward 7.8 us against 8.3 us.

def _planned_training(x, axis, gamma, beta, epsilon):
    """A training :func:`batch_norm_forward` of ``x`` by its plan:
    ``(y, mean, var, invstd)``, ``var`` the biased batch variance, held within
    float64's range (as a ``moving_variance`` of zeros updated with momentum 0
    is, with its warnings), the statistics float64 vectors; or None when no
    plan applies or an argument is not of a plain kind (then call
    :func:`batch_norm_forward`). The same kernels on the same arguments as
    the public call with ``moving_mean=np.zeros(C)``, ``moving_variance=np.zeros(C)``
    and ``momentum=0.0``, so the same bits."""
    key = _plan_key(x, axis)
    plan = _PLANS.get(key) if key is not None else None
    if (plan is None or type(epsilon) is not float or not 0.0 <= epsilon < math.inf
            or not (_plain_vector(gamma, plan.fshape) and _plain_vector(beta, plan.fshape))):
        return None
    lay = plan.lay
    c = lay.channels
    y, yk = lay.empty(x.dtype)
    gamma_k, shift = _affine_vectors(lay, gamma, beta, x.dtype)
    mean_k, var_k, invstd_k = stats = np.empty((3, c))
    plan.forward(lay.view(x), gamma_k, shift, epsilon, yk, stats, plan.chunk, plan.forward_cols)
    mean_b, var_b = np.zeros(c), np.zeros(c)
    if K._update_moving_pair(mean_b, mean_k, var_b, var_k, 0.0):
        _warn_overflow(lay, mean_b, var_b, var_k, 0.0, "batch_norm_forward")
    return y, lay.from_kernel(mean_k), lay.from_kernel(var_b), lay.from_kernel(invstd_k)


def _planned_training_backward(dy, x, mean, invstd, gamma, axis):
    """:func:`batch_norm_backward` (training) by the plan of ``(x, axis)``, or
    None (then call it): :func:`_planned_backward` without ``out``."""
    return _planned_backward(dy, x, mean, invstd, gamma, axis, None)


def _native_plan(x, axis):
    """A training call on ``x`` as a native caller (fastbn.torch's C++ path)
    makes it: None when there is none yet (the first checked call on a rows
    shape plans it), False when there is none a native caller takes, else a
    dict of the kernel view's sizes ``d0, d1, d2`` and ``features``, the split
    (``chunk``, ``forward_cols``, ``backward_cols``) and the C entry points of
    the kernels (:mod:`fastbn.kernels.cabi`: ``forward``, ``backward``,
    ``hold``, ``blend32``, ``blend64``), serial or parallel as here. Taken:
    the fused rows kernels of a plan whose kernel view of ``x`` is
    C-contiguous rows of one or ``fold`` columns per feature; and contiguous
    planes ``(outer, C, inner)`` that both fused planes kernels take
    (:func:`_fuse`). Called with these, the kernels compute what
    :func:`_planned_training`, :func:`_planned_training_backward` (or the
    checked calls, for planes) and :func:`_blend_running` do, bit for bit."""
    from .kernels import cabi
    key = _plan_key(x, axis)
    plan = _PLANS.get(key) if key is not None else None
    if x.dtype not in _KERNEL_DTYPES:
        return False
    one = _num_threads() == 1       # one thread: the serial twins (the same bits), without
    dtype = x.dtype.name            # a parallel region's cost
    if plan is not None:
        lay = plan.lay
        xk = lay.view(x)
        if lay.kind != "rows" or lay.group != 1 or not plan.moving or not xk.flags.c_contiguous:
            return False
        forward = cabi.address("forward", dtype,
                               one or plan.forward is K._forward_rows_fused.serial)
        backward = cabi.address("backward", dtype,
                                one or plan.backward is K._backward_rows_fused.serial)
        split = dict(chunk=plan.chunk, forward_cols=plan.forward_cols,
                     backward_cols=plan.backward_cols)
    else:
        if key is None or x.ndim < 2:
            return False
        lay = layout(x, _features(x, axis, "batch_norm_forward"))
        if lay.copies or lay.interleaved or lay.count < 2:
            return False
        xk = lay.view(x)
        if lay.kind == "rows":
            return None if lay.group == 1 and not _copied(xk) else False
        if not (xk.flags.c_contiguous and _fuse(xk, lay, 2) == "planes"):
            return False
        serial = one or _serial(xk)
        forward = cabi.address("forward_planes", dtype, serial)
        backward = cabi.address("backward_planes", dtype, serial)
        split = dict(chunk=0, forward_cols=0, backward_cols=0)
    d0, d1, d2 = xk.shape if xk.ndim == 3 else (*xk.shape, 1)
    return dict(forward=forward, backward=backward, hold=cabi.address("hold", "float64"),
                blend32=cabi.address("blend", "float32"), blend64=cabi.address("blend", "float64"),
                d0=d0, d1=d1, d2=d2, features=lay.channels, **split)


def _warn_native_held(var):
    """The warning :func:`_planned_training` gives when its momentum-0 update
    held an entry, for a native caller whose call did: ``var`` is the batch
    variance the kernel wrote (float64, feature order), before holding."""
    zeros = np.zeros(var.shape)
    _warn_overflow(None, zeros, zeros, var, 0.0, "batch_norm_forward")


def _blend_running(running_mean, running_var, mean, var, weight, var_scale):
    """PyTorch's running-statistics update, in place, when both are C-contiguous
    float32 or float64 vectors of ``mean``'s size (returns True), else nothing
    (returns False): ``running = running * (1 - weight) + batch * weight`` in
    float64, rounded once, the variance's batch ``var * var_scale``. The NumPy
    expression's operations in its order, so the same bits (see
    :func:`fastbn.kernels._blend_pair`)."""
    for r in (running_mean, running_var):
        if not (r.dtype in _KERNEL_DTYPES and r.flags.c_contiguous and r.flags.writeable
                and r.shape == mean.shape and r.ndim == 1):
            return False
    if not (mean.dtype == var.dtype == _F64 and mean.shape == var.shape):
        return False
    K._blend_pair(running_mean, mean, running_var, var, float(weight), float(var_scale))
    return True


def _param_dtype(dtype, *params):
    """The dtype the kernels get ``gamma`` and ``beta`` in: ``dtype`` (the kernels'
    input dtype, float32 or float64) when each one given already has it, else
    float64. The kernels widen them to float64 as they read them, exactly as
    ``astype`` would, so either way they compute the same numbers; a float32
    layer's parameters then reach the kernels without a float64 copy each
    (1.8 us per vector in a whole (4, 784) backward, of 14.5 us, 2026-12-02).
    Kernels are compiled for float64 and for the input's dtype, no more."""
    for v in params:
        if v is not None and v.dtype != dtype:
            return _F64
    return dtype


def _gamma_vector(lay, gamma, dtype=None):
    """``gamma`` as a kernel-order vector (ones for None), in ``dtype`` or float64."""
    return _ones(lay.channels, dtype) if gamma is None else lay.to_kernel(gamma, dtype)


def _affine_vectors(lay, gamma, beta, dtype):
    """``gamma`` and ``beta`` as kernel-order vectors (ones / zeros for None), in
    :func:`_param_dtype` of the kernels' input ``dtype``."""
    dtype = _param_dtype(dtype, gamma, beta)
    return (_gamma_vector(lay, gamma, dtype),
            np.zeros(lay.channels, dtype) if beta is None else lay.to_kernel(beta, dtype))


def _own_dtype_vector(lay, v):
    """``v`` as a kernel-order vector in its own dtype when that is float32 or
    float64 (the kernels widen it exactly as they read it), else float64."""
    return lay.to_kernel(v, v.dtype if v.dtype in _KERNEL_DTYPES else _F64)


def _moving_kernel_vectors(lay, moving_mean, moving_variance):
    """The moving statistics as kernel-order float64 ``(mean, var)`` for inference;
    the mean a copy, as it is returned and must not alias ``moving_mean``."""
    mean_k = lay.to_kernel(moving_mean)
    if mean_k is moving_mean or mean_k.base is not None:
        mean_k = mean_k.copy()
    return mean_k, lay.to_kernel(moving_variance)


def _update_moving(lay, moving_mean, mean_k, moving_variance, var_k, momentum):
    """Update the moving statistics in place (see :func:`batch_norm_forward`):
    one Numba call when both are already kernel-order float vectors. Each
    entry is held to its dtype's largest finite value
    (:func:`fastbn.kernels._update_moving`); returns how many were."""
    if lay._fident and _kernel_vector(moving_mean) and _kernel_vector(moving_variance):
        return K._update_moving_pair(_flat(moving_mean), mean_k, _flat(moving_variance), var_k,
                                     momentum)
    held = 0
    for arr, batch_k in ((moving_mean, mean_k), (moving_variance, var_k)):
        if lay._fident and _kernel_vector(arr):
            held += K._update_moving(_flat(arr), batch_k, momentum)
        else:
            held += _update_moving_numpy(arr, lay.from_kernel(batch_k), momentum)
    return held


def _update_moving_numpy(arr, batch, momentum):
    """:func:`fastbn.kernels._update_moving` in NumPy, for a feature-shaped
    ``batch`` and a moving statistic of any float dtype or layout."""
    new = arr.astype(np.float64) * momentum + batch * (1.0 - momentum)
    top = float(np.finfo(arr.dtype).max)
    held = int(np.count_nonzero(np.abs(new) > top))
    arr[...] = np.clip(new, -top, top)
    return held


def _check_variance(var_k, lay, fn, level=4):
    """Warn when a batch variance overflowed to inf (float64 input beyond about
    1e154: the squares pass 1.8e308). Float32 and float16 input cannot, as
    their statistics are float64. One dot product, about 0.3 us on 300
    features, finds any inf or NaN; only then is it looked at closely. Returns
    whether it warned. ``lay`` None: ``var_k`` is in feature order."""
    if var_k.dot(var_k) < math.inf:
        return False
    bad = np.isinf(var_k)
    if bad.any():
        if lay is not None:
            bad = lay.from_kernel(bad.astype(np.float64))
        k = int(np.count_nonzero(bad))
        warnings.warn(f"{fn}: the batch variance of {k} feature(s) overflowed float64 to "
                      f"inf (values of x beyond about 1e154 square past 1.8e308), so their "
                      f"invstd is 0 and their output is beta, with zero gradient (moving "
                      f"statistics, when given, are held at float64's largest value, not "
                      f"inf). Rescale the input, e.g. divide it by its largest magnitude, "
                      f"before batch norm", RuntimeWarning, stacklevel=level)
        return True
    return False


def _warn_overflow(lay, moving_mean, moving_variance, var_k, momentum, fn):
    """Say that the moving statistics were held at their dtype's largest value,
    or, when that is because the batch variance overflowed, that (once)."""
    if _check_variance(var_k, lay, fn, level=5):
        return
    dtype = np.result_type(moving_mean, moving_variance)
    top = np.finfo(dtype).max
    steps = math.log(float(top)) / -math.log(momentum) if 0 < momentum < 1 else math.inf
    warnings.warn(f"{fn}: this batch would take the moving statistics past {dtype}'s "
                  f"largest value (batch variance up to {float(np.max(var_k)):.3g}); they "
                  f"hold {float(top):.3g} there instead of inf, so inference gives about "
                  f"beta for those features until later batches bring them down (about "
                  f"{steps:,.0f} steps at momentum={momentum}). Rescale the input if its "
                  f"values are this large on purpose", RuntimeWarning, stacklevel=4)


def _flat(arr):
    """A contiguous array as a 1-d view (itself when it is one already)."""
    return arr if arr.ndim == 1 else arr.reshape(-1)


def _kernel_vector(arr):
    """Whether the kernels can update ``arr`` in place as a flat float vector."""
    return arr.flags.c_contiguous and arr.dtype in _KERNEL_DTYPES


def _output(out, xk, dtype, lay, fn, same=(), others=()):
    """The output array and its kernel view: ``out`` itself when the kernels can
    write it directly and it does not overlap what they read (:func:`_overlaps`
    with ``xk`` and ``same``, ``others``), else a fresh array (copied into
    ``out`` by :func:`_finish`, after every read)."""
    if out is None:
        return lay.empty(xk.dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: out must be a NumPy array, got {type(out).__name__}")
    if out.shape != xk.shape or out.dtype != dtype:
        raise ValueError(f"{fn}: out has shape {out.shape} and dtype {out.dtype}; it "
                         f"must have x's shape {xk.shape} and dtype {np.dtype(dtype)}")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    kv = _direct_view(out, xk, lay)
    if kv is not None and not _overlaps(out, (xk, *same), others):
        return out, kv                        # a view the kernels take: write it directly
    return lay.empty(xk.dtype)


def _overlaps(out, same, others):
    """Whether the kernels writing ``out`` could change an element they have yet
    to read: ``out`` shares memory with one of ``others`` (feature vectors or
    None) or with one of ``same`` (arrays shaped like ``out``, each element
    read before the same element of ``out`` is written) without being exactly
    it (the same first byte and strides). NumPy's ufuncs give the same answer
    for such an ``out``; the caller then computes into a fresh array.

    Arrays that own their data never overlap one another, which settles the
    usual case (a preallocated ``out``, fresh inputs) without
    ``np.may_share_memory`` (200 ns a call).
    """
    owns = out.flags.owndata
    for a in same:
        if a is out or not isinstance(a, np.ndarray) or (owns and a.flags.owndata):
            continue
        if np.may_share_memory(out, a) and (
                a.strides != out.strides or a.dtype != out.dtype or a.shape != out.shape
                or a.__array_interface__["data"][0] != out.__array_interface__["data"][0]):
            return True
    for a in others:
        if (a is not None and isinstance(a, np.ndarray) and not (owns and a.flags.owndata)
                and np.may_share_memory(out, a)):
            return True
    return False


def _direct_view(out, xk, lay):
    """The kernel view of a validated ``out`` when the kernels write it directly,
    else None: C-contiguous, or strided for the parallel kernels except a
    channels-last one (:func:`_tiled_planes`). Checked and planned calls (whose
    layouts never interleave) share this rule."""
    kv = _out_view(out, xk, lay)
    if kv is not None and (kv.flags.c_contiguous or not (_serial(kv) or _tiled_planes(kv))):
        return kv
    return None


def _out_view(out, xk, lay):
    """The kernel-layout view of a validated ``out``, when kernels can write
    through it (``out`` in the kernels' dtype, ``xk``'s; a layout that does not
    interleave; a view, not a copy), else None."""
    if out.dtype == xk.dtype and not lay.interleaved and out.size:
        kv = lay.view(out)
        if kv is out or np.may_share_memory(kv, out):     # (out itself: a plain layout)
            return kv
    return None


def _tiled_planes(kv):
    """Whether ``kv``, the planes-layout view of an ``out=`` (a channels-last
    array for an NCHW input), is written through a fresh array and
    :func:`fastbn.kernels._copy_tiles` rather than by the kernels, which would
    write it a cache line per element. Rows-layout outputs are not: on (8192,
    1024), by ad hoc timings, a fresh array plus the copy would cost about what
    the strided writes do."""
    return kv.ndim == 3 and _transposed(kv) and not _serial(kv)


def _finish(res, out, xk, dtype, lay):
    """The result in ``dtype`` and ``x``'s layout, written into ``out`` when given."""
    if res is out:
        return out
    res = lay.restore(res, xk, dtype)
    if out is None:
        return res
    ok = _out_view(out, xk, lay)
    if ok is not None and _tiled_planes(ok):
        K._copy_tiles.parallel(lay.view(res).transpose(0, 2, 1), ok.transpose(0, 2, 1))
        return out
    np.copyto(out, res)
    return out


def _ones(c, dtype=None):
    """``np.ones(c, dtype)``, in a third of its time (1 us instead of 3)."""
    a = np.empty(c, dtype)
    a.fill(1.0)
    return a


def _number(v):
    """``v`` as a float when it is a real number: a Python or NumPy int or float,
    or a 0-d array of one (as ``np.float32(0.9)`` or ``np.array(0.9)``), else
    None. Bools are not numbers here: ``momentum=True`` is a mistake, not 1.0."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iuf":
        return float(v)
    return None


def _check_epsilon(epsilon, fn):
    """``epsilon`` as a float, or TypeError (not a number) / ValueError (< 0, not finite)."""
    if type(epsilon) is float and 0.0 <= epsilon < math.inf:    # the common case, fast
        return epsilon
    e = _number(epsilon)
    if e is None:
        raise TypeError(f"{fn}: epsilon must be a number (a float >= 0, e.g. 1e-3), got "
                        f"{epsilon!r} of type {type(epsilon).__name__}")
    if not (math.isfinite(e) and e >= 0):
        raise ValueError(f"{fn}: epsilon must be a finite number >= 0, got {epsilon!r}")
    return e


def _check_momentum(momentum, fn):
    """``momentum`` as a float, or TypeError (not a number) / ValueError (outside [0, 1])."""
    if type(momentum) is float and 0.0 <= momentum <= 1.0:     # the common case, fast
        return momentum
    m = _number(momentum)
    if m is None:
        raise TypeError(f"{fn}: momentum must be a number in [0, 1] (e.g. 0.99), got "
                        f"{momentum!r} of type {type(momentum).__name__}")
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"{fn}: momentum must be a number in [0, 1] (Keras convention; "
                         f"PyTorch's momentum m corresponds to 1 - m), got {momentum!r}")
    return m


def _check_training(training, fn):
    """Raise unless ``training`` is a bool (Python's or NumPy's): ``"False"`` is
    true to ``if``, and would train."""
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training must be a bool, True (batch statistics) or False "
                        f"(the moving statistics), got {training!r} of type "
                        f"{type(training).__name__}")


def _check_moving(arr, shape, name, fn, axis):
    if (type(arr) is np.ndarray and arr.shape == shape and arr.dtype.kind == "f"
            and arr.flags.writeable):           # the common case, in a third of the time
        return
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a NumPy array (it is updated in place), "
                        f"got {type(arr).__name__}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{fn}: {name} has dtype {arr.dtype}; it is updated in place and "
                        f"must be a float array")
    _feature_array(arr, shape, name, fn, axis)
    if not arr.flags.writeable:
        raise ValueError(f"{fn}: {name} is read-only, but training updates it in place")


# ---------------------------------------------------------------- activations
# Not batch norm, but on the training step's path: fastbn.autograd's ELU calls
# these for float32 (see fastbn/kernels/activations.py for why and how).
def _elu_forward(x, alpha):
    """``elu(x)`` of a float32 array via the vectorized kernel; returns a new array."""
    xc = np.ascontiguousarray(x)
    y = np.empty_like(xc)
    _run(K._elu_forward, xc)(xc.reshape(-1), float(alpha), y.reshape(-1))
    return y


def _elu_backward(x, grad, alpha):
    """The ELU gradient ``grad * elu'(x)`` of a float32 array."""
    xc, gc = np.ascontiguousarray(x), np.ascontiguousarray(grad)
    dx = np.empty_like(xc)
    _run(K._elu_backward, xc)(xc.reshape(-1), gc.reshape(-1), float(alpha), dx.reshape(-1))
    return dx



# ------------------------------------------------------- convolution, pooling
# Not batch norm, but on a CNN's training step (fastbn.autograd's conv2d and
# pooling ops). x is an (N, H, W, C) view, channels-last or an NCHW array
# transposed; pt, pl: padding before the first row / column.
#: A convolution whose kernel has at most this many taps (``kh * kw * C``) is
#: computed window by window (:func:`fastbn.kernels._conv_direct`), above it as
#: im2col + BLAS per block of samples. The article's first layer, (250, 28,
#: 28, 1) -> 32 filters 3x3 (9 taps), forward + backward, 2 threads: 4.1 ms
#: direct against 13-14 ms as im2col and products (2026-12-06).
DIRECT_MAX_TAPS = 16
#: Samples per block: as many as keep a block's windows (im2col) within
#: this many bytes, so that they are still in the core's cache (2 MiB of L2
#: here) when the matrix products read them.
BLOCK_BYTES = 1 << 20


class _ConvBlocks:
    """How a convolution of ``x`` is split: ``direct`` (window by window) or
    im2col + BLAS, ``block`` samples a block, ``blocks`` of them; ``kernel``
    as a C-contiguous array of ``x``'s dtype."""

    def __init__(self, x, kernel, geometry):
        kh, kw, _, _, _, _, ho, wo = geometry
        taps = kh * kw * x.shape[3]
        self.x, self.geometry = x, geometry
        self.kernel = np.ascontiguousarray(kernel, x.dtype)
        self.direct = taps <= DIRECT_MAX_TAPS
        per_sample = ho * wo * (kernel.shape[3] if self.direct else taps) * x.itemsize
        self.block = max(1, min(x.shape[0], BLOCK_BYTES // max(per_sample, 1)))
        self.blocks = -(-x.shape[0] // self.block)

    def span(self, i):
        """Block ``i``'s samples ``[lo, hi)``."""
        lo = i * self.block
        return lo, min(self.x.shape[0], lo + self.block)

    def windows(self, lo, hi):
        """The windows (im2col) of samples ``[lo, hi)`` in this thread's work array."""
        kh, kw, sh, sw, pt, pl, ho, wo = self.geometry
        cols = _workers.scratch("cols", (hi - lo, ho, wo, kh, kw, self.x.shape[3]),
                                self.x.dtype)
        K._im2col.serial(self.x[lo:hi], sh, sw, pt, pl, cols)
        return cols

    def run(self, one):
        """``one(i)`` for every block, BLAS on one thread in each (:mod:`fastbn._workers`)."""
        with _config.blas_one_thread():
            _workers.run(self.blocks, one, _config.threads())


def _conv2d_forward(x, kernel, bias, geometry, relu, y):
    """``y = relu?(conv(x, kernel) + bias)`` into the C-contiguous ``(N, ho, wo,
    F)`` array ``y``, in blocks of samples on :func:`fastbn._config.threads`
    threads (:mod:`fastbn._workers`): window by window for kernels of few taps,
    else each block's im2col in a per-thread buffer, one BLAS product and the
    bias and ReLU in one pass. ``x`` is any ``(N, H, W, C)`` view."""
    _, _, sh, sw, pt, pl, ho, wo = geometry
    plan = _ConvBlocks(x, kernel, geometry)
    k4 = plan.kernel
    f = k4.shape[3]
    b = np.zeros(f, x.dtype) if bias is None else np.ascontiguousarray(bias, x.dtype)
    y2 = y.reshape(-1, f)
    k2 = k4.reshape(-1, f)

    def one(i):
        lo, hi = plan.span(i)
        if plan.direct:
            K._conv_direct.serial(x[lo:hi], k4, b, sh, sw, pt, pl, relu, y[lo:hi])
            return
        yb = y2[lo * ho * wo:hi * ho * wo]
        np.matmul(plan.windows(lo, hi).reshape(len(yb), -1), k2, out=yb)
        K._bias_act.serial(yb, b, relu)

    plan.run(one)
    return y


def _conv2d_backward(x, kernel, y, grad, geometry, relu, need_dx, dx):
    """The gradients of :func:`_conv2d_forward` with output ``y`` (read when
    ``relu``, else may be None): ``(dk, db)``, and, when ``need_dx``, ``dx``
    (an ``(N, H, W, C)`` view, overwritten). Each block's kernel and bias
    gradients are its own; they are summed in block order (in float64 from
    float32), so the result is the same bits for any thread count. The
    windows are taken again per block rather than kept from the forward pass
    (a 35 MB im2col on the article's second layer)."""
    _, _, sh, sw, pt, pl, ho, wo = geometry
    plan = _ConvBlocks(x, kernel, geometry)
    k4 = plan.kernel
    f = k4.shape[3]
    k2 = k4.reshape(-1, f)
    g4 = np.ascontiguousarray(grad, x.dtype)
    g2 = g4.reshape(-1, f)
    y = g4 if y is None else y                  # read only when relu
    y2 = y.reshape(-1, f)
    dks = np.empty((plan.blocks,) + k4.shape, x.dtype)
    dbs = np.empty((plan.blocks, f), x.dtype)
    no_dx = np.empty((0, 0, 0, 0), x.dtype)

    def one(i):
        lo, hi = plan.span(i)
        if plan.direct:
            K._conv_direct_grads.serial(x[lo:hi], k4, y[lo:hi], g4[lo:hi], sh, sw, pt, pl,
                                        relu, need_dx, dks[i], dbs[i],
                                        dx[lo:hi] if need_dx else no_dx)
            return
        rows = (hi - lo) * ho * wo
        gb = g2[lo * ho * wo:hi * ho * wo]
        if relu:
            gm = _workers.scratch("gm", (rows, f), x.dtype)
            K._relu_grad.serial(gb.reshape(-1), y2[lo * ho * wo:hi * ho * wo].reshape(-1),
                                gm.reshape(-1))
            gb = gm
        cols = plan.windows(lo, hi)
        np.matmul(cols.reshape(rows, -1).T, gb, out=dks[i].reshape(-1, f))
        np.sum(gb, axis=0, out=dbs[i])
        if need_dx:
            np.matmul(gb, k2.T, out=cols.reshape(rows, -1))
            K._col2im.serial(cols, sh, sw, pt, pl, dx[lo:hi])

    plan.run(one)
    acc = np.float64 if x.dtype == np.float32 else x.dtype
    dk = dks.sum(axis=0, dtype=acc) if plan.blocks > 1 else dks[0]
    db = dbs.sum(axis=0, dtype=acc) if plan.blocks > 1 else dbs[0]
    return dk.astype(x.dtype, copy=False), db.astype(x.dtype, copy=False)


def _max_pool_forward(x, kh, kw, sh, sw, pt, pl, y):
    """Window maxima into the ``(N, ho, wo, C)`` view ``y``; returns where they were."""
    arg = np.empty(y.shape, np.int32)
    _run(K._max_pool_forward, x)(x, kh, kw, sh, sw, pt, pl, y, arg)
    return arg


def _max_pool_backward(dy, arg, kh, kw, sh, sw, pt, pl, dx):
    _run(K._max_pool_backward, dx)(dy, arg, kh, kw, sh, sw, pt, pl, dx)


def _avg_pool_forward(x, kh, kw, sh, sw, pt, pl, y):
    _run(K._avg_pool_forward, x)(x, kh, kw, sh, sw, pt, pl, y)


def _avg_pool_backward(dy, kh, kw, sh, sw, pt, pl, dx):
    _run(K._avg_pool_backward, dx)(dy, kh, kw, sh, sw, pt, pl, dx)


def _gelu_forward(x):
    """Exact ``gelu(x) = x * Phi(x)`` (NumPy has no ``erf``); returns a new array."""
    xc = np.ascontiguousarray(x)
    y = np.empty_like(xc)
    _run(K._gelu_forward, xc)(xc.reshape(-1), y.reshape(-1))
    return y


def _gelu_backward(x, grad):
    """The exact GELU gradient ``grad * (Phi(x) + x phi(x))``."""
    xc = np.ascontiguousarray(x)
    gc = np.ascontiguousarray(grad, dtype=xc.dtype)
    dx = np.empty_like(xc)
    _run(K._gelu_backward, xc)(xc.reshape(-1), gc.reshape(-1), dx.reshape(-1))
    return dx


# ------------------------------------------------------------ masked statistics
# A mask selects sample positions: it is constant along the feature axes, so
# the masked statistics are the rows kernels' statistics of the selected
# positions: read in place through their row indices when x is C-contiguous
# with the features last (_selected_stats), else gathered into one contiguous
# (selected, *features) array first. Both keep the kernels' accuracy (float64
# chunks, Chan's merge, offsets) and their bitwise determinism for any thread
# count (chunks of selected rows, never of threads).
def _sample_mask(mask, x, feats, name, fn):
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


def _selected_stats(xk, feats, m):
    """``(n, mean, m2)`` (float64, kernel order) of the positions ``m`` selects, read in
    place through their row indices, or None when ``xk`` is not C-contiguous with
    trailing feature axes (such a mask goes through :func:`_gather` instead), or
    selects nothing.

    Not gathering them first saves a copy of the selected positions and a
    pass over it. Masked training forwards (padded mask keeping 75%, as in
    ``docs/scripts/mask_cost.py``), interleaved in one process, 2 threads,
    shared machine (load 8), 2026-12-06, medians: C = (8192, 1024) fp32 74.7
    ms gathered, 44.0 ms in place, 44.0 ms unmasked (1.70x -> 1.07x the
    unmasked forward); E = (32, 56, 56, 64) fp32 73.3 ms, 41.3 ms, 36.0 ms
    (1.94x -> 1.05x).
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
    mean, m2 = _run(K._moments_rows_at, x2)(x2, rows, shift,
                                            K.rows_per_chunk(rows.size, x2.shape[1]))
    return rows.size, mean + shift, m2


def _gather(x, feats, m):
    """The selected positions of ``x``: a C-contiguous ``(count, *features)`` array."""
    rest = [a for a in range(x.ndim) if a not in feats]
    xt = np.transpose(x, rest + list(feats))
    return np.ascontiguousarray(xt[m])


def _masked_moments(x, axis, keepdims, ddof, where):
    fn = "moments"
    xk, _ = _float_input(x, "x", fn)
    reduced = normalize_axis(axis, xk.ndim, fn=fn, allow_none=True)
    feats = tuple(a for a in range(xk.ndim) if a not in reduced)
    m = _sample_mask(where, xk, feats, "where", fn)
    stats = _selected_stats(xk, feats, m) if feats else None
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
        sel = _gather(xk, feats, m)
        if sel.shape[0] == 0:
            raise ValueError(f"{fn}: where= selects no elements; there is nothing to average")
        mean, var = _moments(sel.astype(np.asarray(x).dtype, copy=False)
                             if np.asarray(x).dtype == np.float16 else sel, 0, False, ddof)
    if keepdims:
        kshape = tuple(1 if a in reduced else s for a, s in enumerate(xk.shape))
        mean, var = np.reshape(mean, kshape), np.reshape(var, kshape)
    return mean, var


def _masked_forward(x, gamma, beta, axis, epsilon, training, moving_mean, moving_variance,
                    momentum, out, mask):
    """:func:`batch_norm_forward` with ``mask``: the statistics of the selected positions
    normalise every position (Keras); a batch with none selected gives zeros."""
    fn = "batch_norm_forward"
    _check_training(training, fn)
    if not training:                               # inference: a mask changes nothing
        return batch_norm_forward(x, gamma, beta, axis=axis, epsilon=epsilon, training=False,
                                  moving_mean=moving_mean, moving_variance=moving_variance,
                                  momentum=momentum, out=out)
    xk, out_dtype = _float_input(x, "x", fn)
    feats = _features(xk, axis, fn)
    momentum = _check_momentum(momentum, fn)
    m = _sample_mask(mask, xk, feats, "mask", fn)
    fshape = tuple(xk.shape[a] for a in feats)
    if (moving_mean is None) != (moving_variance is None):
        raise ValueError(f"{fn}: pass both moving_mean and moving_variance, or neither")
    if moving_mean is not None:
        for name, arr in (("moving_mean", moving_mean), ("moving_variance", moving_variance)):
            _check_moving(arr, fshape, name, fn, axis)
    stats = _selected_stats(xk, feats, m)
    if stats is not None:
        count, mean_k, m2_k = stats
        lay = layout(xk, feats)                    # kernel order: the features' C order
    else:
        sel = _gather(xk, feats, m)
        count = sel.shape[0]
        if count:
            lay = layout(sel, tuple(range(1, sel.ndim)))   # float64 statistics, as unmasked
            mean_k, m2_k = _stats(_kernel_view(lay, sel), lay)
    if count == 0:                                 # nothing to take statistics from
        y = np.zeros(xk.shape, out_dtype) if out is None else out
        if out is not None:
            out[...] = 0
        zeros = np.zeros(fshape, xk.dtype)
        return y, zeros, zeros.copy()
    mean, var = lay.from_kernel(mean_k), lay.from_kernel(m2_k / count)
    y, mean_out, invstd = _batch_norm_forward(x, gamma, beta, axis, epsilon, False, mean, var,
                                              momentum, out=out)
    if moving_mean is not None:
        if sum(_update_moving_numpy(arr, batch, momentum)
               for arr, batch in ((moving_mean, mean), (moving_variance, var))):
            _warn_overflow(lay, moving_mean, moving_variance, m2_k / count, momentum, fn)
    return y, mean_out, invstd


def _masked_backward(dy, x, mean, invstd, gamma, axis, training, out, mask):
    """:func:`batch_norm_backward` with ``mask``: the statistics' gradient reaches the
    selected positions only, ``dx = gamma s (dy - m (dbeta + xhat dgamma) / n)``."""
    fn = "batch_norm_backward"
    _check_training(training, fn)
    dx, dgamma, dbeta = _batch_norm_backward(dy, x, mean, invstd, gamma, axis, False, out=out)
    if not training:
        return dx, dgamma, dbeta
    xk, _ = _float_input(x, "x", fn)
    feats = _features(xk, axis, fn)
    m = _sample_mask(mask, xk, feats, "mask", fn)
    n = int(np.count_nonzero(m))
    if n == 0:                                     # the forward gave constant zeros
        dx[...] = 0
        return dx, np.zeros_like(dgamma), np.zeros_like(dbeta)
    if (xk.flags.c_contiguous and dx.flags.c_contiguous and dx.dtype == xk.dtype
            and feats == tuple(range(xk.ndim - len(feats), xk.ndim))):
        # in place through the selected rows (kernels._masked_grad_rows). The
        # NumPy pass below (float64 temporaries the size of x) made the masked
        # backward on C and E (75% kept) 9.7x / 11.5x the unmasked one; this,
        # 1.9x / 1.3x (2 threads, shared machine, 2026-12-06, medians of 9)
        f64 = lambda v: np.ascontiguousarray(v, np.float64).reshape(-1)   # noqa: E731
        s, dg, db = f64(invstd), f64(dgamma), f64(dbeta)
        g = s if gamma is None else f64(gamma) * s
        x2, dx2 = xk.reshape(m.size, -1), dx.reshape(m.size, -1)
        _run(K._masked_grad_rows, x2)(x2, np.flatnonzero(m), f64(mean), g * db / n,
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
