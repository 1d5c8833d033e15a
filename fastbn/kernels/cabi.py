"""C entry points to the fused training kernels, for native callers.

:mod:`fastbn.torch`'s C++ operator calls fastbn's kernels without Python:
each entry point here is a Numba ``cfunc`` that views raw pointers as the
C-contiguous arrays the kernel takes and calls it, so a native caller gets
the same machine code and the same bits as a call from Python. An entry point
is compiled on first request (about 1 s, then from Numba's cache) for one
dtype and one variant (serial or parallel).

Signatures (``int64`` sizes, ``T*`` the input's float32 or float64 arrays):

* ``forward(T* x, n, c, T* gamma, T* beta, features, double eps, T* y,
  double* stats, rows_per_chunk, cols_per_block)``: :func:`._forward_rows_fused`
  on ``x`` of ``(n, c)``, ``stats`` ``(3, features)``;
* ``backward(T* dy, T* x, n, c, double* mean, double* invstd, T* gamma,
  features, T* dx, T* grads, rows_per_chunk, cols_per_block)``:
  :func:`._backward_rows_fused`, ``grads`` ``(2, features)``;
* ``hold(double* mean, double* var, double* mean_out, double* var_out,
  features) -> int64``: :func:`._update_moving_pair` of zeros with momentum
  0, which copies the statistics and holds an overflowed variance at
  float64's largest value (returns how many were held);
* ``blend(R* running_mean, double* mean, R* running_var, double* var,
  features, double weight, double var_scale)``: :func:`._blend_pair`.
"""
import numba
from numba import carray, types

from .._config import CACHE
from .fused import _backward_rows_fused, _forward_rows_fused
from .normalize import _blend_pair, _update_moving_pair

# the dispatchers, as globals the entry points' bodies name (Numba freezes them)
_forward_serial, _forward_parallel = _forward_rows_fused.serial, _forward_rows_fused.parallel
_backward_serial, _backward_parallel = _backward_rows_fused.serial, _backward_rows_fused.parallel


def forward_serial(xp, n, c, gp, bp, features, eps, yp, sp, chunk, cols):
    _forward_serial(carray(xp, (n, c)), carray(gp, (features,)), carray(bp, (features,)), eps,
                    carray(yp, (n, c)), carray(sp, (3, features)), chunk, cols)


def forward_parallel(xp, n, c, gp, bp, features, eps, yp, sp, chunk, cols):
    _forward_parallel(carray(xp, (n, c)), carray(gp, (features,)), carray(bp, (features,)), eps,
                      carray(yp, (n, c)), carray(sp, (3, features)), chunk, cols)


def backward_serial(dyp, xp, n, c, mp, ip, gp, features, dxp, grp, chunk, cols):
    _backward_serial(carray(dyp, (n, c)), carray(xp, (n, c)), carray(mp, (features,)),
                     carray(ip, (features,)), carray(gp, (features,)), carray(dxp, (n, c)),
                     carray(grp, (2, features)), chunk, cols)


def backward_parallel(dyp, xp, n, c, mp, ip, gp, features, dxp, grp, chunk, cols):
    _backward_parallel(carray(dyp, (n, c)), carray(xp, (n, c)), carray(mp, (features,)),
                       carray(ip, (features,)), carray(gp, (features,)), carray(dxp, (n, c)),
                       carray(grp, (2, features)), chunk, cols)


def hold(mp, vp, mop, vop, features):
    mean_out, var_out = carray(mop, (features,)), carray(vop, (features,))
    mean_out[:] = 0.0
    var_out[:] = 0.0
    return _update_moving_pair(mean_out, carray(mp, (features,)), var_out,
                               carray(vp, (features,)), 0.0)


def blend(rmp, mp, rvp, vp, features, weight, var_scale):
    _blend_pair(carray(rmp, (features,)), carray(mp, (features,)), carray(rvp, (features,)),
                carray(vp, (features,)), weight, var_scale)


_I64, _F64 = types.int64, types.float64
_DTYPES = {"float32": types.float32, "float64": types.float64}
_PYFUNCS = {"forward": (forward_serial, forward_parallel),
            "backward": (backward_serial, backward_parallel)}
_COMPILED = {}


def _signature(name, t):
    p, d = types.CPointer(t), types.CPointer(_F64)
    if name == "forward":
        return types.void(p, _I64, _I64, p, p, _I64, _F64, p, d, _I64, _I64)
    if name == "backward":
        return types.void(p, p, _I64, _I64, d, d, p, _I64, p, p, _I64, _I64)
    if name == "hold":
        return _I64(d, d, d, d, _I64)
    return types.void(p, d, p, d, _I64, _F64, _F64)       # blend


def address(name, dtype, serial=True):
    """The C function pointer of entry point ``name`` ("forward", "backward",
    "hold", "blend") for arrays of ``dtype`` (a NumPy dtype name: "float32"
    or "float64"; hold's arrays are always float64), the serial or parallel
    kernel. Compiled on first request, then kept."""
    key = (name, dtype, serial)
    fn = _COMPILED.get(key)
    if fn is None:
        if name in _PYFUNCS:
            py = _PYFUNCS[name][0 if serial else 1]
            if not serial:
                # a parallel entry point loaded from the cache needs the thread
                # pool's symbols (LLVM aborts the process without them)
                from numba.np.ufunc import parallel
                parallel._launch_threads()
        else:
            py = hold if name == "hold" else blend
        fn = numba.cfunc(_signature(name, _DTYPES[dtype]), nogil=True, cache=CACHE)(py)
        _COMPILED[key] = fn
    return fn.address
