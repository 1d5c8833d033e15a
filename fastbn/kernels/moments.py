"""Per-feature (mean, M2) by fixed chunks merged with Chan's formula.

Each chunk is reduced in one pass, in float64: the sums of ``d`` and ``d * d``
with ``d = x - loc``, ``loc`` the chunk's first value of the feature, give
``M2 = sum(d * d) - sum(d) ** 2 / m``. Because ``loc`` is one of the chunk's
values this cancels at most a factor ``m + 1``
(:func:`._chunks._moments_from_sums`), so float32 data with a 1e5 offset
keep their variance to ~1e-12 relative, and no M2 is ever negative.

Every feature also has one shift ``s`` for the whole array (its first value):
chunk means are kept as ``mean - s``, so the deltas Chan's merge
subtracts carry rounding errors of order eps * std, not eps * |mean|. Without
the shift, float64 data at offset 1e5 with std 0.04 lost 1.6e-10 of its
variance (eps * offset / std); with it, a few eps.

Inner loops index 1-D slices over ``range(w)``: a loop from a start that
Numba cannot prove non-negative keeps a negative-index check per access and
does not vectorize (5.5x slower on (8192, 1024) float32, measured).
"""
import numpy as np
from numba import prange

from .._config import helper, kernel
from ._chunks import (LANES, _chan_merge, _chan_merge_into, _n_chunks, _plane_chunk_moments,
                      _row_task, _rows_moments, _rows_moments_at)


@kernel
def _moments_rows(x, shift, rows_per_chunk, cols_per_block):
    """``(mean - shift, m2)`` of each column of a 2-D ``(N, C)`` array, N >= 1.

    The means stay relative to ``shift`` so that :func:`_merge_columns` can
    merge columns that share one.
    """
    n, c = x.shape
    n_chunks = _n_chunks(n, rows_per_chunk)
    n_blocks = _n_chunks(c, cols_per_block)
    part_mean = np.empty((n_chunks, c))
    part_m2 = np.empty((n_chunks, c))
    for task in prange(n_chunks * n_blocks):
        k, r0, r1, c0, c1 = _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block)
        _rows_moments(x, r0, r1, c0, shift[c0:c1], part_mean[k, c0:c1], part_m2[k, c0:c1])
    mean = np.empty(c)
    m2 = np.empty(c)
    for b in prange(n_blocks):
        c0 = b * cols_per_block
        c1 = min(c, c0 + cols_per_block)
        _merge_row_chunks(part_mean, part_m2, n, rows_per_chunk, c0, mean[c0:c1], m2[c0:c1])
    return mean, m2


@kernel
def _moments_rows_at(x, rows, shift, rows_per_chunk):
    """``(mean - shift, m2)`` of each column of ``x[rows]`` (a masked batch's
    selected rows) without gathering them: ``rows`` (at least one index) is cut
    into chunks of ``rows_per_chunk`` indices, as :func:`_moments_rows` cuts
    rows, and the chunks are merged in order, so results do not depend on the
    thread count."""
    n = rows.size
    c = x.shape[1]
    n_chunks = _n_chunks(n, rows_per_chunk)
    part_mean = np.empty((n_chunks, c))
    part_m2 = np.empty((n_chunks, c))
    for k in prange(n_chunks):
        i0 = k * rows_per_chunk
        _rows_moments_at(x, rows, i0, min(n, i0 + rows_per_chunk), shift, part_mean[k],
                         part_m2[k])
    mean = np.empty(c)
    m2 = np.empty(c)
    _merge_row_chunks(part_mean, part_m2, n, rows_per_chunk, 0, mean, m2)
    return mean, m2


@helper
def _merge_row_chunks(part_mean, part_m2, n, rows_per_chunk, c0, mean, m2):
    """Chan-merge the chunks' ``(mean, m2)`` of columns ``c0:c0 + mean.size`` (one
    row of ``part_*`` per chunk of ``rows_per_chunk`` of ``n`` rows), in chunk
    order, into ``mean``/``m2``. Each column is merged on its own, so the
    column range never changes a result."""
    c1 = c0 + mean.size
    mean[:] = part_mean[0, c0:c1]
    m2[:] = part_m2[0, c0:c1]
    count = float(min(n, rows_per_chunk))
    for k in range(1, part_mean.shape[0]):
        count_k = float(min(n, (k + 1) * rows_per_chunk) - k * rows_per_chunk)
        count = _chan_merge_into(mean, m2, count, part_mean[k, c0:c1], part_m2[k, c0:c1],
                                 count_k)


@kernel
def _moments_planes(x, shift, chunk):
    """``(mean, m2)`` of each feature ``c`` of a 3-D ``(outer, C, inner)`` array.

    ``shift[c]`` is subtracted from every element before summing (see the
    module docstring) and added back to the mean at the end.

    A feature's ``outer * inner`` elements, in storage order, are cut into
    chunks of ``chunk`` elements; every (feature, chunk) is one task.
    """
    outer, c, inner = x.shape
    m = outer * inner
    n_chunks = _n_chunks(m, chunk)
    part_mean = np.empty((c, n_chunks))
    part_m2 = np.empty((c, n_chunks))
    for task in prange(c * n_chunks):
        ch = task // n_chunks
        k = task - ch * n_chunks
        j0 = k * chunk
        j1 = min(m, j0 + chunk)
        part_mean[ch, k], part_m2[ch, k] = _plane_chunk_moments(
            x, ch, j0, j1, shift[ch], np.zeros(LANES), np.zeros(LANES))
    mean = np.empty(c)
    m2 = np.empty(c)
    for ch in prange(c):
        mu = part_mean[ch, 0]
        q = part_m2[ch, 0]
        count = float(min(m, chunk))
        for k in range(1, n_chunks):
            count_k = float(min(m, (k + 1) * chunk) - k * chunk)
            mu, q, count = _chan_merge(mu, q, count, part_mean[ch, k], part_m2[ch, k], count_k)
        mean[ch] = shift[ch] + mu
        m2[ch] = q
    return mean, m2


@helper
def _merge_columns(mean, m2, count, c, first, step, shift):
    """Merge each feature's kernel columns, ``count`` values each: feature ``f``'s
    are ``f * first + i * step`` (adjacent groups: ``(group, 1)``; folded rows:
    ``(1, c)``), merged in the order of ``i``.

    ``mean`` is relative to ``shift``, which is the same for a feature's
    columns; the merged means are returned absolute.
    """
    members = mean.size // c
    out_mean = np.empty(c)
    out_m2 = np.empty(c)
    for ch in range(c):
        k = ch * first
        mu = mean[k]
        q = m2[k]
        n = count
        for i in range(1, members):
            mu, q, n = _chan_merge(mu, q, n, mean[k + i * step], m2[k + i * step], count)
        out_mean[ch] = shift[k] + mu
        out_m2[ch] = q
    return out_mean, out_m2
