r"""Weight constraints with Keras' names and defaults.

A constraint maps a weight's array to its projection; optimizers apply it
to every variable that has one right after each update step (as Keras'
optimizers do), in place. Norms are taken over ``axis`` (default 0: for a
Dense kernel ``(in, units)``, the weights into each unit).
"""
import numpy as np

from . import _serialization

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "get", "serialize",
           "deserialize"]

#: Keras' ``backend.epsilon()``, added to norms before dividing.
EPSILON = 1e-7


def _axis(axis):
    return list(axis) if isinstance(axis, (list, tuple)) else int(axis)


def _norms(w, axis):
    return np.sqrt(np.sum(np.square(w), axis=tuple(axis) if isinstance(axis, list) else axis,
                          keepdims=True))


class Constraint:
    """Base class: ``constraint(w)`` returns the projected array.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.constraints import Constraint
    >>> class Clip(Constraint):
    ...     def __call__(self, w):
    ...         return np.clip(w, -1, 1)
    >>> Clip()(np.array([-2.0, 0.5]))
    array([-1. ,  0.5])
    """

    def __call__(self, w):
        return w

    get_config = _serialization.empty_config
    from_config = _serialization.from_config
    __repr__ = _serialization.config_repr(show=format)


class NonNeg(Constraint):
    """``max(w, 0)`` (Keras' ``NonNeg``, ``"non_neg"``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.constraints import NonNeg
    >>> NonNeg()(np.array([-1.0, 2.0]))
    array([0., 2.])
    """

    def __call__(self, w):
        return np.maximum(w, 0)


class MaxNorm(Constraint):
    r"""Rescale to norm at most ``max_value``: :math:`w \cdot \min(n, m) / (\epsilon + n)`.

    Parameters
    ----------
    max_value : float, default 2.0
    axis : int or list of int, default 0

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.constraints import MaxNorm
    >>> MaxNorm(1.0)(np.array([[3.0], [4.0]])).round(6)
    array([[0.6],
           [0.8]])
    """

    def __init__(self, max_value=2.0, axis=0):
        self.max_value, self.axis = float(max_value), _axis(axis)

    def __call__(self, w):
        norms = _norms(w, self.axis)
        return w * (np.clip(norms, 0, self.max_value) / (EPSILON + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class MinMaxNorm(Constraint):
    r"""Move the norm towards ``[min_value, max_value]`` at ``rate`` (Keras' ``MinMaxNorm``).

    :math:`w \cdot (r\,\mathrm{clip}(n, a, b) + (1 - r) n) / (\epsilon + n)`.

    Parameters
    ----------
    min_value : float, default 0.0
    max_value : float, default 1.0
    rate : float, default 1.0
    axis : int or list of int, default 0

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.constraints import MinMaxNorm
    >>> MinMaxNorm(2.0, 3.0)(np.array([[0.6], [0.8]])).round(6)
    array([[1.2],
           [1.6]])
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.rate, self.axis = float(rate), _axis(axis)

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = (self.rate * np.clip(norms, self.min_value, self.max_value)
                   + (1 - self.rate) * norms)
        return w * (desired / (EPSILON + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


class UnitNorm(Constraint):
    r"""Rescale to unit norm, :math:`w / (\epsilon + n)` (Keras' ``UnitNorm``).

    Parameters
    ----------
    axis : int or list of int, default 0

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.constraints import UnitNorm
    >>> UnitNorm()(np.array([[3.0], [4.0]])).round(6)
    array([[0.6],
           [0.8]])
    """

    def __init__(self, axis=0):
        self.axis = _axis(axis)

    def __call__(self, w):
        return w / (EPSILON + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


_CLASSES = (NonNeg, MaxNorm, MinMaxNorm, UnitNorm)


def get(identifier):
    """A constraint from a Keras name, a config dict, an instance, a callable or None.

    Parameters
    ----------
    identifier : str, dict, callable or None
        ``"non_neg"``, ``"max_norm"``, ``"min_max_norm"``, ``"unit_norm"``
        (Keras' defaults) or a class name; a :func:`serialize` dict; a
        function of an array returning an array.

    Returns
    -------
    callable or None

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else.

    Examples
    --------
    >>> from fastbn.nn import constraints
    >>> constraints.get("max_norm")
    MaxNorm(max_value=2.0, axis=0)
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        by_name = _serialization.by_name(_CLASSES)
        if identifier not in by_name:
            raise ValueError(f"unknown constraint {identifier!r}; use one of "
                             f"'non_neg', 'max_norm', 'min_max_norm', 'unit_norm' or a "
                             f"constraint object")
        return by_name[identifier]()
    if callable(identifier):
        return identifier
    raise TypeError(f"constraint must be a name, a callable or None, got {identifier!r}")


def serialize(constraint):
    """``{"class_name": ..., "config": ...}`` of a constraint (Keras' form).

    Parameters
    ----------
    constraint : Constraint

    Returns
    -------
    dict

    Examples
    --------
    >>> from fastbn.nn import constraints
    >>> constraints.serialize(constraints.UnitNorm(axis=1))
    {'class_name': 'UnitNorm', 'config': {'axis': 1}}
    """
    return _serialization.serialize(constraint, Constraint, "constraint")


def deserialize(config):
    """The constraint that :func:`serialize` described.

    Parameters
    ----------
    config : dict

    Returns
    -------
    Constraint

    Examples
    --------
    >>> from fastbn.nn import constraints
    >>> constraints.deserialize({"class_name": "NonNeg", "config": {}})
    NonNeg()
    """
    return _serialization.deserialize(config, _CLASSES, "constraint")
