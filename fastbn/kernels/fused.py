"""One task per feature, statistics and elementwise pass fused while in cache.

For planes whose feature data fit in L2 (NCHW: ``outer * inner`` elements
per channel), reading a channel twice costs one DRAM read, not two: forward
moves 8 bytes per fp32 element instead of 12, backward 12 instead of 20.
The chunking and merge order are those of the split kernels, so the
statistics are the same numbers.
"""
import numpy as np
from numba import prange

from .._config import kernel
from ._chunks import (LANES, _chan_merge, _chan_merge_into, _lanes_add_prod_dev, _lanes_total,
                      _n_chunks, _plane_chunk_moments, _rows_grad_sums, _rows_moments)
from .backward import _grad_coeffs
from .normalize import _finite_shift, _invstd_scale


@kernel
def _forward_planes_fused(x, shift, gamma, beta, eps, y, chunk):
    """Batch-norm forward per feature of ``(outer, C, inner)``; returns ``(mean, m2)``.

    ``gamma``/``beta`` are float64 vectors of length C (ones / zeros for None);
    ``shift`` as in :func:`._moments_planes`.
    """
    outer, c, inner = x.shape
    m = outer * inner
    n_chunks = _n_chunks(m, chunk)
    mean = np.empty(c)
    m2 = np.empty(c)
    for ch in prange(c):
        acc = np.zeros(LANES)
        acc2 = np.zeros(LANES)
        s = shift[ch]
        mu = 0.0
        q = 0.0
        count = 0.0
        for k in range(n_chunks):
            j0 = k * chunk
            j1 = min(m, j0 + chunk)
            mu_k, q_k = _plane_chunk_moments(x, ch, j0, j1, s, acc, acc2)
            if k == 0:
                mu, q, count = mu_k, q_k, float(j1 - j0)
            else:
                mu, q, count = _chan_merge(mu, q, count, mu_k, q_k, float(j1 - j0))
        mu += s
        mean[ch] = mu
        m2[ch] = q
        sc = gamma[ch] * (1.0 / np.sqrt(q / m + eps))
        sh = beta[ch]
        for o in range(outer):
            xr = x[o, ch]
            yr = y[o, ch]
            for t in range(inner):
                yr[t] = (xr[t] - mu) * sc + sh
    return mean, m2


@kernel
def _backward_planes_fused(dy, x, mean, invstd, gamma, dx, chunk):
    """Training batch-norm backward per feature; returns ``(sum dy, sum dy*(x-mean))``."""
    outer, c, inner = x.shape
    m = outer * inner
    n_chunks = _n_chunks(m, chunk)
    sum_g = np.zeros(c)
    sum_gx = np.zeros(c)
    for ch in prange(c):
        mu = mean[ch]
        acc_g = np.zeros(LANES)
        acc_gx = np.zeros(LANES)
        sg = 0.0
        sgx = 0.0
        for k in range(n_chunks):
            j0 = k * chunk
            j1 = min(m, j0 + chunk)
            o = j0 // inner
            i = j0 - o * inner
            j = j0
            while j < j1:
                e = min(inner, i + (j1 - j))
                _lanes_add_prod_dev(dy[o, ch, i:e], x[o, ch, i:e], mu, acc_g, acc_gx)
                j += e - i
                o += 1
                i = 0
            sg += _lanes_total(acc_g)
            sgx += _lanes_total(acc_gx)
        sum_g[ch] = sg
        sum_gx[ch] = sgx
        s = invstd[ch]
        p = gamma[ch] * s
        q = p * s * (sgx * s) / m
        r = p * sg / m
        for o in range(outer):
            gr = dy[o, ch]
            xr = x[o, ch]
            dr = dx[o, ch]
            for t in range(inner):
                dr[t] = gr[t] * p - (xr[t] - mu) * q - r
    return sum_g, sum_gx


@kernel
def _forward_rows_fused(x, gamma, beta, eps, y, rows_per_chunk, cols_per_block):
    """Batch-norm forward of a small ``(N, C)`` array; returns ``(mean, var, invstd)``.

    One task per column block (the width never changes a result): the
    block's statistics (the chunks, sums and merges of
    :func:`._moments_rows`, shifted by each column's first finite value as
    :func:`fastbn.functional._shift` does), then ``invstd``, then the
    elementwise pass, in one parallel region and while the block is in
    cache. Same bits as the split kernels.
    """
    n, c = x.shape
    n_chunks = _n_chunks(n, rows_per_chunk)
    n_blocks = _n_chunks(c, cols_per_block)
    mean = np.empty(c)
    var = np.empty(c)
    invstd = np.empty(c)
    for b in prange(n_blocks):
        c0 = b * cols_per_block
        c1 = min(c, c0 + cols_per_block)
        w = c1 - c0
        sh = _finite_shift(x[0, c0:c1])
        mu = mean[c0:c1]
        q = var[c0:c1]
        pm = np.empty(w)
        pq = np.empty(w)
        count = 0.0
        for k in range(n_chunks):
            r0 = k * rows_per_chunk
            r1 = min(n, r0 + rows_per_chunk)
            _rows_moments(x, r0, r1, c0, sh, pm, pq)
            if k == 0:
                mu[:] = pm
                q[:] = pq
                count = float(r1 - r0)
            else:
                count = _chan_merge_into(mu, q, count, pm, pq, float(r1 - r0))
        for j in range(w):
            mu[j] += sh[j]
            q[j] /= n                        # m2 -> var
        inv, sc = _invstd_scale(q, gamma[c0:c1], eps)
        invstd[c0:c1] = inv
        be = beta[c0:c1]
        for i in range(n):
            xr = x[i, c0:c1]
            yr = y[i, c0:c1]
            for j in range(w):
                yr[j] = (xr[j] - mu[j]) * sc[j] + be[j]
    return mean, var, invstd


@kernel
def _backward_rows_fused(dy, x, mean, invstd, gamma, dx, rows_per_chunk, cols_per_block):
    """Training batch-norm backward of a small ``(N, C)`` array, one task per
    column block as in :func:`_forward_rows_fused` (the sums of
    :func:`._grad_sums_rows`, then ``dx``); returns ``(sum dy, sum
    dy*(x-mean))``. Same bits as the split kernels."""
    n, c = x.shape
    n_chunks = _n_chunks(n, rows_per_chunk)
    n_blocks = _n_chunks(c, cols_per_block)
    sum_g = np.zeros(c)
    sum_gx = np.zeros(c)
    for b in prange(n_blocks):
        c0 = b * cols_per_block
        c1 = min(c, c0 + cols_per_block)
        w = c1 - c0
        mu = mean[c0:c1]
        tg = sum_g[c0:c1]
        tgx = sum_gx[c0:c1]
        sg = np.empty(w)
        sgx = np.empty(w)
        for k in range(n_chunks):
            r0 = k * rows_per_chunk
            r1 = min(n, r0 + rows_per_chunk)
            _rows_grad_sums(dy, x, r0, r1, c0, mu, sg, sgx)
            for j in range(w):
                tg[j] += sg[j]
                tgx[j] += sgx[j]
        p, q, r = _grad_coeffs(gamma[c0:c1], invstd[c0:c1], tg, tgx, float(n))
        for i in range(n):
            gr = dy[i, c0:c1]
            xr = x[i, c0:c1]
            dr = dx[i, c0:c1]
            for j in range(w):
                dr[j] = gr[j] * p[j] - (xr[j] - mu[j]) * q[j] - r[j]
    return sum_g, sum_gx
