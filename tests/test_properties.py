"""Hypothesis property tests: fastbn.functional against the float64 reference.

Random shapes (1-4 dims, sizes from 1 up to chunk/group boundaries), random
feature axes (ints, negative, unsorted tuples, non-adjacent), float32/float64,
awkward layouts (C, Fortran, transposed, strided with negative steps, zero
strides from ``broadcast_to``, read-only), random offsets up to 1e5 and scales.

Tolerances: ``rtol`` (1e-10 for float64 outputs, 1e-5 for float32 outputs) of
the natural magnitude of each quantity, plus the error that a float64 mean
inevitably carries on data of magnitude ``max|x|`` (``dm`` below), propagated
through ``gamma * invstd``. Statistics are float64 for every input dtype, so
they are always held to the float64 tolerance.
"""
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastbn

import reference as R

EPS64 = np.finfo(np.float64).eps
# Derandomized so CI is reproducible; FASTBN_HYPOTHESIS_RANDOM=1 explores new examples.
SETTINGS = dict(max_examples=60, deadline=None,
                derandomize=not os.environ.get("FASTBN_HYPOTHESIS_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# sizes: mostly tiny (incl. 1), sometimes across the row-chunk boundaries (64 and 128
# rows, fastbn.kernels.rows_per_chunk) / GROUP_BELOW=128 and other odd boundaries
SIZES = st.one_of(st.integers(1, 6), st.sampled_from([7, 16, 17, 63, 64, 65, 127, 128, 129, 257]))
MAX_ELEMENTS = 70_000          # above SERIAL_BELOW (32768): some draws take the parallel kernels
                               # (planes, grouped and copied rows, rows of 64 or more)
LAYOUTS = ["C", "F", "transposed", "strided", "broadcast", "readonly"]


def _rtol(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


def _assert_within(got, ref, tol, what):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    err = np.abs(got - ref)
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), err.shape)
    bad = ~(err <= tol)                   # NaN counts as bad
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(tol, 1e-300), 0)), err.shape) \
            if err.ndim else ()
        raise AssertionError(f"{what}: {int(bad.sum())}/{bad.size} out of tolerance; "
                             f"worst at {i}: got {got[i]!r}, expected {ref[i]!r}, tol {tol[i]!r}")


# --------------------------------------------------------------- generators
@st.composite
def shapes(draw, min_dims=1, max_dims=4):
    ndim = draw(st.integers(min_dims, max_dims))
    shape = tuple(draw(st.lists(SIZES, min_size=ndim, max_size=ndim)))
    assume(int(np.prod(shape)) <= MAX_ELEMENTS)
    return shape


@st.composite
def feature_axis(draw, ndim):
    """A Keras ``axis``: int (maybe negative) or unsorted tuple, never every axis."""
    k = draw(st.integers(1, ndim - 1))
    axes = draw(st.permutations(range(ndim)))[:k]
    signed = [a - ndim if draw(st.booleans()) else a for a in axes]
    if k == 1 and draw(st.booleans()):
        return signed[0]
    return tuple(signed)


@st.composite
def reduce_axis(draw, ndim):
    """A NumPy ``axis``: None, int (maybe negative) or unsorted tuple (maybe empty)."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    k = draw(st.integers(0, ndim))
    axes = draw(st.permutations(range(ndim)))[:k]
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


@st.composite
def arrays(draw, shape, dtype, offset=None, scale=None):
    """Random values of ``shape`` in a random memory layout; returns (x, kind)."""
    kind = draw(st.sampled_from(LAYOUTS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if offset is None:
        offset = draw(st.sampled_from([0.0, 1.0, -3.0, 1e3, -1e3, 1e5, -1e5, 12345.678]))
    if scale is None:
        scale = 10.0 ** draw(st.floats(-2, 3))
    ndim = len(shape)

    def values(shp):
        return (offset + scale * rng.standard_normal(shp)).astype(dtype)

    if kind == "C":
        x = values(shape)
    elif kind == "F":
        x = np.asfortranarray(values(shape))
    elif kind == "transposed":
        perm = draw(st.permutations(range(ndim)))
        inv = np.argsort(perm)
        x = np.ascontiguousarray(values(tuple(shape[p] for p in perm))).transpose(inv)
    elif kind == "strided":
        steps = [draw(st.sampled_from([1, 2, 3, -1, -2])) for _ in range(ndim)]
        big = values(tuple(s * abs(t) for s, t in zip(shape, steps)))
        x = big[tuple(slice(None, None, t) for t in steps)]
        if draw(st.booleans()):           # also Fortran-ordered underneath
            big = np.asfortranarray(big)
            x = big[tuple(slice(None, None, t) for t in steps)]
    elif kind == "broadcast":
        bcast = [draw(st.booleans()) for _ in range(ndim)]
        base = values(tuple(1 if b else s for s, b in zip(shape, bcast)))
        x = np.broadcast_to(base, shape)  # zero strides, read-only
    else:                                 # read-only, C or F
        x = values(shape)
        if draw(st.booleans()):
            x = np.asfortranarray(x)
        x.setflags(write=False)
    assert x.shape == tuple(shape) and x.dtype == dtype
    return x, kind


def _snapshot(*arrs):
    return [None if a is None else np.array(a, copy=True) for a in arrs]


def _assert_unchanged(before, *arrs):
    for b, a in zip(before, arrs):
        if b is not None:
            assert np.array_equal(b, np.asarray(a), equal_nan=True), "an input was modified"


def _fshape(shape, axis):
    return tuple(shape[a] for a in R.feature_axes(len(shape), axis))


def _bcast(v, shape, axis):
    feats = R.feature_axes(len(shape), axis)
    out = [1] * len(shape)
    for k, a in enumerate(feats):
        out[a] = shape[a]
    return np.asarray(v, dtype=np.float64).reshape(out)


@st.composite
def feature_vector(draw, fshape, allow_none=True, lo=-10.0, hi=10.0):
    """gamma / beta: None, or random values of varied dtype and layout."""
    if allow_none and draw(st.booleans()):
        return None
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    v = rng.uniform(lo, hi, fshape)
    kind = draw(st.sampled_from(["f64", "f32", "strided", "F"]))
    if kind == "f32":
        v = v.astype(np.float32)
    elif kind == "strided":
        big = np.zeros(tuple(2 * s for s in fshape))
        big[tuple(slice(None, None, 2) for _ in fshape)] = v
        v = big[tuple(slice(None, None, 2) for _ in fshape)]
    elif kind == "F":
        v = np.asfortranarray(v)
    return v


# --------------------------------------------------------------- moments
@settings(**SETTINGS)
@given(data=st.data(), shape=shapes(), dtype=st.sampled_from([np.float32, np.float64]),
       keepdims=st.booleans(), ddof=st.sampled_from([0, 1]))
def test_moments_property(data, shape, dtype, keepdims, ddof):
    x, kind = data.draw(arrays(shape, dtype), label="x")
    axis = data.draw(reduce_axis(len(shape)), label="axis")
    before = _snapshot(x)
    red = tuple(range(len(shape))) if axis is None else \
        tuple(sorted(a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)))
    n = int(np.prod([shape[a] for a in red]))
    if n - ddof <= 0:
        with pytest.raises(ValueError):
            fastbn.moments(x, axis=axis, keepdims=keepdims, ddof=ddof)
        _assert_unchanged(before, x)
        return
    mean, var = fastbn.moments(x, axis=axis, keepdims=keepdims, ddof=ddof)
    _assert_unchanged(before, x)
    x64 = np.asarray(x, dtype=np.float64)
    mr, vr = R.moments(x64, axis=axis, ddof=ddof, keepdims=keepdims)
    mr, vr = np.asarray(mr), np.asarray(vr)
    np_mean = x.mean(axis=axis, keepdims=keepdims)
    assert np.shape(mean) == np.shape(np_mean) == np.shape(var), (np.shape(mean), np.shape(np_mean))
    assert np.asarray(mean).dtype == dtype and np.asarray(var).dtype == dtype
    assert np.all(np.asarray(var) >= 0), "negative variance"
    rtol = _rtol(dtype)
    dm = 32 * EPS64 * float(np.abs(x64).max())
    _assert_within(mean, mr, rtol * np.abs(mr) + dm, f"moments mean [{kind}]")
    _assert_within(var, vr, rtol * np.abs(vr) + 4 * dm * dm * n / max(n - ddof, 1),
                   f"moments var [{kind}]")


# --------------------------------------------------------------- forward
@settings(**SETTINGS)
@given(data=st.data(), shape=shapes(min_dims=2), dtype=st.sampled_from([np.float32, np.float64]),
       epsilon=st.sampled_from([1e-3, 1e-5, 0.5]), training=st.booleans())
def test_forward_property(data, shape, dtype, epsilon, training):
    axis = data.draw(feature_axis(len(shape)), label="axis")
    x, kind = data.draw(arrays(shape, dtype), label="x")
    fshape = _fshape(shape, axis)
    gamma = data.draw(feature_vector(fshape), label="gamma")
    beta = data.draw(feature_vector(fshape), label="beta")
    n = int(np.prod(shape)) // max(int(np.prod(fshape)), 1)
    x64 = np.asarray(x, dtype=np.float64)
    if training:
        mm = mv = None
    else:
        mm = data.draw(feature_vector(fshape, allow_none=False, lo=-1e3, hi=1e3), label="mm")
        mv = data.draw(feature_vector(fshape, allow_none=False, lo=0.0, hi=50.0), label="mv")
    before = _snapshot(x, gamma, beta, mm, mv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y, mean, invstd = fastbn.batch_norm_forward(
            x, gamma, beta, axis=axis, epsilon=epsilon, training=training,
            moving_mean=mm, moving_variance=mv)
    _assert_unchanged(before, x, gamma, beta, mm, mv)
    ours = [w for w in caught if "one value per feature" in str(w.message)]
    assert bool(ours) == (training and n == 1), [str(w.message) for w in caught]
    assert not [w for w in caught if w not in ours], [str(w.message) for w in caught]

    assert y.shape == x.shape and y.dtype == x.dtype
    assert mean.shape == fshape and invstd.shape == fshape
    assert mean.dtype == np.float64 and invstd.dtype == np.float64
    assert not np.shares_memory(mean, x) and (mm is None or not np.shares_memory(mean, mm))

    yr, mr, sr = R.batch_norm_forward(x64, gamma, beta, axis=axis, epsilon=epsilon,
                                      training=training, moving_mean=mm, moving_variance=mv)
    rtol = _rtol(dtype)
    ax = float(np.abs(x64).max())
    dm = 32 * EPS64 * (ax if training else ax + float(np.abs(mm).max()))
    g = np.ones(fshape) if gamma is None else np.asarray(gamma, np.float64)
    b = np.zeros(fshape) if beta is None else np.asarray(beta, np.float64)
    # statistics are float64 whatever x's dtype
    _assert_within(mean, mr, 1e-10 * np.abs(mr) + dm, f"mean [{kind}]")
    var_r = 1.0 / sr ** 2 - epsilon
    _assert_within(invstd, sr, sr * (1e-10 + 2 * dm * dm / (var_r + epsilon)), f"invstd [{kind}]")
    gb, bb, sb = _bcast(g, shape, axis), _bcast(b, shape, axis), _bcast(sr, shape, axis)
    xhat = (x64 - _bcast(mr, shape, axis)) * sb
    tol_y = rtol * (np.abs(gb) * (np.abs(xhat) + 1) + np.abs(bb)) + np.abs(gb) * sb * 2 * dm
    _assert_within(y, yr, tol_y, f"y [{kind}]")
    if dtype == np.float32:
        # computed in float64 and rounded once: within one float32 ulp of the truth
        ulp = np.spacing(np.abs(yr).astype(np.float32)).astype(np.float64)
        _assert_within(y, yr, ulp + np.abs(gb) * sb * 2 * dm + 1e-30, f"y rounded once [{kind}]")

    if training:
        # per-feature mean of y is beta, std is |gamma| sqrt(var / (var + eps))
        red = R.reduced_axes(len(shape), axis)
        y64 = y.astype(np.float64)
        ym, ys = y64.mean(axis=red), y64.std(axis=red)
        var = 1.0 / invstd ** 2 - epsilon
        mag = np.abs(g) + np.abs(b)
        t = 1e-9 if dtype == np.float64 else 1e-5
        _assert_within(ym, b.reshape(ym.shape) if b.shape else b, t * mag + np.abs(g) * sr * 2 * dm,
                       "mean(y) == beta")
        # from the reference variance: 1 / invstd**2 - epsilon cancels (var 0, epsilon
        # 0.5 gave 1.1e-16, so a "wanted" std of 1.5e-8 for a constant feature)
        var_true = x64.var(axis=red).reshape(fshape)
        want = np.abs(g) * np.sqrt(var_true / (var_true + epsilon))
        _assert_within(ys, want, t * mag + np.abs(g) * sr * 2 * dm, "std(y)")
        assert np.all(var >= -1e-12 * epsilon), "negative variance"


# --------------------------------------------------------------- moving statistics
@settings(**SETTINGS)
@given(data=st.data(), shape=shapes(min_dims=2), dtype=st.sampled_from([np.float32, np.float64]),
       momentum=st.one_of(st.sampled_from([0.0, 1.0, 0.99, 0.9]), st.floats(0, 1)),
       mdtype=st.sampled_from([np.float32, np.float64]), strided=st.booleans())
def test_moving_statistics_update_property(data, shape, dtype, momentum, mdtype, strided):
    axis = data.draw(feature_axis(len(shape)), label="axis")
    x, kind = data.draw(arrays(shape, dtype), label="x")
    fshape = _fshape(shape, axis)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    m0 = rng.uniform(-5, 5, fshape).astype(mdtype)
    v0 = rng.uniform(0, 5, fshape).astype(mdtype)
    if strided:                           # writeable non-contiguous views into bigger buffers
        bm = np.full(tuple(2 * s for s in fshape), 7.0, mdtype)
        bv = np.full(tuple(2 * s for s in fshape), 7.0, mdtype)
        sl = tuple(slice(None, None, 2) for _ in fshape)
        bm[sl], bv[sl] = m0, v0
        mm, mv = bm[sl], bv[sl]
    else:
        mm, mv = m0.copy(), v0.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y, mean, invstd = fastbn.batch_norm_forward(x, None, None, axis=axis, moving_mean=mm,
                                                    moving_variance=mv, momentum=momentum)
    assert mm.dtype == mdtype and mv.dtype == mdtype
    _, mr, sr = R.batch_norm_forward(np.asarray(x, np.float64), axis=axis)
    var_r = 1.0 / sr ** 2 - 1e-3
    want_m = m0.astype(np.float64) * momentum + mr * (1 - momentum)
    want_v = v0.astype(np.float64) * momentum + var_r * (1 - momentum)
    ax = float(np.abs(np.asarray(x, np.float64)).max())
    rtol = 1e-12 if mdtype == np.float64 else 1e-6
    _assert_within(mm, want_m, rtol * (np.abs(want_m) + 5) + 64 * EPS64 * ax, "moving_mean")
    _assert_within(mv, want_v, rtol * (np.abs(want_v) + 5) + 64 * EPS64 * ax * 1e-3 + 1e-9 * var_r,
                   "moving_variance")
    if strided:                           # the gaps of the buffers are untouched
        mask = np.ones(bm.shape, bool)
        mask[tuple(slice(None, None, 2) for _ in fshape)] = False
        assert np.all(bm[mask] == 7) and np.all(bv[mask] == 7)


# --------------------------------------------------------------- backward
@settings(**SETTINGS)
@given(data=st.data(), shape=shapes(min_dims=2), dtype=st.sampled_from([np.float32, np.float64]),
       training=st.booleans(), stats_dtype=st.sampled_from([np.float64, np.float32]))
def test_backward_property(data, shape, dtype, training, stats_dtype):
    axis = data.draw(feature_axis(len(shape)), label="axis")
    x, kind = data.draw(arrays(shape, dtype), label="x")
    dy, dkind = data.draw(arrays(shape, dtype, offset=0.0), label="dy")   # own layout
    fshape = _fshape(shape, axis)
    gamma = data.draw(feature_vector(fshape), label="gamma")
    x64, dy64 = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    if training:
        _, mean, invstd = R.batch_norm_forward(x64, axis=axis)
    else:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        mean = rng.uniform(-10, 10, fshape) + (x64.mean() if x64.size else 0)
        invstd = 1 / np.sqrt(rng.uniform(0, 20, fshape) + 1e-3)
    mean, invstd = mean.astype(stats_dtype), invstd.astype(stats_dtype)
    before = _snapshot(dy, x, mean, invstd, gamma)
    dx, dg, db = fastbn.batch_norm_backward(dy, x, mean, invstd, gamma, axis=axis,
                                            training=training)
    _assert_unchanged(before, dy, x, mean, invstd, gamma)
    assert dx.shape == shape and dx.dtype == dtype
    assert dg.shape == fshape and db.shape == fshape and dg.dtype == dtype and db.dtype == dtype

    dxr, dgr, dbr = R.batch_norm_backward(dy64, x64, mean, invstd, gamma, axis=axis,
                                          training=training)
    rtol = _rtol(dtype)
    red = R.reduced_axes(len(shape), axis)
    n = x.size // max(int(np.prod(fshape)), 1)
    sb = _bcast(invstd, shape, axis)
    xhat = (x64 - _bcast(mean, shape, axis)) * sb
    abs_g = np.abs(dy64).sum(axis=red)
    abs_gx = np.abs(dy64 * xhat).sum(axis=red)
    _assert_within(db, dbr, rtol * abs_g + 1e-300, f"dbeta [{kind}/{dkind}]")
    _assert_within(dg, dgr, rtol * abs_gx + 1e-300, f"dgamma [{kind}/{dkind}]")
    g = 1.0 if gamma is None else _bcast(gamma, shape, axis)
    mag = np.abs(dy64)
    if training:
        mag = mag + _bcast(abs_g, shape, axis) / n + np.abs(xhat) * _bcast(abs_gx, shape, axis) / n
    _assert_within(dx, dxr, rtol * np.abs(g) * sb * mag + 1e-300, f"dx [{kind}/{dkind}]")


# --------------------------------------------------------------- layout of outputs
@pytest.mark.parametrize("shape,axis", [
    ((3, 4, 5, 6), (0, 2)), ((3, 4, 5, 6), (1, 3)), ((3, 4, 5, 6), (0, 3)),
    ((3, 4, 5), (0, 2)), ((6, 5), 0), ((6, 5), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), (1, 2)),
])
@pytest.mark.parametrize("order", ["C", "F"])
def test_outputs_are_laid_out_like_x(shape, axis, order):
    """The docstrings promise ``y`` / ``dx`` "shaped and laid out like x"."""
    x = np.asarray(np.random.default_rng(0).standard_normal(shape), order=order)
    y, m, s = fastbn.batch_norm_forward(x, None, None, axis=axis)
    dx, _, _ = fastbn.batch_norm_backward(x, x, m, s, None, axis=axis)
    flag = "C_CONTIGUOUS" if order == "C" else "F_CONTIGUOUS"
    assert y.flags[flag], f"y strides {y.strides} for {order}-ordered x of shape {shape}"
    assert dx.flags[flag], f"dx strides {dx.strides} for {order}-ordered x of shape {shape}"


# --------------------------------------------------------------- float16
@settings(**SETTINGS)
@given(data=st.data(), shape=shapes(min_dims=2))
def test_float16_property(data, shape):
    axis = data.draw(feature_axis(len(shape)), label="axis")
    x, kind = data.draw(arrays(shape, np.float16, offset=0.0, scale=3.0), label="x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y, m, s = fastbn.batch_norm_forward(x, None, None, axis=axis)
    assert y.dtype == np.float16 and y.shape == shape
    yr, mr, sr = R.batch_norm_forward(np.asarray(x, np.float64), axis=axis)
    _assert_within(m, mr, 1e-6 * (np.abs(mr) + 1), "float16 mean (float32 compute)")
    _assert_within(y, yr, 2e-3 * (np.abs(yr) + 1e-2), "float16 y")
    dx, dg, db = fastbn.batch_norm_backward(x, x, m, s, None, axis=axis)
    assert dx.dtype == np.float16 and dg.dtype == db.dtype == np.float32   # sums: float32
    mean, var = fastbn.moments(x)
    assert np.asarray(mean).dtype == np.float16
