"""C entry points to the fused training kernels, for native callers.

:mod:`fastbn.torch`'s C++ operator calls fastbn's kernels without Python:
each entry point here is a Numba ``cfunc`` that views raw pointers as the
C-contiguous arrays the kernel takes and calls it, so a native caller gets
the same machine code and the same bits as a call from Python. An entry point
is compiled on first request (about 1 s, then from Numba's cache) for one
dtype and one variant (serial or parallel).

Signatures (``int64`` sizes, ``T*`` the input's float32 or float64 arrays).
The forward and backward entry points take the kernel view of ``x`` as three
sizes ``d0, d1, d2`` and two split values ``a, b``: rows ``(d0, d1)`` (``d2``
is 1) with ``rows_per_chunk, cols_per_block``; planes ``(d0, d1, d2)`` =
``(outer, C, inner)``, chunked by :data:`._chunks.PLANE_CHUNK` (``a``, ``b``
unused).

* ``forward(T* x, d0, d1, d2, T* gamma, T* beta, features, double eps, T* y,
  double* stats, a, b)``: :func:`._forward_rows_fused` (``forward``) or
  :func:`._forward_planes_fused` (``forward_planes``, shifted by each
  feature's first finite value, as the Python calls), ``stats``
  ``(3, features)``;
* ``backward(T* dy, T* x, d0, d1, d2, double* mean, double* invstd, T* gamma,
  features, T* dx, T* grads, a, b)``: :func:`._backward_rows_fused`
  (``backward``) or :func:`._backward_planes_fused` (``backward_planes``),
  ``grads`` ``(2, features)``;
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
from ._chunks import PLANE_CHUNK
from .fused import (_backward_planes_fused, _backward_rows_fused, _forward_planes_fused,
                    _forward_rows_fused)
from .normalize import _blend_pair, _finite_shift, _update_moving_pair

# the dispatchers, as globals the entry points' bodies name (Numba freezes them)
_forward_serial, _forward_parallel = _forward_rows_fused.serial, _forward_rows_fused.parallel
_backward_serial, _backward_parallel = _backward_rows_fused.serial, _backward_rows_fused.parallel
_forward_planes_serial = _forward_planes_fused.serial
_forward_planes_parallel = _forward_planes_fused.parallel
_backward_planes_serial = _backward_planes_fused.serial
_backward_planes_parallel = _backward_planes_fused.parallel


def forward_serial(xp, d0, d1, d2, gp, bp, features, eps, yp, sp, a, b):
    _forward_serial(carray(xp, (d0, d1)), carray(gp, (features,)), carray(bp, (features,)), eps,
                    carray(yp, (d0, d1)), carray(sp, (3, features)), a, b)


def forward_parallel(xp, d0, d1, d2, gp, bp, features, eps, yp, sp, a, b):
    _forward_parallel(carray(xp, (d0, d1)), carray(gp, (features,)), carray(bp, (features,)),
                      eps, carray(yp, (d0, d1)), carray(sp, (3, features)), a, b)


def backward_serial(dyp, xp, d0, d1, d2, mp, ip, gp, features, dxp, grp, a, b):
    _backward_serial(carray(dyp, (d0, d1)), carray(xp, (d0, d1)), carray(mp, (features,)),
                     carray(ip, (features,)), carray(gp, (features,)), carray(dxp, (d0, d1)),
                     carray(grp, (2, features)), a, b)


def backward_parallel(dyp, xp, d0, d1, d2, mp, ip, gp, features, dxp, grp, a, b):
    _backward_parallel(carray(dyp, (d0, d1)), carray(xp, (d0, d1)), carray(mp, (features,)),
                       carray(ip, (features,)), carray(gp, (features,)), carray(dxp, (d0, d1)),
                       carray(grp, (2, features)), a, b)


def forward_planes_serial(xp, d0, d1, d2, gp, bp, features, eps, yp, sp, a, b):
    x = carray(xp, (d0, d1, d2))
    _forward_planes_serial(x, _finite_shift(x[0, :, 0]), carray(gp, (features,)),
                           carray(bp, (features,)), eps, carray(yp, (d0, d1, d2)),
                           carray(sp, (3, features)), PLANE_CHUNK)


def forward_planes_parallel(xp, d0, d1, d2, gp, bp, features, eps, yp, sp, a, b):
    x = carray(xp, (d0, d1, d2))
    _forward_planes_parallel(x, _finite_shift(x[0, :, 0]), carray(gp, (features,)),
                             carray(bp, (features,)), eps, carray(yp, (d0, d1, d2)),
                             carray(sp, (3, features)), PLANE_CHUNK)


def backward_planes_serial(dyp, xp, d0, d1, d2, mp, ip, gp, features, dxp, grp, a, b):
    _backward_planes_serial(carray(dyp, (d0, d1, d2)), carray(xp, (d0, d1, d2)),
                            carray(mp, (features,)), carray(ip, (features,)),
                            carray(gp, (features,)), carray(dxp, (d0, d1, d2)),
                            carray(grp, (2, features)), PLANE_CHUNK)


def backward_planes_parallel(dyp, xp, d0, d1, d2, mp, ip, gp, features, dxp, grp, a, b):
    _backward_planes_parallel(carray(dyp, (d0, d1, d2)), carray(xp, (d0, d1, d2)),
                              carray(mp, (features,)), carray(ip, (features,)),
                              carray(gp, (features,)), carray(dxp, (d0, d1, d2)),
                              carray(grp, (2, features)), PLANE_CHUNK)


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
            "backward": (backward_serial, backward_parallel),
            "forward_planes": (forward_planes_serial, forward_planes_parallel),
            "backward_planes": (backward_planes_serial, backward_planes_parallel)}
_COMPILED = {}


def _signature(name, t):
    p, d = types.CPointer(t), types.CPointer(_F64)
    if name.startswith("forward"):
        return types.void(p, _I64, _I64, _I64, p, p, _I64, _F64, p, d, _I64, _I64)
    if name.startswith("backward"):
        return types.void(p, p, _I64, _I64, _I64, d, d, p, _I64, p, p, _I64, _I64)
    if name == "hold":
        return _I64(d, d, d, d, _I64)
    return types.void(p, d, p, d, _I64, _F64, _F64)       # blend


def address(name, dtype, serial=True):
    """The C function pointer of entry point ``name`` ("forward", "backward",
    "forward_planes", "backward_planes", "hold", "blend") for arrays of ``dtype`` (a NumPy dtype name: "float32"
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
