"""Activation functions by Keras name, on :class:`fastbn.autograd.Tensor`."""
from .. import autograd as ag

__all__ = ["get", "linear"]


def linear(x):
    """The identity (Keras' ``"linear"`` and ``activation=None``).

    Parameters
    ----------
    x : Tensor

    Returns
    -------
    Tensor
        ``x`` itself.

    Examples
    --------
    >>> from fastbn.autograd import Tensor
    >>> from fastbn.nn.activations import linear
    >>> x = Tensor([1.0, -1.0])
    >>> linear(x) is x
    True
    """
    return x


_BY_NAME = {
    "linear": linear, "relu": ag.relu, "elu": ag.elu, "tanh": ag.tanh,
    "sigmoid": ag.sigmoid, "softmax": ag.softmax, "log_softmax": ag.log_softmax,
    "leaky_relu": ag.leaky_relu, "selu": ag.selu, "gelu": ag.gelu, "silu": ag.silu,
    "swish": ag.silu, "softplus": ag.softplus,
}


def get(identifier):
    """The activation function for a Keras name, None (linear) or a callable.

    Parameters
    ----------
    identifier : str, callable or None
        ``"linear"``, ``"relu"``, ``"elu"``, ``"selu"``, ``"gelu"`` (exact, as
        Keras' default ``approximate=False``), ``"silu"``/``"swish"``,
        ``"softplus"``, ``"tanh"``, ``"sigmoid"``, ``"softmax"``,
        ``"log_softmax"``, ``"leaky_relu"``; a callable is returned as it is.

    Returns
    -------
    callable
        A function of a :class:`~fastbn.autograd.Tensor`.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else that is not callable.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import activations
    >>> from fastbn.autograd import Tensor
    >>> activations.get("relu")(Tensor(np.array([-1.0, 1.0])))
    Tensor([0., 1.])
    >>> activations.get(None) is activations.linear
    True
    """
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"unknown activation {identifier!r}; use one of "
                             f"{', '.join(repr(k) for k in _BY_NAME)}, None or a callable")
        return _BY_NAME[identifier]
    if callable(identifier):
        return identifier
    raise TypeError(f"activation must be a name, None or a callable, got {identifier!r}")


def keras_name(fn):
    """The Keras name of an activation function that :func:`get` knows, else None."""
    for k, v in _BY_NAME.items():
        if v is fn:
            return k
    return None


def name_of(fn):
    """The Keras name of an activation function, or its ``__name__``."""
    for k, v in _BY_NAME.items():
        if v is fn:
            return k
    return getattr(fn, "__name__", repr(fn))
