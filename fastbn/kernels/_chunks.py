"""Fixed chunk sizes and the helpers that walk them.

The chunking never depends on the number of threads: every reduction is
computed as per-chunk partials in a fixed order and merged in a fixed order,
so results are bitwise identical with 1, 2 or 16 threads.
"""
from .._config import helper

#: rows layout: rows per statistics chunk. A 256 x 256 block is 256 KiB in
#: float32 (512 KiB in float64), small enough to stay in the 1 MiB L2 between
#: the two passes over it.
ROWS_PER_CHUNK = 256
#: rows layout: columns per task. Only splits work; never changes a result.
COLS_PER_BLOCK = 256
#: planes layout: elements of one feature per statistics chunk (32 KiB fp32).
PLANE_CHUNK = 8192


@helper
def _chan_merge(mean, m2, count, mean_b, m2_b, count_b):
    """Chan et al. (1979): merge (count, mean, M2) of two disjoint parts."""
    total = count + count_b
    delta = mean_b - mean
    return (mean + delta * (count_b / total),
            m2 + m2_b + delta * delta * (count * count_b / total),
            total)


@helper
def _sum(seg):
    """Sum of the 1-D ``seg`` in float64, eight independent accumulators.

    One accumulator is a dependent chain of adds (4 cycles each); eight let
    the compiler use one vector add per 8 elements. The order is fixed, so
    the result does not depend on threads. Loops run over ``range`` from 0:
    Numba then knows the index is non-negative and drops the negative-index
    check that otherwise blocks vectorization (6x slower, measured).
    """
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for t in range(seg.size // 8):
        q = 8 * t
        a0 += seg[q]
        a1 += seg[q + 1]
        a2 += seg[q + 2]
        a3 += seg[q + 3]
        a4 += seg[q + 4]
        a5 += seg[q + 5]
        a6 += seg[q + 6]
        a7 += seg[q + 7]
    for q in range(seg.size - seg.size % 8, seg.size):
        a0 += seg[q]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@helper
def _sum_sq_dev(seg, mu):
    """Sum of ``(seg - mu) ** 2`` in float64 (see :func:`_sum`)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for t in range(seg.size // 8):
        q = 8 * t
        d0 = seg[q] - mu
        d1 = seg[q + 1] - mu
        d2 = seg[q + 2] - mu
        d3 = seg[q + 3] - mu
        d4 = seg[q + 4] - mu
        d5 = seg[q + 5] - mu
        d6 = seg[q + 6] - mu
        d7 = seg[q + 7] - mu
        a0 += d0 * d0
        a1 += d1 * d1
        a2 += d2 * d2
        a3 += d3 * d3
        a4 += d4 * d4
        a5 += d5 * d5
        a6 += d6 * d6
        a7 += d7 * d7
    for q in range(seg.size - seg.size % 8, seg.size):
        d0 = seg[q] - mu
        a0 += d0 * d0
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@helper
def _sum_prod_dev(g, seg, mu):
    """``(sum(g), sum(g * (seg - mu)))`` over 1-D ``g``, ``seg`` in float64."""
    s0 = s1 = s2 = s3 = 0.0
    p0 = p1 = p2 = p3 = 0.0
    for t in range(seg.size // 4):
        q = 4 * t
        s0 += g[q]
        s1 += g[q + 1]
        s2 += g[q + 2]
        s3 += g[q + 3]
        p0 += g[q] * (seg[q] - mu)
        p1 += g[q + 1] * (seg[q + 1] - mu)
        p2 += g[q + 2] * (seg[q + 2] - mu)
        p3 += g[q + 3] * (seg[q + 3] - mu)
    for q in range(seg.size - seg.size % 4, seg.size):
        s0 += g[q]
        p0 += g[q] * (seg[q] - mu)
    return (s0 + s1) + (s2 + s3), (p0 + p1) + (p2 + p3)


@helper
def _n_chunks(n, size):
    return (n + size - 1) // size

