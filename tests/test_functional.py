"""fastbn.functional against the float64 reference, over shapes x axes x dtypes x layouts."""
import warnings

import numpy as np
import pytest

import fastbn
from fastbn import _axes, _bn, functional

import reference as R

SHAPES_AXES = [
    ((37, 5), None),                      # None: every int axis in range(-ndim, ndim)
    ((6, 4, 7), None),
    ((3, 4, 5, 6), None),
    ((3, 4, 5, 6), (1, 2)),
    ((3, 4, 5, 6), (0, 2)),               # non-adjacent features: the copying path
    ((3, 4, 5, 6), (-1, 1)),
    ((3, 4, 5, 6), (0, 1, 3)),
    ((20, 28, 28), (1, 2)),
    ((600, 3), None),                     # several row chunks
    ((3, 9000), 0),                       # several plane chunks per feature
]


def _cases():
    for shape, axes in SHAPES_AXES:
        ndim = len(shape)
        for axis in (range(-ndim, ndim) if axes is None else [axes]):
            yield shape, axis


def _layouts(x):
    """The same values in different memory layouts (all compare equal to x)."""
    yield "C", x
    yield "F", np.asfortranarray(x)
    t = np.ascontiguousarray(x.T).T
    yield "transposed", t
    big = np.zeros(tuple(2 * s for s in x.shape), x.dtype)
    sl = tuple(slice(None, None, 2) for _ in x.shape)
    big[sl] = x
    yield "strided", big[sl]
    rev = np.ascontiguousarray(x[..., ::-1])[..., ::-1]
    yield "reversed", rev


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def _data(shape, dtype, rng, offset=0.0):
    return (rng.standard_normal(shape) * 2.0 + offset).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", list(_cases()))
def test_forward_backward_match_reference(shape, axis, dtype):
    rng = np.random.default_rng(abs(hash((shape, str(axis)))) % 2**32)
    x0 = _data(shape, dtype, rng, offset=3.0)
    feats = R.feature_axes(len(shape), axis)
    fshape = tuple(shape[a] for a in feats)
    gamma, beta = rng.standard_normal(fshape), rng.standard_normal(fshape)
    dy0 = rng.standard_normal(shape).astype(dtype)
    yr, mr, sr = R.batch_norm_forward(x0, gamma, beta, axis=axis)
    dxr, dgr, dbr = R.batch_norm_backward(dy0, x0, mr, sr, gamma, axis=axis)
    tol = _tol(dtype)
    for name, x in _layouts(x0):
        for _, dy in list(_layouts(dy0))[::2]:
            y, m, s = fastbn.batch_norm_forward(x, gamma, beta, axis=axis)
            assert y.shape == shape and y.dtype == dtype, name
            assert m.shape == fshape and m.dtype == np.float64
            np.testing.assert_allclose(y, yr, err_msg=name, **tol)
            np.testing.assert_allclose(m, mr, err_msg=name, **tol)
            np.testing.assert_allclose(s, sr, err_msg=name, **tol)
            dx, dg, db = fastbn.batch_norm_backward(dy, x, m, s, gamma, axis=axis)
            assert dx.shape == shape and dx.dtype == dtype and dg.shape == fshape
            scale = np.abs(dxr).max()
            np.testing.assert_allclose(dx / scale, dxr / scale, err_msg=name, **tol)
            np.testing.assert_allclose(dg, dgr, err_msg=name, **tol)
            np.testing.assert_allclose(db, dbr, err_msg=name, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", list(_cases()))
def test_moments_match_reference(shape, axis, dtype):
    rng = np.random.default_rng(7)
    x0 = _data(shape, dtype, rng, offset=-5.0)
    red = R.reduced_axes(len(shape), axis)          # moments takes the reduced axes
    mr, vr = R.moments(x0, axis=red)
    for name, x in _layouts(x0):
        m, v = fastbn.moments(x, axis=red)
        assert m.dtype == dtype and m.shape == mr.shape, name
        np.testing.assert_allclose(m, mr, err_msg=name, **_tol(dtype))
        np.testing.assert_allclose(v, vr, err_msg=name, **_tol(dtype))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1), (0, 2), ()])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("ddof", [0, 1])
def test_moments_numpy_semantics(axis, keepdims, ddof):
    x = np.random.default_rng(1).standard_normal((5, 6, 7))
    if axis == () and ddof:             # one element per result: no degrees of freedom
        with pytest.raises(ValueError, match="degrees of freedom"):
            fastbn.moments(x, axis=axis, keepdims=keepdims, ddof=ddof)
        return
    m, v = fastbn.moments(x, axis=axis, keepdims=keepdims, ddof=ddof)
    np.testing.assert_allclose(m, x.mean(axis=axis, keepdims=keepdims), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(v, x.var(axis=axis, keepdims=keepdims, ddof=ddof),
                               rtol=1e-12, atol=1e-14)
    assert np.shape(m) == np.shape(x.mean(axis=axis, keepdims=keepdims))


@pytest.mark.parametrize("shape,axis", [((4000, 64), -1), ((64, 4000), 0), ((8, 16, 40, 40), 1),
                                        ((8, 40, 40, 16), -1), ((200, 28, 28), (1, 2)),
                                        ((16, 8, 30, 30), (0, 2))])
@pytest.mark.parametrize("order", ["C", "F"])
def test_offset_1e5_float32_accuracy(shape, axis, order):
    """Variance within 1e-6 relative of float64 truth at offset 1e5, in every layout."""
    rng = np.random.default_rng(3)
    x = np.asarray(rng.standard_normal(shape) + 1e5, dtype=np.float32, order=order)
    xd = x.astype(np.float64)
    feats = R.feature_axes(x.ndim, axis)
    red = R.reduced_axes(x.ndim, axis)
    true_var = xd.var(axis=red)
    _, var = fastbn.moments(x, axis=red)
    assert np.max(np.abs(var / true_var - 1)) < 1e-6
    beta = rng.standard_normal([x.shape[a] for a in feats])
    eps = 1e-3
    y, mean, invstd = fastbn.batch_norm_forward(x, None, beta, axis=axis, epsilon=eps)
    np.testing.assert_allclose(mean, xd.mean(axis=red), rtol=1e-12)
    y = y.astype(np.float64)
    assert np.max(np.abs(y.mean(axis=red) - beta)) < 1e-4
    assert np.max(np.abs(y.std(axis=red) - np.sqrt(true_var / (true_var + eps)))) < 1e-4
    # Backward at the offset: compare with the float64 reference on the same data.
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, dg, db = fastbn.batch_norm_backward(dy, x, mean, invstd, None, axis=axis)
    dxr, dgr, dbr = R.batch_norm_backward(dy, xd, mean, invstd, None, axis=axis)
    np.testing.assert_allclose(dx, dxr, rtol=1e-5, atol=1e-5 * np.abs(dxr).max())
    np.testing.assert_allclose(dg, dgr, rtol=1e-5, atol=1e-5 * np.abs(dgr).max())


@pytest.mark.parametrize("shape,axis", [((128, 784), -1), ((8, 16, 20, 20), 1)])
@pytest.mark.parametrize("x_offset,dy_offset", [(1e3, 0.0), (1e4, 0.0), (1e3, 1e2)])
def test_backward_rounds_once_on_offset_data(shape, axis, x_offset, dy_offset):
    """dx, dgamma and dbeta are the float64 values rounded once to float32: within one
    float32 ulp of the largest true value (normwise 2**-23), however far the data sit
    from zero. (PyTorch's CPU backward, given the same statistics, was off by 3.7e-6 at
    an x offset of 1e3 and 2.8e-3 with a dy offset of 1e2 too:
    docs/scripts/backward_accuracy.py.)"""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) + x_offset).astype(np.float32)
    dy = (rng.standard_normal(shape) + dy_offset).astype(np.float32)
    feats = R.feature_axes(x.ndim, axis)
    gamma = (1 + 0.1 * rng.standard_normal([x.shape[a] for a in feats])).astype(np.float32)
    _, mean, invstd = fastbn.batch_norm_forward(x, gamma, None, axis=axis)
    got = fastbn.batch_norm_backward(dy, x, mean, invstd, gamma, axis=axis)
    want = R.batch_norm_backward(dy, x, mean, invstd, gamma, axis=axis)
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        assert np.max(np.abs(g.astype(np.float64) - w)) <= 2.0**-23 * np.max(np.abs(w))


def _exact_var(values):
    """Biased variance of float64 ``values`` in exact rational arithmetic, rounded once."""
    from fractions import Fraction
    fr = [Fraction(float(v)) for v in values]
    mean = sum(fr) / len(fr)
    return float(sum((v - mean) ** 2 for v in fr) / len(fr))


@pytest.mark.parametrize("layout", ["rows", "planes"])
def test_one_pass_chunks_hold_on_jumps_and_outliers(layout):
    """Each chunk is summed in one pass shifted by its own first value, which bounds
    the cancellation in ``M2 = S2 - S1**2 / m`` by ``m + 1`` (docs/maths.md). Two
    features, float64 against exact arithmetic: one jumps by 1e7 after the first
    chunk (a shift taken from the first chunk would leave nothing of the second
    chunk's variance), one starts each chunk with a 1e6-sigma outlier (the bound's
    worst case)."""
    rng = np.random.default_rng(5)
    n = 3 * 128 if layout == "rows" else 3 * 8192
    chunk = fastbn.kernels.rows_per_chunk(n, 2) if layout == "rows" else 8192   # 96 rows
    assert n % chunk == 0
    cols = rng.standard_normal((n, 2))
    cols[chunk:, 0] += 1e7
    cols[::chunk, 1] = 1e6
    x = cols if layout == "rows" else np.ascontiguousarray(cols.T)[None]   # (1, 2, n)
    red = 0 if layout == "rows" else (0, 2)
    assert _axes.layout(x, (1,)).kind == layout
    _, var = fastbn.moments(x, axis=red)
    for j in range(2):
        assert abs(var.ravel()[j] / _exact_var(cols[:, j]) - 1) < 1e-10


def test_numpy_float32_var_is_the_problem_we_solve():
    """Keeps the claim in the README honest: NumPy's float32 var fails where fastbn holds."""
    x = (np.random.default_rng(0).standard_normal((100_000, 4)) + 1e5).astype(np.float32)
    truth = x.astype(np.float64).var(axis=0)
    assert np.max(np.abs(fastbn.moments(x, axis=0)[1] / truth - 1)) < 1e-6
    assert np.max(np.abs(x.var(axis=0) / truth - 1)) > 1e-3


def test_large_values_do_not_overflow_float32():
    """Squares of 1e30 overflow float32; the float64 accumulators do not."""
    x = (np.random.default_rng(0).standard_normal((500, 3)) * 1e30).astype(np.float32)
    y, mean, invstd = fastbn.batch_norm_forward(x, None, None)
    yr, mr, sr = R.batch_norm_forward(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, yr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(invstd, sr, rtol=1e-12)
    x18 = (x.astype(np.float64) * 1e-12).astype(np.float32)     # var ~1e36 fits float32
    _, var = fastbn.moments(x18, axis=0)
    np.testing.assert_allclose(var, x18.astype(np.float64).var(axis=0), rtol=1e-6)


def test_moving_statistics_update_in_place_keras_rule():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 3, 4)).astype(np.float32)
    mm = np.full((3,), 0.5, np.float32)
    mv = np.full((3,), 2.0, np.float32)
    mm_id, mv_id = id(mm), id(mv)
    _, mean, invstd = fastbn.batch_norm_forward(x, None, None, axis=1, moving_mean=mm,
                                                moving_variance=mv, momentum=0.9)
    _, rm, _ = R.batch_norm_forward(x, axis=1)
    batch_var = x.astype(np.float64).var(axis=(0, 2))      # biased, as Keras
    np.testing.assert_allclose(mm, 0.5 * 0.9 + rm * 0.1, rtol=1e-6)
    np.testing.assert_allclose(mv, 2.0 * 0.9 + batch_var * 0.1, rtol=1e-6)
    assert id(mm) == mm_id and id(mv) == mv_id and mm.dtype == np.float32


@pytest.mark.parametrize("order", ["C", "F"])
def test_moving_update_same_bits_on_every_path(order):
    """Contiguous float32/64 moving statistics take one Numba call; strided,
    float16, big-endian ones and transposed feature orders take NumPy; all
    round the same float64 expression once."""
    rng = np.random.default_rng(5)
    x = np.asarray(rng.standard_normal((40, 3, 5)) + 7, order=order)
    results = {}
    for kind in ("f8", "f4", "f2", ">f8", ">f4", "strided8", "strided4"):
        dtype = np.dtype(kind.replace("strided", "f"))
        base = np.empty((3, 5, 2), dtype)
        mm = base[..., 0] if kind.startswith("strided") else np.empty((3, 5), dtype)
        mv = base[..., 1] if kind.startswith("strided") else np.empty((3, 5), dtype)
        mm[...] = np.arange(15).reshape(3, 5) / 7
        mv[...] = 1 + np.arange(15).reshape(3, 5) / 3
        mm0 = mm.astype(np.float64)
        _, mean, invstd = fastbn.batch_norm_forward(x, None, None, axis=(1, 2), moving_mean=mm,
                                                    moving_variance=mv, momentum=0.75)
        np.testing.assert_array_equal(mm, (mm0 * 0.75 + mean * 0.25).astype(dtype))
        results.setdefault(dtype.itemsize, []).append(mv.astype(np.float64))
    for same_size in results.values():
        for v in same_size[1:]:
            np.testing.assert_array_equal(v, same_size[0])


def test_inference_uses_moving_statistics():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 6))
    mm, mv = rng.standard_normal(6), rng.random(6) + 0.5
    g, b = rng.standard_normal(6), rng.standard_normal(6)
    mm0, mv0 = mm.copy(), mv.copy()
    y, mean, invstd = fastbn.batch_norm_forward(x, g, b, training=False, moving_mean=mm,
                                                moving_variance=mv, epsilon=1e-5)
    np.testing.assert_allclose(y, (x - mm) / np.sqrt(mv + 1e-5) * g + b, rtol=1e-12)
    np.testing.assert_array_equal(mean, mm)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(mv + 1e-5), rtol=1e-15)
    np.testing.assert_array_equal(mm, mm0)
    np.testing.assert_array_equal(mv, mv0)
    dy = rng.standard_normal(x.shape)
    dx, dg, db = fastbn.batch_norm_backward(dy, x, mean, invstd, g, training=False)
    np.testing.assert_allclose(dx, g * invstd * dy, rtol=1e-12)
    dxr, dgr, dbr = R.batch_norm_backward(dy, x, mean, invstd, g, training=False)
    np.testing.assert_allclose(dg, dgr, rtol=1e-12)
    np.testing.assert_allclose(db, dbr, rtol=1e-12)


def test_gamma_beta_none():
    x = np.random.default_rng(5).standard_normal((40, 3))
    y, m, s = fastbn.batch_norm_forward(x, None, None)
    yr, _, _ = R.batch_norm_forward(x)
    np.testing.assert_allclose(y, yr, rtol=1e-12, atol=1e-12)
    dy = np.ones_like(x)
    dx, dg, db = fastbn.batch_norm_backward(dy, x, m, s, None)
    np.testing.assert_allclose(db, 40.0)
    np.testing.assert_allclose(dx, 0.0, atol=1e-12)


def test_float16_computed_in_float32():
    x = np.random.default_rng(6).standard_normal((64, 5)).astype(np.float16)
    y, m, s = fastbn.batch_norm_forward(x, None, None)
    assert y.dtype == np.float16
    yr, _, _ = R.batch_norm_forward(x.astype(np.float32))
    np.testing.assert_allclose(y.astype(np.float64), yr, atol=5e-3)
    dx, dg, db = fastbn.batch_norm_backward(x, x, m, s, None)
    assert dx.dtype == np.float16 and dg.dtype == db.dtype == np.float32   # sums: float32
    mean, var = fastbn.moments(x, axis=0)
    assert mean.dtype == var.dtype == np.float16


def test_one_value_per_feature_warns_and_returns_beta():
    x = np.array([[1.0, 2.0, 3.0]])
    beta = np.array([0.5, -1.0, 2.0])
    with pytest.warns(RuntimeWarning, match="one value per feature"):
        y, m, s = fastbn.batch_norm_forward(x, None, beta)
    np.testing.assert_array_equal(y, beta[None])


def test_nan_and_inf_stay_in_their_feature():
    x = np.random.default_rng(8).standard_normal((100, 4)).astype(np.float32)
    x[17, 1] = np.nan
    x[3, 2] = np.inf
    y, m, s = fastbn.batch_norm_forward(x, None, None)
    assert np.all(np.isnan(y[:, 1])) and np.all(np.isfinite(y[:, [0, 3]]))
    assert not np.any(np.isfinite(y[:, 2]) & (y[:, 2] != 0))
    mean, var = fastbn.moments(x.T.copy(), axis=1)
    assert np.isnan(mean[1]) and np.isfinite(mean[0]) and np.isfinite(var[3])


def test_read_only_inputs_work_and_inputs_are_not_modified():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((30, 4, 5))
    g, b, dy = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(x.shape)
    arrays = (x, g, b, dy)
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    y, m, s = fastbn.batch_norm_forward(x, g, b, axis=1)
    fastbn.batch_norm_backward(dy, x, m, s, g, axis=1)
    fastbn.moments(x, axis=(0, 2))
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


@pytest.fixture
def kernel_arrays(monkeypatch):
    """``(kernel name, C-contiguous)`` of every array passed to a kernel from the
    moment it is asked for (a spy on ``fastbn._bn.dispatch.run``; plans, which hold the
    kernels they chose, are emptied before and after)."""
    from fastbn import functional
    seen = []
    run = _bn.dispatch.run

    def spy(kern, xk, arrays=1):
        fn = run(kern, xk, arrays)

        def call(*args):
            seen.extend((kern.__name__, a.flags.c_contiguous)
                        for a in args if isinstance(a, np.ndarray))
            return fn(*args)
        return call

    monkeypatch.setattr(_bn.dispatch, "run", spy)
    _bn.PLANS.clear()
    yield seen
    _bn.PLANS.clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((20, 300), -1), ((4, 3, 256), 1)])
def test_small_strided_inputs_reach_kernels_contiguous(shape, axis, dtype, request):
    """A small input (one for the serial kernels) whose kernel view is strided is
    copied into a C-contiguous one before any kernel sees it, and a strided
    ``out=`` is written through one: Numba would compile a variant of each
    kernel for that type (3-18 s apiece). The results are the contiguous
    call's bits (these shapes keep their layout when strided: no fold, no
    groups)."""
    from fastbn import functional
    rng = np.random.default_rng(21)
    x = (rng.standard_normal(shape) * 3 + 7).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[axis]
    g, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    reduced = tuple(a for a in range(x.ndim) if a != axis % x.ndim)

    def calls(x, dy, out=None):
        y, m, s = fastbn.batch_norm_forward(x, g, b, axis=axis)
        y2, _, _ = fastbn.batch_norm_forward(x, g, b, axis=axis, out=out)
        dx, dg, db = fastbn.batch_norm_backward(dy, x, m, s, g, axis=axis)
        yi, _, _ = fastbn.batch_norm_forward(x, g, b, axis=axis, training=False,
                                             moving_mean=m, moving_variance=1 / s**2)
        return (y, y2, m, s, dx, dg, db, yi) + fastbn.moments(x, axis=reduced)

    assert _bn.serial(_axes.layout(x, (axis % x.ndim,)).view(x))
    _bn.PLANS.clear()
    want = calls(x, dy)
    seen = request.getfixturevalue("kernel_arrays")     # from here on

    def strided(a):
        wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        wide[..., ::2] = a
        return wide[..., ::2]

    for x_in, dy_in, out in ((strided(x), dy, None),
                             (x, np.asfortranarray(dy), np.empty_like(x, order="F")),
                             (x, strided(dy), strided(np.empty_like(x)))):
        for _ in range(2):                  # the checked call, then the planned one
            got = calls(x_in, dy_in, out)
            for u, v in zip(got, want):
                assert u.tobytes() == v.tobytes()
    assert seen and all(ok for _, ok in seen), [name for name, ok in seen if not ok]


@pytest.mark.parametrize("shape", [(600, 400), (128, 784), (40, 300)])
def test_fortran_dy_is_copied_and_planned(shape, request, monkeypatch):
    """A Fortran-ordered dy for a C-ordered (N, C) x reaches the backward
    C-contiguous (read in place, every element would be a new cache line;
    through tiles from 2^15 elements, by NumPy below): the bits of a C-ordered
    dy, from the checked call and from the planned one that follows it."""
    from fastbn import functional
    rng = np.random.default_rng(22)
    x = (rng.standard_normal(shape) + 5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, m, s = fastbn.batch_norm_forward(x, None, None)
    want = fastbn.batch_norm_backward(dy, x, m, s, None)
    seen = request.getfixturevalue("kernel_arrays")     # from here on
    for planned in (False, True):
        got = fastbn.batch_norm_backward(np.asfortranarray(dy), x, m, s, None)
        for u, v in zip(got, want):
            assert u.tobytes() == v.tobytes()
        assert len(_bn.PLANS) == 1
        monkeypatch.setattr(_bn, "batch_norm_backward", None)   # planned from here on
    assert seen and all(ok for _, ok in seen), [name for name, ok in seen if not ok]


def _channels_last(a):
    """``a``'s values, NCHW-shaped, stored NHWC."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def test_channels_last_dy_is_copied_through_tiles(request):
    """A channels-last dy for an NCHW x (planes layout: each sample's (C, HW)
    matrix Fortran-ordered) reaches the backward C-contiguous, with the bits of
    an NCHW dy."""
    rng = np.random.default_rng(23)
    x = (rng.standard_normal((4, 16, 24, 24)) + 5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dy_cl = _channels_last(dy)
    _, m, s = fastbn.batch_norm_forward(x, None, None, axis=1)
    want = fastbn.batch_norm_backward(dy, x, m, s, None, axis=1)
    seen = request.getfixturevalue("kernel_arrays")     # from here on
    got = fastbn.batch_norm_backward(dy_cl, x, m, s, None, axis=1)
    for u, v in zip(got, want):
        assert u.tobytes() == v.tobytes()
    assert seen and all(ok for _, ok in seen), [name for name, ok in seen if not ok]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_channels_last_out_is_written_through_tiles(dtype, request):
    """A channels-last out= for an NCHW x: the kernels write a fresh C-contiguous
    array, copied into out through tiles; out holds the bits of a call without
    out= and is what the call returns (forward, backward, inference). float16
    is computed in float32 and cast: its out is filled by NumPy, not tiles."""
    rng = np.random.default_rng(24)
    shape = (4, 16, 24, 24)
    x = (rng.standard_normal(shape) + 5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    mm, mv = np.zeros(16, dtype), np.ones(16, dtype)
    y, m, s = fastbn.batch_norm_forward(x, None, None, axis=1)
    dx = fastbn.batch_norm_backward(dy, x, m, s, None, axis=1)[0]
    yi = fastbn.batch_norm_forward(x, None, None, axis=1, training=False, moving_mean=mm,
                                   moving_variance=mv)[0]

    seen = request.getfixturevalue("kernel_arrays")     # from here on
    for want, call in ((y, lambda o: fastbn.batch_norm_forward(x, None, None, axis=1, out=o)[0]),
                       (dx, lambda o: fastbn.batch_norm_backward(dy, x, m, s, None, axis=1,
                                                                 out=o)[0]),
                       (yi, lambda o: fastbn.batch_norm_forward(
                           x, None, None, axis=1, training=False, moving_mean=mm,
                           moving_variance=mv, out=o)[0])):
        out = _channels_last(np.full(shape, np.nan, dtype))
        assert call(out) is out
        assert np.ascontiguousarray(out).tobytes() == want.tobytes()
    assert seen and all(ok for _, ok in seen), [name for name, ok in seen if not ok]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(13, 7), (1, 9), (9, 1), (0, 5), (16, 16), (70, 33),
                                   (129, 300), (64, 513)])
def test_copy_tiles_copies_every_element(shape, dtype):
    """Partial tiles and task blocks at both ends (64-row tasks, 16-column
    tiles, 256-column blocks), empty and unit shapes; one matrix, and a batch
    of three laid out as a channels-last array is for channels-first kernels."""
    from fastbn import kernels
    src = np.asfortranarray(np.arange(np.prod(shape), dtype=dtype).reshape(shape))
    dst = np.full(shape, np.nan, dtype)
    kernels._copy_tiles.parallel(src[np.newaxis], dst[np.newaxis])
    np.testing.assert_array_equal(dst, src)
    batch = np.ascontiguousarray(np.stack([src, -src, 2 * src]).transpose(0, 2, 1))
    src3 = batch.transpose(0, 2, 1)                 # each src3[k] Fortran-ordered
    dst3 = np.full(src3.shape, np.nan, dtype)
    kernels._copy_tiles.parallel(src3, dst3)
    np.testing.assert_array_equal(dst3, src3)


def test_zero_features_and_lists():
    y, m, s = fastbn.batch_norm_forward(np.zeros((5, 0)), None, None)
    assert y.shape == (5, 0) and m.shape == (0,)
    y, _, _ = fastbn.batch_norm_forward([[1.0, 2.0], [3.0, 4.0]], None, None, epsilon=0.0)
    np.testing.assert_allclose(y, [[-1, -1], [1, 1]])


def test_output_keeps_input_layout():
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((20, 6)))
    y, _, _ = fastbn.batch_norm_forward(x, None, None)
    assert y.flags.f_contiguous
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    y, _, _ = fastbn.batch_norm_forward(x, None, None, axis=1)
    assert y.flags.c_contiguous


@pytest.mark.parametrize("shape,strides_from,axis,copies", [
    ((32, 64), "C", -1, False), ((8, 6, 5, 5), "C", 1, False), ((8, 5, 5, 6), "C", -1, False),
    ((20, 28, 28), "C", (1, 2), False), ((32, 64), "F", -1, False),
    ((3, 4, 5, 6), "C", (0, 2), True),
])
def test_common_layouts_are_not_copied(shape, strides_from, axis, copies):
    x = np.zeros(shape, order=strides_from)
    lay = _axes.layout(x, R.feature_axes(x.ndim, axis))
    assert lay.copies is copies
    assert np.shares_memory(lay.view(x), x) is not copies


@pytest.mark.parametrize("shape,axis", [((4000, 40), -1), ((30, 40, 200), 1)])
def test_serial_and_parallel_twins_agree_bitwise(shape, axis, monkeypatch):
    from fastbn import functional
    x = np.random.default_rng(11).standard_normal(shape).astype(np.float32) + 100
    dy = np.random.default_rng(12).standard_normal(shape).astype(np.float32)
    lay = _axes.layout(x, _bn.features(x, axis, "test"))
    runs = []
    for serial in (False, True):
        assert _bn.serial(lay.view(x)) is serial
        y, m, s = fastbn.batch_norm_forward(x, None, None, axis=axis)
        runs.append((y, m, s) + fastbn.batch_norm_backward(dy, x, m, s, None, axis=axis)
                    + fastbn.batch_norm_forward(x, None, None, axis=axis, training=False,
                                                moving_mean=m, moving_variance=1 / s**2))
        monkeypatch.setattr(fastbn._config, "SERIAL_BELOW", 10**12)
        monkeypatch.setattr(fastbn._config, "ROWS_SERIAL_BELOW", 10**12)
        _bn.PLANS.clear()           # plans keep the kernel they chose
    for u, v in zip(*runs):
        assert u.tobytes() == v.tobytes()


@pytest.mark.parametrize("shape,chunk", [
    ((128, 784), 64), ((100, 784), 50), ((64, 512), 32), ((128, 200), 128), ((63, 4096), 128),
    ((1, 9), 128), ((129, 10), 65), ((160, 300), 80), ((256, 300), 128), ((300, 300), 75),
    ((301, 8), 76), ((8192, 1024), 128), ((1000, 784), 125)])
def test_rows_per_chunk(shape, chunk):
    """An even number of equal chunks of at most 128 rows; one chunk for arrays of at
    most 128 rows too small to share (under 64 rows or 2^15 elements)."""
    assert fastbn.kernels.rows_per_chunk(*shape) == chunk


@pytest.mark.parametrize("shape,serial,serial_backward", [
    ((128, 784), False, False), ((128, 256), False, False), ((128, 200), True, True),
    ((32, 2048), True, False), ((32, 4096), False, False), ((256, 200), False, False),
    ((256, 120), True, True), ((200, 40), True, True)])
def test_rows_go_parallel_over_several_row_chunks(shape, serial, serial_backward):
    """Rows in several chunks (each thread takes whole rows) run in parallel from
    SERIAL_BELOW elements; rows of one chunk (threads would split every row) from
    ROWS_SERIAL_BELOW, half that in the fused backward (two arrays read); the plans
    keep the same choice, and a parallel plan on one chunk splits it by columns."""
    from fastbn import functional
    assert fastbn._config.SERIAL_BELOW == 1 << 15
    assert fastbn._config.ROWS_SERIAL_BELOW == 1 << 17
    x = np.ones(shape, np.float32)
    xk = _axes.layout(x, (1,)).view(x)           # the kernels' view (folded or not)
    assert _bn.serial(xk) is serial
    assert _bn.serial(xk, 2) is serial_backward
    y, m, s = fastbn.batch_norm_forward(x, None, None)
    fastbn.batch_norm_backward(x, x, m, s, None)
    (plan,) = _bn.PLANS.values()
    kernels = fastbn.kernels
    assert plan.chunk == kernels.rows_per_chunk(*xk.shape)
    assert plan.forward is getattr(kernels._forward_rows_fused,
                                   "serial" if serial else "parallel")
    assert plan.backward is getattr(kernels._backward_rows_fused,
                                    "serial" if serial_backward else "parallel")
    one_chunk = plan.chunk >= xk.shape[0]
    assert (plan.backward_cols < xk.shape[1]) is (not serial_backward and one_chunk)


def test_serial_calls_on_one_row_chunk_take_whole_rows():
    """Serially, rows that fit one chunk are one column block, so the fused kernels take
    one task loop per pass (their one-task-per-block path pays only in parallel);
    over several chunks, blocks of up to 1024 columns."""
    from fastbn import functional
    one_chunk, chunks = np.ones((30, 2100), np.float32), np.ones((200, 150), np.float32)
    assert _bn.serial(one_chunk, 2) and _bn.serial(chunks, 2)
    assert _bn.cols(one_chunk) == _bn.cols(one_chunk, 2) == 2100
    assert _bn.cols(np.ones((60, 500), np.float32)) == fastbn.kernels.COLS_PER_BLOCK
    assert _bn.cols(chunks, 2) == fastbn.kernels.COLS_PER_BLOCK


def test_no_warnings_on_plain_input():
    x = np.random.default_rng(0).standard_normal((64, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, m, s = fastbn.batch_norm_forward(x, None, None)
        fastbn.batch_norm_backward(x, x, m, s, None)


@pytest.mark.parametrize("shape", [(16, 6, 5, 7), (4, 3, 200)])
def test_planes_read_as_grouped_rows_agree_with_planes(shape, monkeypatch):
    """Short-run planes are read as rows of C * inner columns; both paths agree."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape) * 3 + 50
    dy = rng.standard_normal(shape)
    g = rng.standard_normal(shape[1])
    results = []
    for group_below in (0, 10**9):                  # planes always / rows whenever possible
        monkeypatch.setattr(fastbn._config, "GROUP_BELOW", group_below)
        _axes._layout.cache_clear()
        assert _axes.layout(x, (1,)).kind == ("planes" if group_below == 0 else "rows")
        y, m, s = fastbn.batch_norm_forward(x, g, None, axis=1)
        results.append((y, m, s) + fastbn.batch_norm_backward(dy, x, m, s, g, axis=1))
    _axes._layout.cache_clear()
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis,kind,serial", [((6, 20, 1000), 1, "planes", None),
                                                    ((128, 300), -1, "rows", False),
                                                    ((128, 300), -1, "rows", True),
                                                    ((300, 2100), -1, "rows", False),
                                                    ((260, 100), -1, "rows", True),  # 3 chunks
                                                    ((60, 2100), -1, "rows", True),  # 1 block
                                                    ((128, 2100), -1, "rows", False),  # 3 blocks
                                                    ((7, 5), -1, "rows", True),
                                                    ((1, 9), -1, "rows", True),
                                                    ((512, 64), -1, "rows", False),  # folded
                                                    ((4096, 48), -1, "rows", False)])
def test_fused_kernels_match_split_kernels_bitwise(shape, axis, kind, serial, dtype, monkeypatch):
    """Whether a fused path runs depends on the shape; its bits must not."""
    from fastbn import functional
    if serial is not None:                          # the rows kernels' twin named
        for name in ("SERIAL_BELOW", "ROWS_SERIAL_BELOW"):
            monkeypatch.setattr(fastbn._config, name, 10**12 if serial else 0)
    rng = np.random.default_rng(13)
    x = (rng.standard_normal(shape) * 3 + 1e3).astype(dtype)
    x.flat[0] = np.nan                  # feature 0's first value, which is its shift
    dy = rng.standard_normal(x.shape).astype(dtype)
    fshape = tuple(shape[a] for a in np.atleast_1d(axis))
    g, b = rng.standard_normal(fshape), rng.standard_normal(fshape)
    lay = _axes.layout(x, _bn.features(x, axis, "test"))
    assert _bn.dispatch.fuse(lay.view(x), lay, 1) == kind
    if kind == "rows":
        kern = _bn.dispatch.run(fastbn.kernels._forward_rows_fused, lay.view(x))
        assert kern is getattr(fastbn.kernels._forward_rows_fused,
                               "serial" if serial else "parallel")
    runs = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(_bn.dispatch, "fuse", lambda xk, lay, arrays: None)
            _bn.PLANS.clear()       # a plan would run the fused kernels again
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # (1, 9): one value per feature
            y, m, s = fastbn.batch_norm_forward(x, g, b, axis=axis)
            runs.append((y, m, s) + fastbn.batch_norm_backward(dy, x, m, s, g, axis=axis))
    assert not _bn.PLANS            # the split kernels ran, not a plan
    for a, c in zip(*runs):
        assert a.tobytes() == c.tobytes()
    y = runs[0][0]
    assert np.isnan(y[:, 0]).all() and np.isfinite(y[:, 1:]).all()


@pytest.mark.parametrize("x,kind,fold,kshape", [
    (np.empty((100352, 64), np.float32), "rows", 16, (6272, 1024)),   # NHWC (32, 56, 56, 64)
    (np.empty((32, 56, 56, 64), np.float32), "rows", 16, (6272, 1024)),
    (np.empty((600, 3)), "rows", 8, (75, 24)),                         # 600 = 8 * 75
    (np.empty((101, 64), np.float32), "rows", 1, (101, 64)),           # odd N
    (np.empty((256, 64), np.float32), "rows", 1, (256, 64)),           # under FOLD_MIN_ROWS
    (np.empty((32, 64), np.float32), "rows", 1, (32, 64)),
    (np.empty((512, 64), np.float32), "rows", 16, (32, 1024)),
    (np.empty((1024, 256), np.float32), "rows", 1, (1024, 256)),       # wide enough
    (np.empty((1024, 64), np.float32)[::2], "rows", 1, (512, 64)),     # strided rows: a view
    (np.empty((32, 16, 16, 64), np.float32)[:, ::2], "rows", 16, (256, 1024)),  # copied anyway
    (np.asfortranarray(np.empty((1024, 64), np.float32)), "planes", 1, (1, 64, 1024)),
])
def test_narrow_contiguous_rows_are_folded(x, kind, fold, kshape):
    """Rows under FOLD_BELOW columns are read FOLD_COLS // C rows at a time (at most;
    a power of two dividing N) when there are FOLD_MIN_ROWS of them or more and the
    rows view needs no copy to reshape."""
    lay = _axes.layout(x, (x.ndim - 1,))
    assert (lay.kind, lay.fold, lay.kshape) == (kind, fold, kshape)
    assert lay.view(x).shape == kshape
    assert lay.column_steps == ((1, lay.channels) if fold > 1 else (1, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis,order", [((4096, 48), -1, "C"), ((64, 8, 8, 16), -1, "C"),
                                              ((600, 3), -1, "C"), ((4096, 48), -1, "F")])
def test_folded_rows_agree_with_unfolded_rows(shape, axis, order, dtype, monkeypatch):
    """Folding only changes the order of the sums: forward, backward, inference and
    moments agree with the unfolded layout to within rounding, with inputs, dy and
    out= in either memory order."""
    rng = np.random.default_rng(17)
    x = np.asarray(rng.standard_normal(shape) * 3 + 1e3, dtype=dtype, order=order)
    dy = np.asarray(rng.standard_normal(shape), dtype=dtype, order="F")
    fshape = (shape[-1],)
    g, b = rng.standard_normal(fshape), rng.standard_normal(fshape)
    runs, folds = [], []
    for fold_below in (fastbn._config.FOLD_BELOW, 0):
        monkeypatch.setattr(fastbn._config, "FOLD_BELOW", fold_below)
        _axes._layout.cache_clear()
        fastbn._bn.PLANS.clear()
        folds.append(_axes.layout(x, (x.ndim - 1,)).fold)
        out = np.full(shape, np.nan, dtype=dtype, order="F")
        y, m, s = fastbn.batch_norm_forward(x, g, b, axis=axis, out=out)
        res = (y.copy(), m, s) + fastbn.batch_norm_backward(dy, x, m, s, g, axis=axis)
        res += fastbn.batch_norm_backward(dy, x, m, s, g, axis=axis)      # planned
        res += fastbn.batch_norm_forward(x, g, b, axis=axis, training=False, moving_mean=m,
                                         moving_variance=1 / s**2 - 1e-3)[:1]
        res += fastbn.moments(x, axis=tuple(range(x.ndim - 1)))
        runs.append(res)
    _axes._layout.cache_clear()
    assert folds[1] == 1 and (folds[0] > 1) is (order == "C")   # F-order rows: planes
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, c in zip(*runs):
        np.testing.assert_allclose(a, c, rtol=tol, atol=tol * np.abs(c).max())
    ref = R.batch_norm_forward(x, g, b, axis=axis)
    np.testing.assert_allclose(runs[0][0], ref[0], rtol=tol, atol=tol * 10)


# ------------------------------------------------------------ planned calls
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((2, 300), -1), ((128, 784), -1), ((256, 300), -1),
                                        ((256, 28, 28), (1, 2)), ((300, 7), 1),
                                        ((9, 4, 5), (2, 1))])
@pytest.mark.parametrize("affine,moving", [(True, True), (False, False), (True, False)])
def test_planned_calls_give_the_bits_of_checked_calls(shape, axis, dtype, affine, moving,
                                                      monkeypatch):
    """The first training call on a shape is checked and leaves a plan; the next
    ones run the plan without the checks, and must give the same bits (outputs
    and moving statistics)."""
    from fastbn import functional
    rng = np.random.default_rng(14)
    x = (rng.standard_normal(shape) * 3 + 1e3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    fshape = tuple(shape[a] for a in sorted(np.atleast_1d(axis)))
    g, b = (rng.standard_normal(fshape), rng.standard_normal(fshape)) if affine else (None, None)
    runs = []
    for planned in (False, True):
        mm = np.full(fshape, 0.5, dtype) if moving else None
        mv = np.full(fshape, 2.0, dtype) if moving else None
        y, m, s = fastbn.batch_norm_forward(x, g, b, axis=axis, moving_mean=mm, moving_variance=mv)
        runs.append((y, m, s, mm, mv) + fastbn.batch_norm_backward(dy, x, m, s, g, axis=axis))
        assert len(_bn.PLANS) == 1
        monkeypatch.setattr(_bn, "batch_norm_forward", None)    # planned from here on
        monkeypatch.setattr(_bn, "batch_norm_backward", None)
    for a, c in zip(*runs):
        assert (a is None and c is None) or a.tobytes() == c.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((2, 300), -1), ((128, 784), -1), ((256, 28, 28), (1, 2))])
@pytest.mark.parametrize("first", ["training", "inference"])
def test_planned_inference_gives_the_bits_of_checked_inference(shape, axis, dtype, first,
                                                               monkeypatch):
    """Inference runs a plan too (left by a training or an inference call): the
    same bits, moving statistics untouched, the returned mean not one of them."""
    from fastbn import functional
    rng = np.random.default_rng(16)
    x = (rng.standard_normal(shape) * 3 + 1e3).astype(dtype)
    fshape = tuple(shape[a] for a in np.atleast_1d(axis))
    g, b = rng.standard_normal(fshape), rng.standard_normal(fshape)
    mm = (rng.standard_normal(fshape) + 1e3).astype(dtype)
    mv = rng.random(fshape).astype(dtype) + 0.5
    kw = dict(axis=axis, training=False, moving_mean=mm, moving_variance=mv)
    checked = fastbn.batch_norm_forward(x, g, b, **kw)
    if first == "training":
        _bn.PLANS.clear()
        fastbn.batch_norm_forward(x, g, b, axis=axis)
    assert len(_bn.PLANS) == 1
    monkeypatch.setattr(_bn, "batch_norm_forward", None)       # planned from here on
    before = mm.copy(), mv.copy()
    planned = fastbn.batch_norm_forward(x, g, b, **kw)
    for a, c in zip(checked, planned):
        assert a.tobytes() == c.tobytes()
    assert mm.tobytes() == before[0].tobytes() and mv.tobytes() == before[1].tobytes()
    assert not np.shares_memory(planned[1], mm)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="negative"):
        fastbn.batch_norm_forward(x, g, b, **{**kw, "moving_variance": -mv})


@pytest.mark.parametrize("shape,axis,order,in_place,planned", [
    ((256, 300), -1, "C", False, True), ((256, 300), -1, "C", True, True),
    ((9, 4, 5), (1, 2), "C", False, True), ((9, 4, 5), (1, 2), "C", True, True),
    ((50, 4, 16), -1, "C", False, True), ((50, 4, 16), -1, "C", True, True),
    ((9, 4, 5), (1, 2), "F", False, False), ((9, 4, 5), (0, 2), "C", False, False)])
def test_planned_calls_write_into_out(shape, axis, order, in_place, planned, monkeypatch):
    """out= runs the plan when the kernels write it as it is (its kernel view is
    C-contiguous: plain (N, C), (9, 4, 5) axis (1, 2) viewed as (9, 20), narrow
    rows, (50, 4, 16) as (200, 16)), else the checked path; the same bits
    either way, in place too."""
    from fastbn import functional
    rng = np.random.default_rng(15)
    x = (rng.standard_normal(shape) * 3 + 1e3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y, m, s = fastbn.batch_norm_forward(x, None, None, axis=axis)
    dx, dg, db = fastbn.batch_norm_backward(dy, x, m, s, None, axis=axis)
    checked = []
    if planned:
        assert len(_bn.PLANS) == 1
        monkeypatch.setattr(_bn, "batch_norm_forward", None)
        monkeypatch.setattr(_bn, "batch_norm_backward", None)
    else:                                   # the checked path must run: count its calls
        for name in ("batch_norm_forward", "batch_norm_backward"):
            def spy(*a, _f=getattr(_bn, name), **k):
                checked.append(_f)
                return _f(*a, **k)
            monkeypatch.setattr(_bn, name, spy)
    out = np.asarray(x.copy(), order=order) if in_place else np.full(shape, np.nan, order=order,
                                                                      dtype=x.dtype)
    res = fastbn.batch_norm_forward(out if in_place else x, None, None, axis=axis, out=out)
    assert res[0] is out and out.tobytes() == y.tobytes()      # C order, whatever out's
    assert res[1].tobytes() == m.tobytes() and res[2].tobytes() == s.tobytes()
    out = np.asarray(dy.copy(), order=order) if in_place else np.full(shape, np.nan, order=order,
                                                                       dtype=x.dtype)
    res = fastbn.batch_norm_backward(out if in_place else dy, x, m, s, None, axis=axis, out=out)
    assert res[0] is out and out.tobytes() == dx.tobytes()
    assert res[1].tobytes() == dg.tobytes() and res[2].tobytes() == db.tobytes()
    assert len(checked) == (0 if planned else 2)


def test_plans_follow_the_thread_count_and_stay_few(monkeypatch):
    import types

    import numba
    from fastbn import functional
    x = np.ones((4, 3), np.float32)
    fastbn.batch_norm_forward(x, None, None)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert _bn.num_threads() == numba.get_num_threads() == 1
        fastbn.batch_norm_forward(x, None, None)
    finally:
        numba.set_num_threads(before)
    assert _bn.num_threads() == numba.get_num_threads()
    assert sorted(k[-1] for k in _bn.PLANS) == sorted({1, before})
    for stand_in in (None, types.SimpleNamespace(_is_initialized=True)):  # another Numba
        monkeypatch.setattr(_bn.dispatch, "_numba_parallel", stand_in)
        assert _bn.num_threads() == numba.get_num_threads()
    monkeypatch.undo()
    for n in range(2, 2 + _bn.PLANS_MAX):
        fastbn.batch_norm_forward(np.ones((n, 3)), None, None)
    assert 0 < len(_bn.PLANS) <= _bn.PLANS_MAX


# ------------------------------------------------------------------ out=
@pytest.mark.parametrize("shape,axis", [((64, 20), -1), ((4, 6, 5, 7), 1), ((6, 5, 7), (0, 2)),
                                        ((256, 40, 40), 1)])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_out_argument_gives_the_same_bits(shape, axis, order, dtype):
    rng = np.random.default_rng(3)
    x = np.asarray(rng.standard_normal(shape) * 2 + 5, dtype=dtype, order=order)
    dy = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
    y0, m0, s0 = fastbn.batch_norm_forward(x, None, None, axis=axis)
    dx0, dg0, db0 = fastbn.batch_norm_backward(dy, x, m0, s0, None, axis=axis)
    for out_order in ("C", "F"):
        out = np.full(shape, np.nan, dtype=dtype, order=out_order)
        y, m, s = fastbn.batch_norm_forward(x, None, None, axis=axis, out=out)
        assert y is out
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(m, m0)
        out2 = np.full(shape, np.nan, dtype=dtype, order=out_order)
        dx, dg, db = fastbn.batch_norm_backward(dy, x, m, s, None, axis=axis, out=out2)
        assert dx is out2
        np.testing.assert_array_equal(dx, dx0)
        np.testing.assert_array_equal(dg, dg0)


def test_out_may_be_the_input_itself():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 50)).astype(np.float32) + 3
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y0, m, s = fastbn.batch_norm_forward(x, None, None)
    dx0, _, _ = fastbn.batch_norm_backward(dy, x, m, s, None)
    dy_in = dy.copy()
    dx, _, _ = fastbn.batch_norm_backward(dy_in, x, m, s, None, out=dy_in)
    assert dx is dy_in
    np.testing.assert_array_equal(dx, dx0)
    y, _, _ = fastbn.batch_norm_forward(x, None, None, out=x)
    assert y is x
    np.testing.assert_array_equal(x, y0)


@pytest.mark.parametrize("out, match", [
    (np.zeros((4, 3), np.float32), "shape"),
    (np.zeros((5, 3), np.float64), "dtype"),
    ([[0.0] * 3] * 5, "NumPy array"),
])
@pytest.mark.parametrize("planned", [False, True])
def test_bad_out_is_explained(out, match, planned):
    """Also once a call on x is planned (fastbn.functional, planned calls)."""
    x = np.ones((5, 3), np.float32)
    if planned:
        _, m, s = fastbn.batch_norm_forward(x, None, None)
        fastbn.batch_norm_backward(x, x, m, s, None)
    with pytest.raises((ValueError, TypeError), match=match):
        fastbn.batch_norm_forward(x, None, None, out=out)
    with pytest.raises((ValueError, TypeError), match=match):
        fastbn.batch_norm_backward(x, x, np.zeros(3), np.ones(3), None, out=out)
    ro = np.zeros((5, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastbn.batch_norm_forward(x, None, None, out=ro)
    with pytest.raises(ValueError, match="read-only"):
        fastbn.batch_norm_backward(x, x, np.zeros(3), np.ones(3), None, out=ro)


def _overlap_cases():
    """(name, x, dy, beta, out): ``out`` shares memory with an input without
    being exactly it."""
    rng = np.random.default_rng(5)
    buf = rng.standard_normal(64)
    yield "x shifted by a row", buf[:32].reshape(8, 4), rng.standard_normal((8, 4)), None, \
        buf[4:36].reshape(8, 4)
    buf = rng.standard_normal(64)
    yield "dy shifted by a row", rng.standard_normal((8, 4)), buf[:32].reshape(8, 4), None, \
        buf[4:36].reshape(8, 4)
    buf = rng.standard_normal(40)
    yield "beta inside out", rng.standard_normal((8, 4)), rng.standard_normal((8, 4)), \
        buf[10:14], buf[4:36].reshape(8, 4)
    buf = rng.standard_normal((1001, 300)).astype(np.float32)
    yield "(1000, 300) shifted one row", buf[:1000], \
        rng.standard_normal((1000, 300)).astype(np.float32), None, buf[1:]


@pytest.mark.parametrize("case", list(_overlap_cases()), ids=lambda c: c[0])
@pytest.mark.parametrize("planned", [False, True])
def test_out_overlapping_an_input_gives_the_reference(case, planned):
    """As NumPy's ufuncs do: the result is what a fresh output would hold.
    Failed before the overlap check (off by 8.3, 10.6, 6,917), but for
    beta inside out, which the kernels happen to read before they write."""
    _, x, dy, beta, out = case
    x0, dy0, b0 = x.copy(), dy.copy(), None if beta is None else beta.copy()
    tol = dict(rtol=1e-4, atol=1e-4) if x.dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    y_ref, m_ref, s_ref = R.batch_norm_forward(x0, None, b0)
    dx_ref, dg_ref, _ = R.batch_norm_backward(dy0, x0, m_ref, s_ref)
    if planned:                              # leave a plan for these shapes first
        _, m, s = fastbn.batch_norm_forward(x0.copy(), None, b0)
        fastbn.batch_norm_backward(dy0.copy(), x0.copy(), m, s, None)
    y, m, s = fastbn.batch_norm_forward(x, None, beta, out=out)
    assert y is out
    np.testing.assert_allclose(y, y_ref, **tol)
    x[...], dy[...] = x0, dy0                # the forward wrote over them
    dx, dg, _ = fastbn.batch_norm_backward(dy, x, m, s, None, out=out)
    assert dx is out
    np.testing.assert_allclose(dx, dx_ref, **tol)
    np.testing.assert_allclose(dg, dg_ref, **tol)


def test_out_overlapping_moving_statistics_in_inference():
    buf = np.arange(40.0)
    mm, mv = buf[:4], np.full(4, 4.0)
    x = np.random.default_rng(6).standard_normal((8, 4))
    want = R.batch_norm_forward(x, training=False, moving_mean=mm.copy(), moving_variance=mv)[0]
    y, _, _ = fastbn.batch_norm_forward(x, None, None, training=False, moving_mean=mm,
                                        moving_variance=mv, out=buf[:32].reshape(8, 4))
    np.testing.assert_allclose(y, want, rtol=1e-12)


def test_out_the_same_memory_as_x_stays_in_place():
    """A second view of x's memory with x's strides is x: written directly (no
    fresh array: the kernels read each element before writing it). An
    interleaved out (disjoint, within x's bounds) is right too."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 50)).astype(np.float32) + 3
    assert not _bn.overlaps(x[...], (x,), ())
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y0, m, s = fastbn.batch_norm_forward(x, None, None)
    dx0, _, _ = fastbn.batch_norm_backward(dy, x, m, s, None)
    dx, _, _ = fastbn.batch_norm_backward(dy, x, m, s, None, out=x)    # backward, out=x
    np.testing.assert_array_equal(dx, dx0)
    x = rng.standard_normal((300, 50)).astype(np.float32) + 3
    y0 = fastbn.batch_norm_forward(x, None, None)[0]
    y, _, _ = fastbn.batch_norm_forward(x, None, None, out=x[...])
    np.testing.assert_array_equal(x, y0)
    buf = rng.standard_normal((300, 100)).astype(np.float32)
    a, b = buf[:, ::2], buf[:, 1::2]
    want = R.batch_norm_forward(a.copy())[0]
    y, _, _ = fastbn.batch_norm_forward(a, None, None, out=b)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ overflow
def test_float16_parameter_gradients_are_float32():
    """dbeta of 100,000 ones was inf in float16 (PyTorch's float16 parameters
    give inf too; its float32 parameters, float32)."""
    x = (np.random.default_rng(8).standard_normal((100_000, 2)) + 1).astype(np.float16)
    dy = np.ones_like(x)
    _, m, s = fastbn.batch_norm_forward(x, None, None)
    dx, dg, db = fastbn.batch_norm_backward(dy, x, m, s, None)
    assert dx.dtype == np.float16 and dg.dtype == db.dtype == np.float32
    np.testing.assert_array_equal(db, 100_000.0)
    _, dg_ref, _ = R.batch_norm_backward(dy, x, m, s)
    np.testing.assert_allclose(dg, dg_ref, rtol=1e-5, atol=1e-2)


def _runtime_warnings(rec, text):
    return [w for w in rec if issubclass(w.category, RuntimeWarning) and text in str(w.message)]


#: (shape, axis, FOLD_MIN_ROWS, fused kernel): how many kernel rows, chunks and
#: columns a feature's overflowing squares pass through.
_OVERFLOW_LAYOUTS = [
    pytest.param((64, 3), -1, 0, "rows", id="folded-one-row"),      # (1, 192)
    pytest.param((64, 3), -1, fastbn._config.FOLD_MIN_ROWS, "rows", id="rows-one-chunk"),
    pytest.param((512, 3), -1, fastbn._config.FOLD_MIN_ROWS, "rows",
                 id="folded-two-rows"),                                          # (2, 768)
    pytest.param((1000, 3), -1, 10**9, "rows", id="rows-eight-chunks"),  # Chan-merged
    pytest.param((4, 3, 64), 1, fastbn._config.FOLD_MIN_ROWS, None, id="grouped-rows"),  # (4, 192)
    pytest.param((4, 3, 4096), 1, fastbn._config.FOLD_MIN_ROWS, None, id="planes-two-chunks"),
    pytest.param((4, 16, 4096), 1, fastbn._config.FOLD_MIN_ROWS, "planes", id="planes-fused"),
]


@pytest.mark.parametrize("serial", [True, False], ids=["serial", "parallel"])
@pytest.mark.parametrize("shape,axis,fold_min_rows,kind", _OVERFLOW_LAYOUTS)
def test_overflowing_variance_warns_once_per_call(shape, axis, fold_min_rows, kind, serial,
                                                  monkeypatch):
    """float64 data near 1e300: var inf, invstd 0, the features' output all
    beta, silently. Now one warning a call (checked, then planned), and the
    moving statistics stay finite. Chunks of several rows gave NaN, not inf
    (``inf - inf`` in ``kernels._chunks._moments_from_sums``), and no warning;
    every layout, fused or split, serial or parallel, now gives what the
    float64 reference gives, and fused and split the same bits."""
    monkeypatch.setattr(fastbn._config, "FOLD_MIN_ROWS", fold_min_rows)
    for name in ("SERIAL_BELOW", "ROWS_SERIAL_BELOW"):
        monkeypatch.setattr(fastbn._config, name, 10**12 if serial else 0)
    _axes._layout.cache_clear()
    try:
        lay = _axes.layout(np.empty(shape), (axis % len(shape),))
        assert _bn.dispatch.fuse(lay.view(np.empty(shape)), lay, 1) == kind
        fused = _overflowing_variance_warns(shape, axis)
        monkeypatch.setattr(_bn.dispatch, "fuse", lambda xk, lay, arrays: None)
        _bn.PLANS.clear()
        split = _overflowing_variance_warns(shape, axis)
    finally:
        _axes._layout.cache_clear()     # no layout of the patched FOLD_MIN_ROWS stays
    for a, b in zip(fused, split):
        assert a.tobytes() == b.tobytes()


def _overflowing_variance_warns(shape, axis):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape) * 1e300
    dy = rng.standard_normal(shape)
    c = shape[axis]
    g, b = rng.standard_normal(c), rng.standard_normal(c)
    top = np.finfo(np.float64).max
    lay = _axes.layout(x, (axis % x.ndim,))
    planned = _bn.dispatch.fuse(lay.view(x), lay, 1) == "rows"
    with np.errstate(over="ignore"):                         # the reference's squares
        y_ref, m_ref, s_ref = R.batch_norm_forward(x, g, b, axis=axis)
        _, v_ref = R.moments(x, axis=R.reduced_axes(x.ndim, axis))
    assert np.isinf(v_ref).all() and (s_ref == 0).all()
    for call in range(2):                       # checked, then planned (rows)
        mm, mv = np.zeros(c), np.ones(c)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            y, m, s = fastbn.batch_norm_forward(x, g, b, axis=axis, moving_mean=mm,
                                                moving_variance=mv)
        assert len(_runtime_warnings(rec, "overflowed float64")) == 1, call
        assert len(rec) == 1
        np.testing.assert_array_equal(s, 0.0)
        np.testing.assert_array_equal(mv, top)
        np.testing.assert_array_equal(y, y_ref)             # beta, exactly
        np.testing.assert_allclose(m, m_ref, rtol=0, atol=1e-13 * 1e300)
        np.testing.assert_allclose(mm, 0.01 * m_ref, rtol=0, atol=1e-13 * 1e300)
    assert len(_bn.PLANS) == planned
    with warnings.catch_warnings(record=True) as rec:       # no moving statistics
        warnings.simplefilter("always")
        fastbn.batch_norm_forward(x, g, b, axis=axis)
    assert len(rec) == 1 and len(_runtime_warnings(rec, "overflowed float64")) == 1
    mean, var = fastbn.moments(x, axis=R.reduced_axes(x.ndim, axis))
    np.testing.assert_array_equal(var, v_ref)               # inf, not NaN
    dx, dg, db = fastbn.batch_norm_backward(dy, x, m, s, g, axis=axis)
    dx_ref, dg_ref, db_ref = R.batch_norm_backward(dy, x, m, s, g, axis=axis)
    np.testing.assert_array_equal(dx, dx_ref)               # zero: invstd is 0
    np.testing.assert_array_equal(dg, dg_ref)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-12)
    return y, m, s, mean, var, dx, dg, db


def test_one_overflowing_value_warns_and_leaves_other_features_alone():
    """One 1e300 among unit values in a chunk of several rows: its feature's
    squares overflow, and ``s2 - s1 * mean`` was ``inf - inf`` (NaN, with no
    warning, NaN moving statistics and NaN output). Now inf, as the float64
    reference gives; the other features keep their bits. Masked rows
    (:func:`fastbn.kernels._moments_rows_at`) too."""
    rng = np.random.default_rng(14)
    clean = rng.standard_normal((200, 3))
    x = clean.copy()
    x[50, 1] = 1e300
    mask = rng.random(200) < 0.8
    mask[50] = True
    top = np.finfo(np.float64).max
    for kwargs in ({}, {"mask": mask}):
        y0, m0, s0 = fastbn.batch_norm_forward(clean, None, None, **kwargs)
        with np.errstate(over="ignore"):
            _, m_ref, s_ref = R.batch_norm_forward(x[mask] if kwargs else x)
        mm, mv = np.zeros(3), np.ones(3)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            y, m, s = fastbn.batch_norm_forward(x, None, None, moving_mean=mm,
                                                moving_variance=mv, **kwargs)
        assert len(rec) == 1 and "the batch variance of 1 feature(s) overflowed float64" in str(
            rec[0].message)
        assert s[1] == 0 and s_ref[1] == 0 and mv[1] == top and np.isfinite(mm).all()
        np.testing.assert_allclose(m[1], m_ref[1], rtol=1e-12)
        np.testing.assert_array_equal(y[:, 1], 0.0)
        for a, b in ((y, y0), (m, m0), (s, s0)):
            assert a[..., [0, 2]].tobytes() == b[..., [0, 2]].tobytes()


def test_moving_statistics_stay_finite_and_recover():
    """A float32 model fed one 1e38 value stored moving_variance = inf, and
    inf * momentum is inf: that feature was beta in inference forever. Now
    float32's largest value, a warning, and later batches bring it down."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((32, 3)).astype(np.float32)
    x[4, 1] = 1e38
    mm, mv = np.zeros(3, np.float32), np.ones(3, np.float32)
    top = np.finfo(np.float32).max
    for call in range(2):                        # checked, then planned
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            fastbn.batch_norm_forward(x, None, None, moving_mean=mm, moving_variance=mv)
        assert len(_runtime_warnings(rec, "past float32's largest value")) == 1
        assert np.isfinite(mm).all() and mv[1] == top
    clean = rng.standard_normal((32, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(10):
            fastbn.batch_norm_forward(clean, None, None, moving_mean=mm, moving_variance=mv,
                                      momentum=0.5)
    assert mv[1] < top / 2**9


def test_moving_statistics_of_another_dtype_are_held_too():
    """float16 moving statistics (NumPy's update, not the kernels')."""
    x = np.zeros((32, 2), np.float32)
    x[0, 0] = 1e5                                # batch variance 3e8: past float16's 65504
    mm, mv = np.zeros(2, np.float16), np.ones(2, np.float16)
    with pytest.warns(RuntimeWarning, match="past float16's largest value"):
        fastbn.batch_norm_forward(x, None, None, moving_mean=mm, moving_variance=mv)
    assert mv[0] == np.finfo(np.float16).max and np.isfinite(mm).all()


def test_batch_norm_layer_fed_1e38_keeps_finite_moving_statistics():
    from fastbn import nn
    bn = nn.BatchNormalization()
    x = np.random.default_rng(11).standard_normal((32, 3)).astype(np.float32)
    x[0, 2] = 1e38
    with pytest.warns(RuntimeWarning, match="moving statistics"):
        bn(x, training=True)
    assert np.isfinite(bn.moving_variance.value).all()


def test_masked_moving_statistics_stay_finite():
    x = np.random.default_rng(12).standard_normal((32, 3)).astype(np.float32)
    x[2, 0] = 1e38
    mask = np.ones(32, bool)
    mask[5] = False
    mm, mv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.warns(RuntimeWarning, match="past float32's largest value"):
        fastbn.batch_norm_forward(x, None, None, moving_mean=mm, moving_variance=mv,
                                  mask=mask)
    assert np.isfinite(mv).all() and mv[0] == np.finfo(np.float32).max


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blend_running_matches_the_numpy_expression_bitwise(dtype):
    """PyTorch's running-statistics update in one kernel call: the NumPy
    expression fastbn.torch used, ``r.astype(float64) * (1 - m) + b * m``
    rounded once, bit for bit; False (and nothing written) for vectors it
    does not take."""
    rng = np.random.default_rng(21)
    for momentum in (0.1, 0.7, 1 / 3, 1.0):
        rm = (rng.standard_normal(50) * 10).astype(dtype)
        rv = (rng.random(50) * 5).astype(dtype)
        mean, var = rng.standard_normal(50) * 1e3, rng.random(50) * 7
        scale = 37 / 36
        want_m = (rm.astype(np.float64) * (1.0 - momentum) + mean * momentum).astype(dtype)
        want_v = (rv.astype(np.float64) * (1.0 - momentum)
                  + (var * scale) * momentum).astype(dtype)
        assert _bn.blend_running(rm, rv, mean, var, momentum, scale) is True
        assert rm.tobytes() == want_m.tobytes() and rv.tobytes() == want_v.tobytes()
    strided = np.zeros(100, dtype)[::2]
    for args in ((strided, rv), (rm, rv.astype(np.float16)), (rm, np.zeros(49, dtype))):
        before = [a.copy() for a in args]
        assert _bn.blend_running(*args, mean, var, 0.5, 1.0) is False
        assert all(a.tobytes() == b.tobytes() for a, b in zip(args, before))


def test_planned_training_gives_the_public_calls_bits():
    """fastbn.torch's planned calls against the public ones they replace (moving
    statistics of zeros at momentum 0): the same bits; None before a plan exists."""
    rng = np.random.default_rng(22)
    x = (rng.standard_normal((96, 40)) * 3 + 1e3).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    g, b = rng.standard_normal(40).astype(np.float32), None
    _bn.PLANS.clear()
    assert _bn.planned_training(x, 1, g, b, 1e-5) is None
    mm, mv = np.zeros(40), np.zeros(40)
    y, m, s = fastbn.batch_norm_forward(x, g, b, axis=1, epsilon=1e-5, moving_mean=mm,
                                        moving_variance=mv, momentum=0.0)
    want = (y, m, mv, s) + fastbn.batch_norm_backward(dy, x, m, s, g, axis=1)
    y2, m2, v2, s2 = _bn.planned_training(x, 1, g, b, 1e-5)
    got = (y2, m2, v2, s2) + _bn.planned_training_backward(dy, x, m2, s2, g, 1)
    for a, c in zip(got, want):
        assert a.dtype == c.dtype and a.tobytes() == c.tobytes()
    assert _bn.planned_training(x, 1, g, b, -1.0) is None      # checked: it raises
    assert _bn.planned_training(x, 1, g.astype(np.int32), b, 1e-5) is None
