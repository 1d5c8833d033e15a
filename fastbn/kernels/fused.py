"""Both passes of a training forward or backward in one call.

Planes: one task per feature, statistics and elementwise pass while the
feature is in cache. For planes whose feature data fit in cache (NCHW:
``outer * inner`` elements per channel), reading a channel twice costs one
DRAM read, not two: forward moves 8 bytes per fp32 element instead of 12,
backward 12 instead of 20.

Rows: the split kernels' tasks, their merge and the elementwise tasks in
one parallel function, which saves the Python between the passes and a
thread's chunk stays in cache when there are as many chunks as threads.
Rows that fit one chunk are split by columns only, and each column block
is one task for both passes (its statistics depend on no other block).

The chunking and merge order are those of the split kernels, so the
results are the same numbers.
"""
import numpy as np
from numba import prange

from .._config import helper, kernel
from ._chunks import (LANES, _chan_merge, _lanes_add_prod_dev, _lanes_total, _n_chunks,
                      _plane_chunk_moments, _row_task, _rows_grad_sums, _rows_moments)
from ._intrinsics import fma
from .backward import _grad_coeffs_into, _grad_x_row_block, _sum_columns, _sum_row_chunks
from .moments import _merge_columns, _merge_row_chunks
from .normalize import (_affine_row_block, _finite_shift, _invstd_scale_into,
                        _invstd_scale_one, _tile)


@kernel
def _forward_planes_fused(x, shift, gamma, beta, eps, y, stats, chunk):
    """Batch-norm forward per feature of ``(outer, C, inner)``; writes each
    feature's mean, variance and ``invstd`` into ``stats[0]``, ``stats[1]``,
    ``stats[2]`` (see :func:`_forward_rows_fused`).

    ``gamma``/``beta`` are vectors of length C (ones / zeros for None), float64
    or the input's dtype (widened as they are read, see
    :func:`fastbn._bn.checks.param_dtype`); ``shift`` as in
    :func:`._moments_planes`.
    """
    outer, c, inner = x.shape
    m = outer * inner
    n_chunks = _n_chunks(m, chunk)
    mean, var, invstd = stats[0], stats[1], stats[2]
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
        v = q / m
        var[ch] = v
        si, sc = _invstd_scale_one(v, gamma[ch], eps)
        invstd[ch] = si
        sh = beta[ch]
        for o in range(outer):
            xr = x[o, ch]
            yr = y[o, ch]
            for t in range(inner):
                yr[t] = (xr[t] - mu) * sc + sh


@kernel
def _backward_planes_fused(dy, x, mean, invstd, gamma, dx, grads, chunk):
    """Training batch-norm backward per feature; writes ``dgamma`` and ``dbeta``
    into ``grads`` (see :func:`_store_grads`)."""
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
                dr[t] = fma(gr[t], p, -fma(xr[t] - mu, q, r))
    _store_grads(sum_g, sum_gx, invstd, grads)


@kernel
def _forward_rows_fused(x, gamma, beta, eps, y, stats, rows_per_chunk, cols_per_block):
    """Training batch-norm forward of ``(N, C)``; writes each feature's mean,
    variance and ``invstd`` into ``stats[0]``, ``stats[1]``, ``stats[2]``.

    The caller allocates ``stats``, a ``(3, features)`` float64 array, because
    every array a kernel returns costs about 1.2 us to hand to Python (a
    Numba-boxed ``np.empty(784)``: 1.8 us, against 0.4 us for NumPy's; three
    of them were a tenth of A's (128, 784) forward).

    The split kernels' passes in one call: the statistics tasks of
    :func:`._moments_rows` (shifted by each column's first finite value, as
    :func:`fastbn._bn.dispatch.shift`), their merge, ``invstd``, then the
    tasks of :func:`._affine_rows` over the same row chunks, so a thread
    finds its chunk still in cache when there are no more chunks than
    threads. When the rows fit one chunk and are split into column blocks
    (in parallel), each block's task runs both passes, and no thread waits
    for the others between them: 1.07x faster than two task loops on
    (128, 1024) fp32 in parallel, but 0.93-0.95x serially, so a serial call
    on one chunk takes whole rows (one block) instead.
    ``gamma``/``beta`` are vectors (ones / zeros for None), float64 or the
    input's dtype as in :func:`_forward_planes_fused`, one entry per feature.
    When ``x`` has more columns than features, its rows are
    folded (:attr:`fastbn._axes.Layout.fold`): feature ``f`` is columns
    ``f, f + F, f + 2F, ...``, merged after the chunks as the split path's
    :func:`.moments._merge_columns` does. Same bits as the split kernels.
    """
    n, c = x.shape
    features = gamma.size
    fold = c // features
    n_chunks = _n_chunks(n, rows_per_chunk)
    n_blocks = _n_chunks(c, cols_per_block)
    shift = _tile(_finite_shift(x[0, :features]), fold)
    part_mean = np.empty((n_chunks, c))
    part_m2 = np.empty((n_chunks, c))
    mean, var, invstd = stats[0], stats[1], stats[2]
    scale = np.empty(features)
    if n_chunks == 1 and n_blocks > 1 and fold == 1:  # one task per column block, both passes
        for task in prange(n_blocks):
            k, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
            _rows_moments(x, r0, r1, c0, shift[c0:c1], part_mean[k, c0:c1], part_m2[k, c0:c1])
            _finish_moments(part_mean, part_m2, n, rows_per_chunk, shift, gamma, eps, c0, c1,
                            mean, var, invstd, scale)
            _affine_row_block(x, r0, r1, c0, c1, mean, scale, beta, y)
        return
    for task in prange(n_chunks * n_blocks):
        k, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
        _rows_moments(x, r0, r1, c0, shift[c0:c1], part_mean[k, c0:c1], part_m2[k, c0:c1])
    if fold == 1:
        _finish_moments(part_mean, part_m2, n, rows_per_chunk, shift, gamma, eps, 0, c,
                        mean, var, invstd, scale)
        mean_c, scale_c, beta_c = mean, scale, beta
    else:                               # folded rows: merge each feature's columns first
        mean_w = np.empty(c)
        m2_w = np.empty(c)
        _merge_row_chunks(part_mean, part_m2, n, rows_per_chunk, 0, mean_w, m2_w)
        mean_f, m2 = _merge_columns(mean_w, m2_w, float(n), features, 1, features, shift)
        for j in range(features):
            mean[j] = mean_f[j]
            var[j] = m2[j] / (n * fold)
        _invstd_scale_into(var, gamma, eps, 0, features, invstd, scale)
        mean_c, scale_c, beta_c = _tile(mean, fold), _tile(scale, fold), _tile(beta, fold)
    for task in prange(n_chunks * n_blocks):
        _, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
        _affine_row_block(x, r0, r1, c0, c1, mean_c, scale_c, beta_c, y)


@kernel
def _backward_rows_fused(dy, x, mean, invstd, gamma, dx, grads, rows_per_chunk, cols_per_block):
    """Training batch-norm backward of ``(N, C)`` in one call, as
    :func:`_forward_rows_fused`: the tasks of :func:`._grad_sums_rows`, their
    sum, then those of :func:`._grad_x_rows` (one task per column block for
    both passes when the rows fit one chunk and are split, as in the forward:
    1.04-1.08x faster on (128, 784), 1.04x on (128, 1024), 1.06x on
    (64, 2048), 1.08x on (128, 300)); writes ``dgamma`` and ``dbeta`` per
    feature (``mean.size`` of them; folded rows as in the forward) into
    ``grads`` (see :func:`_store_grads`). Same bits as the split kernels."""
    n, c = x.shape
    features = mean.size
    fold = c // features
    n_chunks = _n_chunks(n, rows_per_chunk)
    n_blocks = _n_chunks(c, cols_per_block)
    mean_c = _tile(mean, fold) if fold > 1 else mean
    part_g = np.empty((n_chunks, c))
    part_gx = np.empty((n_chunks, c))
    sum_g = np.zeros(features)
    sum_gx = np.zeros(features)
    p = np.empty(features)
    q = np.empty(features)
    r = np.empty(features)
    if n_chunks == 1 and n_blocks > 1 and fold == 1:  # one task per column block, both passes
        for task in prange(n_blocks):
            k, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
            _rows_grad_sums(dy, x, r0, r1, c0, mean[c0:c1], part_g[k, c0:c1], part_gx[k, c0:c1])
            _finish_grads(part_g, part_gx, gamma, invstd, n, c0, c1, sum_g, sum_gx, p, q, r)
            _grad_x_row_block(dy, x, r0, r1, c0, c1, mean, p, q, r, dx)
        _store_grads(sum_g, sum_gx, invstd, grads)
        return
    for task in prange(n_chunks * n_blocks):
        k, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
        _rows_grad_sums(dy, x, r0, r1, c0, mean_c[c0:c1], part_g[k, c0:c1], part_gx[k, c0:c1])
    if fold == 1:
        _finish_grads(part_g, part_gx, gamma, invstd, n, 0, c, sum_g, sum_gx, p, q, r)
        p_c, q_c, r_c = p, q, r
    else:                               # folded rows: add up each feature's columns first
        sum_g_w = np.zeros(c)
        sum_gx_w = np.zeros(c)
        _sum_row_chunks(part_g, part_gx, 0, sum_g_w, sum_gx_w)
        sum_g = _sum_columns(sum_g_w, features, 1, features)
        sum_gx = _sum_columns(sum_gx_w, features, 1, features)
        _grad_coeffs_into(gamma, invstd, sum_g, sum_gx, float(n * fold), 0, features, p, q, r)
        p_c, q_c, r_c = _tile(p, fold), _tile(q, fold), _tile(r, fold)
    for task in prange(n_chunks * n_blocks):
        _, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
        _grad_x_row_block(dy, x, r0, r1, c0, c1, mean_c, p_c, q_c, r_c, dx)
    _store_grads(sum_g, sum_gx, invstd, grads)


@helper
def _finish_moments(part_mean, part_m2, n, rows_per_chunk, shift, gamma, eps, c0, c1,
                    mean, var, invstd, scale):
    """Columns ``c0:c1`` of the training forward's statistics from its chunks'
    partials: the merge, the shift added back, ``m2 -> var``, ``invstd`` and
    ``scale``, into the vectors given."""
    _merge_row_chunks(part_mean, part_m2, n, rows_per_chunk, c0, mean[c0:c1], var[c0:c1])
    for j in range(c0, c1):
        mean[j] += shift[j]
        var[j] /= n
    _invstd_scale_into(var, gamma, eps, c0, c1, invstd, scale)


@helper
def _finish_grads(part_g, part_gx, gamma, invstd, n, c0, c1, sum_g, sum_gx, p, q, r):
    """Columns ``c0:c1`` of the training backward's sums from its chunks' partials
    (into the zeroed ``sum_g``, ``sum_gx``) and the coefficients of ``dx``."""
    _sum_row_chunks(part_g, part_gx, c0, sum_g[c0:c1], sum_gx[c0:c1])
    _grad_coeffs_into(gamma, invstd, sum_g, sum_gx, float(n), c0, c1, p, q, r)


@helper
def _store_grads(sum_g, sum_gx, invstd, grads):
    """``grads[0] = sum_gx * invstd`` (``dgamma``) and ``grads[1] = sum_g``
    (``dbeta``), computed in float64 and rounded once to ``grads``' dtype, as
    the NumPy expressions they replace: the caller allocates ``grads`` in the
    dtype it returns, so the kernel hands back no array (each costs about
    1.2 us, see :func:`_forward_rows_fused`) and nothing is cast after it."""
    for j in range(sum_g.size):
        grads[0, j] = sum_gx[j] * invstd[j]
        grads[1, j] = sum_g[j]
