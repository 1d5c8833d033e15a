"""Numba options in one place.

``FASTBN_FASTMATH=1`` opts in to LLVM fast-math (off by default: it lets the
compiler reassociate the reductions, and the results then depend on the
vector width of the build). ``FASTBN_NO_CACHE=1`` disables the on-disk cache.

Every kernel is compiled twice: a ``parallel=True`` version for large inputs
and a serial twin for small ones, where waking the thread pool costs more
than the work. Both run the same arithmetic in the same order, so which one
runs never changes a result.
"""
import glob
import os
import types

import numba

FASTMATH = os.environ.get("FASTBN_FASTMATH", "0") == "1"
CACHE = os.environ.get("FASTBN_NO_CACHE", "0") != "1"

#: Inputs with fewer elements than this run on the serial twin.
SERIAL_BELOW = 1 << 15
#: ... and, in the rows layout ``(N, C)``, fewer than this while N fits in one row
#: chunk (two threads then split each row), half as many when N spans several
#: chunks (each thread takes whole chunks) or the pass reads two arrays (the
#: fused backward). Whole training calls (the fused rows kernels), parallel
#: speed-up over serial, interleaved in one process, 2 threads, fp32,
#: 2026-12-02, forward / backward: (128, 784) 0.55x / 0.66x, then 0.94x / 0.96x,
#: then 0.96x / 1.07x, and with planned calls (less Python between kernels)
#: 1.07x / 1.22x, 1.02x / 1.14x, 0.99x / 1.01x; (128, 512) 0.98x / 1.00x;
#: (256, 300) 0.90x / 1.06x, then 1.14x / 1.16x, 1.11x / 1.19x and 1.19x / 1.25x;
#: (192, 400) 1.06x / 1.06x; (256, 200) 1.00x / 1.07x, then 1.02x / 1.04x;
#: (256, 128) 0.91x / 1.01x, then 0.89x / 0.88x; (256, 784) 1.08x / 1.24x;
#: (1024, 256) 1.23x / 1.48x. Here each vCPU is now and then 1.5x slower for
#: seconds at a time, hence the spread between runs.
ROWS_SERIAL_BELOW = 1 << 17

_OPTIONS = dict(cache=CACHE, fastmath=FASTMATH, nogil=True, error_model="numpy")


def _renamed(func, suffix):
    """A copy of ``func`` under another name.

    Numba's cache index is keyed by the function's qualified name and
    bytecode, not by the ``parallel`` flag, so the serial twin of a kernel
    needs a name of its own or the two would overwrite each other's cache.
    """
    twin = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                              func.__defaults__, func.__closure__)
    twin.__qualname__ = func.__qualname__ + suffix
    twin.__module__ = func.__module__
    twin.__doc__ = func.__doc__
    return twin


class Kernel:
    """A parallel kernel (``.parallel``) and its serial twin (``.serial``)."""

    def __init__(self, func):
        self.py_func = func
        self.parallel = numba.njit(parallel=True, **_OPTIONS)(func)
        self.serial = numba.njit(parallel=False, **_OPTIONS)(_renamed(func, "_serial"))
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__


def kernel(func):
    """Decorator: compile ``func`` as a :class:`Kernel` (parallel + serial)."""
    return Kernel(func)


def helper(func):
    """Decorator for helpers called from kernels (LLVM inlines them there)."""
    return numba.njit(inline="never", **_OPTIONS)(func)


def drop_stale_cache(kernel):
    """Delete fastbn's cached kernels when any kernel source has changed.

    Numba keys a cached function by its own file's timestamp and bytecode
    only. A kernel in ``kernels/backward.py`` that calls a helper in
    ``kernels/_chunks.py`` is not recompiled when only the helper changes: the
    old helper's machine code keeps running, silently. (It did, on the dev
    machine: a cached ``_grad_sums_rows`` still held an experimental helper,
    1.5x slower than the source.) So a fingerprint of every kernel source,
    kept beside the cache, must match, or the cache is emptied before any
    kernel is loaded. ``kernel`` is any :class:`Kernel`, to find the cache
    directory Numba uses (next to the package, or ``NUMBA_CACHE_DIR``).
    Nothing happens when caching is off or the directory is not writable
    (an installed package's sources change only with a reinstall, which
    renews every file's timestamp).
    """
    if not CACHE:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join(here, "kernels", "*.py"))) + [os.path.abspath(__file__)]
    try:
        stamp = repr([(os.path.basename(p), st.st_mtime_ns, st.st_size)
                      for p, st in ((p, os.stat(p)) for p in sources)])
        cache_dir = kernel.parallel._cache.cache_path
        mark = os.path.join(cache_dir, "fastbn-sources.stamp")
        try:
            with open(mark) as f:
                if f.read() == stamp:
                    return
        except OSError:
            pass
        for path in glob.glob(os.path.join(cache_dir, "*.nb[ic]")):
            os.remove(path)
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{mark}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(stamp)
        os.replace(tmp, mark)
    except OSError:                     # read-only install, or another process raced us
        pass
