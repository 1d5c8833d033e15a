"""The computation of fastbn.torch's :class:`SyncBatchNorm`: fastbn.distributed's
synchronized batch norm over a ``torch.distributed`` process group."""
import numpy as np
import torch

from ._boundary import array, compute, vector
from ._ops import update_arrays


class Comm:
    """The few mpi4py communicator methods :mod:`fastbn.distributed` calls,
    over a ``torch.distributed`` process group (gloo on the CPU)."""

    def __init__(self, group):
        import torch.distributed as dist
        self.dist, self.group = dist, group

    def Get_size(self):
        return self.dist.get_world_size(self.group)

    def Get_rank(self):
        return self.dist.get_rank(self.group)

    def Allgather(self, send, recv):
        mine = torch.from_numpy(np.ascontiguousarray(send).reshape(-1))
        parts = [torch.empty_like(mine) for _ in range(self.Get_size())]
        self.dist.all_gather(parts, mine, group=self.group)
        recv[...] = torch.stack(parts).numpy().reshape(recv.shape)

    def allgather(self, obj):
        every = [None] * self.Get_size()
        self.dist.all_gather_object(every, obj, group=self.group)
        return every


def _sync_forward(x, gamma, beta, eps, comm):
    """fastbn.distributed's forward on this rank's slice: ``(y, mean, invstd,
    var, count)`` with the global batch's statistics (biased variance) and count."""
    from .. import distributed as D
    c = x.shape[1]
    mean_b, var_b = np.zeros(c), np.zeros(c)      # momentum 0: the global statistics
    y, mean, invstd = D.batch_norm_forward(x, gamma, beta, comm=comm, axis=1, epsilon=eps,
                                           moving_mean=mean_b, moving_variance=var_b,
                                           momentum=0.0)
    count = sum(comm.allgather(x.size // c if c else 0))
    return y, mean, invstd, var_b, count


class _SyncFunction(torch.autograd.Function):
    """Synchronized batch norm over ``comm``: the global batch's statistics
    forward, the global sums backward (fastbn.distributed over torch.distributed)."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, comm):
        x = array(compute(input))
        gamma, beta = vector(weight, x.dtype), vector(bias, x.dtype)
        y, mean, invstd, var, count = _sync_forward(x, gamma, beta, eps, comm)
        if running_mean is not None and count > 1:
            update_arrays(running_mean, running_var, mean, var, count, momentum)
        mean, invstd = torch.from_numpy(mean), torch.from_numpy(invstd)
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.comm, ctx.has_weight, ctx.has_bias = comm, weight is not None, bias is not None
        out = torch.from_numpy(y)
        return out if out.dtype == input.dtype else out.to(input.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        from .. import distributed as D
        input, weight, mean, invstd = ctx.saved_tensors
        x = array(compute(input))
        dx, dgamma, dbeta = D.batch_norm_backward(
            array(compute(grad_output)), x, mean.numpy(), invstd.numpy(),
            vector(weight, x.dtype), comm=ctx.comm, axis=1)
        dx = torch.from_numpy(dx).to(input.dtype)
        pdtype = input.dtype if weight is None else weight.dtype
        return (dx, torch.from_numpy(dgamma).to(pdtype) if ctx.has_weight else None,
                torch.from_numpy(dbeta).to(pdtype) if ctx.has_bias else None,
                None, None, None, None, None)


#: ``sync_batch_norm(input, weight, bias, running_mean, running_var, eps, momentum,
#: comm)``: :class:`_SyncFunction` applied (its autograd node keeps the name
#: ``_SyncFunctionBackward``).
sync_batch_norm = _SyncFunction.apply
