"""Losses with Keras' names; each is called as ``loss(y_true, y_pred)``.

As in Keras, a class (``MeanSquaredError()``) returns the mean loss over the
batch (its ``"sum_over_batch_size"`` reduction), a function
(``mean_squared_error(y_true, y_pred)``) one loss per sample, and a string
(``"mse"``) names the class. ``compile`` averages a function's per-sample
losses.
"""
import numpy as np

from .. import autograd as ag
from . import _serialization

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy",
           "BinaryCrossentropy", "MeanSquaredError", "MeanAbsoluteError",
           "sparse_categorical_crossentropy", "categorical_crossentropy",
           "binary_crossentropy", "mean_squared_error", "mean_absolute_error", "get",
           "serialize", "deserialize"]


def _tensor(y_pred):
    return y_pred if isinstance(y_pred, ag.Tensor) else ag.Tensor(
        np.asarray(y_pred, dtype=np.result_type(np.asarray(y_pred).dtype, np.float32)))


def _like(y_true, y_pred, fn):
    """``y_true`` as an array shaped and typed like ``y_pred`` (Keras squeezes or
    expands a trailing axis of 1)."""
    return ag.ops.losses.check_target(y_true, y_pred.shape, fn).astype(y_pred.dtype, copy=False)


class Loss:
    """Base class: ``loss(y_true, y_pred)`` returns a scalar :class:`~fastbn.autograd.Tensor`.

    Subclasses implement ``__call__``; ``name`` is what ``fit`` logs.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import autograd as ag
    >>> from fastbn.nn.losses import Loss
    >>> class SumOfSquares(Loss):
    ...     name = "sum_of_squares"
    ...     def __call__(self, y_true, y_pred):
    ...         d = y_pred - np.asarray(y_true, dtype=y_pred.dtype)
    ...         return (d * d).sum()
    >>> SumOfSquares()([1.0, 2.0], ag.Tensor(np.array([1.0, 4.0])))
    Tensor(4.0)
    """

    name = "loss"

    def __call__(self, y_true, y_pred):
        raise NotImplementedError

    get_config = _serialization.empty_config
    from_config = _serialization.from_config
    __repr__ = _serialization.config_repr()


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
        return ag.sparse_categorical_crossentropy(_tensor(y_pred), y_true,
                                                  from_logits=self.from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}


class CategoricalCrossentropy(Loss):
    r"""Mean cross-entropy of one-hot (or soft) labels, Keras' formula.

    Per sample :math:`-\sum_j t_j \log q_j`, ``q`` the row renormalized
    and clipped to ``[1e-7, 1 - 1e-7]`` (or the softmax of logits), averaged
    over the batch.

    Parameters
    ----------
    from_logits : bool, default False
    label_smoothing : float, default 0.0
        In ``[0, 1]``: targets become ``t * (1 - s) + s / classes``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import CategoricalCrossentropy
    >>> y = [[0, 1, 0], [0, 0, 1]]
    >>> p = np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    >>> round(float(CategoricalCrossentropy()(y, p).data), 3)     # Keras' docs: 1.177
    1.177
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0):
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CategoricalCrossentropy: label_smoothing must be in [0, 1], "
                             f"got {label_smoothing!r}")
        self.from_logits, self.label_smoothing = bool(from_logits), float(label_smoothing)

    def __call__(self, y_true, y_pred):
        return categorical_crossentropy(y_true, y_pred, self.from_logits,
                                        self.label_smoothing).mean()

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class BinaryCrossentropy(Loss):
    r"""Mean binary cross-entropy, Keras' formula.

    Element-wise :math:`-(t \log p + (1 - t) \log(1 - p))` with ``p``
    clipped to ``[1e-7, 1 - 1e-7]`` (or ``sigmoid`` of logits, stably),
    averaged over the last axis and then the batch.

    Parameters
    ----------
    from_logits : bool, default False
    label_smoothing : float, default 0.0
        In ``[0, 1]``: targets become ``t * (1 - s) + s / 2``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import BinaryCrossentropy
    >>> y = [[0, 1], [0, 0]]
    >>> p = np.array([[0.6, 0.4], [0.4, 0.6]])
    >>> round(float(BinaryCrossentropy()(y, p).data), 3)          # Keras' docs: 0.815
    0.815
    """

    name = "binary_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0):
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"BinaryCrossentropy: label_smoothing must be in [0, 1], "
                             f"got {label_smoothing!r}")
        self.from_logits, self.label_smoothing = bool(from_logits), float(label_smoothing)

    def __call__(self, y_true, y_pred):
        return binary_crossentropy(y_true, y_pred, self.from_logits,
                                   self.label_smoothing).mean()

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class MeanSquaredError(Loss):
    """Mean of ``(y_pred - y_true) ** 2`` (``"mse"``, ``"mean_squared_error"``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import MeanSquaredError
    >>> MeanSquaredError()([[0.0, 1.0], [0.0, 0.0]], np.array([[1.0, 1.0], [1.0, 0.0]]))
    Tensor(0.5)
    """

    name = "mean_squared_error"

    def __call__(self, y_true, y_pred):
        return mean_squared_error(y_true, y_pred).mean()


class MeanAbsoluteError(Loss):
    """Mean of ``|y_pred - y_true|`` (``"mae"``, ``"mean_absolute_error"``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import MeanAbsoluteError
    >>> MeanAbsoluteError()([[0.0, 1.0], [0.0, 0.0]], np.array([[1.0, 1.0], [1.0, 0.0]]))
    Tensor(0.5)
    """

    name = "mean_absolute_error"

    def __call__(self, y_true, y_pred):
        return mean_absolute_error(y_true, y_pred).mean()


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Per-sample cross-entropy of integer labels (Keras' function form).

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
        One loss per sample, ``y_pred.shape[:-1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import sparse_categorical_crossentropy
    >>> sparse_categorical_crossentropy([0, 1], np.array([[0.5, 0.5], [0.25, 0.75]])).data.round(4)
    array([0.6931, 0.2877])
    """
    y_pred = _tensor(y_pred)
    y = ag.ops.losses.check_labels(y_true, y_pred.shape, "sparse_categorical_crossentropy")
    onehot = np.zeros(y_pred.shape, y_pred.dtype)
    np.put_along_axis(onehot, y[..., None], 1, axis=-1)
    return ag.categorical_crossentropy(y_pred, onehot, from_logits=from_logits)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0):
    """Per-sample cross-entropy of one-hot (or soft) labels (Keras' function form).

    Parameters
    ----------
    y_true : array_like
        ``(samples, classes)``.
    y_pred : Tensor or array_like
        Same shape: probabilities, or logits with ``from_logits=True``.
    from_logits : bool, default False
    label_smoothing : float, default 0.0

    Returns
    -------
    Tensor
        One loss per sample.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import categorical_crossentropy
    >>> categorical_crossentropy([[0, 1, 0], [0, 0, 1]],
    ...                          np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]])).data.round(4)
    array([0.0513, 2.3026])
    """
    y_pred = _tensor(y_pred)
    t = _like(y_true, y_pred, "categorical_crossentropy")
    if label_smoothing:
        t = t * (1 - label_smoothing) + label_smoothing / t.shape[-1]
    return ag.categorical_crossentropy(y_pred, t, from_logits=from_logits)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0):
    """Per-sample binary cross-entropy: the element-wise loss averaged over the last axis.

    Parameters
    ----------
    y_true : array_like
        Values in ``[0, 1]``, shaped like ``y_pred`` (a missing trailing axis of 1 is added).
    y_pred : Tensor or array_like
        Probabilities, or logits with ``from_logits=True``.
    from_logits : bool, default False
    label_smoothing : float, default 0.0

    Returns
    -------
    Tensor
        ``y_pred.shape[:-1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import binary_crossentropy
    >>> binary_crossentropy([[0, 1], [0, 0]], np.array([[0.6, 0.4], [0.4, 0.6]])).data.round(4)
    array([0.9163, 0.7136])
    """
    y_pred = _tensor(y_pred)
    t = _like(y_true, y_pred, "binary_crossentropy")
    if label_smoothing:
        t = t * (1 - label_smoothing) + 0.5 * label_smoothing
    return ag.binary_crossentropy(y_pred, t, from_logits=from_logits).mean(axis=-1)


def mean_squared_error(y_true, y_pred):
    """Per-sample mean of ``(y_pred - y_true) ** 2`` over the last axis.

    Parameters
    ----------
    y_true : array_like
        Shaped like ``y_pred`` (a missing trailing axis of 1 is added).
    y_pred : Tensor or array_like

    Returns
    -------
    Tensor
        ``y_pred.shape[:-1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import mean_squared_error
    >>> mean_squared_error([[0.0, 1.0]], np.array([[1.0, 3.0]]))
    Tensor([2.5])
    """
    y_pred = _tensor(y_pred)
    d = y_pred - _like(y_true, y_pred, "mean_squared_error")
    return (d * d).mean(axis=-1)


def mean_absolute_error(y_true, y_pred):
    """Per-sample mean of ``|y_pred - y_true|`` over the last axis.

    Parameters
    ----------
    y_true : array_like
        Shaped like ``y_pred`` (a missing trailing axis of 1 is added).
    y_pred : Tensor or array_like

    Returns
    -------
    Tensor
        ``y_pred.shape[:-1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.losses import mean_absolute_error
    >>> mean_absolute_error([[0.0, 1.0]], np.array([[1.0, 3.0]]))
    Tensor([1.5])
    """
    y_pred = _tensor(y_pred)
    return ag.abs(y_pred - _like(y_true, y_pred, "mean_absolute_error")).mean(axis=-1)


def per_sample_function(loss):
    """The per-sample form ``f(y_true, y_pred)`` of a compiled loss, or None if it has none.

    ``fit`` weights its values by the output's mask (Keras' masked losses).
    """
    if isinstance(loss, SparseCategoricalCrossentropy):
        return lambda y, p: sparse_categorical_crossentropy(y, p, loss.from_logits)
    if isinstance(loss, (CategoricalCrossentropy, BinaryCrossentropy)):
        fn = (categorical_crossentropy if isinstance(loss, CategoricalCrossentropy)
              else binary_crossentropy)
        return lambda y, p: fn(y, p, loss.from_logits, loss.label_smoothing)
    if isinstance(loss, MeanSquaredError):
        return mean_squared_error
    if isinstance(loss, MeanAbsoluteError):
        return mean_absolute_error
    if isinstance(loss, _Mean):
        return loss.fn
    return None


_CLASSES = (SparseCategoricalCrossentropy, CategoricalCrossentropy, BinaryCrossentropy,
            MeanSquaredError, MeanAbsoluteError)
_BY_NAME = {c.name: c for c in _CLASSES}
_BY_NAME.update({"mse": MeanSquaredError, "mae": MeanAbsoluteError})
_BY_FUNCTION = {sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
                categorical_crossentropy: CategoricalCrossentropy,
                binary_crossentropy: BinaryCrossentropy,
                mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError}


class _Mean(Loss):
    """A user's loss function, its per-sample values averaged (Keras' default reduction)."""

    def __init__(self, fn):
        self.fn = fn
        self.name = getattr(fn, "__name__", "loss")

    def __call__(self, y_true, y_pred):
        out = self.fn(y_true, y_pred)
        if isinstance(out, ag.Tensor) and out.ndim:
            return out.mean()
        return out

    def __repr__(self):
        return f"<loss {self.name}>"


def get(identifier):
    """A loss from a Keras name, a :class:`Loss`, a config dict or a callable ``(y_true, y_pred)``.

    Parameters
    ----------
    identifier : str, dict or callable
        ``"sparse_categorical_crossentropy"``, ``"categorical_crossentropy"``,
        ``"binary_crossentropy"``, ``"mean_squared_error"``/``"mse"``,
        ``"mean_absolute_error"``/``"mae"`` or a class name; a :class:`Loss`
        (returned as it is); one of this module's functions (its class); any
        other function, whose per-sample result is averaged.

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
    >>> losses.get("mse")
    MeanSquaredError()
    """
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or {c.__name__: c for c in _CLASSES}.get(identifier)
        if cls is None:
            raise ValueError(f"unknown loss {identifier!r}; use one of "
                             f"{', '.join(repr(k) for k in _BY_NAME)} or a loss object")
        return cls()
    if isinstance(identifier, Loss):
        return identifier
    if identifier in _BY_FUNCTION:
        return _BY_FUNCTION[identifier]()
    if callable(identifier):
        return _Mean(identifier)
    raise TypeError(f"loss must be a name or a callable (y_true, y_pred), got {identifier!r}")


def serialize(loss):
    """``{"class_name": ..., "config": ...}`` of a :class:`Loss` (Keras' form).

    Parameters
    ----------
    loss : Loss

    Returns
    -------
    dict

    Examples
    --------
    >>> from fastbn.nn import losses
    >>> losses.serialize(losses.BinaryCrossentropy(from_logits=True))
    {'class_name': 'BinaryCrossentropy', 'config': {'from_logits': True, 'label_smoothing': 0.0}}
    """
    if type(loss) not in _CLASSES:
        raise TypeError(f"cannot serialize loss {loss!r}: only the classes of "
                        f"fastbn.nn.losses have a config")
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(config):
    """The loss that :func:`serialize` described.

    Parameters
    ----------
    config : dict

    Returns
    -------
    Loss

    Examples
    --------
    >>> from fastbn.nn import losses
    >>> losses.deserialize({"class_name": "MeanSquaredError", "config": {}})
    MeanSquaredError()
    """
    return _serialization.deserialize(config, _CLASSES, "loss")
