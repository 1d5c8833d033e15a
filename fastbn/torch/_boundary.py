"""fastbn.torch's NumPy boundary: tensors in as NumPy views, results out as
tensors, and the input check every entry point makes first."""
import torch
from torch import Tensor

KERNEL_DTYPES = (torch.float32, torch.float64)
WIDENED = (torch.float16, torch.bfloat16)       # computed in float32


def array(t):
    """A CPU tensor as a NumPy view of its memory, strides and all (no copy)."""
    return t.detach().numpy()


def compute(t):
    """``t`` in the dtype the kernels compute in: itself, or float32 for halves."""
    return t if t.dtype in KERNEL_DTYPES else t.float()


def vector(t, dtype):
    """A parameter (or None) as a NumPy vector of ``dtype`` (a view when it is one)."""
    if t is None:
        return None
    a = array(compute(t))
    return a if a.dtype == dtype else a.astype(dtype)


def tensor(a, dtype):
    """A NumPy result as a tensor of ``dtype`` (its own memory when the dtypes agree)."""
    t = torch.from_numpy(a)
    return t if t.dtype == dtype else t.to(dtype)


def check(input, fn):
    """Refuse what fastbn's kernels do not take, naming ``fastbn.torch.<fn>``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"fastbn.torch.{fn}: input must be a torch.Tensor, got "
                        f"{type(input).__name__}")
    if input.device.type != "cpu":
        raise ValueError(f"fastbn.torch.{fn}: input is on {input.device}; fastbn's kernels run "
                         f"on the CPU: move it with .cpu(), or use torch.nn.BatchNorm on "
                         f"{input.device.type}")
    if input.dtype not in KERNEL_DTYPES and input.dtype not in WIDENED:
        raise ValueError(f"fastbn.torch.{fn}: input dtype {input.dtype} is not a floating "
                         f"type fastbn computes; convert it with .float()")
    if input.dim() < 2:
        raise ValueError(f"fastbn.torch.{fn}: expected an input of at least 2 dimensions "
                         f"(N, C, ...), got shape {tuple(input.shape)}")
