"""Non-temporal stores of large rows outputs (``kernels._intrinsics.stream``):
the same bytes as ordinary stores, wherever the output starts."""
import numpy as np
import pytest
from numba import njit

import fastbn
from fastbn import _config
from fastbn._axes import _empty
from fastbn.kernels._intrinsics import LINE, store_fence, stream


@njit
def _copy(dst, src):
    stream(dst, src)
    store_fence()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stream_copies_every_element_and_nothing_else(dtype):
    rng = np.random.default_rng(0)
    item = np.dtype(dtype).itemsize
    for start in range(0, 2 * LINE // item + 1):
        for n in (0, 1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257):
            big = np.full(512 + 64, -1.0, dtype)
            src = rng.standard_normal(n).astype(dtype)
            _copy(big[start:start + n], src)
            assert np.array_equal(big[start:start + n], src)
            assert (big[:start] == -1).all() and (big[start + n:] == -1).all()


def test_large_outputs_start_on_a_cache_line():
    for nbytes in (_config.STREAM_MIN_BYTES, _config.FRESH_PAGES_FROM // 2):
        a = _empty((nbytes // 4,), np.float32)
        assert a.__array_interface__["data"][0] % LINE == 0 and a.shape == (nbytes // 4,)
    x = np.ones((32, 56, 56, 64), np.float32)           # NHWC, 25.7 MB
    y, _, _ = fastbn.batch_norm_forward(x, None, None)
    assert y.__array_interface__["data"][0] % LINE == 0
    assert y.shape == x.shape and y.flags.c_contiguous


def test_streamed_outputs_equal_ordinary_stores():
    """E's NHWC (32, 56, 56, 64) fp32: fresh outputs (on a cache line, streamed)
    against out= buffers 16 bytes off a line (ordinary stores)."""
    shape = (32, 56, 56, 64)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 1e3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2, 64).astype(np.float32)
    beta = rng.standard_normal(64).astype(np.float32)
    assert x.nbytes >= _config.STREAM_MIN_BYTES

    def off_line():
        raw = np.empty(x.size + 64, np.float32)
        skip = (-raw.__array_interface__["data"][0] % LINE) // 4 + 4
        return raw[skip:skip + x.size].reshape(shape)

    y, mean, invstd = fastbn.batch_norm_forward(x, gamma, beta)
    y2, mean2, invstd2 = fastbn.batch_norm_forward(x, gamma, beta, out=off_line())
    assert y.tobytes() == y2.tobytes() and mean.tobytes() == mean2.tobytes()
    mm, mv = mean.astype(np.float64), (1 / invstd.astype(np.float64)) ** 2
    yi = fastbn.batch_norm_forward(x, gamma, beta, training=False, moving_mean=mm,
                                   moving_variance=mv)[0]
    yi2 = fastbn.batch_norm_forward(x, gamma, beta, training=False, moving_mean=mm,
                                    moving_variance=mv, out=off_line())[0]
    assert yi.tobytes() == yi2.tobytes()
    dx, dg, db = fastbn.batch_norm_backward(dy, x, mean, invstd, gamma)
    dx2, dg2, db2 = fastbn.batch_norm_backward(dy, x, mean, invstd, gamma, out=off_line())
    assert dx.tobytes() == dx2.tobytes() and dg.tobytes() == dg2.tobytes()
    dy_own = _empty(shape, np.float32)               # in place, on a line: streamed over dy
    dy_own[...] = dy
    dx3 = fastbn.batch_norm_backward(dy_own, x, mean, invstd, gamma, out=dy_own)[0]
    assert dx3 is dy_own and dx.tobytes() == dx3.tobytes()
    # and right: the float64 textbook formulas
    xd, gd = x.astype(np.float64), dy.astype(np.float64)
    m, s = xd.mean((0, 1, 2)), 1 / np.sqrt(xd.var((0, 1, 2)) + 1e-3)
    np.testing.assert_allclose(y, (xd - m) * s * gamma + beta, rtol=0, atol=2e-5)
    xh = (xd - m) * s
    ref = gamma * s * (gd - gd.mean((0, 1, 2)) - xh * (gd * xh).mean((0, 1, 2)))
    np.testing.assert_allclose(dx, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
