"""Fixed chunk sizes and the helpers that walk them.

The chunking never depends on the number of threads: every reduction is
computed as per-chunk partials in a fixed order and merged in a fixed order,
so results are bitwise identical with 1, 2 or 16 threads.
"""
from .._config import inline

#: rows layout: rows per statistics chunk. A 256 x 256 block is 256 KiB in
#: float32 (512 KiB in float64), small enough to stay in the 1 MiB L2 between
#: the two passes over it.
ROWS_PER_CHUNK = 256
#: rows layout: columns per task. Only splits work; never changes a result.
COLS_PER_BLOCK = 256
#: planes layout: elements of one feature per statistics chunk (32 KiB fp32).
PLANE_CHUNK = 8192


@inline
def _chan_merge(mean, m2, count, mean_b, m2_b, count_b):
    """Chan et al. (1979): merge (count, mean, M2) of two disjoint parts."""
    total = count + count_b
    delta = mean_b - mean
    return (mean + delta * (count_b / total),
            m2 + m2_b + delta * delta * (count * count_b / total),
            total)


@inline
def _sum(row, lo, hi):
    """Sum of ``row[lo:hi]`` in float64, eight independent accumulators.

    One accumulator is a dependent chain of adds (4 cycles each); eight let
    the compiler use one vector add per 8 elements. The order is fixed, so
    the result does not depend on threads.
    """
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    q = lo
    while q + 8 <= hi:
        a0 += row[q]
        a1 += row[q + 1]
        a2 += row[q + 2]
        a3 += row[q + 3]
        a4 += row[q + 4]
        a5 += row[q + 5]
        a6 += row[q + 6]
        a7 += row[q + 7]
        q += 8
    while q < hi:
        a0 += row[q]
        q += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@inline
def _sum_sq_dev(row, lo, hi, mu):
    """Sum of ``(row[lo:hi] - mu) ** 2`` in float64 (see :func:`_sum`)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    q = lo
    while q + 8 <= hi:
        d0 = row[q] - mu
        d1 = row[q + 1] - mu
        d2 = row[q + 2] - mu
        d3 = row[q + 3] - mu
        d4 = row[q + 4] - mu
        d5 = row[q + 5] - mu
        d6 = row[q + 6] - mu
        d7 = row[q + 7] - mu
        a0 += d0 * d0
        a1 += d1 * d1
        a2 += d2 * d2
        a3 += d3 * d3
        a4 += d4 * d4
        a5 += d5 * d5
        a6 += d6 * d6
        a7 += d7 * d7
        q += 8
    while q < hi:
        d0 = row[q] - mu
        a0 += d0 * d0
        q += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@inline
def _sum_prod_dev(g, row, lo, hi, mu):
    """``(sum(g[lo:hi]), sum(g[lo:hi] * (row[lo:hi] - mu)))`` in float64."""
    s0 = s1 = s2 = s3 = 0.0
    p0 = p1 = p2 = p3 = 0.0
    q = lo
    while q + 4 <= hi:
        s0 += g[q]
        s1 += g[q + 1]
        s2 += g[q + 2]
        s3 += g[q + 3]
        p0 += g[q] * (row[q] - mu)
        p1 += g[q + 1] * (row[q + 1] - mu)
        p2 += g[q + 2] * (row[q + 2] - mu)
        p3 += g[q + 3] * (row[q + 3] - mu)
        q += 4
    while q < hi:
        s0 += g[q]
        p0 += g[q] * (row[q] - mu)
        q += 1
    return (s0 + s1) + (s2 + s3), (p0 + p1) + (p2 + p3)


@inline
def _n_chunks(n, size):
    return (n + size - 1) // size

