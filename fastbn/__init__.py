"""fastbn: fast, numerically stable batch normalization on the CPU.

The NumPy-level API is re-exported here; the autograd tape, the Keras-shaped
layers and the datasets are imported lazily (``fastbn.nn`` costs start-up time
that a user of the kernels alone should not pay).
"""
import importlib

from .functional import batch_norm_backward, batch_norm_forward, moments

__version__ = "0.1.0"
__all__ = ["moments", "batch_norm_forward", "batch_norm_backward",
           "functional", "autograd", "nn", "datasets", "__version__"]

_LAZY = ("autograd", "nn", "datasets", "distributed", "bench", "examples")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastbn' has no attribute {name!r}")
