"""Blocks of independent work on a few Python threads.

A convolution is split into blocks of samples; each block's windows
(im2col), its matrix products (BLAS on one thread) and its bias and ReLU are
done by one thread while they are still in that core's cache, and the
blocks are shared by the calling thread and ``threads - 1`` pool threads.
Numba's kernels release the GIL (``nogil``) and so does NumPy's matmul, so
the threads run at once. A block's results never depend on which thread ran
it, so block sizes that depend only on the shapes keep results bitwise the
same for any thread count.

On the article's second convolution, (250, 13, 13, 32) -> 64 filters 3x3,
forward + backward, 2 threads: 23 ms in blocks of 8 samples against 44-55
ms as one im2col (35 MB) and three whole-batch products on two BLAS threads.
"""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _config

_lock = threading.Lock()
_pool = [None, None]                      # executor, pid that made it
_local = threading.local()


def _executor(workers):
    """The shared pool of at least ``workers`` threads (a new one after a fork:
    a forked child has none of its parent's threads)."""
    with _lock:
        pool, pid = _pool
        if pool is None or pid != os.getpid() or pool._max_workers < workers:
            if pool is not None and pid == os.getpid():
                pool.shutdown(wait=False)
            _pool[:] = ThreadPoolExecutor(workers, thread_name_prefix="fastbn"), os.getpid()
        return _pool[0]


def run(blocks, fn, threads):
    """Call ``fn(b)`` for every ``b`` in ``range(blocks)`` on ``threads`` threads.

    The calling thread takes blocks too; each thread takes the next block not
    yet taken until none is left. The first exception raised by any block is
    raised here after every thread has stopped.

    Parameters
    ----------
    blocks : int
    fn : callable
        Called with a block index; blocks must not write the same memory.
    threads : int

    Examples
    --------
    >>> from fastbn import _workers
    >>> out = [0] * 5
    >>> def square(b):
    ...     out[b] = b * b
    >>> _workers.run(5, square, threads=2)
    >>> out
    [0, 1, 4, 9, 16]
    """
    helpers = min(threads, blocks) - 1
    if helpers <= 0:
        for b in range(blocks):
            fn(b)
        return
    taken = itertools.count()           # next() on a count is atomic under the GIL
    failed = []

    def work():
        for b in taken:
            if b >= blocks or failed:
                return
            try:
                fn(b)
            except BaseException:
                failed.append(True)
                raise

    pool = _executor(helpers)
    futures = [pool.submit(work) for _ in range(helpers)]
    error = None
    try:
        work()
    except BaseException as exc:        # noqa: BLE001 - raised below, once the helpers stop
        error = exc
    for f in futures:
        exc = f.exception()
        if error is None and exc is not None:
            error = exc
    if error is not None:
        raise error


def scratch(name, shape, dtype):
    """A per-thread work array of ``shape`` and ``dtype`` (reused across calls:
    its contents are whatever the last user left)."""
    size = 1
    for s in shape:
        size *= int(s)
    arrays = _local.__dict__
    a = arrays.get(name)
    if a is None or a.size < size or a.dtype != dtype:
        a = np.empty(size, dtype)
        if a.nbytes <= _config.KEEP_SCRATCH_BYTES:
            arrays[name] = a
    return a[:size].reshape(shape)
