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


@helper
def _cols_in(q, sw, pl, w_, wo):
    """The output columns ``[j0, j1)`` whose tap ``q`` reads an input column
    (``0 <= j*sw + q - pl < w_``)."""
    j0 = max(0, -((q - pl) // sw))
    j1 = min(wo, (w_ - 1 - q + pl) // sw + 1)
    return j0, max(j0, j1)


@kernel
def _conv_direct(x, w, bias, sh, sw, pt, pl, relu, y):
    """``y = x * w + bias`` (cross-correlation, zero padding), then ``max(y, 0)``
    when ``relu``, tap by tap into each output row: for kernels of few taps
    (``kh * kw * C``, 9 for a 3x3 kernel on one channel), where an im2col
    copy and a matrix product with so short an inner dimension cost more
    than the sums. ``w`` is ``(kh, kw, C, F)``; the filters are the inner,
    contiguous loop, and a row of outputs stays in L1 while its taps are
    added (in ``(p, q, c)`` order, then the bias)."""
    n_, h_, w_, c_ = x.shape
    kh, kw, _, f_ = w.shape
    _, ho, wo, _ = y.shape
    for n in prange(n_):
        for i in range(ho):
            yr = y[n, i]
            yr[:] = 0
            for p in range(kh):
                r = i * sh + p - pt
                if r < 0 or r >= h_:
                    continue
                for q in range(kw):
                    j0, j1 = _cols_in(q, sw, pl, w_, wo)
                    for c in range(c_):
                        wr = w[p, q, c]
                        for j in range(j0, j1):
                            v = x[n, r, j * sw + q - pl, c]
                            for f in range(f_):
                                yr[j, f] += v * wr[f]
            for j in range(wo):
                for f in range(f_):
                    v = yr[j, f] + bias[f]
                    yr[j, f] = max(v, 0) if relu else v


@kernel
def _conv_direct_grads(x, w, y, g, sh, sw, pt, pl, relu, need_dx, dk, db, dx):
    """The gradients of :func:`_conv_direct` for the samples of ``x``: ``dk``
    and ``db`` overwritten with their sums over these samples (accumulated in
    this call's own arrays, written once: blocks on other threads write the
    neighbouring ones), and, when ``need_dx``, ``dx`` overwritten with the
    input gradient. With ``relu`` the gradient ``g`` is first masked by
    ``y > 0`` (``y`` is then the output)."""
    n_, h_, w_, c_ = x.shape
    kh, kw, _, f_ = w.shape
    _, ho, wo, _ = g.shape
    dka = np.zeros_like(dk)
    dba = np.zeros_like(db)
    gm = np.empty_like(g[0, 0])
    if need_dx:
        dx[:] = 0
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                for f in range(f_):
                    v = g[n, i, j, f]
                    v = v if not relu or y[n, i, j, f] > 0 else 0
                    gm[j, f] = v
                    dba[f] += v
            for p in range(kh):
                r = i * sh + p - pt
                if r < 0 or r >= h_:
                    continue
                for q in range(kw):
                    j0, j1 = _cols_in(q, sw, pl, w_, wo)
                    for c in range(c_):
                        a = dka[p, q, c]
                        for j in range(j0, j1):
                            v = x[n, r, j * sw + q - pl, c]
                            for f in range(f_):
                                a[f] += v * gm[j, f]
                        if need_dx:
                            wr = w[p, q, c]
                            for j in range(j0, j1):
                                t = 0.0
                                for f in range(f_):
                                    t += gm[j, f] * wr[f]
                                dx[n, r, j * sw + q - pl, c] += t
    dk[:] = dka
    db[:] = dba
