"""Argument checks shared by :mod:`fastbn.functional`, :mod:`fastbn.nn`,
:mod:`fastbn.torch` and :mod:`fastbn.distributed`: they raise the public
functions' errors, word for word."""
import math

import numpy as np

from .._axes import normalize_axis

#: dtypes the kernels take as they are (native byte order)
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


F64 = np.dtype(np.float64)


COMPUTE = {np.dtype(np.float32): np.float32, np.dtype(np.float64): np.float64,
           np.dtype(np.float16): np.float32}


def float_input(x, name, fn):
    """``x`` as an ndarray the kernels take (float32/64), and the dtype to return."""
    a = np.asarray(x)
    orig = a.dtype
    compute = COMPUTE.get(orig)
    if compute is None:
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}; fastbn computes in float32 or "
                        f"float64 (float16 is computed in float32). Convert it first, "
                        f"e.g. {name}.astype(np.float32)")
    if a.ndim == 0:
        raise ValueError(f"{fn}: {name} is 0-d; it needs at least one axis")
    if a.dtype != compute:
        a = a.astype(compute)
    return a, orig


def feature_array(v, shape, name, fn, axis):
    """Validate a feature-shaped array (gamma, beta, mean, ...) and return it."""
    a = np.asarray(v)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}; it must be real numbers")
    if a.shape != shape:
        raise ValueError(f"{fn}: {name} has shape {a.shape}, but x has shape {shape} "
                         f"along axis={axis!r}, so {name} must have shape {shape}")
    return a


def features(x, axis, fn):
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


def number(v):
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


def check_epsilon(epsilon, fn):
    """``epsilon`` as a float, or TypeError (not a number) / ValueError (< 0, not finite)."""
    if type(epsilon) is float and 0.0 <= epsilon < math.inf:    # the common case, fast
        return epsilon
    e = number(epsilon)
    if e is None:
        raise TypeError(f"{fn}: epsilon must be a number (a float >= 0, e.g. 1e-3), got "
                        f"{epsilon!r} of type {type(epsilon).__name__}")
    if not (math.isfinite(e) and e >= 0):
        raise ValueError(f"{fn}: epsilon must be a finite number >= 0, got {epsilon!r}")
    return e


def check_momentum(momentum, fn):
    """``momentum`` as a float, or TypeError (not a number) / ValueError (outside [0, 1])."""
    if type(momentum) is float and 0.0 <= momentum <= 1.0:     # the common case, fast
        return momentum
    m = number(momentum)
    if m is None:
        raise TypeError(f"{fn}: momentum must be a number in [0, 1] (e.g. 0.99), got "
                        f"{momentum!r} of type {type(momentum).__name__}")
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"{fn}: momentum must be a number in [0, 1] (Keras convention; "
                         f"PyTorch's momentum m corresponds to 1 - m), got {momentum!r}")
    return m


def check_training(training, fn):
    """Raise unless ``training`` is a bool (Python's or NumPy's): ``"False"`` is
    true to ``if``, and would train."""
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training must be a bool, True (batch statistics) or False "
                        f"(the moving statistics), got {training!r} of type "
                        f"{type(training).__name__}")


def check_moving(arr, shape, name, fn, axis):
    if (type(arr) is np.ndarray and arr.shape == shape and arr.dtype.kind == "f"
            and arr.flags.writeable):           # the common case, in a third of the time
        return
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a NumPy array (it is updated in place), "
                        f"got {type(arr).__name__}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{fn}: {name} has dtype {arr.dtype}; it is updated in place and "
                        f"must be a float array")
    feature_array(arr, shape, name, fn, axis)
    if not arr.flags.writeable:
        raise ValueError(f"{fn}: {name} is read-only, but training updates it in place")


def param_dtype(dtype, *params):
    """The dtype the kernels get ``gamma`` and ``beta`` in: ``dtype`` (the kernels'
    input dtype, float32 or float64) when each one given already has it, else
    float64. The kernels widen them to float64 as they read them, exactly as
    ``astype`` would, so either way they compute the same numbers; a float32
    layer's parameters then reach the kernels without a float64 copy each
    (1.8 us per vector in a whole (4, 784) backward, of 14.5 us).
    Kernels are compiled for float64 and for the input's dtype, no more."""
    for v in params:
        if v is not None and v.dtype != dtype:
            return F64
    return dtype
