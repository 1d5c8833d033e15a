r"""Batch normalization and dropout: the ops that behave differently in training.

``batch_norm`` calls :func:`fastbn.functional.batch_norm_forward` and
:func:`fastbn.functional.batch_norm_backward` (the kernels' analytic
gradient); it is never decomposed into primitive ops.
"""
import numpy as np

from ... import functional
from ..tensor import Function, Tensor

__all__ = ["batch_norm", "dropout"]


# ------------------------------------------------------------ regularization
class Dropout(Function):
    """Inverted dropout with a mask drawn from ``rng``; see :func:`dropout`."""

    @staticmethod
    def forward(ctx, x, rate, rng):
        keep = rng.random(x.shape, dtype=np.float64 if x.dtype == np.float64
                          else np.float32) >= rate
        mask = keep.astype(x.dtype)
        mask *= np.asarray(1.0 / (1.0 - rate), x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None


def dropout(x, rate, training=True, rng=None):
    """Dropout as Keras does it: in training, zero with probability ``rate``, scale by ``1/(1-rate)``.

    Parameters
    ----------
    x : Tensor
    rate : float
        Fraction to drop, in ``[0, 1)``.
    training : bool, default True
        False returns ``x`` unchanged.
    rng : numpy.random.Generator, optional
        Source of the mask (pass one for reproducible runs; ``fastbn.nn``
        passes its seeded generator).

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, dropout
    >>> y = dropout(Tensor(np.ones(8)), 0.5, rng=np.random.default_rng(0))
    >>> sorted(set(y.data.tolist()))
    [0.0, 2.0]
    >>> dropout(Tensor(np.ones(2)), 0.5, training=False)
    Tensor([1., 1.])
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate!r}")
    if not training or rate == 0.0:
        return x if type(x) is Tensor else Tensor(x)
    return Dropout.apply(x, rate, np.random.default_rng() if rng is None else rng)


# --------------------------------------------------------------- batch norm
class BatchNorm(Function):
    """Batch norm with the kernels' analytic backward; see :func:`batch_norm`."""

    @staticmethod
    def forward(ctx, x, gamma, beta, axis=-1, epsilon=1e-3, training=True,
                moving_mean=None, moving_variance=None, momentum=0.99, comm=None, mask=None):
        ctx.mask = mask
        if mask is not None and comm is not None:
            raise NotImplementedError("batch_norm: a mask with synchronized "
                                      "data-parallel statistics is not implemented")
        # module attribute looked up per call: replaced kernels are picked up
        if comm is None:
            y, mean, invstd = functional.batch_norm_forward(
                x, gamma, beta, axis=axis, epsilon=epsilon, training=training,
                moving_mean=moving_mean, moving_variance=moving_variance, momentum=momentum,
                mask=mask)
        else:       # an MPI communicator: statistics of the global batch
            from ... import distributed
            y, mean, invstd = distributed.batch_norm_forward(
                x, gamma, beta, comm=comm, axis=axis, epsilon=epsilon, training=training,
                moving_mean=moving_mean, moving_variance=moving_variance, momentum=momentum)
        ctx.save_for_backward(x, mean, invstd, gamma)
        ctx.axis, ctx.training, ctx.comm = axis, training, comm
        return y

    @staticmethod
    def backward(ctx, grad):
        x, mean, invstd, gamma = ctx.saved_tensors
        nx, ng, nb = ctx.needs_input_grad
        if ctx.comm is None:
            dx, dgamma, dbeta = functional.batch_norm_backward(
                grad, x, mean, invstd, gamma, axis=ctx.axis, training=ctx.training,
                mask=ctx.mask)
        else:       # dgamma, dbeta: this process's share, summed by data-parallel training
            from ... import distributed
            dx, dgamma, dbeta = distributed.batch_norm_backward(
                grad, x, mean, invstd, gamma, comm=ctx.comm, axis=ctx.axis,
                training=ctx.training)
        return (dx if nx else None, dgamma if ng else None, dbeta if nb else None)


def batch_norm(x, gamma=None, beta=None, *, axis=-1, epsilon=1e-3, training=True,
               moving_mean=None, moving_variance=None, momentum=0.99, comm=None, mask=None):
    r"""Batch normalization with gradients for ``x``, ``gamma`` and ``beta``.

    The forward pass is :func:`fastbn.functional.batch_norm_forward` and the
    backward pass :func:`fastbn.functional.batch_norm_backward`: the
    kernels' analytic gradient, not a composition of primitive ops. With
    ``training=True`` the batch statistics are used (and the moving
    statistics, when given, updated in place with Keras' ``momentum``) and
    the gradient flows through them; with ``training=False`` the moving
    statistics are used and treated as constants.

    Parameters
    ----------
    x : Tensor
    gamma, beta : Tensor, ndarray or None
        Scale and offset, shaped like ``x`` along ``axis``.
    axis : int or tuple of ints, default -1
        The feature axes that are kept (Keras).
    epsilon, training, moving_mean, moving_variance, momentum
        As in :func:`fastbn.functional.batch_norm_forward`.
    comm : MPI communicator, optional
        Synchronize the statistics over its processes (:mod:`fastbn.distributed`).
    mask : array_like of bool, optional
        Keras' mask over the sample positions (see
        :func:`fastbn.functional.batch_norm_forward`).

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, batch_norm
    >>> x = Tensor(np.array([[1.0], [3.0]]), requires_grad=True)
    >>> g = Tensor(np.ones(1), requires_grad=True)
    >>> y = batch_norm(x, g, None, epsilon=0.0)
    >>> y
    Tensor([[-1.],
            [ 1.]], requires_grad=True)
    >>> (y * np.array([[0.0], [1.0]])).sum().backward()
    >>> g.grad, x.grad
    (array([1.]), array([[0.],
           [0.]]))
    """
    return BatchNorm.apply(x, gamma, beta, axis=axis, epsilon=epsilon, training=training,
                           moving_mean=moving_mean, moving_variance=moving_variance,
                           momentum=momentum, comm=comm, mask=mask)
