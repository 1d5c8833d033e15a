"""Moving statistics: Keras' update of ``moving_mean`` / ``moving_variance``,
PyTorch's running-statistics blend, and the warnings when a batch variance
or a moving statistic overflows."""
import math
import warnings

import numpy as np

from .. import kernels as K
from .checks import F64, KERNEL_DTYPES

def flat(arr):
    """A contiguous array as a 1-d view (itself when it is one already)."""
    return arr if arr.ndim == 1 else arr.reshape(-1)


def kernel_vector(arr):
    """Whether the kernels can update ``arr`` in place as a flat float vector."""
    return arr.flags.c_contiguous and arr.dtype in KERNEL_DTYPES


def moving_kernel_vectors(lay, moving_mean, moving_variance):
    """The moving statistics as kernel-order float64 ``(mean, var)`` for inference;
    the mean a copy, as it is returned and must not alias ``moving_mean``."""
    mean_k = lay.to_kernel(moving_mean)
    if mean_k is moving_mean or mean_k.base is not None:
        mean_k = mean_k.copy()
    return mean_k, lay.to_kernel(moving_variance)


def update_moving(lay, moving_mean, mean_k, moving_variance, var_k, momentum):
    """Update the moving statistics in place (see :func:`fastbn.batch_norm_forward`):
    one Numba call when both are already kernel-order float vectors. Each
    entry is held to its dtype's largest finite value
    (:func:`fastbn.kernels._update_moving`); returns how many were."""
    if lay._fident and kernel_vector(moving_mean) and kernel_vector(moving_variance):
        return K._update_moving_pair(flat(moving_mean), mean_k, flat(moving_variance), var_k,
                                     momentum)
    held = 0
    for arr, batch_k in ((moving_mean, mean_k), (moving_variance, var_k)):
        if lay._fident and kernel_vector(arr):
            held += K._update_moving(flat(arr), batch_k, momentum)
        else:
            held += update_moving_numpy(arr, lay.from_kernel(batch_k), momentum)
    return held


def update_moving_numpy(arr, batch, momentum):
    """:func:`fastbn.kernels._update_moving` in NumPy, for a feature-shaped
    ``batch`` and a moving statistic of any float dtype or layout."""
    new = arr.astype(np.float64) * momentum + batch * (1.0 - momentum)
    top = float(np.finfo(arr.dtype).max)
    held = int(np.count_nonzero(np.abs(new) > top))
    arr[...] = np.clip(new, -top, top)
    return held


def check_variance(var_k, lay, fn, level=4):
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


def warn_overflow(lay, moving_mean, moving_variance, var_k, momentum, fn):
    """Say that the moving statistics were held at their dtype's largest value,
    or, when that is because the batch variance overflowed, that (once)."""
    if check_variance(var_k, lay, fn, level=5):
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


def warn_native_held(var):
    """The warning :func:`fastbn._bn.plans.planned_training` gives when its momentum-0 update
    held an entry, for a native caller whose call did: ``var`` is the batch
    variance the kernel wrote (float64, feature order), before holding."""
    zeros = np.zeros(var.shape)
    warn_overflow(None, zeros, zeros, var, 0.0, "batch_norm_forward")


def blend_running(running_mean, running_var, mean, var, weight, var_scale):
    """PyTorch's running-statistics update, in place, when both are C-contiguous
    float32 or float64 vectors of ``mean``'s size (returns True), else nothing
    (returns False): ``running = running * (1 - weight) + batch * weight`` in
    float64, rounded once, the variance's batch ``var * var_scale``. The NumPy
    expression's operations in its order, so the same bits (see
    :func:`fastbn.kernels._blend_pair`)."""
    for r in (running_mean, running_var):
        if not (r.dtype in KERNEL_DTYPES and r.flags.c_contiguous and r.flags.writeable
                and r.shape == mean.shape and r.ndim == 1):
            return False
    if not (mean.dtype == var.dtype == F64 and mean.shape == var.shape):
        return False
    K._blend_pair(running_mean, mean, running_var, var, float(weight), float(var_scale))
    return True
