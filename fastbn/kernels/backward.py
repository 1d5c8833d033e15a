"""Backward passes: one fused reduction, one elementwise pass.

The reduction gives, per feature, ``sum(dy)`` and ``sum(dy * (x - mean))``
(fixed chunks, merged in a fixed order); the elementwise pass recomputes
``x - mean`` instead of reading a saved ``x_hat`` (one array less to store
and to read back).
"""
import numpy as np
from numba import prange

from .._config import helper, kernel
from ._chunks import (LANES, _half, _lanes_add_prod_dev, _lanes_total, _n_chunks, _row_task,
                      _rows_grad_sums, _streams)
from ._intrinsics import fma, store_fence, stream


@kernel
def _grad_sums_rows(dy, x, mean, rows_per_chunk, cols_per_block):
    """``(sum(dy), sum(dy * (x - mean)))`` per column of ``(N, C)``."""
    n, c = x.shape
    n_chunks = _n_chunks(n, rows_per_chunk)
    n_blocks = _n_chunks(c, cols_per_block)
    part_g = np.empty((n_chunks, c))
    part_gx = np.empty((n_chunks, c))
    for task in prange(n_chunks * n_blocks):
        k, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
        _rows_grad_sums(dy, x, r0, r1, c0, mean[c0:c1], part_g[k, c0:c1], part_gx[k, c0:c1])
    sum_g = np.zeros(c)
    sum_gx = np.zeros(c)
    for b in prange(n_blocks):
        c0 = b * cols_per_block
        c1 = min(c, c0 + cols_per_block)
        _sum_row_chunks(part_g, part_gx, c0, sum_g[c0:c1], sum_gx[c0:c1])
    return sum_g, sum_gx


@helper
def _sum_row_chunks(part_g, part_gx, c0, sg, sgx):
    """Add the chunks' sums of columns ``c0:c0 + sg.size`` (one row of ``part_*``
    per chunk) into ``sg``/``sgx``, in chunk order."""
    c1 = c0 + sg.size
    for k in range(part_g.shape[0]):
        pg = part_g[k, c0:c1]
        pgx = part_gx[k, c0:c1]
        for j in range(c1 - c0):
            sg[j] += pg[j]
            sgx[j] += pgx[j]


@kernel
def _grad_sums_planes(dy, x, mean, chunk):
    """``(sum(dy), sum(dy * (x - mean)))`` per feature of ``(outer, C, inner)``."""
    outer, c, inner = x.shape
    m = outer * inner
    n_chunks = _n_chunks(m, chunk)
    part_g = np.empty((c, n_chunks))
    part_gx = np.empty((c, n_chunks))
    for task in prange(c * n_chunks):
        ch = task // n_chunks
        k = task - ch * n_chunks
        j0 = k * chunk
        j1 = min(m, j0 + chunk)
        mu = mean[ch]
        o = j0 // inner
        i = j0 - o * inner
        j = j0
        acc_g = np.zeros(LANES)
        acc_gx = np.zeros(LANES)
        while j < j1:
            e = min(inner, i + (j1 - j))
            _lanes_add_prod_dev(dy[o, ch, i:e], x[o, ch, i:e], mu, acc_g, acc_gx)
            j += e - i
            o += 1
            i = 0
        part_g[ch, k] = _lanes_total(acc_g)
        part_gx[ch, k] = _lanes_total(acc_gx)
    sum_g = np.zeros(c)
    sum_gx = np.zeros(c)
    for ch in prange(c):
        for k in range(n_chunks):
            sum_g[ch] += part_g[ch, k]
            sum_gx[ch] += part_gx[ch, k]
    return sum_g, sum_gx


@kernel
def _grad_x_rows(dy, x, mean, p, q, r, dx, rows_per_chunk, cols_per_block):
    """``dx[i, j] = dy[i, j] * p[j] - ((x[i, j] - mean[j]) * q[j] + r[j])``, each
    product-and-sum one :func:`._intrinsics.fma` (two roundings in float64, not
    four; the dx pass on (6272, 1024) fp32 1.11-1.21x faster in cache)."""
    n, c = x.shape
    n_chunks = _n_chunks(n, rows_per_chunk)
    n_blocks = _n_chunks(c, cols_per_block)
    for task in prange(n_chunks * n_blocks):
        _, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
        _grad_x_row_block(dy, x, r0, r1, c0, c1, mean, p, q, r, dx)


@helper
def _grad_x_row_block(dy, x, r0, r1, c0, c1, mean, p, q, r, dx):
    """:func:`_grad_x_rows` on rows ``r0:r1``, columns ``c0:c1``."""
    if _streams(dx, c0):
        _grad_x_row_block_streamed(dy, x, r0, r1, c0, c1, mean, p, q, r, dx)
        return
    mu = mean[c0:c1]
    pc = p[c0:c1]
    qc = q[c0:c1]
    rc = r[c0:c1]
    h = _half(x, r0, r1)
    for i in range(r0, r0 + h):                 # two rows half a chunk apart (_half)
        gr = dy[i, c0:c1]
        xr = x[i, c0:c1]
        dr = dx[i, c0:c1]
        gs = dy[i + h, c0:c1]
        xs = x[i + h, c0:c1]
        ds = dx[i + h, c0:c1]
        for j in range(c1 - c0):
            m = mu[j]
            a = pc[j]
            b = qc[j]
            e = rc[j]
            dr[j] = fma(gr[j], a, -fma(xr[j] - m, b, e))
            ds[j] = fma(gs[j], a, -fma(xs[j] - m, b, e))
    for i in range(r0 + 2 * h, r1):
        gr = dy[i, c0:c1]
        xr = x[i, c0:c1]
        dr = dx[i, c0:c1]
        for j in range(c1 - c0):
            dr[j] = fma(gr[j], pc[j], -fma(xr[j] - mu[j], qc[j], rc[j]))


@helper
def _grad_x_row_block_streamed(dy, x, r0, r1, c0, c1, mean, p, q, r, dx):
    """:func:`_grad_x_row_block` computing each row segment into a buffer in L1
    and streaming it to ``dx`` (:func:`._intrinsics.stream`): the same numbers."""
    mu = mean[c0:c1]
    pc = p[c0:c1]
    qc = q[c0:c1]
    rc = r[c0:c1]
    w = c1 - c0
    br = np.empty(w, dx.dtype)
    bs = np.empty(w, dx.dtype)
    h = _half(x, r0, r1)
    for i in range(r0, r0 + h):
        gr = dy[i, c0:c1]
        xr = x[i, c0:c1]
        gs = dy[i + h, c0:c1]
        xs = x[i + h, c0:c1]
        for j in range(w):
            m = mu[j]
            a = pc[j]
            b = qc[j]
            e = rc[j]
            br[j] = fma(gr[j], a, -fma(xr[j] - m, b, e))
            bs[j] = fma(gs[j], a, -fma(xs[j] - m, b, e))
        stream(dx[i, c0:c1], br)
        stream(dx[i + h, c0:c1], bs)
    for i in range(r0 + 2 * h, r1):
        gr = dy[i, c0:c1]
        xr = x[i, c0:c1]
        for j in range(w):
            br[j] = fma(gr[j], pc[j], -fma(xr[j] - mu[j], qc[j], rc[j]))
        stream(dx[i, c0:c1], br)
    store_fence()


@kernel
def _grad_x_planes(dy, x, mean, p, q, r, dx, chunk):
    """``dx = dy * p[c] - (x - mean[c]) * q[c] - r[c]`` on ``(outer, C, inner)``."""
    outer, c, inner = x.shape
    m = outer * inner
    n_chunks = _n_chunks(m, chunk)
    for task in prange(c * n_chunks):
        ch = task // n_chunks
        j0 = (task - ch * n_chunks) * chunk
        j1 = min(m, j0 + chunk)
        mu = mean[ch]
        pc = p[ch]
        qc = q[ch]
        rc = r[ch]
        o = j0 // inner
        i = j0 - o * inner
        j = j0
        while j < j1:
            e = min(inner, i + (j1 - j))
            gr = dy[o, ch, i:e]
            xr = x[o, ch, i:e]
            dr = dx[o, ch, i:e]
            for t in range(e - i):
                dr[t] = fma(gr[t], pc, -fma(xr[t] - mu, qc, rc))
            j += e - i
            o += 1
            i = 0


@helper
def _grad_coeffs(gamma, invstd, tot_g, tot_gx, n):
    """Per-feature ``p, q, r`` of the training ``dx = dy * p - (x - mean) * q - r``:
    ``p = gamma * s``, ``q = p * s * (tot_gx * s) / n``, ``r = p * tot_g / n``, with
    ``s = invstd`` and the roundings of those NumPy expressions, in one call
    instead of eight array operations."""
    c = gamma.size
    p = np.empty(c)
    q = np.empty(c)
    r = np.empty(c)
    _grad_coeffs_into(gamma, invstd, tot_g, tot_gx, n, 0, c, p, q, r)
    return p, q, r


@helper
def _grad_coeffs_into(gamma, invstd, tot_g, tot_gx, n, c0, c1, p, q, r):
    """:func:`_grad_coeffs` of features ``c0:c1``, into ``p``, ``q``, ``r``."""
    for j in range(c0, c1):
        s = invstd[j]
        pj = gamma[j] * s
        p[j] = pj
        q[j] = pj * s * (tot_gx[j] * s) / n
        r[j] = pj * tot_g[j] / n


@helper
def _sum_columns(v, c, first, step):
    """Sum of each feature's kernel columns, ``f * first + i * step`` for feature
    ``f`` (see :func:`.moments._merge_columns`), in the order of ``i``."""
    members = v.size // c
    out = np.zeros(c)
    for ch in range(c):
        k = ch * first
        for i in range(members):
            out[ch] += v[k + i * step]
    return out


@kernel
def _masked_grad_rows(x, rows, mean, a, b, dx, rows_per_task):
    """``dx[r] -= a + b * (x[r] - mean)`` for each selected row ``r`` in ``rows`` of the
    2-D ``x``/``dx``: the masked statistics' gradient, which reaches the selected
    positions only. Every element is computed alone (float64), so the tasks,
    ``rows_per_task`` rows each, never change a result."""
    n = rows.size
    c = a.size
    for t in prange(_n_chunks(n, rows_per_task)):
        for i in range(t * rows_per_task, min(n, (t + 1) * rows_per_task)):
            xr = x[rows[i]]
            dr = dx[rows[i]]
            for j in range(c):
                dr[j] = dr[j] - (a[j] + b[j] * (xr[j] - mean[j]))
