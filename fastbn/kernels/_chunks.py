"""Fixed chunk sizes and the helpers that walk them.

The chunking never depends on the number of threads: every reduction is
computed as per-chunk partials in a fixed order and merged in a fixed order,
so results are bitwise identical with 1, 2 or 16 threads.
"""
from .._config import helper

#: rows layout: rows per statistics chunk. A 128 x 1024 block is 512 KiB in
#: float32, small enough to stay in the 1 MiB L2 between the two passes over
#: it. Moments of (8192, 1024) fp32, 2 threads: 1.1 ms with 128 x 1024
#: blocks, 1.9 ms with 256 x 256 (short rows defeat the prefetcher).
ROWS_PER_CHUNK = 128
#: rows layout: at most this many columns per task. Column blocks only split
#: the work (each column is reduced on its own), so they never change a result.
COLS_PER_BLOCK = 1024
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


#: planes layout: independent float64 accumulators per reduction. A runtime
#: length keeps LLVM from unrolling the lane loop into scalars (it vectorizes
#: it instead): 14 G elem/s summing fp32 in cache with 64 lanes, 3.8 with
#: eight scalar accumulators, measured on the 2-core dev machine.
LANES = 64


@helper
def _lanes_add(seg, s, acc):
    """``acc[j] += seg[j + k * L] - s`` for every k: a shifted sum of 1-D ``seg`` in ``L`` lanes.

    Which lane an element lands in depends only on its position in ``seg``,
    so the result does not depend on threads.
    """
    lanes = acc.size
    nb = seg.size // lanes
    for t in range(nb):
        blk = seg[t * lanes:(t + 1) * lanes]
        for j in range(lanes):
            acc[j] += blk[j] - s
    tail = seg[nb * lanes:]
    for j in range(tail.size):
        acc[j] += tail[j] - s


@helper
def _lanes_add_sq_dev(seg, s, mu, acc):
    """``acc`` lanes += ``((seg - s) - mu) ** 2`` (see :func:`_lanes_add`)."""
    lanes = acc.size
    nb = seg.size // lanes
    for t in range(nb):
        blk = seg[t * lanes:(t + 1) * lanes]
        for j in range(lanes):
            d = (blk[j] - s) - mu
            acc[j] += d * d
    tail = seg[nb * lanes:]
    for j in range(tail.size):
        d = (tail[j] - s) - mu
        acc[j] += d * d


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
            acc_gx[j] += gb[j] * (xb[j] - mu)
    gt = g[nb * lanes:]
    xt = seg[nb * lanes:]
    for j in range(xt.size):
        acc_g[j] += gt[j]
        acc_gx[j] += gt[j] * (xt[j] - mu)


@helper
def _lanes_total(acc):
    """Sum of the lanes in a fixed order, and reset them to zero."""
    s = 0.0
    for j in range(acc.size):
        s += acc[j]
        acc[j] = 0.0
    return s


@helper
def _n_chunks(n, size):
    return (n + size - 1) // size

