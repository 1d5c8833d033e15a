"""The tape: ``Tensor``, ``Function``, ``no_grad`` and the ``unbroadcast`` helper.

A :class:`Tensor` made by a :class:`Function` remembers that function (its
``ctx``), and the function remembers its inputs; that chain is the tape.
:meth:`Tensor.backward` orders it topologically and hands each output's
gradient to its function's ``backward``, adding (never overwriting) the
gradients that reach the same tensor by several paths.

The per-op cost matters: at batch 32 a training step of the MNIST MLP runs
about 25 ops and spends more time in Python than in arithmetic, so ``Tensor``
and ``Function`` use ``__slots__``, the engine stores the first gradient that
reaches a tensor without copying it, and ``backward`` can skip gradients
nobody needs (``ctx.needs_input_grad``).

This module imports none of the ops: :mod:`fastbn.autograd.ops` binds the
operators (``+``, ``@`` ...) and the methods ``sum``, ``mean``, ``reshape``,
``transpose``, ``T``, ``relu``, ``tanh`` and ``sigmoid`` onto :class:`Tensor`
when it is imported (early tinygrad's ``register``), and importing
:mod:`fastbn.autograd` imports it.
"""
import numpy as np

__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "unbroadcast"]

_GRAD_ENABLED = [True]      # a list so that no_grad can flip it without `global`


def is_grad_enabled():
    """Whether operations are being recorded on the tape.

    Returns
    -------
    bool

    Examples
    --------
    >>> from fastbn.autograd import is_grad_enabled, no_grad
    >>> is_grad_enabled()
    True
    >>> with no_grad():
    ...     is_grad_enabled()
    False
    """
    return _GRAD_ENABLED[0]


class no_grad:
    """Context manager (or decorator) in which no operation is recorded.

    Use it for inference and for updates of parameters: the results do not
    require gradients and keep no references to their inputs.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, no_grad
    >>> w = Tensor(np.ones(2), requires_grad=True)
    >>> with no_grad():
    ...     y = w * 2
    >>> y.requires_grad
    False
    """

    _enabled = False

    def __enter__(self):
        self._prev = _GRAD_ENABLED[0]
        _GRAD_ENABLED[0] = self._enabled
        return self

    def __exit__(self, *exc):
        _GRAD_ENABLED[0] = self._prev
        return False

    def __call__(self, func):
        import functools

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with type(self)():
                return func(*args, **kwargs)
        return wrapper


class enable_grad(no_grad):
    """Context manager that turns recording back on inside :class:`no_grad`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, no_grad, enable_grad
    >>> w = Tensor(np.ones(2), requires_grad=True)
    >>> with no_grad(), enable_grad():
    ...     (w * 2).requires_grad
    True
    """

    _enabled = True


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting.

    Leading axes that broadcasting added are summed away; axes where
    ``shape`` has length 1 and ``grad`` does not are summed with
    ``keepdims``. Every broadcasting op reduces its gradients through here.

    Parameters
    ----------
    grad : ndarray
        Gradient with the broadcast (output) shape.
    shape : tuple of int
        Shape of the input that was broadcast.

    Returns
    -------
    ndarray
        ``grad`` itself when the shapes already agree, else a new array of
        shape ``shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import unbroadcast
    >>> unbroadcast(np.ones((2, 3)), (3,))
    array([2., 2., 2.])
    >>> unbroadcast(np.ones((2, 3)), (2, 1))
    array([[3.],
           [3.]])
    >>> float(unbroadcast(np.ones((2, 3)), ()))
    6.0
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


class Function:
    """One differentiable operation: ``forward`` on arrays, ``backward`` on gradients.

    Subclasses define two static methods. ``forward(ctx, *inputs, **options)``
    receives the inputs as NumPy arrays (tensors unwrapped; anything else,
    such as labels, passed as is), saves what the backward pass needs with
    ``ctx.save_for_backward(...)`` (or as attributes of ``ctx``) and returns
    one array. ``backward(ctx, grad)`` returns one gradient per positional
    input (a tuple, or the gradient alone for a single input), shaped like
    that input; ``None`` where ``ctx.needs_input_grad[i]`` is False or the
    input is not differentiable. Call an op with ``MyOp.apply(*inputs)``.

    A function without ``backward`` still runs forward; differentiating
    through it raises ``NotImplementedError`` naming the op.

    fastbn's own ops are written this way: one subclass each in its family's
    module of :mod:`fastbn.autograd.ops`, applied by the lowercase function
    that documents it (``Add`` by :func:`~fastbn.autograd.add`).

    Attributes
    ----------
    parents : tuple
        The positional inputs as given (tensors and non-tensors).
    needs_input_grad : tuple of bool
        For each positional input: is it a tensor that requires a gradient?
    saved_tensors : tuple
        What ``save_for_backward`` stored.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Function, Tensor
    >>> class Square(Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x
    ...     @staticmethod
    ...     def backward(ctx, grad):
    ...         (x,) = ctx.saved_tensors
    ...         return 2.0 * x * grad
    >>> x = Tensor(np.array([1.0, 3.0]), requires_grad=True)
    >>> Square.apply(x).sum().backward()
    >>> x.grad
    array([2., 6.])
    """

    __slots__ = ("parents", "needs_input_grad", "saved_tensors", "__dict__")

    def save_for_backward(self, *arrays):
        """Keep ``arrays`` for ``backward`` (read them back from ``ctx.saved_tensors``).

        Parameters
        ----------
        *arrays : ndarray
            What the backward pass needs, typically inputs or outputs of ``forward``.
        """
        self.saved_tensors = arrays

    @staticmethod
    def forward(ctx, *inputs, **options):
        raise NotImplementedError(f"{type(ctx).__name__}.forward is not implemented")

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError(
            f"{type(ctx).__name__}: this op has no backward, so gradients cannot flow "
            f"through it; implement {type(ctx).__name__}.backward or call it under "
            f"no_grad() / on tensors that do not require gradients")

    @classmethod
    def apply(cls, *inputs, **options):
        """Run ``forward`` on ``inputs`` and record the op when a gradient is needed.

        Parameters
        ----------
        *inputs : Tensor, ndarray or object
            The positional inputs; tensors reach ``forward`` as their arrays.
        **options
            Keyword arguments passed to ``forward`` as they are (not differentiated).

        Returns
        -------
        Tensor
            Requires a gradient when gradients are enabled and any input does.
        """
        ctx = cls()
        arrays = [x.data if type(x) is Tensor else x for x in inputs]
        out = cls.forward(ctx, *arrays, **options)
        if _GRAD_ENABLED[0]:
            needs = tuple(type(x) is Tensor and x.requires_grad for x in inputs)
            if True in needs:
                ctx.parents = inputs
                ctx.needs_input_grad = needs
                t = Tensor.__new__(Tensor)
                t.data, t.grad, t.requires_grad, t._ctx = out, None, True, ctx
                return t
        t = Tensor.__new__(Tensor)
        t.data, t.grad, t.requires_grad, t._ctx = out, None, False, None
        return t


class Tensor:
    """An ndarray that records the operations applied to it.

    Parameters
    ----------
    data : array_like
        The values; kept without a copy when it already is an ndarray of the
        requested dtype.
    requires_grad : bool, default False
        Record operations on this tensor so that :meth:`backward` fills
        ``.grad``. Needs a floating-point dtype.
    dtype : dtype, optional
        Convert ``data`` to this dtype.

    Attributes
    ----------
    data : ndarray
    grad : ndarray or None
        The accumulated gradient of a leaf tensor (one made by the user, not
        by an op); ``None`` until a backward pass reaches it.
    requires_grad : bool

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor
    >>> x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    >>> y = (x * x + x).sum()        # x is used twice: the gradients add up
    >>> y.backward()
    >>> x.grad
    array([3., 5., 7.])
    >>> y
    Tensor(20.0, requires_grad=True)
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "__weakref__")
    #: make ``ndarray + Tensor`` call ``Tensor.__radd__`` instead of broadcasting
    __array_priority__ = 1000.0

    def __init__(self, data, requires_grad=False, dtype=None):
        if type(data) is Tensor:
            data = data.data
        arr = np.asarray(data, dtype=dtype)
        if requires_grad and arr.dtype.kind not in "fc":
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, "
                            f"got dtype {arr.dtype}; convert first, e.g. "
                            f"Tensor(x.astype(np.float32), requires_grad=True)")
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None

    # ---------------------------------------------------------- array-like
    @property
    def shape(self):
        """Shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self):
        """dtype of ``data``."""
        return self.data.dtype

    @property
    def ndim(self):
        """Number of dimensions of ``data``."""
        return self.data.ndim

    @property
    def size(self):
        """Number of elements of ``data``."""
        return self.data.size

    @property
    def is_leaf(self):
        """True for tensors made by the user, False for results of recorded ops."""
        return self._ctx is None

    def __len__(self):
        return len(self.data)

    def numpy(self):
        """The data as an ndarray (no copy).

        Returns
        -------
        ndarray
        """
        return self.data

    def item(self):
        """The single value of a one-element tensor as a Python number.

        Returns
        -------
        float or int
        """
        return self.data.item()

    def __array__(self, dtype=None, copy=None):
        if dtype is None or dtype == self.data.dtype:
            return self.data.copy() if copy else self.data
        return self.data.astype(dtype)

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        if self.data.ndim == 0:
            body = repr(self.data.item())
        extra = "" if self.data.dtype == np.float64 else f", dtype={self.data.dtype}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"Tensor({body}{extra})"

    # ----------------------------------------------------------- the tape
    def detach(self):
        """The same data (no copy) as a new tensor without history.

        Returns
        -------
        Tensor
            With ``requires_grad=False``.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn.autograd import Tensor
        >>> x = Tensor(np.ones(2), requires_grad=True)
        >>> d = (x * 2).detach()
        >>> d.requires_grad, d.is_leaf
        (False, True)
        """
        return Tensor(self.data)

    def zero_grad(self):
        """Forget the accumulated gradient (``grad = None``)."""
        self.grad = None

    def backward(self, grad=None):
        """Backpropagate from this tensor, adding into the leaves' ``.grad``.

        The graph is walked in reverse topological order, so every tensor's
        gradient is complete before its function's ``backward`` runs;
        contributions that reach a tensor by several paths are summed, and a
        leaf's existing ``.grad`` is added to, never overwritten (call
        :meth:`zero_grad` between steps).

        Parameters
        ----------
        grad : array_like, optional
            Gradient of the final objective w.r.t. this tensor; defaults to 1
            for a one-element tensor.

        Raises
        ------
        RuntimeError
            If this tensor does not require gradients, or ``grad`` is missing
            for a tensor with more than one element.
        NotImplementedError
            If an op on the way has no backward.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn.autograd import Tensor
        >>> w = Tensor(np.array([2.0]), requires_grad=True)
        >>> (w * 3).sum().backward()
        >>> (w * 3).sum().backward()     # accumulates
        >>> w.grad
        array([6.])
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require gradients; create "
                               "the inputs with requires_grad=True (and not under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward(): the tensor has shape {self.data.shape}; "
                                   f"pass grad= (its gradient) or reduce it to one element "
                                   f"first, e.g. .sum()")
            grad = np.ones_like(self.data)
        else:
            grad = np.array(grad, dtype=self.data.dtype)      # a copy: never alias the caller's
            if grad.shape != self.data.shape:
                raise RuntimeError(f"backward(): grad has shape {grad.shape}, the tensor "
                                   f"{self.data.shape}")
        for t, g in _walk(self, grad):
            if t.grad is None:
                t.grad = g
            elif t.grad.flags.writeable:
                t.grad += g
            else:
                t.grad = t.grad + g


def _walk(root, grad):
    """Run every ``backward`` from ``root``; yield ``(leaf, gradient)`` pairs.

    The first gradient that reaches a tensor is stored as is (no copy); a
    second one is added into a new array, further ones into that array in
    place. An array a backward pass returns for two inputs (``Add`` hands the
    same gradient to both) is copied for the second, so no two tensors ever
    share a gradient buffer that is later added into.
    """
    order, seen, stack = [], {id(root)}, [(root, False)]
    while stack:                      # iterative post-order DFS: no recursion limit
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        stack.append((t, True))
        ctx = t._ctx
        if ctx is not None:
            for p, need in zip(ctx.parents, ctx.needs_input_grad):
                if need and id(p) not in seen:
                    seen.add(id(p))
                    stack.append((p, False))
    grads = {id(root): grad}
    owned = set()                     # ids of accumulators the engine allocated
    stored = {id(grad)}               # ids of arrays already held as some tensor's gradient
    for t in reversed(order):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        owned.discard(id(g))          # t's gradient is complete: nobody adds into it now
        stored.discard(id(g))
        ctx = t._ctx
        if ctx is None:
            if not g.flags.writeable or g.dtype != t.data.dtype:
                g = np.array(g, dtype=t.data.dtype)  # e.g. a broadcast view from Sum
            yield t, g
            continue
        result = type(ctx).backward(ctx, g)
        if type(result) is not tuple:
            result = (result,)
        if len(result) != len(ctx.parents):
            raise RuntimeError(f"{type(ctx).__name__}.backward returned {len(result)} "
                               f"gradient(s) for {len(ctx.parents)} input(s)")
        for p, need, pg in zip(ctx.parents, ctx.needs_input_grad, result):
            if not need or pg is None:
                continue
            key = id(p)
            acc = grads.get(key)
            if acc is None:
                if id(pg) in stored:
                    pg = pg.copy()
                stored.add(id(pg))
                grads[key] = pg
            elif id(acc) in owned:
                acc += pg
            else:
                acc = acc + pg
                owned.add(id(acc))
                stored.add(id(acc))
                grads[key] = acc
