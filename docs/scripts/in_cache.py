"""What bounds A, ``(128, 784)`` float32, a batch that fits in cache?

::

    NUMBA_NUM_THREADS=2 python docs/scripts/in_cache.py

Three measurements, interleaved in one process, medians of ``--rounds``:

1. **What a second thread adds to work that never leaves a core's cache.**
   Each thread runs ``a = a * 0.999999 + 1e-9`` over its own 8 KiB array
   (float64, L1-resident); one thread alone, then two at once with the
   same work each. On two independent cores both take the same time; a
   ratio above 1 is what the second vCPU costs the first.
2. **Each pass of fastbn's kernels on A, serial, in CPU cycles per element**
   (at the ``--ghz`` given): the statistics pass, the forward's elementwise
   pass, the backward's gradient sums and its ``dx`` pass, the kernels
   called directly with their arguments prepared once.
3. **Beside the ``dx`` pass,** the same formula in float32 arithmetic (what
   PyTorch computes; fastbn does not, see ``docs/maths.md``) and a float32
   ``dx = dy + x`` (the same three arrays, no arithmetic to speak of).

``docs/benchmarks.md`` quotes this script's output.
"""
import argparse
import time

import numba
import numpy as np
from numba import prange

from fastbn import kernels as K


@numba.njit(nogil=True)
def _spin(a, n):
    for _ in range(n):
        for j in range(a.size):
            a[j] = a[j] * 0.999999 + 1e-9


@numba.njit(parallel=True, nogil=True)
def _spin_threads(bufs, n, threads):
    for k in prange(threads):
        _spin(bufs[k], n)


@numba.njit(nogil=True, error_model="numpy")
def _dx_float32(dy, x, mean, p, q, r, dx):
    """The ``dx`` formula in float32 throughout: eight lanes per AVX2 instruction."""
    m32, p32, q32, r32 = (mean.astype(np.float32), p.astype(np.float32),
                          q.astype(np.float32), r.astype(np.float32))
    for i in range(x.shape[0]):
        gr, xr, dr = dy[i], x[i], dx[i]
        for j in range(xr.size):
            dr[j] = gr[j] * p32[j] - ((xr[j] - m32[j]) * q32[j] + r32[j])


@numba.njit(nogil=True, error_model="numpy")
def _add_float32(dy, x, dx):
    for i in range(x.shape[0]):
        gr, xr, dr = dy[i], x[i], dx[i]
        for j in range(xr.size):
            dr[j] = gr[j] + xr[j]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--ghz", type=float, default=2.45,
                    help="clock for cycles (default: %(default)s)")
    args = ap.parse_args(argv)

    bufs = np.ones((2, 1024))
    n_spin = 20_000
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((128, 784)) * 2 + 3).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    c = x.shape[1]
    mean = x.mean(axis=0, dtype=np.float64)
    p, q, r, zeros = np.ones(c), np.full(c, 0.1), np.full(c, 0.01), np.zeros(c)
    out = np.empty_like(x)
    rows, cols = K.rows_per_chunk(*x.shape), K.COLS_PER_BLOCK     # A: two chunks of 64 rows
    passes = {
        "statistics": lambda: K._moments_rows.serial(x, mean, rows, cols),
        "forward elementwise": lambda: K._affine_rows.serial(x, mean, p, zeros, out, rows, cols),
        "gradient sums": lambda: K._grad_sums_rows.serial(dy, x, mean, rows, cols),
        "dx": lambda: K._grad_x_rows.serial(dy, x, mean, p, q, r, out, rows, cols),
        "dx in float32 arithmetic": lambda: _dx_float32(dy, x, mean, p, q, r, out),
        "float32 dx = dy + x": lambda: _add_float32(dy, x, out),
    }
    spins = {1: lambda: _spin_threads(bufs, n_spin, 1), 2: lambda: _spin_threads(bufs, n_spin, 2)}
    for f in (*passes.values(), *spins.values()):
        f()
    times = {k: [] for k in (*passes, *spins)}
    for _ in range(args.rounds):
        for k, f in (*passes.items(), *spins.items()):
            reps = 1 if k in spins else 200
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            times[k].append((time.perf_counter() - t0) / reps)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"threads {numba.get_num_threads()}, {args.rounds} rounds, cycles at {args.ghz} GHz")
    print(f"8 KiB float64 spin per thread: one thread {1e3 * med[1]:.1f} ms, two at once "
          f"{1e3 * med[2]:.1f} ms each: {med[2] / med[1]:.2f}x")
    for k in passes:
        cycles = med[k] * args.ghz * 1e9 / x.size
        print(f"A {k:26s} {1e6 * med[k]:6.1f} us  {cycles:.2f} cycles/element")


if __name__ == "__main__":
    main()
