"""The benchmark cases, the one table ``fastbn-bench``, the asv suite and the docs scripts share.

Each case is a shape, its feature axes and a dtype; :func:`make_inputs`
builds every array a peer needs for one. The operations and their traffic
(bytes per element under the minimal-traffic model) sit beside them.

This module imports nothing from fastbn, so ``asv_bench/benchmarks/common.py``
can load it from the checkout even when the fastbn under test predates it.

Examples
--------
>>> from fastbn.bench import cases
>>> cases.CASES["F"], cases.label("F")
(((256, 28, 28), (1, 2), 'float32'), 'F 256x28x28 ax(1,2) f32')
"""
import math

import numpy as np

__all__ = ["CASES", "CASE_NAMES", "LAYOUTS", "OPS", "EPSILON", "MOMENTUM", "feature_axes",
           "traffic_bytes", "make_inputs", "label"]

#: The benchmark shapes: name -> (shape, feature axis, dtype).
CASES = {
    "A": ((128, 784), -1, "float32"),
    "B": ((256, 300), -1, "float32"),
    "C": ((8192, 1024), -1, "float32"),
    "D": ((32, 64, 56, 56), 1, "float32"),       # NCHW
    "E": ((32, 56, 56, 64), -1, "float32"),      # NHWC
    "F": ((256, 28, 28), (1, 2), "float32"),     # per-pixel features of MNIST-sized images
    "G": ((8192, 1024), -1, "float64"),
}
#: Each case in plain words: what such an array is in a model, and its layout.
CASE_NAMES = {
    "A": "MLP input batch (128, 784), features last, fits in cache",
    "B": "MLP hidden layer (256, 300), features last, fits in cache",
    "C": "large dense batch (8192, 1024), features last, 32 MiB",
    "D": "conv feature maps NCHW (32, 64, 56, 56), channels in dim 1, 25 MiB",
    "E": "conv feature maps NHWC (32, 56, 56, 64), channels last, 25 MiB",
    "F": "per-pixel features (256, 28, 28), features = the 28x28 pixels",
    "G": "large dense batch in float64 (8192, 1024), 64 MiB",
}
#: The memory layout of the image cases, the last word of their :func:`label`.
LAYOUTS = {"D": "NCHW", "E": "NHWC"}
#: Operation -> bytes moved per element, in units of the itemsize (minimal traffic).
OPS = {"forward": 3, "inference": 2, "backward": 5}
#: The ``epsilon`` every peer adds to the variance.
EPSILON = 1e-3
#: The moving statistics' ``momentum`` (Keras convention; PyTorch's is 1 - 0.99).
MOMENTUM = 0.99


def feature_axes(shape, axis):
    """The feature axes ``axis`` names in ``shape``, non-negative and sorted.

    Parameters
    ----------
    shape : tuple of int
    axis : int or tuple of ints
        The feature axes, negative ones counted from the end.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> from fastbn.bench import cases
    >>> cases.feature_axes((256, 28, 28), (2, -2)), cases.feature_axes((128, 784), -1)
    ((1, 2), (1,))
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % len(shape) for a in axes))


def label(name):
    """A case's asv parameter: its name, shape, axis, dtype and layout.

    Parameters
    ----------
    name : str
        A key of :data:`CASES`.

    Returns
    -------
    str
        For example ``"A 128x784 ax-1 f32"`` or ``"D 32x64x56x56 ax1 f32 NCHW"``.

    Examples
    --------
    >>> from fastbn.bench import cases
    >>> [cases.label(n) for n in "AE"]
    ['A 128x784 ax-1 f32', 'E 32x56x56x64 ax-1 f32 NHWC']
    """
    shape, axis, dtype = CASES[name]
    ax = str(axis) if isinstance(axis, int) else "(" + ",".join(map(str, axis)) + ")"
    words = [name, "x".join(map(str, shape)), "ax" + ax, f"f{8 * np.dtype(dtype).itemsize}"]
    return " ".join(words + ([LAYOUTS[name]] if name in LAYOUTS else []))


def traffic_bytes(op, shape, dtype):
    """Bytes an operation must move at least: ``OPS[op] * itemsize * size``.

    Parameters
    ----------
    op : {"forward", "inference", "backward"}
    shape : tuple of int
    dtype : str or dtype

    Returns
    -------
    int

    Examples
    --------
    >>> from fastbn import bench
    >>> bench.traffic_bytes("forward", (128, 784), "float32")   # reads x twice, writes y
    1204224
    """
    return OPS[op] * np.dtype(dtype).itemsize * math.prod(shape)


def make_inputs(shape, axis, dtype, seed=0):
    """Every array a peer needs, built once, outside any timing.

    ``moving_*_train`` are updated in place by training forwards; the
    inference pass reads ``moving_*_inf``, which nothing changes, so that its
    output is the same in every peer.

    Parameters
    ----------
    shape : tuple of int
    axis : int or tuple of ints
        The feature axes (Keras semantics, as in :func:`fastbn.batch_norm_forward`).
    dtype : str or dtype
    seed : int, default 0

    Returns
    -------
    dict of str to ndarray
        ``x``, ``dy`` (shaped like ``x``); ``gamma``, ``beta``,
        ``moving_mean_train``, ``moving_var_train``, ``moving_mean_inf``,
        ``moving_var_inf`` (feature-shaped).

    Examples
    --------
    >>> from fastbn import bench
    >>> d = bench.make_inputs((32, 3, 4, 4), 1, "float32")
    >>> d["x"].shape, d["gamma"].shape, d["x"].dtype
    ((32, 3, 4, 4), (3,), dtype('float32'))
    """
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    fshape = tuple(shape[a] for a in feature_axes(shape, axis))
    x = rng.standard_normal(shape, dtype=dt) * dt.type(2) + dt.type(1)
    dy = rng.standard_normal(shape, dtype=dt)
    feature = lambda a: np.ascontiguousarray(a, dtype=dt)  # noqa: E731
    return dict(
        x=x, dy=dy,
        gamma=feature(rng.uniform(0.5, 1.5, fshape)),
        beta=feature(rng.normal(0.0, 0.1, fshape)),
        moving_mean_train=np.zeros(fshape, dt), moving_var_train=np.ones(fshape, dt),
        moving_mean_inf=feature(rng.normal(1.0, 0.1, fshape)),
        moving_var_inf=feature(rng.uniform(3.0, 5.0, fshape)))
