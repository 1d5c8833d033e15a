r"""Synchronized batch norm and data-parallel training over MPI.

When one process is not enough, train data-parallel: every process (an MPI
*rank*) holds a copy of the model and computes on its shard of each global
batch. Batch normalization then needs the statistics of the **global** batch
(Keras' ``synchronized=True``, PyTorch's ``SyncBatchNorm``):

* :func:`moments`, :func:`batch_norm_forward` and :func:`batch_norm_backward`
  are :mod:`fastbn.functional`'s, with a communicator ``comm``. Forward, each
  rank reduces its slice to per-feature ``(count, mean, M2)`` in float64; one
  ``Allgather`` gives every rank every triple, and every rank merges them with
  Chan's formula **in rank order**, so all ranks hold bitwise the same
  statistics whatever order the messages arrived in. Backward, the two
  per-feature sums ``sum(dy)`` and ``sum(dy * (x - mean))`` and the count are
  gathered and summed the same way. Ranks may hold different numbers of rows,
  or none (PyTorch got uneven batches wrong once: pytorch/pytorch#22192).
* Before the data, one cheap ``Allgather`` of a fixed 104-byte header compares
  the feature shapes, feature axes and dtypes (and whether a rank already
  failed its own checks): a mismatch raises on **every** rank instead of
  hanging one.
* :class:`DataParallel` trains a :class:`fastbn.nn.Sequential`: weights
  broadcast from rank 0, each rank steps on its shard of every global batch,
  all gradients summed with **one** bucketed ``Allreduce`` per step, metrics
  combined, only rank 0 prints; an uncaught exception aborts the whole job.

``comm`` is an :mod:`mpi4py` communicator (``MPI.COMM_WORLD``), or None for
this process alone: exactly :mod:`fastbn.functional`. mpi4py is imported
only when a communicator is needed, so ``import fastbn`` works without MPI;
install it with ``pip install "fastbn[mpi]"`` (mpi4py and the MPICH wheel,
which brings ``mpiexec``). See ``docs/distributed.md`` for running on one
machine and on several hosts, and what it costs.

Processes forked after fastbn started Numba's thread pool run the serial kernels,
with the same results (GNU OpenMP cannot run in such a child).
"""
import os
import sys
import time
import warnings
import zlib
from functools import lru_cache

import numpy as np

from . import _bn, functional as F
from ._axes import normalize_axis

__all__ = ["moments", "batch_norm_forward", "batch_norm_backward", "DataParallel",
           "abort_on_exception", "world"]

#: MPI launchers' environment variables that give the number of processes
#: (MPICH/Hydra, Open MPI, PMIx, MVAPICH).
_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")
#: Seconds an aborting rank waits, after printing its traceback, before
#: ``comm.Abort`` (see :func:`abort_on_exception`).
_ABORT_GRACE = 0.5
_INSTALL = ('fastbn.distributed needs mpi4py and an MPI library: pip install "fastbn[mpi]" '
            '(mpi4py and the mpich wheel, which brings mpiexec)')


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(_INSTALL) from e
    return MPI


def world():
    """``MPI.COMM_WORLD``: every process the job was started with.

    Returns
    -------
    mpi4py.MPI.Comm

    Raises
    ------
    ImportError
        Without mpi4py (or an MPI library for it to load), with the
        command that installs both.

    Examples
    --------
    >>> from fastbn import distributed
    >>> comm = distributed.world()          # doctest: +SKIP
    >>> comm.Get_rank(), comm.Get_size()    # doctest: +SKIP
    (0, 1)
    """
    return _mpi().COMM_WORLD


def _size(comm):
    return 1 if comm is None else comm.Get_size()


# ------------------------------------------------------------ the shape check
_OPS = {"moments": 1, "batch_norm_forward": 2, "batch_norm_backward": 3}
_DIMS = 6           # feature dimensions written out in the header (any more: crc only)
#: ok, op, dtype, feature ndim, crc, feature axes (bit a: axis a), dims..., x.ndim (not compared)
_HEADER = 7 + _DIMS


def _tuple(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


@lru_cache(maxsize=256)
def _header(fn, error, dtype, ndim, fshape, axes=()):
    """The header of one call, as bytes (cached: the same layer sends the same one).
    ``axes`` are the kept (feature) axes, non-negative: ``axis=-1`` on one rank
    and ``axis=0`` on another can give the same feature shape, not the same axes."""
    h = np.full(_HEADER, -1, np.int64)
    h[0], h[1] = not error, _OPS[fn]
    if not error:
        h[2], h[3] = np.dtype(dtype).num, len(fshape)
        h[4] = zlib.crc32(repr(tuple(int(s) for s in fshape)).encode())
        h[5] = sum(1 << int(a) for a in axes if a < 63)
        h[6:6 + min(len(fshape), _DIMS)] = fshape[:_DIMS]
        h[-1] = ndim
    return h.tobytes()


def _describe(h):
    dims = [str(int(s)) for s in h[6:6 + min(int(h[3]), _DIMS)]]
    if h[3] > _DIMS:
        dims.append("...")
    axes = tuple(a for a in range(63) if int(h[5]) >> a & 1)
    return (f"{_DTYPE_NAMES.get(int(h[2]), f'dtype #{int(h[2])}')} x, features "
            f"{_tuple(dims)} on axes {_tuple(axes)}")


_DTYPE_NAMES = {np.dtype(t).num: np.dtype(t).name
                for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16,
                          np.int8, np.uint8, np.bool_)}


def _check(comm, fn, dtype=None, ndim=0, fshape=(), error=None, axes=()):
    """One Allgather of a fixed-size header: do all ranks agree, did any fail?

    Called by every rank before the data collective (a rank whose own checks
    failed calls it with ``error``), so that every rank raises, or none.
    Returns normally on the failed rank, which then raises its own error.
    """
    mine = _header(fn, error is not None, dtype, ndim, tuple(fshape), tuple(axes))
    size = comm.Get_size()
    every = np.empty((size, _HEADER), np.int64)
    comm.Allgather(np.frombuffer(mine, np.int64), every)
    if every[:, :-1].tobytes() == mine[:-8] * size:      # the usual case: all agree
        return
    failed = np.flatnonzero(every[:, 0] == 0)
    if failed.size:
        # every rank sees the same headers, so every rank makes this second call
        why = comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            return
        lines = "; ".join(f"rank {r}: {why[r]}" for r in failed)
        raise RuntimeError(f"{fn}: rank(s) {', '.join(map(str, failed))} of {size} raised "
                           f"before the collective ({lines}); this rank (rank "
                           f"{comm.Get_rank()}) stops too")
    if np.any(every[:, 1] != every[0, 1]):
        raise RuntimeError(f"{fn}: the ranks are out of step (rank r is in "
                           + ", ".join(f"{r}: {_name(o)}" for r, o in enumerate(every[:, 1]))
                           + "); every rank must make the same calls in the same order")
    seen = "; ".join(f"rank {r}: {_describe(h)}" for r, h in enumerate(every))
    raise ValueError(f"{fn}: the ranks disagree on the feature shape, axes or dtype "
                     f"({seen}); each rank's slice must differ from the others only along "
                     f"the reduced axes (e.g. the batch size), with the same axis argument")


def _name(op):
    return next((k for k, v in _OPS.items() if v == op), f"op {op}")


#: a caller that does not say its axis: the header then compares no axes
_UNSAID = object()


class _Collective:
    """The shape check, then the data collective, for one synchronized call."""

    def __init__(self, comm, fn, x, axis=_UNSAID):
        self.comm, self.fn, self.checked, self.axis = comm, fn, False, axis
        self.dtype = getattr(x, "dtype", None)
        self.dtype = None if self.dtype is None else np.dtype(self.dtype)
        self.ndim = getattr(x, "ndim", None)
        if self.ndim is None:
            self.ndim = np.ndim(x)

    def check(self, lay):
        self.checked = True
        if self.dtype is None:      # a list or scalar: what the kernels were given
            self.dtype = np.float64
        # the call's own checks passed, so its axis is good; moments names reduced axes
        axes = ()
        if self.axis is not _UNSAID:
            axes = normalize_axis(self.axis, self.ndim, fn=self.fn,
                                  allow_none=self.fn == "moments")
            if self.fn == "moments":
                axes = tuple(a for a in range(self.ndim) if a not in axes)
        _check(self.comm, self.fn, self.dtype, self.ndim, lay.feature_shape, axes=axes)

    def fail(self, error):
        """Tell the other ranks (they are waiting in :func:`_check`) that this one failed."""
        if not self.checked:
            self.checked = True
            _check(self.comm, self.fn, error=error)

    def gather(self, lay, n, *vectors):
        """``[n, v1, v2, ...]`` of every rank, feature order, as a ``(ranks, 1 + k*C)`` array."""
        c = lay.channels
        mine = np.empty(1 + len(vectors) * c)
        mine[0] = n
        for i, v in enumerate(vectors):
            # kernel order -> axis order: ranks whose memory layouts differ still agree
            mine[1 + i * c:1 + (i + 1) * c] = lay.from_kernel(v).reshape(-1)
        every = np.empty((self.comm.Get_size(), mine.size))
        self.comm.Allgather(mine, every)
        return every

    def merge(self, lay, n, mean_k, m2_k):
        """Chan's merge of every rank's ``(count, mean, M2)``, in rank order."""
        self.check(lay)
        every = self.gather(lay, n, mean_k, m2_k)
        c = lay.channels
        n, mean, m2 = 0.0, np.zeros(c), np.zeros(c)
        for row in every:
            nb = row[0]
            if nb == 0:
                continue
            if n == 0:
                n, mean, m2 = nb, row[1:1 + c].copy(), row[1 + c:].copy()
                continue
            total = n + nb
            delta = row[1:1 + c] - mean
            mean += delta * (nb / total)
            m2 += row[1 + c:] + delta * delta * (n * nb / total)
            n = total
        if c and n == 0:
            raise ValueError(f"{self.fn}: no rank has any element per feature (the slices "
                             f"of all {self.comm.Get_size()} ranks are empty); batch "
                             f"statistics need at least one")
        if self.fn == "batch_norm_forward" and n == 1:
            warnings.warn(f"{self.fn}: only one value per feature in the global batch; the "
                          f"batch variance is 0 and the output equals beta (Keras behaviour)",
                          RuntimeWarning, stacklevel=5)
        fshape = lay.feature_shape
        return int(n), lay.to_kernel(mean.reshape(fshape)), lay.to_kernel(m2.reshape(fshape))

    def sums(self, lay, n, sum_g, sum_gx):
        """The count and the two gradient sums over all ranks, added in rank order."""
        self.check(lay)
        every = self.gather(lay, n, sum_g, sum_gx)
        total = every[0].copy()
        for row in every[1:]:
            total += row
        c, fshape = lay.channels, lay.feature_shape
        return (int(total[0]), lay.to_kernel(total[1:1 + c].reshape(fshape)),
                lay.to_kernel(total[1 + c:].reshape(fshape)))

    def run(self, compute):
        try:
            return compute()
        except Exception as e:
            self.fail(e)
            raise


# ------------------------------------------------------------- functional API
def moments(x, axis=None, *, comm, keepdims=False, ddof=0):
    r"""Mean and variance over ``axis`` of the data of every rank together.

    The result equals :func:`fastbn.moments` of the ranks' ``x``
    concatenated along a reduced axis, and is bitwise the same on every rank:

    .. math::

        n = \sum_r n_r, \qquad
        \mu = \mu_a + \delta\,\frac{n_b}{n}, \qquad
        M_2 = M_{2,a} + M_{2,b} + \delta^2 \frac{n_a n_b}{n}, \quad
        \delta = \mu_b - \mu_a

    (Chan et al.), applied to the ranks' float64 ``(count, mean, M2)`` in
    rank order 0, 1, 2, ...; ``var = M2 / (n - ddof)``.

    Parameters
    ----------
    x : array_like
        This rank's data, float16/32/64. The shape along the kept axes and
        the dtype must be the same on every rank; the reduced axes may differ
        in length, down to 0 (a rank with no data).
    axis : None, int or tuple of ints, optional
        Axes to **reduce** (NumPy semantics); None reduces all of them.
    comm : mpi4py communicator or None
        The ranks to reduce over; every one of them must call this function.
        None: this process alone (:func:`fastbn.moments`).
    keepdims : bool, optional
    ddof : int, optional
        The divisor is ``N - ddof``, ``N`` counted over all ranks.

    Returns
    -------
    mean, var : ndarray or scalar
        In ``x``'s dtype, shaped like ``x`` without the reduced axes.

    Raises
    ------
    ValueError
        On every rank, when the ranks' kept shapes or dtypes differ, when no
        rank has data, or where :func:`fastbn.moments` raises one.
    RuntimeError
        On every other rank, when one rank's own arguments were invalid (that
        rank raises its own error).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import distributed
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> distributed.moments(x, axis=0, comm=None)     # one process: fastbn.moments
    (array([2., 4.]), array([1., 4.]))

    Under ``mpiexec -n 2`` with ``comm=MPI.COMM_WORLD``, rank 0 passing
    ``x[:1]`` and rank 1 ``x[1:]`` both get the same two arrays.
    """
    if _size(comm) == 1:
        return F.moments(x, axis, keepdims=keepdims, ddof=ddof)
    sync = _Collective(comm, "moments", x, axis)
    return sync.run(lambda: _bn.moments(x, axis, keepdims, ddof, merge=sync.merge))


def batch_norm_forward(x, gamma, beta, *, comm, axis=-1, epsilon=1e-3, training=True,
                       moving_mean=None, moving_variance=None, momentum=0.99):
    r"""Synchronized batch normalization, forward: statistics of the global batch.

    :func:`fastbn.functional.batch_norm_forward` with ``mean`` and the biased
    variance taken over the slices of every rank of ``comm`` together
    (merged as in :func:`moments`), and each rank normalizing its own slice
    with them:

    .. math::

        y = \gamma\,(x - \mu)\,(\sigma^2 + \epsilon)^{-1/2} + \beta

    The moving statistics are updated (Keras: ``moving * momentum + batch *
    (1 - momentum)``, biased variance) with the global statistics, so they
    stay identical on every rank. With ``training=False`` nothing is
    communicated.

    Parameters
    ----------
    x : array_like
        This rank's slice. Feature shape and dtype must agree across ranks;
        the other axes may differ, and a rank may hold no rows (it then
        returns an empty ``y``).
    gamma, beta : array_like or None
    comm : mpi4py communicator or None
        Every rank of it must call this function (in training). None: this
        process alone (:func:`fastbn.functional.batch_norm_forward`).
    axis, epsilon, training, moving_mean, moving_variance, momentum
        As in :func:`fastbn.functional.batch_norm_forward`; the same on
        every rank.

    Returns
    -------
    y : ndarray
        Like ``x``, in ``x``'s dtype.
    mean, invstd : ndarray
        The global statistics, float64, bitwise the same on every rank.

    Raises
    ------
    ValueError
        On every rank, when the feature shapes or dtypes differ across ranks
        or no rank has data; or what the functional version raises.
    RuntimeError
        On the other ranks, when one rank's own arguments were invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import distributed
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> y, mean, invstd = distributed.batch_norm_forward(x, None, None, comm=None,
    ...                                                   epsilon=0.0)
    >>> y, mean
    (array([[-1., -1.],
           [ 1.,  1.]]), array([ 2., 20.]))
    """
    if _size(comm) == 1 or not training:
        return F.batch_norm_forward(x, gamma, beta, axis=axis, epsilon=epsilon,
                                    training=training, moving_mean=moving_mean,
                                    moving_variance=moving_variance, momentum=momentum)
    sync = _Collective(comm, "batch_norm_forward", x, axis)
    return sync.run(lambda: _bn.batch_norm_forward(
        x, gamma, beta, axis, epsilon, training, moving_mean, moving_variance, momentum,
        merge=sync.merge))


def batch_norm_backward(dy, x, mean, invstd, gamma, *, comm, axis=-1, training=True):
    r"""Synchronized batch normalization, backward.

    With ``N`` the global count and the sums over every rank's slice,

    .. math::

        \frac{\partial L}{\partial x} = \gamma s \Big(dy
            - \frac{1}{N}\sum dy - \frac{\hat x}{N}\sum dy\,\hat x\Big)

    so each rank sends two per-feature sums and its count (one
    ``Allgather``, summed in rank order) and computes its own ``dx``. With
    ``dy`` the gradient of the loss of the **global** batch (for a mean
    loss: each rank's mean loss times ``n_rank / N``), ``dx`` is exactly the
    single-process gradient of those rows.

    Parameters
    ----------
    dy, x, mean, invstd, gamma
        As in :func:`fastbn.functional.batch_norm_backward`, ``mean`` and
        ``invstd`` from :func:`batch_norm_forward`.
    comm : mpi4py communicator or None
        Every rank of it must call this function (in training). None: this
        process alone.
    axis, training
        As in :func:`fastbn.functional.batch_norm_backward`. With
        ``training=False`` nothing is communicated.

    Returns
    -------
    dx : ndarray
        This rank's rows of the gradient, like ``x``.
    dgamma, dbeta : ndarray
        **This rank's share**: the sums over its own rows. Their sum over
        the ranks is the gradient of the global batch; data-parallel training
        sums them with every other gradient in its one all-reduce (as
        PyTorch's ``SyncBatchNorm`` with ``DistributedDataParallel``).

    Raises
    ------
    ValueError, RuntimeError
        As in :func:`batch_norm_forward`, on every rank.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import distributed
    >>> x = np.array([[1.0], [2.0], [4.0]])
    >>> y, mean, invstd = distributed.batch_norm_forward(x, None, None, comm=None)
    >>> dx, dgamma, dbeta = distributed.batch_norm_backward(
    ...     np.ones_like(x), x, mean, invstd, None, comm=None)
    >>> bool(np.abs(dx).max() < 1e-12), dbeta
    (True, array([3.]))
    """
    if _size(comm) == 1 or not training:
        return F.batch_norm_backward(dy, x, mean, invstd, gamma, axis=axis, training=training)
    sync = _Collective(comm, "batch_norm_backward", x, axis)
    return sync.run(lambda: _bn.batch_norm_backward(dy, x, mean, invstd, gamma, axis, training,
                                                    reduce=sync.sums))


# -------------------------------------------------------------- job failure
def abort_on_exception(comm=None):
    """Make an uncaught exception on any rank abort the whole MPI job.

    Installs a :data:`sys.excepthook` that prints the traceback (prefixed
    with the rank) and calls ``comm.Abort(1)``: the launcher then kills every
    rank and exits non-zero, instead of the other ranks waiting forever in
    their next collective. ``python -m mpi4py script.py`` does the same for
    any script. :class:`DataParallel` installs it (``abort_on_error=True``).

    Parameters
    ----------
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.

    Examples
    --------
    >>> import sys
    >>> from fastbn import distributed
    >>> distributed.abort_on_exception()      # doctest: +SKIP
    """
    comm = world() if comm is None else comm
    previous = sys.excepthook
    if getattr(previous, "_fastbn_abort", False):
        return

    def hook(kind, value, tb):
        try:
            sys.stderr.write(f"fastbn.distributed: uncaught {kind.__name__} on rank "
                             f"{comm.Get_rank()} of {comm.Get_size()}; aborting the job\n")
            previous(kind, value, tb)
            sys.stderr.flush()
            sys.stdout.flush()
            # mpiexec stops reading the rank's output pipe at the abort (a CI traceback
            # was cut after 3 lines): the pause lets it through
            time.sleep(_ABORT_GRACE)
        finally:
            comm.Abort(1)

    hook._fastbn_abort = True
    sys.excepthook = hook


# ---------------------------------------------------------- data parallelism
class _Solo:
    """A one-process stand-in for a communicator, used where mpi4py is missing."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Bcast(self, buf, root=0):
        pass

    def Barrier(self):
        pass

    def Allreduce(self, send, recv):
        recv[...] = send

    def allgather(self, obj):
        return [obj]

    def Abort(self, code=1):
        os._exit(code)

    def Dup(self):
        return self


def _default_comm():
    try:
        return world()
    except ImportError:
        sizes = [os.environ[k] for k in _LAUNCHER_SIZE if k in os.environ]
        if any(s.isdigit() and int(s) > 1 for s in sizes):
            raise                       # started by mpiexec -n 2+: one process won't do
        return _Solo()


class DataParallel:
    """Data-parallel training of a :class:`fastbn.nn.Sequential` over MPI.

    Every rank runs the same script on the same data with the same seed and calls ``fit``
    with the **global** batch size; each rank then computes on its contiguous shard of every
    global batch (uneven when the batch does not divide: ranks ``0..r-1`` get one row more,
    and a rank may get none).

    * :meth:`distribute` broadcasts rank 0's weights (moving statistics included) and
      attaches the communicator to the ``BatchNormalization(synchronized=True)`` layers;
    * each step, each rank back-propagates its shard's mean loss times ``n_rank / N`` and
      **one** ``Allreduce`` sums every gradient, packed into one flat buffer, with the
      step's loss and correct count, so every rank applies the gradient of the global
      batch's mean loss and the weights stay identical;
    * shuffling uses rank 0's order, validation in ``fit`` splits the data across the ranks
      and combines the sums (``evaluate`` and ``predict`` run on each rank alone);
    * only rank 0 shows progress (``is_root`` tells a script when to print
      or write files).

    Parameters
    ----------
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``. Without mpi4py, outside ``mpiexec``, the
        process trains alone (as if ``comm`` had one rank).
    root : int, default 0
        The rank whose weights and shuffling order everyone takes.
    abort_on_error : bool, default True
        Call :func:`abort_on_exception`, so that an uncaught exception on
        one rank ends the job instead of leaving the others waiting.
    timeout : float or None, default 300
        Seconds ``fit`` waits at its start for every rank to call it too before it raises
        ``RuntimeError`` (then, with ``abort_on_error``, the job ends): ``fit`` guarded by
        ``if dp.is_root:`` would otherwise wait forever in its first collective. None: wait
        forever. MPI's collectives have no timeout; this one is a non-blocking barrier on a
        communicator of its own, polled. After it fires the ranks are out of step for good:
        end the job.

    Attributes
    ----------
    comm, rank, size, root

    Notes
    -----
    Every rank must call ``fit`` (and ``train_on_batch``) with the same number of
    samples, batch size, epochs, shuffle and validation data: at its start ``fit``
    compares them across the ranks and raises ``ValueError`` on every rank when they
    differ (rather than aborting with "Message truncated" or hanging later).
    ``evaluate`` and ``predict`` do not communicate: each rank computes on all the
    data it is given (the weights are the same everywhere), so ``if dp.is_root:
    model.evaluate(...)`` works. Validation inside ``fit`` is split across the ranks.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn, distributed
    >>> nn.set_random_seed(0)
    >>> dp = distributed.DataParallel()      # under mpiexec: one per rank
    >>> model = dp.distribute(nn.Sequential([
    ...     nn.Dense(8, input_shape=(4,)), nn.BatchNormalization(synchronized=True),
    ...     nn.Dense(2, activation="softmax")]))
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd",
    ...               metrics=["accuracy"])
    >>> x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    >>> h = model.fit(x, (x[:, 0] > 0).astype(int), batch_size=16, verbose=0)
    >>> sorted(h.history)
    ['accuracy', 'loss']
    >>> dp.size, dp.is_root                  # here, one process
    (1, True)
    """

    def __init__(self, comm=None, *, root=0, abort_on_error=True, timeout=300.0):
        self.comm = _default_comm() if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if not 0 <= root < self.size:
            raise ValueError(f"DataParallel: root={root} is not a rank of a communicator "
                             f"of {self.size}")
        if timeout is not None and not (_bn.number(timeout) is not None and timeout > 0):
            raise ValueError(f"DataParallel: timeout must be a number of seconds > 0 or "
                             f"None, got {timeout!r}")
        self.root, self.timeout = root, timeout
        self._steps = {}
        # fit's entry handshake: its own communicator, so that a barrier left
        # waiting can never match another collective
        self._entry = self.comm.Dup() if self.size > 1 else None
        if abort_on_error and self.size > 1:
            abort_on_exception(self.comm)

    @property
    def is_root(self):
        """True on the rank that prints and writes files."""
        return self.rank == self.root

    def shard(self, n):
        """This rank's contiguous part of ``n`` rows, as a slice.

        Parameters
        ----------
        n : int
            Rows of the global batch.

        Returns
        -------
        slice
            Ranks ``0, 1, ...`` get consecutive parts, the first ``n % size``
            of them one row more; a part may be empty.

        Examples
        --------
        >>> from fastbn.distributed import DataParallel
        >>> DataParallel().shard(10)
        slice(0, 10, None)
        """
        lo = n // self.size * self.rank + min(self.rank, n % self.size)
        return slice(lo, lo + n // self.size + (self.rank < n % self.size))

    def distribute(self, model):
        """Train ``model`` data-parallel from now on.

        Sets ``model.distribution``, gives its synchronized batch-norm layers the
        communicator and, once the model is built, broadcasts the root's weights (``fit``
        broadcasts them again at its start).

        Parameters
        ----------
        model : fastbn.nn.Sequential

        Returns
        -------
        fastbn.nn.Sequential
            ``model`` itself.
        """
        model.distribution = self
        self._attach(model)
        if model.built:
            self.broadcast_variables(model)
        return model

    def _attach(self, model):
        comm = self.comm if self.size > 1 else None
        for layer in model.layers:
            if getattr(layer, "synchronized", False):
                layer.comm = comm

    def broadcast_variables(self, model):
        """Overwrite every variable of ``model`` with the root's, in one ``Bcast``.

        Parameters
        ----------
        model : fastbn.nn.Sequential
            Built; its variables (moving statistics included) must have the
            same shapes on every rank.
        """
        vs = model.variables
        if not vs:
            return
        buf = np.concatenate([v.value.reshape(-1) for v in vs])
        self.comm.Bcast(buf, root=self.root)
        o = 0
        for v in vs:
            v.value[...] = buf[o:o + v.value.size].reshape(v.value.shape)
            o += v.value.size

    def broadcast(self, array):
        """Overwrite ``array`` with the root's, in place.

        Parameters
        ----------
        array : ndarray
            Contiguous, the same shape and dtype on every rank.

        Returns
        -------
        ndarray
            ``array``.
        """
        self.comm.Bcast(array, root=self.root)
        return array

    # ------------------------- the strategy hooks (see fastbn.nn.training's docstring)
    def begin_fit(self, model, **arguments):
        """Called by ``fit``: check that every rank is here with the same ``arguments``
        (:meth:`agree`), broadcast the weights and return :meth:`step`'s function.

        Parameters
        ----------
        model : fastbn.nn.Sequential
            Compiled, with its step plan made.
        **arguments
            What must be the same on every rank (the number of samples, ...).

        Returns
        -------
        callable
            ``step(xb, yb) -> (loss, correct)``.
        """
        self.agree("fit()", **arguments)
        self._attach(model)
        self.broadcast_variables(model)
        return self.step(model)

    def agree(self, what, **arguments):
        """Wait for every rank to call this too, then raise on every rank unless
        all passed the same ``what`` and ``arguments``.

        The wait is a non-blocking barrier on a communicator of this object's own, polled
        for up to ``timeout`` seconds; then one ``allgather`` of ``(what, arguments)``.
        Called at the start of ``fit``, before any other collective, so that ranks given
        different data fail there instead of hanging or aborting in a later collective.

        Parameters
        ----------
        what : str
            The call, as the error message names it (``"fit()"``).
        **arguments
            Small picklable values (counts, flags).

        Raises
        ------
        ValueError
            On every rank, when the ranks' ``what`` or ``arguments`` differ.
        RuntimeError
            On a rank that waited ``timeout`` seconds for the others.
        """
        if self.size == 1:
            return
        request = self._entry.Ibarrier()
        if self.timeout is None:
            request.Wait()
        else:
            start = time.monotonic()
            pause = 1e-4
            while not request.Test():
                if time.monotonic() - start > self.timeout:
                    raise RuntimeError(
                        f"{what}: rank {self.rank} of {self.size} waited {self.timeout:g} s "
                        f"for the other ranks to call {what} too, and not all came. With "
                        f"DataParallel every rank runs fit() (and train_on_batch()) "
                        f"together: do not guard them with 'if dp.is_root:' (evaluate() "
                        f"and predict() may run on one rank). The ranks are now out of "
                        f"step; end the job (DataParallel(timeout=...) sets the wait)")
                time.sleep(pause)
                pause = min(2 * pause, 0.05)
        mine = (what, sorted(arguments.items()))
        every = self.comm.allgather(mine)
        if any(e != mine for e in every):
            seen = "; ".join(f"rank {r}: {e[0]} " + ", ".join(f"{k}={v!r}" for k, v in e[1])
                             for r, e in enumerate(every))
            raise ValueError(f"{what}: the ranks disagree ({seen}). With DataParallel every "
                             f"rank runs the same script on the same data and passes "
                             f"fit() the whole data set and the global batch size; each "
                             f"rank takes its shard of every batch itself")

    def step(self, model):
        """The function that takes one data-parallel step on a global batch.

        Built once per :meth:`~fastbn.nn.training.Trainer.step_plan` (``fit`` and
        ``train_on_batch`` call it).

        Parameters
        ----------
        model : fastbn.nn.Sequential
            Compiled.

        Returns
        -------
        callable
            ``step(xb, yb) -> (loss, correct)``: this rank trains on its shard of
            ``(xb, yb)``; the loss and correct count are the whole batch's.
        """
        plan = model.step_plan()
        cached = self._steps.get(id(model))
        if cached is not None and cached[0] is plan:
            return cached[1]
        step = self._make_step(model, plan)
        self._steps[id(model)] = (plan, step)
        return step

    def _make_step(self, model, plan):
        self._attach(model)
        variables, tensors = plan.variables, plan.tensors
        dtype = np.result_type(*[v.value.dtype for v in variables]) if variables else np.float32
        sizes = [v.value.size for v in variables]
        total = sum(sizes)
        send = np.zeros(total + 2, dtype)     # gradients, then loss and correct count
        recv = np.zeros_like(send)
        grads, o = [], 0
        for v, s in zip(variables, sizes):
            grads.append(recv[o:o + s].reshape(v.value.shape))
            o += s
        comm, optimizer = self.comm, model.optimizer
        correct_of = plan.correct

        def step(xb, yb):
            n = len(xb)
            part = self.shard(n)
            xr, yr = xb[part], yb[part]
            m = len(xr)
            # d(global mean)/d(this shard's mean) = m / n: the ranks' gradients then add up
            loss, h = plan.backprop(xr, yr, scale=m / n)
            o = 0
            for t, s in zip(tensors, sizes):
                if t.grad is None:
                    send[o:o + s] = 0
                else:
                    send[o:o + s] = t.grad.reshape(-1)
                o += s
            send[total] = float(loss.data) * (m / n) if m else 0.0
            send[total + 1] = correct_of(h.data, yr) if m else 0
            comm.Allreduce(send, recv)
            optimizer.apply([None if t.grad is None else g for t, g in zip(tensors, grads)],
                            variables)
            return float(recv[total]), int(round(float(recv[total + 1])))

        return step

    def evaluate(self, model, x, y, batch_size, bar=None):
        """Called by validation in ``fit``: each rank a shard, the sums combined.

        Parameters
        ----------
        model : fastbn.nn.Sequential
        x, y : ndarray
            The whole data set, the same on every rank.
        batch_size : int
        bar : progress bar (``fit``'s) or None

        Returns
        -------
        list of float
            ``[loss, accuracy]``, means over all samples, the same on every rank.
        """
        part = self.shard(len(x))
        m = part.stop - part.start
        if bar is not None:
            bar.total = -(-m // batch_size)
        loss, acc = model.step_plan().evaluate(x[part], y[part], batch_size, bar)
        # small: gather and add in rank order, so every rank gets the same bits
        every = self.comm.allgather((loss * m, acc * m, m))
        loss_sum = sum(e[0] for e in every)
        correct = sum(round(e[1]) for e in every)
        n = max(sum(e[2] for e in every), 1)
        return [loss_sum / n, correct / n]

    def threads_per_process(self):
        """How many threads each rank on this machine should use.

        Returns
        -------
        int
            This process's CPU cores divided by the ranks on this host (at least 1).
        """
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        local = 1
        if self.size > 1:
            MPI = _mpi()
            node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
            local = node.Get_size()
            node.Free()
        return max(1, (cpus or 1) // local)
