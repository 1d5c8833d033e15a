"""The plan cache, and the entry points :mod:`fastbn.torch` calls.

A training step calls batch norm on the same shapes again and again, and so
does inference. The first call of each takes the checked path
(:mod:`fastbn._bn.checked`); when its input maps onto rows with one column per
feature (plain ``(N, C)``, axis -1; or ``(256, 28, 28)``, axis ``(1, 2)``) it
leaves a :class:`Plan`: the layout, the kernels and the column splits. Later
calls with the same (shape, strides, dtype, axis, threads) and arguments of
the plain kinds (float arrays of the feature shape or None, a float epsilon
and momentum, no ``out=`` or one the kernels write as it is) run the plan: the
same kernels on the same arguments, so the same bits; any other call takes the
checked path, so bad arguments fail with its errors. Planned calls skip the
checks' Python: 1.41x forward and 1.34x backward on (2, 300).

:mod:`fastbn.torch` runs a training step through :func:`planned_training` and
:func:`planned_training_backward` with arguments it makes itself (NumPy views
of its tensors, PyTorch's running statistics), without the public functions'
keyword handling and re-checks (forward 7.6 us against 9.1 us on (32, 64)
float32), or through the kernels' C entry points (:func:`native_plan`).
"""
import math
import os

import numpy as np

from .. import kernels as K
from .._axes import layout
from . import dispatch
from .checks import F64, KERNEL_DTYPES, check_epsilon, check_momentum, features, param_dtype
from .dispatch import (affine_vectors, cols, copied, direct_view, gamma_vector, kernel_view,
                       num_threads, overlaps, own_dtype_vector, per_column, serial, split)
from .moving import check_variance, flat, kernel_vector, warn_overflow

class Plan:
    __slots__ = ("lay", "fshape", "dense", "chunk", "forward", "forward_cols", "affine",
                 "backward", "backward_cols", "moving", "f64")

    def __init__(self, lay, xk):
        self.lay = lay
        self.fshape = lay.feature_shape
        self.dense = serial(xk)            # arrays must be C-contiguous (_kernel_view)
        self.chunk, self.forward_cols = split(xk)
        self.forward = dispatch.run(K._forward_rows_fused, xk)
        self.affine = dispatch.run(K._affine_rows, xk)    # inference: the same split as forward
        self.backward, self.backward_cols = dispatch.run(K._backward_rows_fused, xk, 2), cols(xk, 2)
        self.moving = lay._fident           # moving statistics update in kernel order
        self.f64 = xk.dtype == F64         # a batch variance can overflow (_check_variance)


#: plans by (shape, strides, dtype, axis, threads); emptied when full, and in a
#: forked child (a plan holds the parent's choice of parallel kernels)
PLANS = {}


PLANS_MAX = 256


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=PLANS.clear)


def plan_key(x, axis):
    """The plan key of a call on ``x`` with ``axis``, or None when no plan applies
    (only ndarrays, and an int or a tuple of ints: ``True == 1``, and a bool
    axis must still fail)."""
    if type(x) is not np.ndarray:
        return None
    if type(axis) is not int:
        if type(axis) is not tuple or any(type(a) is not int for a in axis):
            return None
    return x.shape, x.strides, x.dtype, axis, num_threads()


def remember_plan(x, axis, lay, xk):
    """Keep a plan for calls like this checked one (rows, one column per feature)."""
    key = plan_key(x, axis)
    if key is None or lay.copies or lay.interleaved or lay.count < 2:
        return                              # (one value per feature warns every call)
    if copied(lay.view(x)):
        return                              # _kernel_view copies it: the checked path does
    if len(PLANS) >= PLANS_MAX:
        PLANS.clear()
    PLANS[key] = Plan(lay, xk)


def plain_vector(v, fshape):
    """Whether ``v`` is None or a float ndarray of shape ``fshape``."""
    return v is None or (type(v) is np.ndarray and v.shape == fshape and v.dtype.kind == "f")


def moving_vector(v, fshape):
    """Whether ``v`` is a moving statistic the kernels update in place as it is."""
    return (type(v) is np.ndarray and v.shape == fshape and v.flags.writeable
            and kernel_vector(v))


def planned(x, axis, out, same=(), others=()):
    """``(plan, output, its kernel view)`` for a call on ``x`` with ``axis``, or None.

    The output is a fresh array, or ``out`` itself when the kernels write it as
    it is (:func:`dispatch.direct_view`, the checked path's rule: 1.27x forward
    with ``out=`` on ``(256, 28, 28)``, axis ``(1, 2)``). Any other ``out`` takes
    the checked path, which decides; so does an ``out`` that overlaps what the
    call reads (:func:`dispatch.overlaps`: ``x`` and the ``same`` arrays, unless
    it is exactly one of them, and the ``others``).
    """
    key = plan_key(x, axis)
    plan = PLANS.get(key) if key is not None else None
    if plan is None:
        return None
    if out is None:
        return (plan, *plan.lay.empty(x.dtype))
    if not (type(out) is np.ndarray and out.shape == x.shape and out.dtype == x.dtype
            and out.flags.writeable):
        return None
    kv = direct_view(out, x, plan.lay)
    if kv is None or overlaps(out, (x, *same), others):
        return None
    return plan, out, kv


def planned_forward(x, gamma, beta, axis, epsilon, training, moving_mean, moving_variance,
                    momentum, out):
    """:func:`fastbn.batch_norm_forward` by a plan, or None."""
    found = planned(x, axis, out, (), (gamma, beta, moving_mean, moving_variance))
    if found is None:
        return None
    fn = "batch_norm_forward"
    epsilon = check_epsilon(epsilon, fn)   # x and axis are good (a plan holds them), so
    momentum = check_momentum(momentum, fn)    # these are the checked path's first errors too
    plan, y, yk = found
    fshape = plan.fshape
    if not (plain_vector(gamma, fshape) and plain_vector(beta, fshape)):
        return None
    if training:
        if moving_mean is not None or moving_variance is not None:
            if not (plan.moving and moving_vector(moving_mean, fshape)
                    and moving_vector(moving_variance, fshape)):
                return None
    elif not (moving_mean is not None and moving_variance is not None
              and plain_vector(moving_mean, fshape) and plain_vector(moving_variance, fshape)):
        return None
    lay = plan.lay
    gamma_k, shift = affine_vectors(lay, gamma, beta, x.dtype)
    if training:
        mean_k, var_k, invstd_k = stats = np.empty((3, lay.channels))
        plan.forward(lay.view(x), gamma_k, shift, epsilon, yk, stats, plan.chunk,
                     plan.forward_cols)
        if moving_mean is not None:
            if K._update_moving_pair(flat(moving_mean), mean_k, flat(moving_variance), var_k,
                                     momentum):
                warn_overflow(lay, moving_mean, moving_variance, var_k, momentum, fn)
        elif plan.f64:
            check_variance(var_k, lay, fn)
    else:
        mean_k, invstd_k, scale_k = stats = np.empty((3, lay.channels))
        if not K._inference_vectors(own_dtype_vector(lay, moving_mean),
                                    own_dtype_vector(lay, moving_variance), gamma_k, epsilon,
                                    stats):
            return None                     # negative variances: the checked path says so
        plan.affine(lay.view(x), *per_column(lay, mean_k, scale_k, shift), yk,
                    plan.chunk, plan.forward_cols)
    return y, lay.from_kernel(mean_k), lay.from_kernel(invstd_k)


def planned_backward(dy, x, mean, invstd, gamma, axis, out):
    """:func:`fastbn.batch_norm_backward` (training) by a plan, or None."""
    found = planned(x, axis, out, (dy,), (mean, invstd, gamma))
    if (found is None or type(dy) is not np.ndarray or dy.shape != x.shape
            or dy.dtype != x.dtype):
        return None
    plan, dx, dxk = found
    fshape = plan.fshape
    if not (mean is not None and invstd is not None and plain_vector(mean, fshape)
            and plain_vector(invstd, fshape) and plain_vector(gamma, fshape)):
        return None
    lay = plan.lay
    invstd_k = lay.to_kernel(invstd)
    gamma_k = gamma_vector(lay, gamma, param_dtype(x.dtype, gamma))
    dgamma, dbeta = grads = np.empty((2, lay.channels), x.dtype)
    plan.backward(kernel_view(lay, dy), lay.view(x), lay.to_kernel(mean), invstd_k, gamma_k,
                  dxk, grads, plan.chunk, plan.backward_cols)
    return dx, lay.from_kernel(dgamma, x.dtype), lay.from_kernel(dbeta, x.dtype)


def planned_training(x, axis, gamma, beta, epsilon):
    """A training :func:`fastbn.batch_norm_forward` of ``x`` by its plan:
    ``(y, mean, var, invstd)``, ``var`` the biased batch variance, held within
    float64's range (as a ``moving_variance`` of zeros updated with momentum 0
    is, with its warnings), the statistics float64 vectors; or None when no
    plan applies or an argument is not of a plain kind (then call
    :func:`fastbn.batch_norm_forward`). The same kernels on the same arguments as
    the public call with ``moving_mean=np.zeros(C)``, ``moving_variance=np.zeros(C)``
    and ``momentum=0.0``, so the same bits."""
    key = plan_key(x, axis)
    plan = PLANS.get(key) if key is not None else None
    if (plan is None or type(epsilon) is not float or not 0.0 <= epsilon < math.inf
            or not (plain_vector(gamma, plan.fshape) and plain_vector(beta, plan.fshape))):
        return None
    lay = plan.lay
    c = lay.channels
    y, yk = lay.empty(x.dtype)
    gamma_k, shift = affine_vectors(lay, gamma, beta, x.dtype)
    mean_k, var_k, invstd_k = stats = np.empty((3, c))
    plan.forward(lay.view(x), gamma_k, shift, epsilon, yk, stats, plan.chunk, plan.forward_cols)
    mean_b, var_b = np.zeros(c), np.zeros(c)
    if K._update_moving_pair(mean_b, mean_k, var_b, var_k, 0.0):
        warn_overflow(lay, mean_b, var_b, var_k, 0.0, "batch_norm_forward")
    return y, lay.from_kernel(mean_k), lay.from_kernel(var_b), lay.from_kernel(invstd_k)


def planned_training_backward(dy, x, mean, invstd, gamma, axis):
    """:func:`fastbn.batch_norm_backward` (training) by the plan of ``(x, axis)``, or
    None (then call it): :func:`planned_backward` without ``out``."""
    return planned_backward(dy, x, mean, invstd, gamma, axis, None)


def native_plan(x, axis):
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
    (:func:`fastbn._bn.dispatch.fuse`). Called with these, the kernels compute what
    :func:`planned_training`, :func:`planned_training_backward` (or the
    checked calls, for planes) and :func:`fastbn._bn.moving.blend_running` do, bit for bit."""
    from ..kernels import cabi
    key = plan_key(x, axis)
    plan = PLANS.get(key) if key is not None else None
    if x.dtype not in KERNEL_DTYPES:
        return False
    one = num_threads() == 1       # one thread: the serial twins (the same bits), without
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
        lay = layout(x, features(x, axis, "batch_norm_forward"))
        if lay.copies or lay.interleaved or lay.count < 2:
            return False
        xk = lay.view(x)
        if lay.kind == "rows":
            return None if lay.group == 1 and not copied(xk) else False
        if not (xk.flags.c_contiguous and dispatch.fuse(xk, lay, 2) == "planes"):
            return False
        serial = one or dispatch.serial(xk)
        forward = cabi.address("forward_planes", dtype, serial)
        backward = cabi.address("backward_planes", dtype, serial)
        split = dict(chunk=0, forward_cols=0, backward_cols=0)
    d0, d1, d2 = xk.shape if xk.ndim == 3 else (*xk.shape, 1)
    return dict(forward=forward, backward=backward, hold=cabi.address("hold", "float64"),
                blend32=cabi.address("blend", "float32"), blend64=cabi.address("blend", "float64"),
                d0=d0, d1=d1, d2=d2, features=lay.channels, **split)
