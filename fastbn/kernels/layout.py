"""Copying between memory orders, for inputs laid out unlike the kernels want.

A rows kernel reading a Fortran-ordered ``(N, C)`` view touches a new cache
line (and, on large arrays, a new page) for every element of a row, and
NumPy's own copy into C order walks one side with that stride too. Copying in
small square tiles reads and writes both sides a cache line at a time.
"""
from numba import prange

from .._config import kernel

#: tile side (elements). With power-of-two row lengths every row of a tile
#: falls in the same L1 set, so tiles wider than the L1's 8 ways thrash it:
#: a Fortran-ordered (8192, 1024) float32 copied in 12.4 ms with 8, 28.8 ms
#: with 16, 26.0 ms with 32 ((8000, 1000): 10.8, 21.7, 19.6 ms;
#: np.ascontiguousarray: 71 ms), 2 threads, one run each, 2026-12-02.
TILE = 8


@kernel
def _copy_tiles(src, dst):
    """``dst[...] = src`` for 2-D arrays of one shape in different memory orders
    (a Fortran-ordered ``src`` into a C-ordered ``dst``): ``TILE`` rows per task,
    ``TILE`` columns at a time, down each column of ``src`` inside a tile."""
    n, c = src.shape
    for t in prange((n + TILE - 1) // TILE):
        i0 = t * TILE
        i1 = min(n, i0 + TILE)
        for j0 in range(0, c, TILE):
            for j in range(j0, min(c, j0 + TILE)):
                for i in range(i0, i1):
                    dst[i, j] = src[i, j]
