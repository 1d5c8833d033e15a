"""fastbn.torch's modules, as ``torch/nn/modules/batchnorm.py`` holds torch.nn's:
:class:`BatchNorm1d`/2d/3d, :class:`SyncBatchNorm`, and :func:`convert`."""
import torch
from torch import Tensor
from torch.nn.modules import batchnorm as _torch_bn

from ._boundary import check
from ._ops import batch_norm
from ._sync import Comm, sync_batch_norm


_PARAMETERS = """    Parameters
    ----------
    num_features : int
        ``C``, the size of dim 1 of the input.
    eps : float, default 1e-5
        Added to the variance.
    momentum : float or None, default 0.1
        Weight of each batch in the running statistics; None: a cumulative
        average over ``num_batches_tracked``.
    affine : bool, default True
        Learnable ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` (unbiased) and
        ``num_batches_tracked``; without them, evaluation uses the batch's
        statistics.{extra}
    device, dtype : optional
        Of the parameters and buffers.
    bias : bool, default True
        Keyword only: with ``affine``, a learnable ``bias`` too.

"""


def _with_parameters(cls, extra=""):
    cls.__doc__ = cls.__doc__.replace("    {parameters}\n", _PARAMETERS.format(extra=extra))
    return cls


# ------------------------------------------------------------------- modules
class _BatchNorm:
    """The forward of fastbn's modules; ``torch.nn``'s base class owns the
    parameters, the buffers and ``reset_parameters`` (so ``state_dict`` and
    checkpoints are ``torch.nn``'s). This forward is ``torch.nn``'s, with the
    operator in place of ``F.batch_norm``."""

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        # each attribute read once: a parameter or buffer is a Module.__getattr__
        # call (about 0.5 us), and a small batch norm is a few tens of them
        momentum, training = self.momentum, self.training
        buffers, params = self._buffers, self._parameters
        try:
            running_mean, running_var = buffers["running_mean"], buffers["running_var"]
            tracked = buffers["num_batches_tracked"]
            weight, bias = params["weight"], params["bias"]
        except KeyError:                        # one replaced by a plain attribute
            running_mean, running_var = self.running_mean, self.running_var
            tracked, weight, bias = self.num_batches_tracked, self.weight, self.bias
        factor = 0.0 if momentum is None else momentum
        if training and self.track_running_stats and tracked is not None:
            tracked.add_(1)
            if momentum is None:                # cumulative moving average
                factor = 1.0 / float(tracked)
        bn_training = training or (running_mean is None and running_var is None)
        if training and not self.track_running_stats:
            running_mean = running_var = None
        return batch_norm(input, running_mean, running_var, weight, bias, bn_training, factor,
                          self.eps)


class BatchNorm1d(_BatchNorm, torch.nn.BatchNorm1d):
    r"""``torch.nn.BatchNorm1d`` on fastbn's kernels: input ``(N, C)`` or ``(N, C, L)``.

    Same constructor (``num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, device=None, dtype=None``), buffers and
    ``state_dict`` as ``torch.nn.BatchNorm1d``, of which it is a subclass.

    {parameters}
    Examples
    --------
    >>> import torch
    >>> from fastbn.torch import BatchNorm1d
    >>> bn = BatchNorm1d(3)
    >>> y = bn(torch.randn(8, 3) * 5 + 2)
    >>> bool(y.mean(0).abs().max() < 1e-5), int(bn.num_batches_tracked)
    (True, 1)
    """


_with_parameters(BatchNorm1d)


class BatchNorm2d(_BatchNorm, torch.nn.BatchNorm2d):
    r"""``torch.nn.BatchNorm2d`` on fastbn's kernels: input ``(N, C, H, W)``,
    contiguous or ``channels_last``.

    {parameters}
    Examples
    --------
    >>> import torch
    >>> from fastbn.torch import BatchNorm2d
    >>> bn = BatchNorm2d(4)
    >>> x = torch.randn(2, 4, 5, 5).to(memory_format=torch.channels_last)
    >>> bn(x).is_contiguous(memory_format=torch.channels_last)
    True
    """


_with_parameters(BatchNorm2d)


class BatchNorm3d(_BatchNorm, torch.nn.BatchNorm3d):
    r"""``torch.nn.BatchNorm3d`` on fastbn's kernels: input ``(N, C, D, H, W)``,
    contiguous or ``channels_last_3d``.

    {parameters}
    Examples
    --------
    >>> import torch
    >>> from fastbn.torch import BatchNorm3d
    >>> BatchNorm3d(2)(torch.randn(2, 2, 3, 3, 3)).shape
    torch.Size([2, 2, 3, 3, 3])
    """


_with_parameters(BatchNorm3d)


# ------------------------------------------------------- torch.distributed
class SyncBatchNorm(torch.nn.SyncBatchNorm):
    r"""``torch.nn.SyncBatchNorm`` on fastbn's kernels, over ``torch.distributed``.

    Same constructor (``num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, process_group=None, device=None, dtype=None``),
    buffers and ``state_dict``. In training, with more than one process in
    the group, every rank's ``(count, mean, M2)`` is gathered and merged in
    rank order with Chan's formula (:mod:`fastbn.distributed`'s merge, float64),
    so every rank normalizes with bitwise the same statistics; backward, the
    two per-channel gradient sums and the counts are gathered and summed in
    rank order. ``weight.grad`` and ``bias.grad`` are this rank's share, as in
    PyTorch (``DistributedDataParallel`` sums them). Ranks may hold different
    batch sizes. Otherwise it is :class:`BatchNorm1d`/2d/3d's computation.
    CPU tensors (gloo); eager mode only.

    {parameters}
    Examples
    --------
    >>> import torch
    >>> from fastbn.torch import SyncBatchNorm
    >>> bn = SyncBatchNorm(3)       # one process: no group, plain batch norm
    >>> bn(torch.randn(4, 3, 2, 2)).shape
    torch.Size([4, 3, 2, 2])
    """

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        import torch.distributed as dist
        group = self.process_group or (dist.group.WORLD if dist.is_available()
                                       and dist.is_initialized() else None)
        if not (self.training and group is not None and dist.get_world_size(group) > 1):
            return _BatchNorm.forward(self, input)
        check(input, "SyncBatchNorm")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        track = self.track_running_stats
        return sync_batch_norm(input, self.weight, self.bias,
                               self.running_mean if track else None,
                               self.running_var if track else None, float(self.eps),
                               float(factor), Comm(group))

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Swap every batch norm of ``module`` (torch.nn's, fastbn's) for this one,
        in place, keeping its state, as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``.

        Parameters
        ----------
        module : torch.nn.Module
        process_group : torch.distributed.ProcessGroup, optional
            The group to synchronize over (default: the whole world).

        Returns
        -------
        torch.nn.Module

        Examples
        --------
        >>> import torch
        >>> from fastbn.torch import SyncBatchNorm
        >>> net = SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(3)))
        >>> type(net[0]).__name__, type(net[0]).__module__
        ('SyncBatchNorm', 'fastbn.torch')
        """
        return _swap(module, lambda m: isinstance(m, _torch_bn._BatchNorm)
                     and type(m) is not cls, cls, process_group)


_with_parameters(SyncBatchNorm, extra="""
    process_group : torch.distributed.ProcessGroup, optional
        The processes to synchronize over (default: the whole world).""")


_SWAPS = {torch.nn.BatchNorm1d: BatchNorm1d, torch.nn.BatchNorm2d: BatchNorm2d,
          torch.nn.BatchNorm3d: BatchNorm3d}


def _swap(module, match, cls, process_group=None):
    if match(module):
        new = cls.__new__(cls)
        new.__dict__ = module.__dict__.copy()   # parameters, buffers, hooks, mode, eps...
        if cls is SyncBatchNorm:
            new.process_group = process_group
        return new
    for name, child in module.named_children():
        new = _swap(child, match, cls, process_group)
        if new is not child:
            setattr(module, name, new)
    return module


def convert(module, sync_batchnorm=False):
    """Swap every ``torch.nn`` BatchNorm1d/2d/3d of ``module`` for fastbn's, in place.

    Parameters, buffers, hooks and training mode are kept (the swapped module
    takes over the original's state, as
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does); subclasses of
    them are left alone, and so is ``torch.nn.SyncBatchNorm`` unless
    ``sync_batchnorm`` is True (it then becomes :class:`SyncBatchNorm`, with
    its process group).

    Parameters
    ----------
    module : torch.nn.Module
    sync_batchnorm : bool, default False
        Swap ``torch.nn.SyncBatchNorm`` too.

    Returns
    -------
    torch.nn.Module
        ``module`` (a new module when ``module`` itself is a batch norm).

    Examples
    --------
    >>> import torch
    >>> import fastbn.torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    >>> net = fastbn.torch.convert(net)
    >>> type(net[1]).__module__, isinstance(net[1], torch.nn.BatchNorm2d)
    ('fastbn.torch', True)
    """
    if type(module) is torch.nn.SyncBatchNorm:
        if not sync_batchnorm:
            return module
        group = module.process_group
        return _swap(module, lambda m: True, SyncBatchNorm, group)
    swap = _SWAPS.get(type(module))
    if swap is not None:
        return _swap(module, lambda m: True, swap)
    for name, child in module.named_children():
        new = convert(child, sync_batchnorm)
        if new is not child:
            setattr(module, name, new)
    return module
