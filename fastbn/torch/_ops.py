"""fastbn.torch's operators, registered once with :mod:`torch.library`, their
eager twin, and the functional API, :func:`batch_norm`.

Three operators: the forward ``fastbn::batch_norm`` (functional, with an
autograd formula and a fake implementation for ``torch.compile``), its
backward ``fastbn::batch_norm_backward``, and the running-statistics update
``fastbn::update_running_stats`` (mutates its first two arguments;
torch.library gives an autograd formula to functional operators only, hence
the split).
"""
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .. import _bn
from .. import functional as F
from . import _native
from ._boundary import KERNEL_DTYPES, array, check, compute, tensor, vector


# ------------------------------------------------------------- the operators
def _forward_arrays(input, weight, bias, running_mean, running_var, training, eps):
    """:func:`_forward_impl` with the statistics as NumPy arrays."""
    x = array(compute(input))
    gamma, beta = vector(weight, x.dtype), vector(bias, x.dtype)
    y, mean, invstd, var = _forward_numpy(x, gamma, beta, running_mean, running_var, training,
                                          eps)
    return tensor(y, input.dtype), mean, invstd, var


def _forward_numpy(x, gamma, beta, running_mean, running_var, training, eps):
    """``(y, mean, invstd, var)`` of the arrays: :func:`fastbn.functional`'s planned
    training call when the shape has a plan, else its checked call."""
    if training:
        res = _bn.planned_training(x, 1, gamma, beta, eps)
        if res is not None:
            y, mean, var, invstd = res
            return y, mean, invstd, var
        # momentum 0 writes the batch mean and biased variance, float64, exactly
        c = x.shape[1]
        mean_b, var_b = np.zeros(c), np.zeros(c)
        y, mean, invstd = F.batch_norm_forward(x, gamma, beta, axis=1, epsilon=eps,
                                               moving_mean=mean_b, moving_variance=var_b,
                                               momentum=0.0)
        return y, mean, invstd, var_b
    y, mean, invstd = F.batch_norm_forward(
        x, gamma, beta, axis=1, epsilon=eps, training=False,
        moving_mean=vector(running_mean, np.float64),
        moving_variance=vector(running_var, np.float64))
    return y, mean, invstd, np.zeros(0)


def _forward_impl(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                  running_mean: Optional[Tensor], running_var: Optional[Tensor],
                  training: bool, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batch norm over dim 1: ``(output, mean, invstd, var)``, the statistics float64.

    ``var`` is the biased batch variance in training (for the running update),
    empty otherwise; without training the running statistics are used.
    """
    out, mean, invstd, var = _forward_arrays(input, weight, bias, running_mean, running_var,
                                             training, eps)
    return out, torch.from_numpy(mean), torch.from_numpy(invstd), torch.from_numpy(var)


_batch_norm_op = torch.library.custom_op("fastbn::batch_norm", _forward_impl, mutates_args=(),
                                         device_types="cpu")


@_batch_norm_op.register_fake
def _(input, weight, bias, running_mean, running_var, training, eps):
    c = input.shape[1]
    stat = input.new_empty((c,), dtype=torch.float64)
    var = input.new_empty((c if training else 0,), dtype=torch.float64)
    return torch.empty_like(input), stat, torch.empty_like(stat), var


def _update_impl(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor,
                 count: int, momentum: float) -> None:
    """``running = (1 - momentum) * running + momentum * batch`` in float64, in place,
    with the unbiased batch variance ``var * count / (count - 1)``."""
    update_arrays(running_mean, running_var, array(mean), array(var), count, momentum)


def update_arrays(running_mean, running_var, mean, var, count, momentum):
    """:func:`_update_impl` with ``mean`` and ``var`` as NumPy arrays (float64)."""
    if running_mean.dtype in KERNEL_DTYPES and running_var.dtype in KERNEL_DTYPES:
        if _bn.blend_running(array(running_mean), array(running_var), mean, var, momentum,
                            count / (count - 1)):
            return
    _update_running(running_mean, mean, momentum)
    _update_running(running_var, var * (count / (count - 1)), momentum)


def _update_running(running, batch, momentum):
    """``running = (1 - momentum) * running + momentum * batch`` in float64, in place
    (``batch`` a float64 NumPy vector)."""
    if running.dtype in KERNEL_DTYPES:
        r = array(running)
        r[...] = r.astype(np.float64) * (1.0 - momentum) + batch * momentum
    else:
        new = running.double().mul_(1.0 - momentum).add_(torch.from_numpy(batch), alpha=momentum)
        running.copy_(new)


_update_running_op = torch.library.custom_op("fastbn::update_running_stats", _update_impl,
                                             mutates_args=("running_mean", "running_var"),
                                             device_types="cpu")


@_update_running_op.register_fake
def _(running_mean, running_var, mean, var, count, momentum):
    return None


def _backward_impl(grad_output: Tensor, input: Tensor, weight: Optional[Tensor],
                   mean: Tensor, invstd: Tensor, training: bool) -> tuple[Tensor, Tensor, Tensor]:
    """fastbn's analytic backward: ``(grad_input, grad_weight, grad_bias)``."""
    return _backward_arrays(grad_output, input, weight, array(mean), array(invstd), training)


def _backward_arrays(grad_output, input, weight, mean, invstd, training, x=None, gamma=None):
    """:func:`_backward_impl` with ``mean`` and ``invstd`` as NumPy arrays (and
    ``x``, ``gamma``, when given, the forward's arrays of ``input`` and ``weight``)."""
    if x is None:
        x = array(compute(input))
        gamma = vector(weight, x.dtype)
    dy = array(compute(grad_output))
    res = _bn.planned_training_backward(dy, x, mean, invstd, gamma, 1) if training else None
    if res is None:
        res = F.batch_norm_backward(dy, x, mean, invstd, gamma, axis=1, training=training)
    dx, dgamma, dbeta = res
    pdtype = input.dtype if weight is None else weight.dtype
    return tensor(dx, input.dtype), tensor(dgamma, pdtype), tensor(dbeta, pdtype)


_batch_norm_backward_op = torch.library.custom_op("fastbn::batch_norm_backward", _backward_impl,
                                                  mutates_args=(), device_types="cpu")


@_batch_norm_backward_op.register_fake
def _(grad_output, input, weight, mean, invstd, training):
    pdtype = input.dtype if weight is None else weight.dtype
    c = input.shape[1]
    return (torch.empty_like(input), input.new_empty((c,), dtype=pdtype),
            input.new_empty((c,), dtype=pdtype))


def _setup_context(ctx, inputs, output):
    input, weight, bias, running_mean, running_var, training, eps = inputs
    _, mean, invstd, var = output
    ctx.mark_non_differentiable(mean, invstd, var)
    ctx.save_for_backward(input, weight, mean, invstd)
    ctx.training = training
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None


def _backward(ctx, grad_output, grad_mean, grad_invstd, grad_var):
    input, weight, mean, invstd = ctx.saved_tensors
    dx, dw, db = torch.ops.fastbn.batch_norm_backward(grad_output, input, weight, mean, invstd,
                                                      ctx.training)
    return (dx, dw if ctx.has_weight else None, db if ctx.has_bias else None,
            None, None, None, None)


_batch_norm_op.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("fastbn.torch: batch norm has no second derivative here (double "
                       "backward, e.g. create_graph=True then backward again); use "
                       "torch.nn.BatchNorm for gradients of gradients")


_batch_norm_backward_op.register_autograd(_no_double_backward,
                                          setup_context=lambda ctx, inputs, output: None)


class _EagerBatchNorm(torch.autograd.Function):
    """The operators' eager path: the same implementations and the same backward,
    without the dispatch of :func:`torch.library.custom_op` (a (4, 3) forward
    took 400 us through it against 48 us for ``torch.nn.BatchNorm1d``), with one
    output and the running update inside, the statistics kept as NumPy arrays
    on ``ctx``. Under ``torch.compile`` the operators run."""

    @staticmethod
    def forward(ctx, input, weight, bias, rest):
        # forward(ctx, ...) rather than setup_context: Function.apply binds the
        # arguments with inspect.signature when setup_context is defined (80 us).
        # The arguments that take no gradient come as one tuple: each argument
        # costs apply and the backward node about 0.4 us
        running_mean, running_var, training, eps, momentum = rest
        x = array(compute(input))
        gamma, beta = vector(weight, x.dtype), vector(bias, x.dtype)
        y, mean, invstd, var = _forward_numpy(x, gamma, beta, running_mean, running_var,
                                              training, eps)
        if training and running_mean is not None and running_var is not None:
            update_arrays(running_mean, running_var, mean, var, x.size // x.shape[1],
                          momentum)
        ctx.save_for_backward(input, weight)    # (their version counters: in-place checks)
        # the arrays for the backward, so that it makes no views again
        ctx.arrays = (x, gamma, mean, invstd, training, weight is not None, bias is not None)
        return tensor(y, input.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        x, gamma, mean, invstd, training, has_weight, has_bias = ctx.arrays
        if torch.is_grad_enabled():         # create_graph=True: the operator, which refuses
            dx, dw, db = torch.ops.fastbn.batch_norm_backward(
                grad_output, input, weight, torch.from_numpy(mean), torch.from_numpy(invstd),
                training)
        else:
            dx, dw, db = _backward_arrays(grad_output, input, weight, mean, invstd, training,
                                          x, gamma)
        return dx, dw if has_weight else None, db if has_bias else None, None


def _empty(input, weight, bias):
    """A zero-size batch's output: empty like ``input``, with zero gradients for
    ``weight`` and ``bias`` (sums over no elements), as torch.nn gives; the
    running statistics are left alone."""
    shape = (1, input.shape[1]) + (1,) * (input.dim() - 2)
    out = input.clone()
    if weight is not None:
        out = out * weight.to(input.dtype).view(shape)
    if bias is not None:
        out = out + bias.to(input.dtype).view(shape)
    return out


def _batched(*tensors):
    """Whether any of ``tensors`` is a ``torch.func.vmap`` batched tensor."""
    is_batched = torch._C._functorch.is_batchedtensor
    return any(t is not None and is_batched(t) for t in tensors)


class _VmapBatchNorm(torch.autograd.Function):
    """Batch norm under ``torch.func.vmap``: a vmap rule that folds the vmapped
    dim into the batch (evaluation: the same running statistics for every
    sample) or into the channels (training without running statistics: each
    sample's own statistics), then runs the eager path on the plain tensor."""

    @staticmethod
    def forward(input, weight, bias, running_mean, running_var, training, eps):
        return batch_norm(input, running_mean, running_var, weight, bias, training, 0.0, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, running_mean, running_var, training, eps = inputs
        ctx.save_for_backward(input, weight, bias, running_mean, running_var)
        ctx.training, ctx.eps = training, eps

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, bias, running_mean, running_var = ctx.saved_tensors
        leaves = [t if t is None else t.detach().requires_grad_(need)
                  for t, need in zip((input, weight, bias), ctx.needs_input_grad)]
        with torch.enable_grad():
            out = _EagerBatchNorm.apply(*leaves, (running_mean, running_var, ctx.training,
                                                  ctx.eps, 0.0))
            wanted = [t for t in leaves if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad_output))
        return tuple(next(grads) if t is not None and t.requires_grad else None
                     for t in leaves) + (None,) * 4

    @staticmethod
    def vmap(info, in_dims, input, weight, bias, running_mean, running_var, training, eps):
        if any(d is not None for d in in_dims[1:5]):
            raise ValueError("fastbn.torch.batch_norm: under torch.func.vmap only the input may "
                             "be batched, not weight, bias or the running statistics; vmap "
                             "over the input, or use torch.nn.BatchNorm")
        if training and running_mean is not None:
            raise RuntimeError("fastbn.torch.batch_norm: under torch.func.vmap, training would "
                               "update running_mean and running_var in place for every "
                               "sample at once (torch.nn refuses it too); use eval() or "
                               "track_running_stats=False")
        x = input.movedim(in_dims[0], 0) if in_dims[0] is not None else input.unsqueeze(0)
        if not training:
            out = batch_norm(x.flatten(0, 1), running_mean, running_var, weight, bias, False,
                             0.0, eps)
            return out.unflatten(0, x.shape[:2]), 0
        b, c = x.shape[0], x.shape[2]
        x = x.movedim(0, 1).flatten(1, 2)       # (N, B * C, ...): each sample's channels
        out = batch_norm(x, None, None, None if weight is None else weight.repeat(b),
                         None if bias is None else bias.repeat(b), True, 0.0, eps)
        return out.unflatten(1, (b, c)), 1


# ------------------------------------------------------------ functional API
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    r"""Batch normalization over dim 1, as ``torch.nn.functional.batch_norm``.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\,\gamma + \beta

    Parameters
    ----------
    input : torch.Tensor
        CPU tensor ``(N, C, ...)``, float32 or float64 (float16 and bfloat16
        are computed in float32), any memory format.
    running_mean, running_var : torch.Tensor or None
        ``(C,)``. In training, when given, updated in place:
        ``running = (1 - momentum) * running + momentum * batch``, with the
        unbiased batch variance, in float64. Required when ``training`` is False.
    weight, bias : torch.Tensor, optional
        ``(C,)`` scale :math:`\gamma` and offset :math:`\beta`.
    training : bool, default False
        Normalize with the batch statistics (True) or the running ones.
    momentum : float, default 0.1
        Weight of the batch in the running statistics (PyTorch's convention).
    eps : float, default 1e-5

    Returns
    -------
    torch.Tensor
        Shaped like ``input``, in its dtype and memory format.

    Raises
    ------
    ValueError
        For a tensor not on the CPU, an unsupported dtype, fewer than 2
        dimensions, one value per channel or ``eps <= 0`` in training, or no
        running statistics in evaluation.

    Examples
    --------
    >>> import torch
    >>> from fastbn.torch import batch_norm
    >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    >>> rm, rv = torch.zeros(2), torch.ones(2)
    >>> batch_norm(x, rm, rv, training=True)
    tensor([[-1.0000, -1.0000],
            [ 1.0000,  1.0000]])
    >>> rm, rv
    (tensor([0.2000, 2.0000]), tensor([ 1.1000, 20.9000]))
    """
    check(input, "batch_norm")
    if training:
        size = input.numel() // input.shape[1] if input.shape[1] else 0
        if size == 1:
            raise ValueError(f"fastbn.torch.batch_norm: expected more than 1 value per channel "
                             f"when training, got input size {tuple(input.shape)}")
    elif running_mean is None or running_var is None:
        raise ValueError("fastbn.torch.batch_norm: training=False normalizes with the running "
                         "statistics; pass running_mean and running_var (or training=True)")
    training, eps, momentum = bool(training), float(eps), float(momentum)
    if training and not eps > 0:        # torch 2.13 refuses it too: 0 / 0 on a constant channel
        raise ValueError(f"fastbn.torch.batch_norm: eps must be positive in training, got "
                         f"{eps}; the default is 1e-5 (0 divides by zero on a constant "
                         f"channel)")
    if input.numel() == 0:              # torch.nn's answer: empty output, zero gradients
        return _empty(input, weight, bias)
    if _batched(input, weight, bias):
        return _VmapBatchNorm.apply(input, weight, bias, running_mean, running_var, training,
                                    eps)
    update = training and running_mean is not None and running_var is not None
    if torch.compiler.is_compiling():
        out, mean, _, var = torch.ops.fastbn.batch_norm(input, weight, bias, running_mean,
                                                        running_var, training, eps)
        if update:
            torch.ops.fastbn.update_running_stats(running_mean, running_var, mean, var,
                                                  input.numel() // input.shape[1], momentum)
        return out
    if training:
        res = _native.train(input, weight, bias, running_mean if update else None,
                            running_var if update else None, momentum, eps)
        if res is not None:
            out, held_var = res
            if held_var is not None:
                _bn.warn_native_held(held_var.numpy())
            return out
    if torch.is_grad_enabled() and (input.requires_grad
                                    or (weight is not None and weight.requires_grad)
                                    or (bias is not None and bias.requires_grad)):
        return _EagerBatchNorm.apply(input, weight, bias,
                                     (running_mean, running_var, training, eps, momentum))
    out, mean, _, var = _forward_arrays(input, weight, bias, running_mean, running_var,
                                        training, eps)
    if update:
        update_arrays(running_mean, running_var, mean, var, input.numel() // input.shape[1],
                      momentum)
    return out
