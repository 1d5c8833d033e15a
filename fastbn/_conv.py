"""Convolution and pooling dispatch, for :mod:`fastbn.autograd`'s conv2d and
pooling ops: ``x`` is an ``(N, H, W, C)`` view, channels-last or an NCHW array
transposed; ``pt``, ``pl``: padding before the first row / column."""
import numpy as np

from . import _config, _workers
from . import kernels as K
from ._bn import dispatch


class ConvBlocks:
    """How a convolution of ``x`` is split: ``direct`` (window by window) or
    im2col + BLAS, ``block`` samples a block, ``blocks`` of them; ``kernel``
    as a C-contiguous array of ``x``'s dtype."""

    def __init__(self, x, kernel, geometry):
        kh, kw, _, _, _, _, ho, wo = geometry
        taps = kh * kw * x.shape[3]
        self.x, self.geometry = x, geometry
        self.kernel = np.ascontiguousarray(kernel, x.dtype)
        self.direct = taps <= _config.DIRECT_MAX_TAPS
        per_sample = ho * wo * (kernel.shape[3] if self.direct else taps) * x.itemsize
        self.block = max(1, min(x.shape[0], _config.BLOCK_BYTES // max(per_sample, 1)))
        self.blocks = -(-x.shape[0] // self.block)

    def span(self, i):
        """Block ``i``'s samples ``[lo, hi)``."""
        lo = i * self.block
        return lo, min(self.x.shape[0], lo + self.block)

    def windows(self, lo, hi):
        """The windows (im2col) of samples ``[lo, hi)`` in this thread's work array."""
        kh, kw, sh, sw, pt, pl, ho, wo = self.geometry
        cols = _workers.scratch("cols", (hi - lo, ho, wo, kh, kw, self.x.shape[3]),
                                self.x.dtype)
        K._im2col.serial(self.x[lo:hi], sh, sw, pt, pl, cols)
        return cols

    def run(self, one):
        """``one(i)`` for every block, BLAS on one thread in each (:mod:`fastbn._workers`)."""
        with _config.blas_one_thread():
            _workers.run(self.blocks, one, _config.threads())


def conv2d_forward(x, kernel, bias, geometry, relu, y):
    """``y = relu?(conv(x, kernel) + bias)`` into the C-contiguous ``(N, ho, wo,
    F)`` array ``y``, in blocks of samples on :func:`fastbn._config.threads`
    threads (:mod:`fastbn._workers`): window by window for kernels of few taps,
    else each block's im2col in a per-thread buffer, one BLAS product and the
    bias and ReLU in one pass. ``x`` is any ``(N, H, W, C)`` view."""
    _, _, sh, sw, pt, pl, ho, wo = geometry
    plan = ConvBlocks(x, kernel, geometry)
    k4 = plan.kernel
    f = k4.shape[3]
    b = np.zeros(f, x.dtype) if bias is None else np.ascontiguousarray(bias, x.dtype)
    y2 = y.reshape(-1, f)
    k2 = k4.reshape(-1, f)

    def one(i):
        lo, hi = plan.span(i)
        if plan.direct:
            K._conv_direct.serial(x[lo:hi], k4, b, sh, sw, pt, pl, relu, y[lo:hi])
            return
        yb = y2[lo * ho * wo:hi * ho * wo]
        np.matmul(plan.windows(lo, hi).reshape(len(yb), -1), k2, out=yb)
        K._bias_act.serial(yb, b, relu)

    plan.run(one)
    return y


def conv2d_backward(x, kernel, y, grad, geometry, relu, need_dx, dx):
    """The gradients of :func:`conv2d_forward` with output ``y`` (read when
    ``relu``, else may be None): ``(dk, db)``, and, when ``need_dx``, ``dx``
    (an ``(N, H, W, C)`` view, overwritten). Each block's kernel and bias
    gradients are its own; they are summed in block order (in float64 from
    float32), so the result is the same bits for any thread count. The
    windows are taken again per block rather than kept from the forward pass
    (a 35 MB im2col on the article's second layer)."""
    _, _, sh, sw, pt, pl, ho, wo = geometry
    plan = ConvBlocks(x, kernel, geometry)
    k4 = plan.kernel
    f = k4.shape[3]
    k2 = k4.reshape(-1, f)
    g4 = np.ascontiguousarray(grad, x.dtype)
    g2 = g4.reshape(-1, f)
    y = g4 if y is None else y                  # read only when relu
    y2 = y.reshape(-1, f)
    dks = np.empty((plan.blocks,) + k4.shape, x.dtype)
    dbs = np.empty((plan.blocks, f), x.dtype)
    no_dx = np.empty((0, 0, 0, 0), x.dtype)

    def one(i):
        lo, hi = plan.span(i)
        if plan.direct:
            K._conv_direct_grads.serial(x[lo:hi], k4, y[lo:hi], g4[lo:hi], sh, sw, pt, pl,
                                        relu, need_dx, dks[i], dbs[i],
                                        dx[lo:hi] if need_dx else no_dx)
            return
        rows = (hi - lo) * ho * wo
        gb = g2[lo * ho * wo:hi * ho * wo]
        if relu:
            gm = _workers.scratch("gm", (rows, f), x.dtype)
            K._relu_grad.serial(gb.reshape(-1), y2[lo * ho * wo:hi * ho * wo].reshape(-1),
                                gm.reshape(-1))
            gb = gm
        cols = plan.windows(lo, hi)
        np.matmul(cols.reshape(rows, -1).T, gb, out=dks[i].reshape(-1, f))
        np.sum(gb, axis=0, out=dbs[i])
        if need_dx:
            np.matmul(gb, k2.T, out=cols.reshape(rows, -1))
            K._col2im.serial(cols, sh, sw, pt, pl, dx[lo:hi])

    plan.run(one)
    acc = np.float64 if x.dtype == np.float32 else x.dtype
    dk = dks.sum(axis=0, dtype=acc) if plan.blocks > 1 else dks[0]
    db = dbs.sum(axis=0, dtype=acc) if plan.blocks > 1 else dbs[0]
    return dk.astype(x.dtype, copy=False), db.astype(x.dtype, copy=False)


def max_pool_forward(x, kh, kw, sh, sw, pt, pl, y):
    """Window maxima into the ``(N, ho, wo, C)`` view ``y``; returns where they were."""
    arg = np.empty(y.shape, np.int32)
    dispatch.run(K._max_pool_forward, x)(x, kh, kw, sh, sw, pt, pl, y, arg)
    return arg


def max_pool_backward(dy, arg, kh, kw, sh, sw, pt, pl, dx):
    dispatch.run(K._max_pool_backward, dx)(dy, arg, kh, kw, sh, sw, pt, pl, dx)


def avg_pool_forward(x, kh, kw, sh, sw, pt, pl, y):
    dispatch.run(K._avg_pool_forward, x)(x, kh, kw, sh, sw, pt, pl, y)


def avg_pool_backward(dy, kh, kw, sh, sw, pt, pl, dx):
    dispatch.run(K._avg_pool_backward, dx)(dy, kh, kw, sh, sw, pt, pl, dx)
