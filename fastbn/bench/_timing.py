"""Measuring: medians of repeated calls, a re-measure while noisy, and the STREAM triad.

Examples
--------
>>> import numpy as np
>>> from fastbn.bench import _timing as timing
>>> samples, number, samplings, noisy = timing.measure_steady(lambda: np.ones(100).sum(),
...                                                            5, 1e-4, 1.0)
>>> len(samples), 1 <= samplings <= 1 + timing.RESAMPLE
(5, True)
"""
import gc
import os
import time

import numpy as np


#: A sampling whose median is over this many times its fastest sample is noise: on a
#: quiet 2-core VM the median of 20 samples stays within 1.2x of the minimum (1.65x
#: at most over five rounds), with four other processes on its cores 1.2-2.2x.
NOISE_RATIO = 1.5
#: Samplings taken again, at most, when one is noisy.
RESAMPLE = 2
TRIAD_BYTES_PER_ELEMENT = 12         # float32: read b, read c, write a


def measure(fn, repeat=20, min_time=2e-3, max_time=5.0):
    """Median-ready timings of ``fn()``: a list of seconds per call, and calls per sample.

    Two warm-up calls (compilation, first-touch page faults), then ``repeat``
    samples of ``number`` back-to-back calls, ``number`` chosen so that one
    sample lasts about ``min_time``; stops early (after at least 3 samples)
    once ``max_time`` has passed. The garbage collector is off while timing,
    as in :mod:`timeit`.

    Parameters
    ----------
    fn : callable
        Called with no arguments.
    repeat : int, default 20
        Samples to take.
    min_time : float, default 2e-3
        Seconds one sample should last at least.
    max_time : float, default 5.0
        Seconds after which sampling stops (once 3 samples are taken).

    Returns
    -------
    samples : list of float
        Seconds per call, one value per sample.
    number : int
        Calls per sample.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import bench
    >>> samples, number = bench.measure(lambda: np.ones(1000).sum(), repeat=5)
    >>> len(samples), number >= 1
    (5, True)
    """
    fn()
    fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    number = max(1, min(100_000, int(min_time / max(one, 1e-7))))
    samples = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        deadline = time.perf_counter() + max_time
        while len(samples) < repeat:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - t0) / number)
            if len(samples) >= 3 and time.perf_counter() > deadline:
                break
    finally:
        if was_enabled:
            gc.enable()
    return samples, number


def measure_steady(fn, repeat, min_time, max_time, retries=RESAMPLE):
    """:func:`measure`, taken again (at most ``retries`` times) while its median
    is over ``NOISE_RATIO`` x its minimum; returns the least noisy sampling as
    ``(samples, number, samplings taken, still noisy)``."""
    best = None
    for k in range(1 + retries):
        samples, number = measure(fn, repeat, min_time, max_time)
        ratio = float(np.median(samples)) / max(min(samples), 1e-12)
        if best is None or ratio < best[0]:
            best = (ratio, samples, number)
        if ratio <= NOISE_RATIO:
            break
    return best[1], best[2], k + 1, best[0] > NOISE_RATIO


_TRIAD = None


def triad_kernels():
    """The triad's two Numba kernels, ``(fill, triad_kernel)``, compiled on first use."""
    global _TRIAD
    if _TRIAD is None:
        import numba

        @numba.njit(parallel=True, cache=False)
        def fill(a, b, c):                       # first touch by the threads that use it
            for i in numba.prange(a.size):
                a[i] = 0.0
                b[i] = 1.0
                c[i] = 2.0

        @numba.njit(parallel=True, cache=False)
        def triad_kernel(a, b, c, s):
            for i in numba.prange(a.size):
                a[i] = b[i] + s * c[i]

        _TRIAD = fill, triad_kernel
    return _TRIAD


def llc_bytes():
    """Largest cache size sysfs reports for cpu0 (the last-level cache), or 0."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            with open(os.path.join(base, d, "size")) as f:
                s = f.read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
            best = max(best, int(s.rstrip("KMG")) * mult)
    except (OSError, ValueError):
        pass
    return best


def triad(mib=None, repeat=20):
    """STREAM triad ``a = b + s*c`` in float32: ``{"gbps", "best_gbps", ...}``.

    Each array is ``mib`` MiB (default: 4x the last-level cache, at least
    64 MiB). Numba emits ordinary (write-allocate) stores, like fastbn's
    kernels, so this is the bandwidth a compiled loop reaches here, a little
    under what a C STREAM with non-temporal stores reports.

    ``fresh_gbps`` is the same triad writing a newly allocated ``a`` each
    time, as a function that returns a new array does: the kernel must then
    page-fault (and zero) every page of it first. That is the ceiling for
    an output that is not reused (fastbn's ``out=`` avoids it).

    Parameters
    ----------
    mib : int, optional
        MiB per array.
    repeat : int, default 20
        Timed samples (one triad each).

    Returns
    -------
    dict
        ``gbps`` (median), ``best_gbps``, ``fresh_gbps`` (median, fresh
        output), ``median_ms``, ``array_mib``, ``elements``, ``samples``.

    Examples
    --------
    >>> from fastbn import bench
    >>> t = bench.triad(mib=1, repeat=3)       # in cache: not a memory bandwidth
    >>> sorted(t)
    ['array_mib', 'best_gbps', 'elements', 'fresh_gbps', 'gbps', 'median_ms', 'samples']
    """
    fill, kernel = triad_kernels()
    mib = mib or max(64, 4 * llc_bytes() >> 20)
    n = (int(mib) << 20) // 4
    a, b, c = (np.empty(n, np.float32) for _ in range(3))
    fill(a, b, c)
    s = np.float32(3.0)
    samples, _ = measure(lambda: kernel(a, b, c, s), repeat=repeat, min_time=0.0, max_time=10)
    fresh, _ = measure(lambda: kernel(np.empty(n, np.float32), b, c, s), repeat=repeat,
                       min_time=0.0, max_time=10)
    med = float(np.median(samples))
    return dict(gbps=TRIAD_BYTES_PER_ELEMENT * n / med / 1e9,
                best_gbps=TRIAD_BYTES_PER_ELEMENT * n / min(samples) / 1e9,
                fresh_gbps=TRIAD_BYTES_PER_ELEMENT * n / float(np.median(fresh)) / 1e9,
                median_ms=med * 1e3, array_mib=int(mib), elements=n, samples=len(samples))
