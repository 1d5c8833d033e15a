"""Kernel dispatch: the serial or parallel twin of a kernel, kernel-layout views
of inputs and outputs (copies, ``out=`` aliasing), the rows kernels' chunks
and column blocks, per-feature shifts, and the statistics, affine and
gradient passes on a :class:`fastbn._axes.Layout`."""
import numba
import numpy as np

from .. import _config
from .. import kernels as K
from .checks import F64, KERNEL_DTYPES, param_dtype


def serial(xk, arrays=1):
    """Whether the kernel-layout array ``xk`` is too small to share between threads.

    Below ``SERIAL_BELOW`` elements; but rows of fewer than 64 rows, one row
    chunk that threads would split into column blocks, below
    ``ROWS_SERIAL_BELOW`` elements, half that when the pass reads ``arrays`` =
    2 (the fused backward). (Rows of 64 to 128 are one chunk only below
    ``SERIAL_BELOW`` elements: :func:`fastbn.kernels.rows_per_chunk`.) Every
    array, in a forked child of a process whose thread pool had started
    (:data:`fastbn._config.FORKED`).
    """
    if _config.FORKED:
        return True
    if xk.ndim == 2 and xk.shape[0] < K.SHARE_MIN_ROWS:
        return xk.size < _config.ROWS_SERIAL_BELOW // arrays
    return xk.size < _config.SERIAL_BELOW


def kernel_view(lay, a):
    """``a`` (shaped like the input) in kernel layout, as the kernels take it.

    Numba compiles a kernel once per argument type, and an array's type holds
    its layout (C-contiguous, Fortran-ordered or any strides). A small array
    (one the serial kernels take) whose kernel view is not C-contiguous is
    therefore copied into one that is: the copy costs microseconds, a new
    variant of a fused kernel 3-18 s of compilation in each new environment.
    The same numbers either way: a kernel's arithmetic does not depend on where
    its elements are stored. Large arrays keep their strided view (no copy the
    size of the input), except a Fortran-ordered 2-D one (a ``dy`` laid out
    unlike ``x``) or a batch of them (a channels-last ``dy`` for an NCHW
    ``x``), which the kernels read a cache line per element: those are copied
    through tiles (:func:`fastbn.kernels._copy_tiles`), in parallel, and so are
    small ones of 2^15 elements or more (NumPy's transposing copy is serial and
    reads one side with a stride): a Fortran-ordered ``dy`` of (1024, 784)
    made the backward 1.86x faster. Read-only arrays are not copied (their
    own variant, once).
    """
    v = lay.view(a)
    if not copied(v):
        return v
    if not transposed(v) or v.size < _config.SERIAL_BELOW:
        return v.copy()
    dense = np.empty(v.shape, v.dtype)
    if v.ndim == 2:
        K._copy_tiles.parallel(v[np.newaxis], dense[np.newaxis])
    else:
        K._copy_tiles.parallel(v, dense)
    return dense


def copied(v):
    """Whether :func:`kernel_view` hands the kernels a copy of the kernel view ``v``."""
    return not v.flags.c_contiguous and (serial(v) or transposed(v))


def transposed(v):
    """Whether the kernel view ``v`` is a Fortran-ordered matrix (rows layout) or
    a batch of them (planes layout: a channels-last array for channels-first
    kernels), which the kernels would read a cache line per element."""
    if v.ndim == 2:
        return v.flags.f_contiguous
    return v.ndim == 3 and v.strides[1] == v.itemsize and v.strides[2] == v.shape[1] * v.itemsize


def run(kern, xk, arrays=1):
    """The parallel kernel, or its serial twin for inputs too small to share."""
    return kern.serial if serial(xk, arrays) else kern.parallel


def cols(xk, arrays=1):
    """Columns per task for a rows-layout array (only splits work, never a result).

    Serially, whole rows of up to 1024 columns, and whole rows of any length
    when they fit one row chunk (the fused kernels then take one task loop per
    pass, which is what a serial call wants: 1.06-1.10x backward on (60, 2100)
    fp32); in parallel, enough column blocks for every thread when there are
    few row chunks, but never blocks under 256 columns ((128, 784) fp32
    forward took 66 us with 64-column blocks, 22 us with whole rows).
    """
    return split(xk, arrays)[1]


def split(xk, arrays=1):
    """The rows kernels' last two arguments for ``xk``: its rows per chunk
    (:func:`fastbn.kernels.rows_per_chunk`, which decides the order of the
    sums) and :func:`cols` (which only splits the work)."""
    n, c = xk.shape
    chunk = K.rows_per_chunk(n, c)
    chunks = -(-n // chunk)
    if serial(xk, arrays):
        return chunk, (K.COLS_PER_BLOCK if chunks > 1 else max(c, K.COLS_PER_BLOCK))
    want = -(-num_threads() // chunks)
    return chunk, min(K.COLS_PER_BLOCK, max(256, line_multiple(-(-c // want))))


try:                                       # Numba's private thread-pool module
    from numba.np.ufunc import parallel as _numba_parallel
except ImportError:                        # pragma: no cover - another Numba layout
    _numba_parallel = None


def num_threads():
    """``numba.get_num_threads()``, without the two locks it takes on every call
    (2.4 us against 0.3 us) once Numba's thread pool is running: the same C
    getter, read directly, or the public function where that getter is not
    there. A test holds the two to the same answer. 1, without asking Numba,
    in a forked child (:data:`fastbn._config.FORKED`)."""
    if _config.FORKED:
        return 1
    if getattr(_numba_parallel, "_is_initialized", False):
        get = getattr(_numba_parallel, "_get_num_threads", None)
        if get is not None:
            return get()
    return numba.get_num_threads()


def fuse(xk, lay, arrays):
    """Which fused kernel runs, if any: ``"planes"``, ``"rows"`` or None.

    ``arrays`` is how many inputs the pass reads (forward 1, backward 2).
    Planes fuse one task per feature when a feature's data fit in cache. Rows
    (one column per feature) always run both passes in one call: the split
    kernels' tasks without the Python between them (1.33x forward, 1.16x
    backward on (256, 28, 28), axis (1, 2)). Fused and split kernels give the
    same bits (a test holds them to it), so the choice only changes the speed.
    """
    if lay.kind == "planes":
        if (lay.channels >= _config.FUSE_MIN_FEATURES
                and lay.count * xk.itemsize * arrays <= _config.FUSE_BYTES):
            return "planes"
    elif lay.group == 1 and xk.size:
        return "rows"
    return None


def line_multiple(cols):
    """``cols`` rounded up to a multiple of 16, so that two threads' column blocks
    do not share a cache line of the output (16 float32 = 64 bytes) when rows
    start on one: free, and 28 us against 29 us on a (128, 784) fp32 affine."""
    return -(-cols // 16) * 16


def shift(xk, lay):
    """One value of each feature (its first), float64, per kernel column.

    The kernels accumulate ``x - shift`` (see :mod:`fastbn.kernels.moments`);
    a non-finite first value would poison the whole feature, so it becomes 0.
    """
    if lay.kind == "planes":
        return K._finite_shift(xk[0, :, 0])
    if lay.group > 1:
        return np.repeat(K._finite_shift(xk[0, ::lay.group]), lay.group)
    if lay.fold > 1:
        return np.tile(K._finite_shift(xk[0, :lay.channels]), lay.fold)
    return K._finite_shift(xk[0])


def stats(xk, lay):
    """Kernel-order float64 ``(mean, m2)`` of a kernel-layout array."""
    first = shift(xk, lay)
    if lay.kind == "planes":
        return run(K._moments_planes, xk)(xk, first, K.PLANE_CHUNK)
    mean, m2 = run(K._moments_rows, xk)(xk, first, *split(xk))
    if lay.group > 1 or lay.fold > 1:
        return K._merge_columns(mean, m2, float(xk.shape[0]), lay.channels, *lay.column_steps,
                                first)
    return mean + first, m2


def per_column(lay, *vectors):
    """Per-feature vectors as kernel-column vectors: repeated for each of a
    feature's ``group`` adjacent columns, or tiled ``fold`` times."""
    if lay.group > 1:
        return tuple(np.repeat(v, lay.group) for v in vectors)
    if lay.fold > 1:
        return tuple(np.tile(v, lay.fold) for v in vectors)
    return vectors


def affine(xk, mean, scale, shift, yk, lay):
    if lay.kind == "planes":
        run(K._affine_planes, xk)(xk, mean, scale, shift, yk, K.PLANE_CHUNK)
    else:
        mean, scale, shift = per_column(lay, mean, scale, shift)
        run(K._affine_rows, xk)(xk, mean, scale, shift, yk, *split(xk))


def grad_sums(dyk, xk, mean, lay):
    if lay.kind == "planes":
        return run(K._grad_sums_planes, xk)(dyk, xk, mean, K.PLANE_CHUNK)
    (mean,) = per_column(lay, mean)
    sum_g, sum_gx = run(K._grad_sums_rows, xk)(dyk, xk, mean, *split(xk))
    if lay.group > 1 or lay.fold > 1:
        steps = lay.column_steps
        return (K._sum_columns(sum_g, lay.channels, *steps),
                K._sum_columns(sum_gx, lay.channels, *steps))
    return sum_g, sum_gx


def grad_x(dyk, xk, mean, p, q, r, dxk, lay):
    if lay.kind == "planes":
        run(K._grad_x_planes, xk)(dyk, xk, mean, p, q, r, dxk, K.PLANE_CHUNK)
    else:
        mean, p, q, r = per_column(lay, mean, p, q, r)
        run(K._grad_x_rows, xk)(dyk, xk, mean, p, q, r, dxk, *split(xk))


def gamma_vector(lay, gamma, dtype=None):
    """``gamma`` as a kernel-order vector (ones for None), in ``dtype`` or float64."""
    return ones(lay.channels, dtype) if gamma is None else lay.to_kernel(gamma, dtype)


def affine_vectors(lay, gamma, beta, dtype):
    """``gamma`` and ``beta`` as kernel-order vectors (ones / zeros for None), in
    :func:`fastbn._bn.checks.param_dtype` of the kernels' input ``dtype``."""
    dtype = param_dtype(dtype, gamma, beta)
    return (gamma_vector(lay, gamma, dtype),
            np.zeros(lay.channels, dtype) if beta is None else lay.to_kernel(beta, dtype))


def own_dtype_vector(lay, v):
    """``v`` as a kernel-order vector in its own dtype when that is float32 or
    float64 (the kernels widen it exactly as they read it), else float64."""
    return lay.to_kernel(v, v.dtype if v.dtype in KERNEL_DTYPES else F64)


def ones(c, dtype=None):
    """``np.ones(c, dtype)``, in a third of its time (1 us instead of 3)."""
    a = np.empty(c, dtype)
    a.fill(1.0)
    return a


def output(out, xk, dtype, lay, fn, same=(), others=()):
    """The output array and its kernel view: ``out`` itself when the kernels can
    write it directly and it does not overlap what they read (:func:`overlaps`
    with ``xk`` and ``same``, ``others``), else a fresh array (copied into
    ``out`` by :func:`finish`, after every read)."""
    if out is None:
        return lay.empty(xk.dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: out must be a NumPy array, got {type(out).__name__}")
    if out.shape != xk.shape or out.dtype != dtype:
        raise ValueError(f"{fn}: out has shape {out.shape} and dtype {out.dtype}; it "
                         f"must have x's shape {xk.shape} and dtype {np.dtype(dtype)}")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    kv = direct_view(out, xk, lay)
    if kv is not None and not overlaps(out, (xk, *same), others):
        return out, kv                        # a view the kernels take: write it directly
    return lay.empty(xk.dtype)


def overlaps(out, same, others):
    """Whether the kernels writing ``out`` could change an element they have yet
    to read: ``out`` shares memory with one of ``others`` (feature vectors or
    None) or with one of ``same`` (arrays shaped like ``out``, each element
    read before the same element of ``out`` is written) without being exactly
    it (the same first byte and strides). NumPy's ufuncs give the same answer
    for such an ``out``; the caller then computes into a fresh array.

    Arrays that own their data never overlap one another, which settles the
    usual case (a preallocated ``out``, fresh inputs) without
    ``np.may_share_memory`` (200 ns a call).
    """
    owns = out.flags.owndata
    for a in same:
        if a is out or not isinstance(a, np.ndarray) or (owns and a.flags.owndata):
            continue
        if np.may_share_memory(out, a) and (
                a.strides != out.strides or a.dtype != out.dtype or a.shape != out.shape
                or a.__array_interface__["data"][0] != out.__array_interface__["data"][0]):
            return True
    for a in others:
        if (a is not None and isinstance(a, np.ndarray) and not (owns and a.flags.owndata)
                and np.may_share_memory(out, a)):
            return True
    return False


def direct_view(out, xk, lay):
    """The kernel view of a validated ``out`` when the kernels write it directly,
    else None: C-contiguous, or strided for the parallel kernels except a
    channels-last one (:func:`tiled_planes`). Checked and planned calls (whose
    layouts never interleave) share this rule."""
    kv = out_view(out, xk, lay)
    if kv is not None and (kv.flags.c_contiguous or not (serial(kv) or tiled_planes(kv))):
        return kv
    return None


def out_view(out, xk, lay):
    """The kernel-layout view of a validated ``out``, when kernels can write
    through it (``out`` in the kernels' dtype, ``xk``'s; a layout that does not
    interleave; a view, not a copy), else None."""
    if out.dtype == xk.dtype and not lay.interleaved and out.size:
        kv = lay.view(out)
        if kv is out or np.may_share_memory(kv, out):     # (out itself: a plain layout)
            return kv
    return None


def tiled_planes(kv):
    """Whether ``kv``, the planes-layout view of an ``out=`` (a channels-last
    array for an NCHW input), is written through a fresh array and
    :func:`fastbn.kernels._copy_tiles` rather than by the kernels, which would
    write it a cache line per element. Rows-layout outputs are not: on (8192,
    1024) a fresh array plus the copy would cost about what the strided writes
    do."""
    return kv.ndim == 3 and transposed(kv) and not serial(kv)


def finish(res, out, xk, dtype, lay):
    """The result in ``dtype`` and ``x``'s layout, written into ``out`` when given."""
    if res is out:
        return out
    res = lay.restore(res, xk, dtype)
    if out is None:
        return res
    ok = out_view(out, xk, lay)
    if ok is not None and tiled_planes(ok):
        K._copy_tiles.parallel(lay.view(res).transpose(0, 2, 1), ok.transpose(0, 2, 1))
        return out
    np.copyto(out, res)
    return out
