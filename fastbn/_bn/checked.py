"""The checked forward, backward and moments: every argument validated, with
the ``merge`` / ``reduce`` hooks of :mod:`fastbn.distributed`."""
import warnings

import numpy as np

from .. import kernels as K
from .._axes import layout, normalize_axis
from . import dispatch
from .checks import (F64, check_epsilon, check_momentum, check_moving, check_training,
                     feature_array, features, float_input, param_dtype)
from .dispatch import (affine, affine_vectors, finish, gamma_vector, grad_sums, grad_x,
                       kernel_view, output, split, stats)
from .moving import check_variance, moving_kernel_vectors, update_moving, warn_overflow
from .plans import remember_plan

def moments(x, axis, keepdims, ddof, merge=None):
    """:func:`fastbn.moments`, with the ``merge`` hook of :func:`batch_norm_forward`
    (:mod:`fastbn.distributed`): this process's ``x`` may then have no elements."""
    fn = "moments"
    xk_in, out_dtype = float_input(x, "x", fn)
    reduced = normalize_axis(axis, xk_in.ndim, fn=fn, allow_none=True)
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (int, np.integer, float)):
        raise TypeError(f"{fn}: ddof must be a number, got {ddof!r}")
    feats = tuple(a for a in range(xk_in.ndim) if a not in reduced)
    lay = layout(xk_in, feats)
    c, n = lay.channels, lay.count
    if c and n == 0 and merge is None:
        raise ValueError(f"{fn}: x of shape {xk_in.shape} has no elements along "
                         f"axis={axis!r}; there is nothing to average")
    mean_k, m2_k = (stats(kernel_view(lay, xk_in), lay) if c and n
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


def batch_norm_forward(x, gamma, beta, axis, epsilon, training, moving_mean, moving_variance,
                       momentum, merge=None, out=None):
    """:func:`fastbn.batch_norm_forward`, with a hook for :mod:`fastbn.distributed`.

    ``merge(lay, n, mean_k, m2_k) -> (n, mean_k, m2_k)``, given in training,
    turns this process's batch statistics into those of the global batch;
    this process's ``x`` may then have no rows.
    """
    fn = "batch_norm_forward"
    xk_in, out_dtype = float_input(x, "x", fn)
    feats = features(xk_in, axis, fn)
    epsilon = check_epsilon(epsilon, fn)
    momentum = check_momentum(momentum, fn)
    check_training(training, fn)
    lay = layout(xk_in, feats)
    fshape = lay.feature_shape
    if gamma is not None:
        gamma = feature_array(gamma, fshape, "gamma", fn, axis)
    if beta is not None:
        beta = feature_array(beta, fshape, "beta", fn, axis)
    if (moving_mean is None) != (moving_variance is None):
        raise ValueError(f"{fn}: pass both moving_mean and moving_variance, or neither")
    if training:
        if moving_mean is not None:
            for name, arr in (("moving_mean", moving_mean), ("moving_variance", moving_variance)):
                check_moving(arr, fshape, name, fn, axis)
    else:
        if moving_mean is None:
            raise ValueError(f"{fn}: training=False normalizes with the moving statistics; "
                             f"pass moving_mean= and moving_variance=")
        moving_mean = feature_array(moving_mean, fshape, "moving_mean", fn, axis)
        moving_variance = feature_array(moving_variance, fshape, "moving_variance", fn, axis)
        if moving_variance.size and moving_variance.min() < 0:   # np.any: 3x slower
            raise ValueError(f"{fn}: moving_variance has negative entries")
    c, n = lay.channels, lay.count
    if c and n == 0 and merge is None:
        raise ValueError(f"{fn}: x of shape {xk_in.shape} has no elements per feature "
                         f"(axis={axis!r}); batch statistics need at least one")
    y, yk = output(out, xk_in, out_dtype, lay, fn, (),
                   (gamma, beta, moving_mean, moving_variance))
    xk = kernel_view(lay, xk_in)
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
    gamma_k, shift = affine_vectors(lay, gamma, beta, xk.dtype)
    fused = dispatch.fuse(xk, lay, 1) if training and merge is None else None
    if fused:
        mean_k, var_k, invstd_k = stats = np.empty((3, c))
        if fused == "planes":
            dispatch.run(K._forward_planes_fused, xk)(xk, dispatch.shift(xk, lay), gamma_k,
                                                      shift, float(epsilon), yk, stats,
                                                      K.PLANE_CHUNK)
        else:
            dispatch.run(K._forward_rows_fused, xk)(xk, gamma_k, shift, float(epsilon), yk, stats,
                                                    *split(xk))
            if training is True and xk_in is x:
                remember_plan(x, axis, lay, xk)
    elif training:
        mean_k, m2_k = dispatch.stats(xk, lay) if c and n else (np.zeros(c), np.zeros(c))
        if merge is not None:
            n, mean_k, m2_k = merge(lay, n, mean_k, m2_k)
        var_k = m2_k / max(n, 1)
    else:
        mean_k, var_k = moving_kernel_vectors(lay, moving_mean, moving_variance)
        if (training is False and merge is None and xk_in is x
                and dispatch.fuse(xk, lay, 1) == "rows"):
            remember_plan(x, axis, lay, xk)
    if not fused:
        invstd_k, scale_k = K._invstd_scale(var_k, gamma_k, float(epsilon))
        affine(xk, mean_k, scale_k, shift, yk, lay)
    mean, invstd = lay.from_kernel(mean_k), lay.from_kernel(invstd_k)
    if training and moving_mean is not None:
        if update_moving(lay, moving_mean, mean_k, moving_variance, var_k, float(momentum)):
            warn_overflow(lay, moving_mean, moving_variance, var_k, momentum, fn)
    elif training and xk.dtype == F64 and c:
        check_variance(var_k, lay, fn)
    return finish(y, out, xk_in, out_dtype, lay), mean, invstd


def batch_norm_backward(dy, x, mean, invstd, gamma, axis, training, reduce=None, out=None):
    """:func:`fastbn.batch_norm_backward`, with a hook for :mod:`fastbn.distributed`.

    ``reduce(lay, n, sum_g, sum_gx) -> (n, sum_g, sum_gx)``, given in
    training, sums the two per-feature sums and the count over the global
    batch; ``dx`` uses the totals, ``dgamma``/``dbeta`` stay this process's
    share. This process's ``x`` may then have no rows.
    """
    fn = "batch_norm_backward"
    check_training(training, fn)
    xk_in, out_dtype = float_input(x, "x", fn)
    dy_in, _ = float_input(dy, "dy", fn)
    if dy_in.shape != xk_in.shape:
        raise ValueError(f"{fn}: dy has shape {dy_in.shape} but x has shape {xk_in.shape}; "
                         f"dy is the gradient of the forward output and must be shaped like x")
    if dy_in.dtype != xk_in.dtype:
        dy_in = dy_in.astype(xk_in.dtype)
    feats = features(xk_in, axis, fn)
    lay = layout(xk_in, feats)
    fshape = lay.feature_shape
    mean_k = lay.to_kernel(feature_array(mean, fshape, "mean", fn, axis))
    invstd_k = lay.to_kernel(feature_array(invstd, fshape, "invstd", fn, axis))
    if gamma is not None:
        gamma = feature_array(gamma, fshape, "gamma", fn, axis)
    gamma_k = gamma_vector(lay, gamma, param_dtype(xk_in.dtype, gamma))
    c, n = lay.channels, lay.count
    if c and n == 0 and reduce is None:
        raise ValueError(f"{fn}: x of shape {xk_in.shape} has no elements per feature")
    xk = kernel_view(lay, xk_in)
    dyk = kernel_view(lay, dy_in)
    dx, dxk = output(out, xk_in, out_dtype, lay, fn, (dy_in,), (mean, invstd, gamma))
    fused = dispatch.fuse(xk, lay, 2) if training and reduce is None else None
    if fused:
        # dgamma, dbeta in the dtype returned (float64 for float16 input, then rounded once
        # to float32)
        dgamma_k, dbeta_k = grads = np.empty(
            (2, c), out_dtype if out_dtype == xk.dtype else np.float64)
        if fused == "planes":
            dispatch.run(K._backward_planes_fused, xk)(dyk, xk, mean_k, invstd_k, gamma_k, dxk,
                                                       grads, K.PLANE_CHUNK)
        else:
            dispatch.run(K._backward_rows_fused, xk, 2)(dyk, xk, mean_k, invstd_k, gamma_k, dxk,
                                                        grads, *split(xk, 2))
            if training is True and xk_in is x:
                remember_plan(x, axis, lay, xk)
    else:
        sum_g, sum_gx = (grad_sums(dyk, xk, mean_k, lay) if c and n
                         else (np.zeros(c), np.zeros(c)))
        dbeta_k = sum_g
        dgamma_k = sum_gx * invstd_k
    if not training:                          # dx = p * dy: no need to read x again
        affine(dyk, np.zeros(c), gamma_k * invstd_k, np.zeros(c), dxk, lay)
    elif not fused:
        tot_g, tot_gx = sum_g, sum_gx
        if reduce is not None:                # the global batch's sums (fastbn.distributed)
            n, tot_g, tot_gx = reduce(lay, n, sum_g, sum_gx)
        p, q, r = K._grad_coeffs(gamma_k, invstd_k, tot_g, tot_gx, float(n))
        grad_x(dyk, xk, mean_k, p, q, r, dxk, lay)
    pdtype = np.float32 if out_dtype == np.float16 else out_dtype   # as PyTorch's float32
    return (finish(dx, out, xk_in, out_dtype, lay), lay.from_kernel(dgamma_k, pdtype),
            lay.from_kernel(dbeta_k, pdtype))
