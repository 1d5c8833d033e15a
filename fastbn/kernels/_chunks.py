"""Fixed chunk sizes and the helpers that walk them.

The chunking never depends on the number of threads: every reduction is
computed as per-chunk partials in a fixed order and merged in a fixed order,
so results are bitwise identical with 1, 2 or 16 threads.
"""
import numpy as np

from .._config import (COLS_PER_BLOCK, PLANE_CHUNK, ROWS_PER_CHUNK, SERIAL_BELOW,
                       SHARE_MIN_ROWS, STREAM_MIN_BYTES, UNROLL_MIN_COLS, helper)
from ._intrinsics import LINE, fma

#: rows layout: an array of at most ``ROWS_PER_CHUNK`` rows is cut in two chunks
#: when it has at least ``SHARE_MIN_ROWS`` rows and this many elements, read
#: once here (a test that patches ``_config.SERIAL_BELOW`` picks a kernel, not
#: the chunks).
SHARE_MIN_SIZE = SERIAL_BELOW


@helper
def _chan_merge(mean, m2, count, mean_b, m2_b, count_b):
    """Chan et al. (1979): merge (count, mean, M2) of two disjoint parts."""
    total = count + count_b
    delta = mean_b - mean
    return (mean + delta * (count_b / total),
            m2 + m2_b + delta * delta * (count * count_b / total),
            total)


@helper
def _chan_merge_into(mean, m2, count, mean_b, m2_b, count_b):
    """:func:`_chan_merge` of column vectors, into ``mean``/``m2``; returns the count."""
    total = count + count_b
    w_mean = count_b / total
    w_m2 = count * count_b / total
    for j in range(mean.size):
        delta = mean_b[j] - mean[j]
        mean[j] += delta * w_mean
        m2[j] += m2_b[j] + delta * delta * w_m2
    return total


#: planes layout: independent float64 accumulators per reduction. A runtime
#: length keeps LLVM from unrolling the lane loop into scalars (it vectorizes
#: it instead): 14 G elem/s summing fp32 in cache with 64 lanes, 3.8 with
#: eight scalar accumulators, measured on the 2-core dev machine.
LANES = 64


@helper
def _lanes_add_sq(seg, s, acc, acc2):
    """``acc[j] += d``, ``acc2[j] += d * d`` with ``d = seg[j + k * L] - s`` for every
    k: shifted sums of 1-D ``seg`` in ``L`` lanes.

    Which lane an element lands in depends only on its position in ``seg``,
    so the result does not depend on threads.
    """
    lanes = acc.size
    nb = seg.size // lanes
    for t in range(nb):
        blk = seg[t * lanes:(t + 1) * lanes]
        for j in range(lanes):
            d = blk[j] - s
            acc[j] += d
            acc2[j] += d * d
    tail = seg[nb * lanes:]
    for j in range(tail.size):
        d = tail[j] - s
        acc[j] += d
        acc2[j] += d * d


@helper
def _plane_chunk_moments(x, ch, j0, j1, s, acc, acc2):
    """``(mean - s, m2)`` of elements ``j0:j1`` (storage order) of feature ``ch``
    of an ``(outer, C, inner)`` array, in one pass (see :func:`_moments_from_sums`).
    ``acc``/``acc2`` are zeroed lane buffers, returned zeroed."""
    inner = x.shape[2]
    o = j0 // inner
    i = j0 - o * inner
    loc = _local_shift(x[o, ch, i], s)
    j = j0
    while j < j1:
        e = min(inner, i + (j1 - j))
        _lanes_add_sq(x[o, ch, i:e], loc, acc, acc2)
        j += e - i
        o += 1
        i = 0
    return _moments_from_sums(_lanes_total(acc), _lanes_total(acc2), j1 - j0, loc - s)


@helper
def _local_shift(v, s):
    """A chunk's shift: its first value ``v``, or the feature's shift ``s`` when
    ``v`` is not finite (a NaN or inf shift would poison the whole chunk)."""
    v = float(v)
    return v if np.isfinite(v) else s


@helper
def _moments_from_sums(s1, s2, m, rel):
    """Mean (plus ``rel``) and M2 of ``m`` values from the shifted sums
    ``s1 = sum(d)``, ``s2 = sum(d * d)``, ``d = x - loc``, where the shift ``loc``
    is one of the values: ``M2 = s2 - s1 * s1 / m``.

    The subtraction cancels at most a factor ``s2 / M2 <= m + 1``: ``s2 = M2 +
    m (mean - loc) ** 2``, and ``(loc - mean) ** 2 <= M2`` because it is one of
    M2's terms. So M2 keeps a relative error of order ``m * eps`` (about 1e-14
    for 128 rows) however far the data sit from zero.
    For float32 data ``d`` and ``d * d`` are exact in float64. A chunk's values
    are read once instead of twice (sum, then squared deviations from the sum's
    mean): the statistics pass on (128, 784) fp32 took 23 us instead of 38.

    Finite float64 data beyond about 1e154 square past 1.8e308: ``s2`` is inf
    and so, in most such chunks, is ``s1 * mu <= s2``; ``inf - inf`` would be
    NaN, which the merge would spread to the feature's variance and moving
    statistics without a warning. M2 is then inf, as the merge of one-value chunks gives
    (its ``delta ** 2`` overflows alike), and
    ``fastbn._bn.moving.check_variance`` says so. A non-finite ``s1`` (inf or
    NaN in the data) still gives NaN. Once per chunk and feature, never per
    element: the finish loop stays vectorized (four instructions more per
    four columns in the serial kernels' assembly; the element loops are the
    same instructions), and a finite ``s2`` gives the same bits.
    """
    mu = s1 / m
    q = s2 - s1 * mu
    if s2 == np.inf and abs(s1) < np.inf:
        q = np.inf
    return rel + mu, max(q, 0.0)


@helper
def _lanes_add_prod_dev(g, seg, mu, acc_g, acc_gx):
    """``acc_g`` lanes += ``g``; ``acc_gx`` lanes += ``g * (seg - mu)``."""
    lanes = acc_g.size
    nb = seg.size // lanes
    for t in range(nb):
        gb = g[t * lanes:(t + 1) * lanes]
        xb = seg[t * lanes:(t + 1) * lanes]
        for j in range(lanes):
            acc_g[j] += gb[j]
            acc_gx[j] = fma(gb[j], xb[j] - mu, acc_gx[j])
    gt = g[nb * lanes:]
    xt = seg[nb * lanes:]
    for j in range(xt.size):
        acc_g[j] += gt[j]
        acc_gx[j] = fma(gt[j], xt[j] - mu, acc_gx[j])


@helper
def _lanes_total(acc):
    """Sum of the lanes in a fixed order, and reset them to zero."""
    s = 0.0
    for j in range(acc.size):
        s += acc[j]
        acc[j] = 0.0
    return s


def rows_per_chunk(n, c):
    """Rows per statistics chunk of an ``(n, c)`` rows-layout array.

    An even number of chunks of at most ``ROWS_PER_CHUNK`` rows, as equal as
    possible (the last one may be shorter), so that two threads (or four, ...)
    each take whole rows of as many chunks. Only an array of at most
    ``ROWS_PER_CHUNK`` rows with fewer than ``SHARE_MIN_ROWS`` rows or
    ``SHARE_MIN_SIZE`` elements is one chunk. This depends on the shape only,
    never on the thread count, so results do not either; it does decide the
    order of the sums, so serial and parallel kernels must both be given it.

    Rows cut into column blocks, the only split of one chunk, cost each thread
    time per row segment (47 ns per extra 400-column segment, about one L3
    miss), so two chunks of 64 rows beat one of 128 in column blocks: the
    fused kernels 1.43x forward, 1.33x backward on (128, 784) fp32; chunks of
    16 rows were 0.93x on (32, 4096), hence the floor of 64 rows. Whole calls:
    ``docs/maths.md``, "Whole rows for each thread".
    """
    if n <= ROWS_PER_CHUNK and (n < SHARE_MIN_ROWS or n * c < SHARE_MIN_SIZE):
        return ROWS_PER_CHUNK
    k = 2 * -(-n // (2 * ROWS_PER_CHUNK))
    return -(-n // k)


@helper
def _n_chunks(n, size):
    return (n + size - 1) // size


@helper
def _row_task(task, n, c, n_blocks, rows_per_chunk, cols_per_block):
    """Rows layout: task ``task``'s chunk ``k``, rows ``r0:r1`` and columns ``c0:c1``
    (tasks run over row chunks, then column blocks within a chunk)."""
    k = task // n_blocks
    r0 = k * rows_per_chunk
    c0 = (task - k * n_blocks) * cols_per_block
    return k, r0, min(n, r0 + rows_per_chunk), c0, min(c, c0 + cols_per_block)


@helper
def _rows_moments(x, r0, r1, c0, sh, mean, m2):
    """``mean[j] = mean(x[r0:r1, c0 + j]) - sh[j]`` and ``m2[j]``, the sum of squared
    deviations, in one pass: each column is shifted by its first value in the
    chunk and summed (see :func:`_moments_from_sums`).

    Rows of arrays at least ``UNROLL_MIN_COLS`` wide are summed in the order
    ``i``, ``i + q``, ``i + 2q``, ``i + 3q`` for ``i`` in the first quarter of
    the chunk, then the ``(r1 - r0) % 4`` last rows (see :func:`_quarter`);
    blocks that wide take those four rows in one sweep, with one load and
    store of each accumulator instead of four, and four memory streams instead
    of one (see :data:`UNROLL_MIN_COLS`), narrower blocks one row per sweep in
    the same order, so the width of a column block never changes a result.
    Rows of narrower arrays are summed in order. The sums go to local arrays,
    finished into ``mean``/``m2`` at the end.
    """
    w = mean.size
    c1 = c0 + w
    loc = np.empty(w)
    xs = x[r0, c0:c1]
    for j in range(w):
        loc[j] = _local_shift(xs[j], sh[j])
    a1 = np.zeros(w)
    a2 = np.zeros(w)
    q = _quarter(x, r0, r1)
    if w >= UNROLL_MIN_COLS:
        for i in range(r0, r0 + q):
            x0, x1, x2, x3 = x[i, c0:c1], x[i + q, c0:c1], x[i + 2 * q, c0:c1], x[i + 3 * q, c0:c1]
            for j in range(w):
                s = loc[j]
                t = a1[j]
                u = a2[j]
                d = x0[j] - s
                t += d
                u = fma(d, d, u)
                d = x1[j] - s
                t += d
                u = fma(d, d, u)
                d = x2[j] - s
                t += d
                u = fma(d, d, u)
                d = x3[j] - s
                t += d
                u = fma(d, d, u)
                a1[j] = t
                a2[j] = u
    else:                               # the same order, one row per sweep
        for i in range(r0, r0 + q):
            for k in range(i, i + 4 * q, q):
                _add_sq_row(x[k, c0:c1], loc, a1, a2)
    for i in range(r0 + 4 * q, r1):
        _add_sq_row(x[i, c0:c1], loc, a1, a2)
    for j in range(w):
        mean[j], m2[j] = _moments_from_sums(a1[j], a2[j], r1 - r0, loc[j] - sh[j])


@helper
def _rows_moments_at(x, rows, i0, i1, sh, mean, m2):
    """:func:`_rows_moments` of the rows ``rows[i0:i1]`` of ``x`` (all columns),
    read in place in that order, one row per sweep."""
    w = mean.size
    loc = np.empty(w)
    xs = x[rows[i0]]
    for j in range(w):
        loc[j] = _local_shift(xs[j], sh[j])
    a1 = np.zeros(w)
    a2 = np.zeros(w)
    for i in range(i0, i1):
        _add_sq_row(x[rows[i]], loc, a1, a2)
    for j in range(w):
        mean[j], m2[j] = _moments_from_sums(a1[j], a2[j], i1 - i0, loc[j] - sh[j])


@helper
def _rows_grad_sums(dy, x, r0, r1, c0, mu, sg, sgx):
    """``sg[j] = sum(dy)``, ``sgx[j] = sum(dy * (x - mu[j]))`` over rows r0:r1, as above."""
    w = sg.size
    c1 = c0 + w
    ag = np.zeros(w)
    agx = np.zeros(w)
    q = _quarter(x, r0, r1)
    if w >= UNROLL_MIN_COLS:
        for i in range(r0, r0 + q):
            g0, g1 = dy[i, c0:c1], dy[i + q, c0:c1]
            g2, g3 = dy[i + 2 * q, c0:c1], dy[i + 3 * q, c0:c1]
            x0, x1, x2, x3 = x[i, c0:c1], x[i + q, c0:c1], x[i + 2 * q, c0:c1], x[i + 3 * q, c0:c1]
            for j in range(w):
                m = mu[j]
                a = ag[j]
                b = agx[j]
                a += g0[j]
                b = fma(g0[j], x0[j] - m, b)
                a += g1[j]
                b = fma(g1[j], x1[j] - m, b)
                a += g2[j]
                b = fma(g2[j], x2[j] - m, b)
                a += g3[j]
                b = fma(g3[j], x3[j] - m, b)
                ag[j] = a
                agx[j] = b
    else:                               # the same order, one row per sweep
        for i in range(r0, r0 + q):
            for k in range(i, i + 4 * q, q):
                _add_prod_dev_row(dy[k, c0:c1], x[k, c0:c1], mu, ag, agx)
    for i in range(r0 + 4 * q, r1):
        _add_prod_dev_row(dy[i, c0:c1], x[i, c0:c1], mu, ag, agx)
    sg[:] = ag
    sgx[:] = agx


@helper
def _quarter(x, r0, r1):
    """The row spacing ``q`` of :func:`_rows_moments` and :func:`_rows_grad_sums` over
    rows ``r0:r1`` of the 2-D ``x``: a quarter of them, or 0 (rows in order) when
    ``x`` is narrower than ``UNROLL_MIN_COLS``. It depends on the whole array's
    width, never on a column block's. Narrow rows read in the spread order were
    0.82-0.84x as fast ((100352, 64) fp32, training forward and backward)."""
    return (r1 - r0) // 4 if x.shape[1] >= UNROLL_MIN_COLS else 0


@helper
def _half(x, r0, r1):
    """Row spacing of the two-row sweeps of the rows elementwise passes over rows
    ``r0:r1`` of ``x``: half of them when ``x`` has more rows than that (several
    row chunks), else 0 (one row per sweep).

    Two rows half a chunk apart share the loads of the per-feature vectors and
    read two streams instead of one: 1.09x forward on (8192, 1024) fp32, but
    0.97x on one chunk, (128, 784), hence one row per sweep there. Every
    element is computed alone, so this never changes a result."""
    return (r1 - r0) // 2 if x.shape[0] > r1 - r0 else 0


@helper
def _add_sq_row(xr, loc, a1, a2):
    """``a1[j] += d``, ``a2[j] += d * d`` with ``d = xr[j] - loc[j]``: one row of
    :func:`_rows_moments`."""
    for j in range(a1.size):
        d = xr[j] - loc[j]
        a1[j] += d
        a2[j] = fma(d, d, a2[j])


@helper
def _add_prod_dev_row(gr, xr, mu, ag, agx):
    """``ag[j] += gr[j]``, ``agx[j] += gr[j] * (xr[j] - mu[j])``: one row of
    :func:`_rows_grad_sums`."""
    for j in range(ag.size):
        ag[j] += gr[j]
        agx[j] = fma(gr[j], xr[j] - mu[j], agx[j])


@helper
def _streams(out, c0):
    """Whether the rows elementwise passes write columns ``c0:`` of the 2-D
    ``out`` with non-temporal stores (:func:`._intrinsics.stream`): ``out`` has
    ``STREAM_MIN_BYTES`` or more, unit column stride, and every row segment
    starts on a cache line (:func:`fastbn._axes.Layout.empty` allocates large
    outputs so), where all but its last partial line is written non-temporally.
    Row segments that start inside a line would mix both kinds of store in a
    line at each end: E's backward was then 0.93-0.97x as fast, against 1.08-1.10x
    on lines (fused kernel alone, 1 thread, thread CPU time).

    An ordinary store first reads its line (read for ownership), so the
    elementwise pass of the backward moves 16 bytes per float32 element, not
    12; streamed, it does not: the backward on NHWC (32, 56, 56, 64) fp32 1.08x
    faster than with ordinary stores (one thread)."""
    item = out.itemsize
    return (out.size * item >= STREAM_MIN_BYTES and out.strides[1] == item
            and out.strides[0] % LINE == 0 and (out.ctypes.data + c0 * item) % LINE == 0)
