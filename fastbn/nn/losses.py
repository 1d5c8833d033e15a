"""Losses with Keras' names; each is called as ``loss(y_true, y_pred)``."""
from .. import autograd as ag

__all__ = ["Loss", "SparseCategoricalCrossentropy", "sparse_categorical_crossentropy", "get"]


class Loss:
    """Base class: ``loss(y_true, y_pred)`` returns a scalar :class:`~fastbn.autograd.Tensor`.

    Subclasses implement ``__call__``; ``name`` is what ``fit`` logs.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import autograd as ag
    >>> from fastbn.nn.losses import Loss
    >>> class MeanSquaredError(Loss):
    ...     name = "mean_squared_error"
    ...     def __call__(self, y_true, y_pred):
    ...         d = y_pred - np.asarray(y_true, dtype=y_pred.dtype)
    ...         return (d * d).mean()
    >>> MeanSquaredError()([1.0, 2.0], ag.Tensor(np.array([1.0, 4.0])))
    Tensor(2.0)
    """

    name = "loss"

    def __call__(self, y_true, y_pred):
        raise NotImplementedError


class SparseCategoricalCrossentropy(Loss):
    """Mean cross-entropy of integer labels, Keras' formula (probability clip at 1e-7).

    Parameters
    ----------
    from_logits : bool, default False
        ``y_pred`` holds logits rather than probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import SparseCategoricalCrossentropy
    >>> loss = SparseCategoricalCrossentropy()
    >>> round(float(loss([1, 2], np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]])).data), 3)
    1.177
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def __call__(self, y_true, y_pred):
        if not isinstance(y_pred, ag.Tensor):
            y_pred = ag.Tensor(y_pred)
        return ag.sparse_categorical_crossentropy(y_pred, y_true, from_logits=self.from_logits)

    def __repr__(self):
        return f"SparseCategoricalCrossentropy(from_logits={self.from_logits})"


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Function form of :class:`SparseCategoricalCrossentropy`.

    Parameters
    ----------
    y_true : array_like of int
        One class index per row of ``y_pred``.
    y_pred : Tensor or array_like
        ``(samples, classes)`` probabilities, or logits with ``from_logits=True``.
    from_logits : bool, default False

    Returns
    -------
    Tensor
        The mean loss, a scalar.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import sparse_categorical_crossentropy
    >>> round(float(sparse_categorical_crossentropy([0], np.array([[0.5, 0.5]])).data), 4)
    0.6931
    """
    return SparseCategoricalCrossentropy(from_logits)(y_true, y_pred)


_BY_NAME = {"sparse_categorical_crossentropy": SparseCategoricalCrossentropy}


def get(identifier):
    """A loss from a Keras name, a :class:`Loss` or a callable ``(y_true, y_pred)``.

    Parameters
    ----------
    identifier : str or callable
        ``"sparse_categorical_crossentropy"``, a :class:`Loss` or a function.

    Returns
    -------
    callable
        ``loss(y_true, y_pred)`` returning a scalar Tensor.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else that is not callable.

    Examples
    --------
    >>> from fastbn.nn import losses
    >>> losses.get("sparse_categorical_crossentropy")
    SparseCategoricalCrossentropy(from_logits=False)
    """
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"unknown loss {identifier!r}; use "
                             f"{', '.join(repr(k) for k in _BY_NAME)} or a loss object")
        return _BY_NAME[identifier]()
    if identifier is sparse_categorical_crossentropy:
        return SparseCategoricalCrossentropy()
    if callable(identifier):
        return identifier
    raise TypeError(f"loss must be a name or a callable (y_true, y_pred), got {identifier!r}")
