"""Window kernels of convolution and pooling, on channels-last ``(N, H, W, C)`` views.

``x`` may be any strided view (an NCHW array transposed to NHWC is read in
place); outputs are written through the views they are given. ``pt`` and
``pl`` are the zero (convolution) or empty (pooling) rows and columns before
the first input row and column ("same" padding); reads outside the input are
skipped. Every loop over the batch is ``prange``: each sample writes its own
outputs in a fixed order, so the results do not depend on the thread count.
"""
import numpy as np
from numba import prange

from .._config import helper, kernel


@helper
def _span(o, stride, pad, k, size):
    """The input rows (or columns) ``[lo, hi)`` that output place ``o``'s window
    covers, clipped to the input (padding holds no input)."""
    lo = o * stride - pad
    return max(lo, 0), min(lo + k, size)


@kernel
def _im2col(x, sh, sw, pt, pl, cols):
    """``cols[n, i, j, p, q, c] = x[n, i*sh + p - pt, j*sw + q - pl, c]`` (0 outside ``x``)."""
    n_, h_, w_, c_ = x.shape
    _, ho, wo, kh, kw, _ = cols.shape
    for n in prange(n_):
        for i in range(ho):
            for p in range(kh):
                r = i * sh + p - pt
                for j in range(wo):
                    for q in range(kw):
                        s = j * sw + q - pl
                        if 0 <= r < h_ and 0 <= s < w_:
                            for c in range(c_):
                                cols[n, i, j, p, q, c] = x[n, r, s, c]
                        else:
                            for c in range(c_):
                                cols[n, i, j, p, q, c] = 0


@kernel
def _col2im(dcols, sh, sw, pt, pl, dx):
    """The adjoint of :func:`_im2col`: ``dx`` zeroed, then each window's gradient added."""
    n_, h_, w_, c_ = dx.shape
    _, ho, wo, kh, kw, _ = dcols.shape
    for n in prange(n_):
        dx[n] = 0
        for i in range(ho):
            for p in range(kh):
                r = i * sh + p - pt
                if r < 0 or r >= h_:
                    continue
                for j in range(wo):
                    for q in range(kw):
                        s = j * sw + q - pl
                        if 0 <= s < w_:
                            for c in range(c_):
                                dx[n, r, s, c] += dcols[n, i, j, p, q, c]


@kernel
def _max_pool_forward(x, kh, kw, sh, sw, pt, pl, y, arg):
    """Window maxima into ``y`` and, into ``arg``, the flat ``r * W + s`` of the
    first maximum of each window (what the backward pass routes to). The
    channels are the inner loop: contiguous in NHWC, so it vectorizes."""
    n_, h_, w_, c_ = x.shape
    _, ho, wo, _ = y.shape
    for n in prange(n_):
        for i in range(ho):
            r0, r1 = _span(i, sh, pt, kh, h_)
            for j in range(wo):
                s0, s1 = _span(j, sw, pl, kw, w_)
                for c in range(c_):
                    y[n, i, j, c] = x[n, r0, s0, c]
                    arg[n, i, j, c] = r0 * w_ + s0
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        at = r * w_ + s
                        for c in range(c_):
                            v = x[n, r, s, c]
                            if v > y[n, i, j, c]:
                                y[n, i, j, c] = v
                                arg[n, i, j, c] = at


@kernel
def _max_pool_backward(dy, arg, kh, kw, sh, sw, pt, pl, dx):
    """``dx`` zeroed, then each ``dy`` added at its window's maximum (found by
    comparing ``arg`` with each place of the window: no division per element)."""
    n_, h_, w_, c_ = dx.shape
    _, ho, wo, _ = dy.shape
    for n in prange(n_):
        dx[n] = 0
        for i in range(ho):
            r0, r1 = _span(i, sh, pt, kh, h_)
            for j in range(wo):
                s0, s1 = _span(j, sw, pl, kw, w_)
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        at = r * w_ + s
                        for c in range(c_):
                            if arg[n, i, j, c] == at:
                                dx[n, r, s, c] += dy[n, i, j, c]


@kernel
def _avg_pool_forward(x, kh, kw, sh, sw, pt, pl, y):
    """Window means over the input elements each window covers (padding not
    counted, as in Keras)."""
    n_, h_, w_, c_ = x.shape
    _, ho, wo, _ = y.shape
    for n in prange(n_):
        acc = np.zeros(c_, np.float64)
        for i in range(ho):
            r0, r1 = _span(i, sh, pt, kh, h_)
            for j in range(wo):
                s0, s1 = _span(j, sw, pl, kw, w_)
                acc[:] = 0
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        for c in range(c_):
                            acc[c] += x[n, r, s, c]
                inv = 1.0 / ((r1 - r0) * (s1 - s0))
                for c in range(c_):
                    y[n, i, j, c] = acc[c] * inv


@kernel
def _avg_pool_backward(dy, kh, kw, sh, sw, pt, pl, dx):
    """``dx`` zeroed, then each ``dy`` spread evenly over its window's inputs."""
    n_, h_, w_, c_ = dx.shape
    _, ho, wo, _ = dy.shape
    for n in prange(n_):
        dx[n] = 0
        for i in range(ho):
            r0, r1 = _span(i, sh, pt, kh, h_)
            for j in range(wo):
                s0, s1 = _span(j, sw, pl, kw, w_)
                inv = 1.0 / ((r1 - r0) * (s1 - s0))
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        for c in range(c_):
                            dx[n, r, s, c] += dy[n, i, j, c] * inv


@kernel
def _bias_act(y, bias, relu):
    """``y = y + bias`` (per column), then ``max(y, 0)`` when ``relu``, in place;
    ``y`` is ``(rows, F)``."""
    rows, f_ = y.shape
    if relu:
        for i in prange(rows):
            for f in range(f_):
                y[i, f] = max(y[i, f] + bias[f], 0)
    else:
        for i in prange(rows):
            for f in range(f_):
                y[i, f] += bias[f]


@kernel
def _relu_grad(g, y, out):
    """``out = g`` where ``y > 0``, else 0 (ReLU's gradient, read from its output)."""
    for i in prange(g.shape[0]):
        out[i] = g[i] if y[i] > 0 else 0
