"""Numba options and every tunable in one place.

``FASTBN_FASTMATH=1`` opts in to LLVM fast-math (off by default: it lets the
compiler reassociate the reductions, and the results then depend on the
vector width of the build). ``FASTBN_NO_CACHE=1`` disables the on-disk cache.

Every kernel is compiled twice: a ``parallel=True`` version for large inputs
and a serial twin for small ones, where waking the thread pool costs more
than the work. Both run the same arithmetic in the same order, so which one
runs never changes a result.
"""
import contextlib
import glob
import os
import threading
import types

import numba

FASTMATH = os.environ.get("FASTBN_FASTMATH", "0") == "1"
CACHE = os.environ.get("FASTBN_NO_CACHE", "0") != "1"

#: Inputs with fewer elements than this run on the serial twin.
SERIAL_BELOW = 1 << 15
#: ... but rows ``(N, C)`` that are one row chunk (fewer than 64 rows, see
#: :func:`fastbn.kernels.rows_per_chunk`; threads would split each row into
#: column blocks) run serially below this many elements, half as many when the
#: pass reads two arrays (the fused backward). Rows in several chunks, where
#: each thread takes whole rows, go parallel from ``SERIAL_BELOW``. The parallel
#: fused kernels were 1.39x faster than serial on (128, 784) fp32, but 0.69x on
#: (128, 200) when one vCPU ran slow for seconds, hence a threshold where such
#: spells cost little.
ROWS_SERIAL_BELOW = 1 << 17
#: Outputs of at least this many bytes are written with non-temporal stores
#: by the rows elementwise passes (``kernels._chunks._streams``) and allocated
#: on a cache line (``_axes.Layout.empty``).
STREAM_MIN_BYTES = 1 << 24
#: glibc maps a new block for each allocation of this many bytes or more (its
#: largest mmap threshold) and the kernel zeroes its pages on first touch,
#: which leaves them in the cache: non-temporal stores into such an output
#: lose (C (8192, 1024) fp32, fresh 32 MiB outputs, 1 thread: forward 0.80x,
#: inference 0.76x, backward 0.87x), so outputs this large are not aligned
#: for them (``_axes._empty``).
FRESH_PAGES_FROM = 1 << 25


# ---------------------------------------------------------------- tunables
# Every size and threshold that picks a kernel, a layout or a split. Those a
# kernel reads are compile-time constants (re-imported where it reads them);
# the rest are read here at call time, so a test can patch them. Chunk sizes
# (ROWS_PER_CHUNK, PLANE_CHUNK) set the order of the sums, so they change
# results in the last bits; the others only change the speed.

#: rows layout: most rows per statistics chunk (see
#: :func:`fastbn.kernels.rows_per_chunk`): a 128 x 1024 float32 block is one
#: core's 512 KiB L2, still cached for a second pass; moments of (8192, 1024)
#: fp32 took 1.1 ms with 128 x 1024 blocks, 1.9 ms with 256 x 256.
ROWS_PER_CHUNK = 128
#: rows layout: an array of at most ``ROWS_PER_CHUNK`` rows is cut in two chunks
#: when it has at least this many rows and ``kernels._chunks.SHARE_MIN_SIZE``
#: elements (``SERIAL_BELOW``, from which :func:`fastbn._bn.dispatch.serial`
#: shares work between threads).
SHARE_MIN_ROWS = 64
#: rows layout: at most this many columns per task. Column blocks only split
#: the work (each column is reduced on its own), so they never change a result.
COLS_PER_BLOCK = 1024
#: planes layout: elements of one feature per statistics chunk (32 KiB fp32).
PLANE_CHUNK = 8192
#: rows layout: fewest columns for which the row sums take four rows per sweep,
#: a quarter of the chunk apart (``kernels._chunks._rows_moments``): four memory
#: streams instead of one, moments 1.20x faster on (128, 784) fp32; on
#: (100352, 64) four rows were 0.7x, hence the floor.
UNROLL_MIN_COLS = 256
#: :func:`fastbn.kernels._copy_tiles`: rows of ``src`` per task (a run of 256
#: bytes of float32 down each column), columns per tile (one cache line of a
#: ``dst`` row) and columns per task (a task per thread on a short ``src``).
TILE_ROWS = 64
TILE_COLS = 16
BLOCK_COLS = 256

#: Largest per-feature working set (bytes) for the fused planes kernels: twice
#: one core's 512 KiB L2, the rest served by the shared L3 (fused was 1.28x
#: faster than split at 784 KiB per feature).
FUSE_BYTES = 1 << 20
#: ... and fewest features: one task per feature must keep every thread busy.
FUSE_MIN_FEATURES = 16

#: planes with fewer than this many contiguous elements per (outer, feature)
#: are read as rows of ``C * inner`` columns, each feature a group of
#: ``inner`` adjacent columns, as short runs cost a loop set-up each:
#: (64, 256, 7, 7) fp32 forward took 476 us as planes, 240 us as rows.
GROUP_BELOW = 128
#: rows narrower than this many columns are read ``fold`` rows at a time (the
#: largest power of two that divides N and keeps ``fold * C`` within
#: ``FOLD_COLS``), when the rows view is contiguous or a copy: the kernels'
#: inner loops then run over 1024 columns instead of a few dozen, and the row
#: sums take the four-row sweeps of wide rows (``docs/maths.md``).
FOLD_BELOW = 256
#: ... and the widest kernel row folding makes (``COLS_PER_BLOCK``).
FOLD_COLS = 1024
#: ... but only arrays of at least this many rows are folded: below it the
#: merge of each feature's ``fold`` columns costs more than the wider loops
#: save (a training step on (256, 64) was 1.16x faster unfolded, on (512, 32)
#: 0.95x).
FOLD_MIN_ROWS = 512

#: A convolution whose kernel has at most this many taps (``kh * kw * C``) is
#: computed window by window (:func:`fastbn.kernels._conv_direct`), above it as
#: im2col + BLAS per block of samples: a first layer of 9 taps, (250, 28, 28,
#: 1) -> 32 filters 3x3, took 4.1 ms direct against 13-14 ms as im2col.
DIRECT_MAX_TAPS = 16
#: Samples per convolution block: as many as keep a block's windows (im2col)
#: within this many bytes, so that they are still in the core's cache (2 MiB
#: of L2 here) when the matrix products read them.
BLOCK_BYTES = 1 << 20
#: Work arrays up to this many bytes are kept per thread for the next call
#: (:func:`fastbn._workers.scratch`); larger ones (a block of one big image)
#: are made and freed each time.
KEEP_SCRATCH_BYTES = 1 << 24

#: True in a process forked from one that had started Numba's threading layer:
#: there every kernel runs its serial twin (same arithmetic, same bits) and
#: nothing asks the threading layer anything. Numba's OpenMP layer records the
#: pid of the process that started it (``numba.get_num_threads()`` starts it,
#: as does the first parallel kernel) and kills, with SIGTERM, a child of that
#: process that enters a parallel region ("fork() called from a process already
#: using GNU OpenMP"); GNU OpenMP would otherwise wait forever for the parent's
#: threads, which the child does not have. A multiprocessing fork pool then
#: never returns. A child of a process that never started the layer keeps the
#: parallel kernels: it becomes the layer's owner itself.
FORKED = False


def threads():
    """How many threads fastbn's blocked work (:mod:`fastbn._workers`: the
    convolutions) uses: Numba's thread count (``numba.set_num_threads``), and
    1 in a forked child (see :data:`FORKED`)."""
    return 1 if FORKED else numba.get_num_threads()


_BLAS = []


def blas_controller():
    """A cached ``threadpoolctl.ThreadpoolController``, or None without
    threadpoolctl (its ``limit()`` then costs 8-14 us, against 340 us for
    ``threadpool_limits``, which rescans the loaded libraries)."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS.append(ThreadpoolController())
        except ImportError:             # pragma: no cover - a declared dependency
            _BLAS.append(None)
    return _BLAS[0]


def blas_one_thread():
    """A context in which BLAS runs on one thread (nothing without threadpoolctl)."""
    ctl = blas_controller()
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")


#: GNU OpenMP's threads spin this many times after a parallel region before
#: they sleep (``GOMP_SPINCOUNT``, which libgomp reads once, when it is
#: loaded): at libgomp's default, 300,000, spinning threads kept the next
#: layer's BLAS and worker threads off their cores (the article's CNN step
#: took 171-179 ms on a shared machine against 55-106 ms at 10,000), and 1,000
#: is too short for kernels called back to back (``fastbn-bench`` A, B and F
#: 1.9-3.5x slower). See :func:`_short_spin`.
SPIN_COUNT = "10000"


def _short_spin():
    """Start Numba's threading layer with ``GOMP_SPINCOUNT`` = :data:`SPIN_COUNT`.

    Numba loads libgomp when it starts its threading layer
    (``numba.np.ufunc.parallel._launch_threads``, on the first parallel
    kernel or thread-count query); fastbn wraps that function so that the
    variable is set only while libgomp is loaded, then removed: child
    processes and libraries loaded later do not see it. Nothing changes when
    the user set ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``, when the layer
    had started, or when libgomp was already loaded (PyTorch loads its copy
    when imported; set ``GOMP_SPINCOUNT`` before importing it to choose).
    """
    try:
        from numba.np.ufunc import parallel
    except ImportError:                 # pragma: no cover - another Numba layout
        return
    launch = getattr(parallel, "_launch_threads", None)
    if launch is None or getattr(parallel, "_is_initialized", True):
        return

    def _launch_threads():
        if (getattr(parallel, "_is_initialized", True) or "GOMP_SPINCOUNT" in os.environ
                or "OMP_WAIT_POLICY" in os.environ):
            return launch()
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
        try:
            return launch()
        finally:
            os.environ.pop("GOMP_SPINCOUNT", None)

    _launch_threads.__wrapped__ = launch
    parallel._launch_threads = _launch_threads


_short_spin()


def _libc():
    """glibc's ``mallopt`` and ``malloc_trim``, or None (another C library)."""
    if not _LIBC:
        import ctypes
        import ctypes.util
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.append((libc.mallopt, libc.malloc_trim))
        except (OSError, AttributeError):
            _LIBC.append(None)
    return _LIBC[0]


_LIBC = []
_KEEPING = [0]                          # blocks open, in any thread
_KEEPING_LOCK = threading.Lock()
#: glibc's M_TRIM_THRESHOLD, M_MMAP_THRESHOLD and their default (128 KiB).
_M_TRIM, _M_MMAP, _M_DEFAULT = -1, -3, 128 * 1024


@contextlib.contextmanager
def keep_freed_memory():
    """Keep freed memory in the process for reuse inside the block (glibc).

    glibc maps each large allocation afresh and unmaps it when freed, and
    the kernel zeroes a fresh page on first touch: a training step that
    makes and frees tens of MB of activations paid 2,400 page faults and
    ~18 ms of 87 (the article's CNN, batch 250, 2 cores).
    Inside the block blocks up to 32 MiB come from the heap and freed memory
    is not handed back; on exit glibc's defaults are set again and the freed
    memory is handed back (``malloc_trim``). Does nothing elsewhere.
    """
    libc = _libc()
    if libc is None:
        yield
        return
    mallopt, trim = libc
    with _KEEPING_LOCK:
        if not _KEEPING[0]:
            mallopt(_M_TRIM, 1 << 30)
            mallopt(_M_MMAP, 1 << 25)
        _KEEPING[0] += 1
    try:
        yield
    finally:
        with _KEEPING_LOCK:
            _KEEPING[0] -= 1
            if not _KEEPING[0]:          # the outermost block (fit's, around evaluate's)
                mallopt(_M_MMAP, _M_DEFAULT)
                mallopt(_M_TRIM, _M_DEFAULT)
                trim(0)


def _numba_threads_started():
    try:
        from numba.np.ufunc import parallel
    except ImportError:                 # pragma: no cover - another Numba layout
        return True
    return bool(getattr(parallel, "_is_initialized", True))


def _after_fork_in_child():
    global FORKED
    if FORKED or _numba_threads_started():
        FORKED = True
        for k in _KERNELS:              # direct ``.parallel`` calls too
            k.parallel = k.serial


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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


#: every Kernel, so a forked child can point their ``.parallel`` at ``.serial``
_KERNELS = []


class Kernel:
    """A parallel kernel (``.parallel``) and its serial twin (``.serial``).

    In a forked child (:data:`FORKED`) ``.parallel`` is the serial twin.
    """

    def __init__(self, func):
        self.py_func = func
        self.parallel = numba.njit(parallel=True, **_OPTIONS)(func)
        self.serial = numba.njit(parallel=False, **_OPTIONS)(_renamed(func, "_serial"))
        if FORKED:
            self.parallel = self.serial
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        _KERNELS.append(self)


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
