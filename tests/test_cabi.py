"""fastbn.kernels.cabi: the kernels' C entry points give the bits of the
kernels called from Python (ctypes stands in for a native caller)."""
import ctypes
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastbn import kernels as K
from fastbn.kernels import cabi

ROOT = Path(__file__).resolve().parents[1]


def _fn(name, dtype, serial, restype, *argtypes):
    return ctypes.CFUNCTYPE(restype, *argtypes)(cabi.address(name, dtype, serial))


def _p(a):
    return a.ctypes.data


@pytest.mark.parametrize("serial", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,chunk,cols", [((32, 64), 128, 1024), ((300, 40), 75, 256),
                                              ((4, 12), 128, 1024)])
def test_entry_points_give_the_kernels_bits(shape, chunk, cols, dtype, serial):
    rng = np.random.default_rng(1)
    n, c = shape
    features = 4 if c == 12 else c          # (4, 12): rows folded 3 to a kernel row
    x = (rng.standard_normal(shape) * 3 + 1e3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.standard_normal(features).astype(dtype)
    beta = rng.standard_normal(features).astype(dtype)
    kern = K._forward_rows_fused.serial if serial else K._forward_rows_fused.parallel
    y, stats = np.empty_like(x), np.empty((3, features))
    kern(x, gamma, beta, 1e-5, y, stats, chunk, cols)
    y_c, stats_c = np.empty_like(x), np.empty((3, features))
    _forward("forward", dtype, serial)(_p(x), n, c, 1, _p(gamma), _p(beta), features, 1e-5,
                                       _p(y_c), _p(stats_c), chunk, cols)
    assert y_c.tobytes() == y.tobytes() and stats_c.tobytes() == stats.tobytes()

    kern = K._backward_rows_fused.serial if serial else K._backward_rows_fused.parallel
    dx, grads = np.empty_like(x), np.empty((2, features), dtype)
    kern(dy, x, stats[0], stats[2], gamma, dx, grads, chunk, cols)
    dx_c, grads_c = np.empty_like(x), np.empty((2, features), dtype)
    _backward("backward", dtype, serial)(_p(dy), _p(x), n, c, 1, _p(stats[0]), _p(stats[2]),
                                         _p(gamma), features, _p(dx_c), _p(grads_c), chunk, cols)
    assert dx_c.tobytes() == dx.tobytes() and grads_c.tobytes() == grads.tobytes()


def _forward(name, dtype, serial):
    i64, f64, vp = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    return _fn(name, dtype, serial, None, vp, i64, i64, i64, vp, vp, i64, f64, vp, vp, i64, i64)


def _backward(name, dtype, serial):
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    return _fn(name, dtype, serial, None, vp, vp, i64, i64, i64, vp, vp, vp, i64, vp, vp, i64,
               i64)


@pytest.mark.parametrize("serial", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_planes_entry_points_give_the_kernels_bits(dtype, serial):
    """Planes (outer, C, inner): the fused kernels, shifted by each feature's
    first finite value (a NaN there: shifted by 0) as fastbn._bn.shift."""
    rng = np.random.default_rng(3)
    shape = (3, 16, 200)
    x = (rng.standard_normal(shape) * 3 + 1e3).astype(dtype)
    x[0, 2, 0] = np.nan
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = rng.standard_normal(16).astype(dtype), rng.standard_normal(16).astype(dtype)
    fwd = K._forward_planes_fused.serial if serial else K._forward_planes_fused.parallel
    y, stats = np.empty_like(x), np.empty((3, 16))
    fwd(x, K._finite_shift(x[0, :, 0]), gamma, beta, 1e-5, y, stats, K.PLANE_CHUNK)
    y_c, stats_c = np.empty_like(x), np.empty((3, 16))
    _forward("forward_planes", dtype, serial)(_p(x), *shape, _p(gamma), _p(beta), 16, 1e-5,
                                              _p(y_c), _p(stats_c), 0, 0)
    assert y_c.tobytes() == y.tobytes() and stats_c.tobytes() == stats.tobytes()
    bwd = K._backward_planes_fused.serial if serial else K._backward_planes_fused.parallel
    dx, grads = np.empty_like(x), np.empty((2, 16), dtype)
    bwd(dy, x, stats[0], stats[2], gamma, dx, grads, K.PLANE_CHUNK)
    dx_c, grads_c = np.empty_like(x), np.empty((2, 16), dtype)
    _backward("backward_planes", dtype, serial)(_p(dy), _p(x), *shape, _p(stats[0]),
                                                _p(stats[2]), _p(gamma), 16, _p(dx_c),
                                                _p(grads_c), 0, 0)
    assert dx_c.tobytes() == dx.tobytes() and grads_c.tobytes() == grads.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hold_and_blend_give_the_kernels_bits(dtype):
    rng = np.random.default_rng(2)
    mean, var = rng.standard_normal(7), rng.random(7) * 3
    var[2] = np.inf
    out = np.empty((2, 7))
    i64, f64, vp = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    held = _fn("hold", "float64", True, i64, vp, vp, vp, vp, i64)(
        _p(mean), _p(var), _p(out[0]), _p(out[1]), 7)
    want_m, want_v = np.zeros(7), np.zeros(7)
    assert held == K._update_moving_pair(want_m, mean, want_v, var, 0.0) == 1
    assert out[0].tobytes() == want_m.tobytes() and out[1].tobytes() == want_v.tobytes()
    rm, rv = rng.standard_normal(7).astype(dtype), rng.random(7).astype(dtype)
    rm_c, rv_c = rm.copy(), rv.copy()
    K._blend_pair(rm, mean, rv, out[1], 0.1, 8 / 7)
    _fn("blend", dtype, True, None, vp, vp, vp, vp, i64, f64, f64)(
        _p(rm_c), _p(mean), _p(rv_c), _p(out[1]), 7, 0.1, 8 / 7)
    assert rm_c.tobytes() == rm.tobytes() and rv_c.tobytes() == rv.tobytes()


def test_parallel_entry_point_loads_from_the_cache_first():
    """Every entry point asked for before any parallel kernel ran: twice, in
    new processes (the second loads them from Numba's cache, which aborted the
    process when the thread pool's symbols were not loaded yet)."""
    code = ("from fastbn.kernels import cabi\n"
            "print(all(cabi.address(name, dtype, serial) > 0 for name in ('forward', 'backward',\n"
            "          'forward_planes', 'backward_planes')\n"
            "          for dtype in ('float32', 'float64') for serial in (False, True)))")
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr[-2000:]
