"""PyTorch adapter: ``torch.nn`` batch-norm modules on fastbn's kernels.

:class:`BatchNorm1d`, :class:`BatchNorm2d` and :class:`BatchNorm3d` are
``torch.nn``'s modules (constructor, buffers, ``state_dict``, ``train()`` /
``eval()``) with another forward: one operator, ``torch.ops.fastbn.batch_norm``,
registered with :mod:`torch.library` (autograd formula: fastbn's analytic
backward, itself the operator ``torch.ops.fastbn.batch_norm_backward``; fake
implementations, so ``torch.compile`` traces it without a graph break).
:func:`convert` swaps every ``torch.nn`` batch norm of a model in place.

CPU tensors are read and written in place through NumPy views: an NCHW tensor
in ``channels_last`` memory is an array of shape ``(N, C, H, W)`` with permuted
strides, which fastbn reads as ``(N*H*W, C)`` rows without a copy, and the
output keeps the input's memory format. float16 and bfloat16 inputs are
computed in float32 and returned in their own dtype (as PyTorch's CPU batch
norm does with float32 parameters).

Eagerly, training calls on inputs under 4 MiB whose kernel view is contiguous
rows (``(N, C)``, and channels-last NCHW / NCDHW; from their second call on a
shape) or contiguous planes the fused kernels take (NCHW with 16 channels or
more, spatial size 128 or more) run in C++: an autograd Function
(``fastbn/torch/_native.cpp``, built once with ``torch.utils.cpp_extension``, see
:func:`build_native`) that calls the kernels' C entry points, with the same
results bit for bit as the Python path the other calls take.

PyTorch's conventions hold at this boundary: ``momentum`` is the weight of the
new batch (Keras' is ``1 - momentum``), ``running_var`` is unbiased
(``n / (n - 1)`` times the batch variance fastbn computes), and
``momentum=None`` is a cumulative average over ``num_batches_tracked``. The
running statistics are updated in float64 and rounded once.

Importing this module imports torch; ``import fastbn`` does not.
"""
import sys
import types

from . import _native
from ._modules import BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm, convert
from ._native import (NATIVE_BUILD_TIMEOUT_S, NATIVE_ENV, NATIVE_MAX_BYTES, NATIVE_WAIT_S,
                      build_native)
from ._ops import batch_norm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "batch_norm",
           "build_native", "convert"]

# The public objects keep the module they had before fastbn.torch became a
# package, so that pickled models, reprs and doctests name fastbn.torch.
for _obj in (BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm,
             SyncBatchNorm.convert_sync_batchnorm.__func__, batch_norm, build_native, convert):
    _obj.__module__ = __name__
del _obj


class _Package(types.ModuleType):
    """Setting one of the C++ path's limits here (``fastbn.torch.NATIVE_WAIT_S = 60``)
    sets the value it reads, as when fastbn.torch was one module."""

    def __setattr__(self, name, value):
        if name in ("NATIVE_MAX_BYTES", "NATIVE_WAIT_S", "NATIVE_BUILD_TIMEOUT_S"):
            setattr(_native, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
