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
(``_torch_native.cpp``, built once with ``torch.utils.cpp_extension``, see
:func:`build_native`) that calls the kernels' C entry points, with the same
results bit for bit as the Python path the other calls take.

PyTorch's conventions hold at this boundary: ``momentum`` is the weight of the
new batch (Keras' is ``1 - momentum``), ``running_var`` is unbiased
(``n / (n - 1)`` times the batch variance fastbn computes), and
``momentum=None`` is a cumulative average over ``num_batches_tracked``. The
running statistics are updated in float64 and rounded once.

Importing this module imports torch; ``import fastbn`` does not.
"""
import contextlib
import fcntl
import os
import subprocess
import sys
import time
import warnings
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.nn.modules import batchnorm as _torch_bn

from . import _bn
from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "batch_norm",
           "build_native", "convert"]

_KERNEL_DTYPES = (torch.float32, torch.float64)
_WIDENED = (torch.float16, torch.bfloat16)      # computed in float32


# ------------------------------------------------------------ NumPy boundary
def _array(t):
    """A CPU tensor as a NumPy view of its memory, strides and all (no copy)."""
    return t.detach().numpy()


def _compute(t):
    """``t`` in the dtype the kernels compute in: itself, or float32 for halves."""
    return t if t.dtype in _KERNEL_DTYPES else t.float()


def _vector(t, dtype):
    """A parameter (or None) as a NumPy vector of ``dtype`` (a view when it is one)."""
    if t is None:
        return None
    a = _array(_compute(t))
    return a if a.dtype == dtype else a.astype(dtype)


def _update_running(running, batch, momentum):
    """``running = (1 - momentum) * running + momentum * batch`` in float64, in place
    (``batch`` a float64 NumPy vector)."""
    if running.dtype in _KERNEL_DTYPES:
        r = _array(running)
        r[...] = r.astype(np.float64) * (1.0 - momentum) + batch * momentum
    else:
        new = running.double().mul_(1.0 - momentum).add_(torch.from_numpy(batch), alpha=momentum)
        running.copy_(new)


def _tensor(a, dtype):
    """A NumPy result as a tensor of ``dtype`` (its own memory when the dtypes agree)."""
    t = torch.from_numpy(a)
    return t if t.dtype == dtype else t.to(dtype)


# ------------------------------------------------------------- the operators
# Three operators: the forward (functional, with an autograd formula), its
# backward, and the running-statistics update (mutates its first two
# arguments; torch.library gives an autograd formula to functional operators
# only, hence the split).
def _forward_arrays(input, weight, bias, running_mean, running_var, training, eps):
    """:func:`_forward_impl` with the statistics as NumPy arrays."""
    x = _array(_compute(input))
    gamma, beta = _vector(weight, x.dtype), _vector(bias, x.dtype)
    y, mean, invstd, var = _forward_numpy(x, gamma, beta, running_mean, running_var, training,
                                          eps)
    return _tensor(y, input.dtype), mean, invstd, var


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
        moving_mean=_vector(running_mean, np.float64),
        moving_variance=_vector(running_var, np.float64))
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
    _update_arrays(running_mean, running_var, _array(mean), _array(var), count, momentum)


def _update_arrays(running_mean, running_var, mean, var, count, momentum):
    if running_mean.dtype in _KERNEL_DTYPES and running_var.dtype in _KERNEL_DTYPES:
        if _bn.blend_running(_array(running_mean), _array(running_var), mean, var, momentum,
                             count / (count - 1)):
            return
    _update_running(running_mean, mean, momentum)
    _update_running(running_var, var * (count / (count - 1)), momentum)


_update_running_op = torch.library.custom_op("fastbn::update_running_stats", _update_impl,
                                             mutates_args=("running_mean", "running_var"),
                                             device_types="cpu")


@_update_running_op.register_fake
def _(running_mean, running_var, mean, var, count, momentum):
    return None


def _backward_impl(grad_output: Tensor, input: Tensor, weight: Optional[Tensor],
                   mean: Tensor, invstd: Tensor, training: bool) -> tuple[Tensor, Tensor, Tensor]:
    """fastbn's analytic backward: ``(grad_input, grad_weight, grad_bias)``."""
    return _backward_arrays(grad_output, input, weight, _array(mean), _array(invstd), training)


def _backward_arrays(grad_output, input, weight, mean, invstd, training, x=None, gamma=None):
    """:func:`_backward_impl` with ``mean`` and ``invstd`` as NumPy arrays (and
    ``x``, ``gamma``, when given, the forward's arrays of ``input`` and ``weight``)."""
    if x is None:
        x = _array(_compute(input))
        gamma = _vector(weight, x.dtype)
    dy = _array(_compute(grad_output))
    res = _bn.planned_training_backward(dy, x, mean, invstd, gamma, 1) if training else None
    if res is None:
        res = F.batch_norm_backward(dy, x, mean, invstd, gamma, axis=1, training=training)
    dx, dgamma, dbeta = res
    pdtype = input.dtype if weight is None else weight.dtype
    return _tensor(dx, input.dtype), _tensor(dgamma, pdtype), _tensor(dbeta, pdtype)


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
    without the dispatch of :func:`torch.library.custom_op` (300-400 us a call
    here, 2026-12-06: a (4, 3) forward took 400 us against 48 us for
    ``torch.nn.BatchNorm1d``), with one output and the running update inside,
    the statistics kept as NumPy arrays on ``ctx``. Under ``torch.compile`` the
    operators run."""

    @staticmethod
    def forward(ctx, input, weight, bias, rest):
        # forward(ctx, ...) rather than setup_context: Function.apply binds the
        # arguments with inspect.signature when setup_context is defined (80 us).
        # The arguments that take no gradient come as one tuple: each argument
        # costs apply and the backward node about 0.4 us
        running_mean, running_var, training, eps, momentum = rest
        x = _array(_compute(input))
        gamma, beta = _vector(weight, x.dtype), _vector(bias, x.dtype)
        y, mean, invstd, var = _forward_numpy(x, gamma, beta, running_mean, running_var,
                                              training, eps)
        if training and running_mean is not None and running_var is not None:
            _update_arrays(running_mean, running_var, mean, var, x.size // x.shape[1],
                           momentum)
        ctx.save_for_backward(input, weight)    # (their version counters: in-place checks)
        # the arrays for the backward, so that it makes no views again
        ctx.arrays = (x, gamma, mean, invstd, training, weight is not None, bias is not None)
        return _tensor(y, input.dtype)

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


# --------------------------------------------------------------- native path
# Training calls on tensors under NATIVE_MAX_BYTES whose kernel view is
# C-contiguous rows ((N, C), and NCHW / NCDHW in channels_last memory; from
# their second call on a shape) or planes the fused kernels take (contiguous
# NCHW, _bn.native_plan) run in C++: _torch_native.cpp, an autograd
# Function that calls the kernels' C entry points, built once with
# torch.utils.cpp_extension (a C++ compiler and ninja). The Python path costs
# about 70 us a call in PyTorch's machinery, more than a small batch norm's
# kernels (see docs/torch.md).
NATIVE_ENV = "FASTBN_TORCH_NATIVE"
#: Inputs of this many bytes and more train on the Python path. Its ~70 us a
#: call is then under 5 % of the kernels' time, and PyTorch's allocator decides
#: the rest: its fresh pages for each output (no huge pages, unlike NumPy's
#: arrays) made the C++ path's step 0.58x the Python path's speed on C
#: (8192, 1024) fp32 and 0.89x on E (32, 64, 56, 56) channels-last; asking for
#: huge pages brought E to 0.98-1.33x but left C at 0.84-0.90x. From 1 to 4 MiB
#: the C++ path was 1.08-2.2x as fast. 2 threads, interleaved, 2026-12-06.
NATIVE_MAX_BYTES = 4 << 20
_native_module = None                  # the extension once loaded; False: off or unbuildable
_NATIVE_PLANS = {}                      # (shape, strides, dtype, threads) -> Plan, or False
if hasattr(os, "register_at_fork"):     # a plan holds the parent's choice of parallel kernels
    os.register_at_fork(after_in_child=_NATIVE_PLANS.clear)


def build_native(verbose=False):
    """Build (or load, when built before) the C++ training path now, instead of
    on the first training call that needs it; returns whether it is available.

    Compiled with ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja``,
    which ``pip install "fastbn[torch]"`` brings), about 25 s once per machine
    and PyTorch version, into ``TORCH_EXTENSIONS_DIR`` (default
    ``~/.cache/torch_extensions``). Where it cannot be built, a warning says
    why and training runs the Python path (the same results, about 70 us more
    a call). Setting the environment variable ``FASTBN_TORCH_NATIVE=0`` turns it
    off. No wait is unbounded: a build left half done by a killed process is
    cleaned up and started again, a process waits at most
    :data:`NATIVE_WAIT_S` s for another one's build, and a build past
    :data:`NATIVE_BUILD_TIMEOUT_S` s is stopped; each of the last two warns and
    trains on the Python path.

    Parameters
    ----------
    verbose : bool, default False
        Show the compiler's output.

    Returns
    -------
    bool
        Whether training calls can take the C++ path.

    Examples
    --------
    >>> import fastbn.torch
    >>> fastbn.torch.build_native()     # doctest: +SKIP
    True
    """
    global _native_module
    if _native_module is None:
        _native_module = _load_native(verbose)
    return _native_module is not False


#: How long a process waits for another one's build of the C++ path before it
#: trains on the Python path instead; a build takes about 25 s on 2 idle cores.
NATIVE_WAIT_S = 300
#: A build (in a child process) running longer than this is stopped, and
#: training runs the Python path.
NATIVE_BUILD_TIMEOUT_S = 900
_NATIVE_NAME = "fastbn_torch_native"
_NATIVE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_native.cpp")
_NATIVE_BUILD = ("import sys\nfrom torch.utils import cpp_extension\n"
                 "cpp_extension.load(sys.argv[1], [sys.argv[2]], extra_cflags=['-O2'], "
                 "verbose=sys.argv[3] == '1')\n")


def _load_native(verbose):
    if os.environ.get(NATIVE_ENV, "1") == "0":
        return False
    from torch.utils import cpp_extension

    def unavailable(why, fix="Install a C++ compiler and ninja (pip install ninja)"):
        warnings.warn(f"fastbn.torch: could not build the C++ training path ({why}); training "
                      f"runs the Python path instead (the same results, about 70 us more a "
                      f"call). {fix}, or set {NATIVE_ENV}=0 to stop trying",
                      RuntimeWarning, stacklevel=5)
        return False

    try:                        # (a private helper: where torch keeps this build)
        build_dir = cpp_extension._get_build_directory(_NATIVE_NAME, False)
        with _build_lock(build_dir) as held:
            if not held:
                return unavailable(f"another process has been building it in {build_dir} "
                                   f"for over {NATIVE_WAIT_S} s",
                                   "Later processes load it once that build is done")
            if not any(f.endswith(".so") for f in os.listdir(build_dir)):
                print("fastbn.torch: compiling the C++ training path (once; about 25 s) in "
                      f"{build_dir}", file=sys.stderr)
                # in a child, so that a build past the time limit can be stopped
                subprocess.run([sys.executable, "-c", _NATIVE_BUILD, _NATIVE_NAME,
                                _NATIVE_SOURCE, "1" if verbose else "0"], check=True,
                               stdout=None if verbose else subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=NATIVE_BUILD_TIMEOUT_S,
                               pass_fds=(held,), text=True)
            return cpp_extension.load(_NATIVE_NAME, [_NATIVE_SOURCE], extra_cflags=["-O2"],
                                      verbose=verbose)
    except subprocess.TimeoutExpired:
        return unavailable(f"the build ran past {NATIVE_BUILD_TIMEOUT_S} s and was stopped",
                           "Build it ahead with fastbn.torch.build_native(verbose=True)")
    except subprocess.CalledProcessError as e:
        return unavailable(f"the build failed: {(e.stderr or '').strip()[-300:]}")
    except Exception as e:      # no compiler, no ninja, headers missing: say so, go on
        return unavailable(f"{type(e).__name__}: {str(e).strip()[:300]}")


@contextlib.contextmanager
def _build_lock(build_dir):
    """Hold fastbn's build lock in ``build_dir`` (its file descriptor), or yield
    None after :data:`NATIVE_WAIT_S` s of another process holding it.

    The kernel drops a ``flock`` when its process dies, which torch's own lock
    file (``build_dir/lock``, created by the builder and removed when it
    finishes) does not: a build killed part-way leaves that file, and every
    later ``cpp_extension.load`` waits on it forever. Every fastbn build holds
    this lock, so while we hold it a torch lock file is a dead build's, and it
    is removed.
    """
    os.makedirs(build_dir, exist_ok=True)
    fd = os.open(os.path.join(build_dir, "fastbn-build.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + NATIVE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield None
                    return
                time.sleep(0.5)
        stale = os.path.join(build_dir, "lock")
        if os.path.exists(stale):
            print(f"fastbn.torch: removing {stale}, left by a build that was killed",
                  file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        yield fd
    finally:
        os.close(fd)


def _native_plan(key, input):
    """The native Plan for training calls like this one; False when they cannot
    have one; None when functional has no plan for the shape yet (its first
    call, or after functional's plans were emptied), to ask again next call."""
    plan = False
    if input.dtype in _KERNEL_DTYPES and input.numel() * input.element_size() < NATIVE_MAX_BYTES:
        spec = _bn.native_plan(_array(input), 1)
        if spec is None:
            return None
        if spec and build_native():
            plan = _native_module.Plan(float64=input.dtype == torch.float64, **spec)
    if len(_NATIVE_PLANS) >= 256:
        _NATIVE_PLANS.clear()
    _NATIVE_PLANS[key] = plan
    return plan


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
        dimensions, one value per channel in training, or no running
        statistics in evaluation.

    Examples
    --------
    >>> import torch
    >>> from fastbn.torch import batch_norm
    >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    >>> rm, rv = torch.zeros(2), torch.ones(2)
    >>> batch_norm(x, rm, rv, training=True, eps=0.0)
    tensor([[-1., -1.],
            [ 1.,  1.]])
    >>> rm, rv
    (tensor([0.2000, 2.0000]), tensor([ 1.1000, 20.9000]))
    """
    _check(input, "batch_norm")
    if training:
        size = input.numel() // input.shape[1] if input.shape[1] else 0
        if size == 1:
            raise ValueError(f"fastbn.torch.batch_norm: expected more than 1 value per channel "
                             f"when training, got input size {tuple(input.shape)}")
    elif running_mean is None or running_var is None:
        raise ValueError("fastbn.torch.batch_norm: training=False normalizes with the running "
                         "statistics; pass running_mean and running_var (or training=True)")
    training, eps, momentum = bool(training), float(eps), float(momentum)
    update = training and running_mean is not None and running_var is not None
    if torch.compiler.is_compiling():
        out, mean, _, var = torch.ops.fastbn.batch_norm(input, weight, bias, running_mean,
                                                        running_var, training, eps)
        if update:
            torch.ops.fastbn.update_running_stats(running_mean, running_var, mean, var,
                                                  input.numel() // input.shape[1], momentum)
        return out
    if training and _native_module is not False:
        key = (input.shape, input.stride(), input.dtype, _bn.num_threads())
        plan = _NATIVE_PLANS.get(key)
        if plan is None:
            plan = _native_plan(key, input)
        if plan:
            out, held_var = _native_module.train(plan, input, weight, bias,
                                                 running_mean if update else None,
                                                 running_var if update else None, momentum, eps)
            if out is not None:
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
        _update_arrays(running_mean, running_var, mean, var, input.numel() // input.shape[1],
                       momentum)
    return out


def _check(input, fn):
    if not isinstance(input, Tensor):
        raise TypeError(f"fastbn.torch.{fn}: input must be a torch.Tensor, got "
                        f"{type(input).__name__}")
    if input.device.type != "cpu":
        raise ValueError(f"fastbn.torch.{fn}: input is on {input.device}; fastbn's kernels run "
                         f"on the CPU: move it with .cpu(), or use torch.nn.BatchNorm on "
                         f"{input.device.type}")
    if input.dtype not in _KERNEL_DTYPES and input.dtype not in _WIDENED:
        raise ValueError(f"fastbn.torch.{fn}: input dtype {input.dtype} is not a floating "
                         f"type fastbn computes; convert it with .float()")
    if input.dim() < 2:
        raise ValueError(f"fastbn.torch.{fn}: expected an input of at least 2 dimensions "
                         f"(N, C, ...), got shape {tuple(input.shape)}")


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
class _Comm:
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
    from . import distributed as D
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
        x = _array(_compute(input))
        gamma, beta = _vector(weight, x.dtype), _vector(bias, x.dtype)
        y, mean, invstd, var, count = _sync_forward(x, gamma, beta, eps, comm)
        if running_mean is not None and count > 1:
            _update_arrays(running_mean, running_var, mean, var, count, momentum)
        mean, invstd = torch.from_numpy(mean), torch.from_numpy(invstd)
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.comm, ctx.has_weight, ctx.has_bias = comm, weight is not None, bias is not None
        out = torch.from_numpy(y)
        return out if out.dtype == input.dtype else out.to(input.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        from . import distributed as D
        input, weight, mean, invstd = ctx.saved_tensors
        x = _array(_compute(input))
        dx, dgamma, dbeta = D.batch_norm_backward(
            _array(_compute(grad_output)), x, mean.numpy(), invstd.numpy(),
            _vector(weight, x.dtype), comm=ctx.comm, axis=1)
        dx = torch.from_numpy(dx).to(input.dtype)
        pdtype = input.dtype if weight is None else weight.dtype
        return (dx, torch.from_numpy(dgamma).to(pdtype) if ctx.has_weight else None,
                torch.from_numpy(dbeta).to(pdtype) if ctx.has_bias else None,
                None, None, None, None, None)


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
        _check(input, "SyncBatchNorm")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        track = self.track_running_stats
        return _SyncFunction.apply(input, self.weight, self.bias,
                                   self.running_mean if track else None,
                                   self.running_var if track else None, float(self.eps),
                                   float(factor), _Comm(group))

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
