r"""Weight regularizers with Keras' names and default factors.

A regularizer is called on a weight (a :class:`~fastbn.autograd.Tensor`) and
returns a scalar Tensor, the penalty; ``fit`` and ``train_on_batch`` add the
penalties of every trainable weight that has one (and a layer's
``activity_regularizer`` of its output, divided by the batch size, as in
Keras 3) to the loss they minimise, so their gradients reach the weights.
A layer's penalties are its :attr:`~fastbn.nn.Layer.losses`.
"""
import numpy as np

from .. import autograd as ag
from . import _serialization

__all__ = ["Regularizer", "L1", "L2", "L1L2", "get", "serialize", "deserialize"]


def _factor(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not np.isfinite(value) or value < 0:
        raise ValueError(f"regularizer: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _tensor(x):
    return x if isinstance(x, ag.Tensor) else ag.Tensor(np.asarray(x))


class Regularizer:
    """Base class: ``regularizer(weight)`` returns a scalar penalty Tensor.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor
    >>> from fastbn.nn.regularizers import Regularizer
    >>> class SumOfWeights(Regularizer):
    ...     def __call__(self, x):
    ...         return 0.5 * x.sum()
    >>> SumOfWeights()(Tensor(np.array([1.0, 3.0])))
    Tensor(2.0)
    """

    def __call__(self, x):
        raise NotImplementedError

    get_config = _serialization.empty_config
    from_config = _serialization.from_config
    __repr__ = _serialization.config_repr(show=format)


class L1L2(Regularizer):
    r""":math:`\ell_1 \sum |w| + \ell_2 \sum w^2` (Keras' ``L1L2``; both factors default to 0).

    The string ``"l1_l2"`` is ``L1L2(l1=0.01, l2=0.01)``, as Keras documents it.

    Parameters
    ----------
    l1 : float, default 0.0
    l2 : float, default 0.0

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor
    >>> from fastbn.nn.regularizers import L1L2
    >>> L1L2(l1=0.5, l2=0.25)(Tensor(np.array([1.0, -2.0])))   # 0.5 * 3 + 0.25 * 5
    Tensor(2.75)
    """

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor(0.0 if l1 is None else l1, "l1")
        self.l2 = _factor(0.0 if l2 is None else l2, "l2")

    def __call__(self, x):
        x = _tensor(x)
        total = None
        if self.l1:
            total = ag.abs(x).sum() * self.l1
        if self.l2:
            sq = (x * x).sum() * self.l2
            total = sq if total is None else total + sq
        if total is None:
            return ag.Tensor(np.zeros((), x.dtype))
        return total

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    r""":math:`\ell_1 \sum |w|` (Keras' ``L1``, string ``"l1"``).

    Parameters
    ----------
    l1 : float, default 0.01

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor
    >>> from fastbn.nn.regularizers import L1
    >>> L1()(Tensor(np.array([1.0, -2.0])))
    Tensor(0.03)
    """

    def __init__(self, l1=0.01):
        super().__init__(l1=0.01 if l1 is None else l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    r""":math:`\ell_2 \sum w^2` (Keras' ``L2``, string ``"l2"``).

    Parameters
    ----------
    l2 : float, default 0.01

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor
    >>> from fastbn.nn.regularizers import L2
    >>> L2()(Tensor(np.array([1.0, -2.0])))
    Tensor(0.05)
    """

    def __init__(self, l2=0.01):
        super().__init__(l2=0.01 if l2 is None else l2)

    def get_config(self):
        return {"l2": self.l2}


_CLASSES = (L1, L2, L1L2)


def get(identifier):
    """A regularizer from a Keras name, a config dict, an instance, a callable or None.

    Parameters
    ----------
    identifier : str, dict, callable or None
        ``"l1"`` (``L1(0.01)``), ``"l2"`` (``L2(0.01)``), ``"l1_l2"``
        (``L1L2(0.01, 0.01)``), a class name, a :func:`serialize` dict, or a
        function of a Tensor returning a scalar Tensor.

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
    >>> from fastbn.nn import regularizers
    >>> regularizers.get("l1_l2")
    L1L2(l1=0.01, l2=0.01)
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        if identifier == "l1_l2":
            return L1L2(l1=0.01, l2=0.01)
        by_name = _serialization.by_name(_CLASSES)
        if identifier not in by_name:
            raise ValueError(f"unknown regularizer {identifier!r}; use 'l1', 'l2', 'l1_l2' "
                             f"or a regularizer object such as nn.regularizers.L2(1e-4)")
        return by_name[identifier]()
    if callable(identifier):
        return identifier
    raise TypeError(f"regularizer must be a name, a callable or None, got {identifier!r}")


def serialize(regularizer):
    """``{"class_name": ..., "config": ...}`` of a regularizer (Keras' form).

    Parameters
    ----------
    regularizer : Regularizer

    Returns
    -------
    dict

    Examples
    --------
    >>> from fastbn.nn import regularizers
    >>> regularizers.serialize(regularizers.L2(1e-4))
    {'class_name': 'L2', 'config': {'l2': 0.0001}}
    """
    return _serialization.serialize(regularizer, Regularizer, "regularizer")


def deserialize(config):
    """The regularizer that :func:`serialize` described.

    Parameters
    ----------
    config : dict

    Returns
    -------
    Regularizer

    Examples
    --------
    >>> from fastbn.nn import regularizers
    >>> regularizers.deserialize({"class_name": "L1", "config": {"l1": 0.5}})
    L1(l1=0.5)
    """
    return _serialization.deserialize(config, _CLASSES, "regularizer")
