"""Is a pass bound by memory or by compute? Its rate from memory against in cache,
and against the same traffic with no arithmetic at all.

::

    NUMBA_NUM_THREADS=2 python docs/scripts/compute_ceiling.py

Times the statistics pass (``_moments_rows``, what ``fastbn.moments`` over
axis 0 runs) and the elementwise pass (``_affine_rows``, what inference
``batch_norm_forward`` runs) on C, ``(8192, 1024)`` float32 (32 MiB, from
memory), and on ``(256, 1024)`` float32 (1 MiB, in cache), interleaved, and
prints elements per second (median of ``--rounds``), with the STREAM triad of
:mod:`fastbn.bench`. The kernels are called directly, with their arguments
prepared once, on the parallel path the public functions take for C: through
the public API the Python layer (20-30 us a call) would dominate the 1 MiB
case. If a pass is barely faster in cache than from memory, compute bounds
it.

Beside them, in the same rounds, two loops with the same traffic and no
float64 arithmetic: ``read`` sums C in float32 (one read per element, four
rows a quarter chunk apart per sweep, as the statistics pass reads) and
``copy`` copies it (one read and one ordinary store per element, as the
elementwise pass). Their sum is the floor of a two-pass forward that Numba's
ordinary stores allow: printed as % of the triad, it says how much of the
triad a forward could reach here at all. ``docs/benchmarks.md`` quotes this
script's output.
"""
import argparse
import time

import numba
import numpy as np

from fastbn import _bn, bench
from fastbn import kernels as K


@numba.njit(parallel=True, nogil=True)
def _read(x, rows_per_chunk):
    """Column sums of each chunk in float32: the statistics pass's reads, no float64."""
    n, c = x.shape
    n_chunks = n // rows_per_chunk
    q = rows_per_chunk // 4
    out = np.empty((n_chunks, c), dtype=np.float32)
    for k in numba.prange(n_chunks):
        acc = np.zeros(c, dtype=np.float32)
        for i in range(k * rows_per_chunk, k * rows_per_chunk + q):
            x0, x1, x2, x3 = x[i], x[i + q], x[i + 2 * q], x[i + 3 * q]
            for j in range(c):
                acc[j] += (x0[j] + x1[j]) + (x2[j] + x3[j])
        out[k] = acc
    return out


@numba.njit(parallel=True, nogil=True)
def _copy(x, y, rows_per_chunk):
    """``y[:] = x`` by the elementwise pass's row chunks: its traffic, no arithmetic."""
    n, c = x.shape
    for k in numba.prange(n // rows_per_chunk):
        for i in range(k * rows_per_chunk, (k + 1) * rows_per_chunk):
            xr = x[i]
            yr = y[i]
            for j in range(c):
                yr[j] = xr[j]


def rate(fn, elements, calls):
    fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return elements * calls / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    arrays = {"memory": rng.standard_normal((8192, 1024)).astype(np.float32),
              "cache": rng.standard_normal((256, 1024)).astype(np.float32)}
    mean, ones, zeros = np.zeros(1024), np.ones(1024), np.zeros(1024)
    rates = {}
    for _ in range(args.rounds):
        for where, x in arrays.items():
            out = np.empty_like(x)
            shift = x[0].astype(np.float64)
            chunk, cols = _bn.split(x)
            calls = max(5, (1 << 24) // x.size)
            passes = {
                "statistics": lambda: K._moments_rows.parallel(x, shift, chunk, cols),
                "elementwise": lambda: K._affine_rows.parallel(x, mean, ones, zeros, out,
                                                               chunk, cols),
                "read": lambda: _read(x, chunk),
                "copy": lambda: _copy(x, out, chunk)}
            for name, fn in passes.items():
                rates.setdefault((name, where), []).append(rate(fn, x.size, calls))
    tri = bench.triad()
    print(f"triad {tri['gbps']:.1f} GB/s: {tri['gbps'] / 12:.2f} G elements/s for a "
          f"forward pass at 12 bytes per float32 element")
    med = {key: np.median(v) for key, v in rates.items()}
    for (name, where), v in med.items():
        print(f"{name:<12} {where:<7} {v / 1e9:5.2f} G elements/s")
    for label, a, b in (("fastbn forward (statistics + elementwise)", "statistics", "elementwise"),
                        ("floor (read + copy)", "read", "copy")):
        r = 1 / (1 / med[(a, "memory")] + 1 / med[(b, "memory")])
        print(f"{label}, from memory: {r / 1e9:.2f} G elements/s, "
              f"{100 * r * 12 / 1e9 / tri['gbps']:.0f} % of the triad")


if __name__ == "__main__":
    main()
