"""Is a pass bound by memory or by compute? Its rate from memory against in cache.

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
it. ``docs/benchmarks.md`` quotes this script's output.
"""
import argparse
import time

import numpy as np

from fastbn import bench, functional
from fastbn import kernels as K


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
            cols = functional._cols(x)
            calls = max(5, (1 << 24) // x.size)
            passes = {
                "statistics": lambda: K._moments_rows.parallel(x, shift, K.ROWS_PER_CHUNK, cols),
                "elementwise": lambda: K._affine_rows.parallel(x, mean, ones, zeros, out,
                                                               K.ROWS_PER_CHUNK, cols)}
            for name, fn in passes.items():
                rates.setdefault((name, where), []).append(rate(fn, x.size, calls))
    tri = bench.triad()
    print(f"triad {tri['gbps']:.1f} GB/s: {tri['gbps'] / 12:.2f} G elements/s for a "
          f"forward pass at 12 bytes per float32 element")
    for (name, where), v in rates.items():
        print(f"{name:<12} {where:<7} {np.median(v) / 1e9:5.2f} G elements/s")


if __name__ == "__main__":
    main()
