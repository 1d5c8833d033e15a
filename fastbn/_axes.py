"""The one axis shim: any (shape, strides, axis) -> one canonical kernel layout.

Kernels never see ``axis``. They see either

* ``rows``:   a 2-D ``(N, C)`` array, features along the last axis
  (``(N, C)`` input, NHWC, anything whose features vary fastest), or
* ``planes``: a 3-D ``(outer, C, inner)`` array, ``inner`` > 1 elements per
  feature stored next to each other (NCHW, ``axis=(1, 2)`` of ``(N, H, W)``,
  Fortran-ordered or transposed ``(N, C)``, or plain reductions).

The shim orders the axes by stride (memory order), labels each one feature
or reduced, and reads off the pattern. ``[reduced][features][reduced]`` (each
part optional) maps onto the layouts above by a transpose and a reshape, and
NumPy makes that reshape a view whenever the strides allow, so contiguous,
Fortran-ordered, transposed and sliced inputs are not copied. Any other
pattern (features interleaved with reduced axes in memory, e.g. ``axis=(0, 2)``
of a C-ordered 4-D array) is copied once into the ``rows`` layout, as are
runs of axes whose strides cannot be merged (e.g. ``x[::2]`` of NHWC).
"""
from functools import lru_cache
from math import prod

import numpy as np

from . import _config
from ._config import FRESH_PAGES_FROM, STREAM_MIN_BYTES


def normalize_axis(axis, ndim, *, fn, allow_none=False):
    """Return ``axis`` as a sorted tuple of non-negative ints.

    Raises ``TypeError`` for non-integers and ``ValueError`` for axes out of
    ``range(-ndim, ndim)`` or repeated.
    """
    if type(axis) is int and -ndim <= axis < ndim:      # the common case, fast
        return (axis % ndim,)
    if axis is None:
        if allow_none:
            return tuple(range(ndim))
        raise TypeError(f"{fn}: axis=None is not allowed here; pass the feature axis "
                        f"or axes as an int or a tuple of ints")
    items = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{fn}: axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"{fn}: axis {int(a)} is out of range for a {ndim}-d input "
                             f"(valid axes are {-ndim}..{ndim - 1})")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{fn}: axis {axis!r} repeats an axis")
    return tuple(sorted(out))


class Layout:
    """How one input maps onto the kernels' canonical layout.

    Attributes
    ----------
    kind : {"rows", "planes"}
    kshape : tuple
        ``(N, C)`` for rows, ``(outer, C, inner)`` for planes, and
        ``(outer, C * inner)`` for planes with short ``inner`` runs read as rows.
    group : int
        Adjacent kernel columns per feature: ``inner`` for short-run planes
        read as rows, else 1.
    fold : int
        Input rows per kernel row: narrow contiguous rows are read ``fold`` at
        a time, as ``(N / fold, fold * C)``, feature ``f`` in kernel columns
        ``f, f + C, f + 2C, ...`` (see :data:`fastbn._config.FOLD_BELOW`,
        :data:`fastbn._config.FOLD_MIN_ROWS`); else 1.
    perm : tuple
        Axes of the input in kernel order (outer axes, feature axes, inner axes).
    channels, count : int
        Number of features ``C`` and of elements per feature ``N``.
    copies : bool
        True when the input's strides force a copy into the kernel layout.
    interleaved : bool
        True when feature and reduced axes alternate in memory, so the
        kernel order is not the input's memory order (outputs are then
        copied back into the input's layout).
    plain : bool
        True when the input is its own kernel view (no transpose, no
        reshape: ``(N, C)`` with ``axis=-1``), and ``plain_features`` when a
        feature vector is its own kernel vector (one feature axis).
        They only skip work: about 1 us per array and vector, which on
        (128, 784) is paid three times over after a kernel has evicted the
        interpreter from L2.
    """

    __slots__ = ("shape", "perm", "kshape", "kind", "group", "fold", "channels", "count",
                 "feature_shape",
                 "_fperm", "_finv", "_fident", "_kfshape", "_inv", "_pshape", "copies", "interleaved",
                 "plain", "plain_features")

    def __init__(self, shape, strides, features):
        self.shape = shape
        self.interleaved = False
        fset = set(features)
        order = sorted((a for a in range(len(shape)) if shape[a] != 1),
                       key=lambda a: (-abs(strides[a]), a))
        runs = []                           # [(is_feature, [axes...]), ...] in memory order
        for a in order:
            if runs and runs[-1][0] == (a in fset):
                runs[-1][1].append(a)
            else:
                runs.append((a in fset, [a]))
        pattern = tuple(f for f, _ in runs)
        unit_f = [a for a in features if shape[a] == 1]
        unit_r = [a for a in range(len(shape)) if shape[a] == 1 and a not in fset]
        if pattern in ((), (True,), (False, True)):
            outer, feats, inner = ([a for f, r in runs if not f for a in r],
                                   [a for f, r in runs if f for a in r], [])
        elif pattern in ((False,), (True, False)):
            outer, feats, inner = [], [a for f, r in runs if f for a in r], runs[-1][1]
        elif pattern == (False, True, False):
            outer, feats, inner = runs[0][1], runs[1][1], runs[2][1]
        else:                               # interleaved: copy into rows
            self.interleaved = True
            outer = [a for a in order if a not in fset]
            feats, inner = [a for a in order if a in fset], []
        outer, feats = unit_r + outer, feats + unit_f
        self.perm = tuple(outer + feats + inner)
        n_out, c, n_in = (prod(shape[a] for a in g) for g in (outer, feats, inner))
        self.kind = "planes" if inner else "rows"
        self.kshape = (n_out, c, n_in) if inner else (n_out, c)
        self.group = self.fold = 1
        self.channels, self.count = c, n_out * n_in
        self.feature_shape = tuple(shape[a] for a in sorted(features))
        self._fperm = tuple(sorted(features).index(a) for a in feats)
        self._finv = tuple(int(i) for i in np.argsort(self._fperm))
        self._fident = self._fperm == tuple(sorted(self._fperm))
        self._kfshape = tuple(shape[a] for a in feats)
        self._inv = tuple(int(i) for i in np.argsort(self.perm))
        self._pshape = tuple(shape[a] for a in self.perm)
        self.copies = False
        self._set_plain()

    def _set_plain(self):
        self.plain = (self.perm == tuple(range(len(self.shape))) and self.kshape == self.shape
                      and not self.interleaved)
        self.plain_features = self._fident and self._kfshape == (self.channels,)

    @property
    def column_steps(self):
        """``(first, step)``: feature ``f``'s kernel columns are ``f * first + i * step``
        for ``i`` in ``range(group * fold)``."""
        return (self.group, 1) if self.fold == 1 else (1, self.channels)

    def view(self, a):
        """``a`` (shaped like the input) in kernel layout: a view when possible."""
        if self.plain:
            return a
        return a.transpose(self.perm).reshape(self.kshape)

    def empty(self, dtype):
        """A new array shaped like the input and its kernel view.

        Laid out like the input unless :attr:`interleaved`; see :meth:`restore`.
        """
        buf = _empty(self._pshape, dtype)
        if self.plain:
            return buf, buf
        return buf.transpose(self._inv), buf.reshape(self.kshape)

    def restore(self, out, like, dtype):
        """``out`` (from :meth:`empty`) as ``dtype``, laid out like the array ``like``."""
        if self.interleaved:
            res = np.empty_like(like, dtype=dtype)    # order="K": like's memory order
            np.copyto(res, out)
            return res
        return out if out.dtype == dtype else out.astype(dtype)

    def to_kernel(self, v, dtype=None):
        """A feature-shaped array as a contiguous vector in kernel order, of
        ``dtype`` (default float64)."""
        v = np.asarray(v, dtype=np.float64 if dtype is None else dtype)
        if self.plain_features and v.flags.c_contiguous:
            return v
        if not self._fident:                # features stored in another order than axes
            v = v.transpose(self._fperm)
        return np.ascontiguousarray(v).reshape(self.channels)     # (a strided one: a copy)

    def from_kernel(self, vec, dtype=np.float64):
        """A kernel-order vector (fresh, contiguous) as a feature-shaped array.

        Returns ``vec`` itself, reshaped, when no transpose or cast is needed.
        """
        if self.plain_features:
            return vec if vec.dtype == dtype else vec.astype(dtype)
        out = vec.reshape(self._kfshape)
        if not self._fident:
            return out.transpose(self._finv).astype(dtype, order="C")
        return out if out.dtype == dtype else out.astype(dtype)


def _empty(shape, dtype):
    """``np.empty(shape, dtype)``, starting on a cache line when it has
    ``STREAM_MIN_BYTES`` or more (the kernels then stream into it, see
    ``kernels._chunks._streams``; NumPy's large blocks start 16 bytes into one)."""
    dtype = np.dtype(dtype)
    nbytes = prod(shape) * dtype.itemsize
    if not STREAM_MIN_BYTES <= nbytes < FRESH_PAGES_FROM - 4096:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + 64, np.uint8)
    skip = -raw.__array_interface__["data"][0] % 64
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


@lru_cache(maxsize=512)
def _layout(shape, strides, features, itemsize=0):
    lay = Layout(shape, strides, features)
    lay.copies = _needs_copy(lay, shape, strides)
    if lay.kind == "planes" and lay.kshape[2] < _config.GROUP_BELOW:
        planes = lay.kshape
        lay.kind, lay.kshape, lay.group = "rows", (planes[0], planes[1] * planes[2]), planes[2]
        if _needs_copy(lay, shape, strides) and not lay.copies:   # keep the zero-copy view
            lay.kind, lay.kshape, lay.group = "planes", planes, 1
    elif lay.kind == "rows":
        n, c = lay.kshape
        fold = 1
        if c < _config.FOLD_BELOW and n >= _config.FOLD_MIN_ROWS:
            while 2 * fold * c <= _config.FOLD_COLS and n % (2 * fold) == 0:
                fold *= 2
        if fold > 1 and (lay.copies or lay.interleaved
                         or _contiguous(shape, strides, lay.perm, itemsize)):
            lay.kshape, lay.fold = (n // fold, fold * c), fold
    lay._set_plain()
    return lay


def _contiguous(shape, strides, perm, itemsize):
    """Whether the axes ``perm`` of an array with these strides are C-contiguous
    in that order (unit axes aside): its transpose then reshapes to any shape
    without a copy."""
    step = itemsize
    for a in reversed(perm):
        if shape[a] != 1:
            if strides[a] != step:
                return False
            step *= shape[a]
    return True


def _needs_copy(lay, shape, strides):
    """True when some run of axes merged by ``lay.kshape`` cannot be one stride."""
    k, groups = 0, []
    for size in lay.kshape:                 # split perm into the axes of each kshape dim
        axes, n = [], 1
        while n != size or (k < len(lay.perm) and shape[lay.perm[k]] == 1):
            axes.append(lay.perm[k])
            n *= shape[lay.perm[k]]
            k += 1
        groups.append([a for a in axes if shape[a] != 1])
    return any(strides[p] != strides[q] * shape[q]
               for g in groups for p, q in zip(g, g[1:]))


def layout(x, features):
    """The (cached) :class:`Layout` of array ``x`` with feature axes ``features``."""
    strides = x.strides if x.size else (0,) * x.ndim
    return _layout(x.shape, strides, tuple(features), x.itemsize)
