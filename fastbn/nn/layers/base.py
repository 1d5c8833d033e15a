"""The layer base: :class:`Layer` (what every layer shares) and :class:`Variable`.

A layer creates its variables when it first sees its input shape (``build``),
named ``<layer name>/<weight name>`` as in Keras (``dense/kernel``,
``batch_normalization/moving_mean``). Calling a layer runs
:mod:`fastbn.autograd` ops on a :class:`~fastbn.autograd.Tensor`, so the
variables that are trainable receive gradients.
"""
import functools
import inspect

import numpy as np

from ... import autograd as ag
from ... import _bn
from .. import _serialization, activations, constraints, initializers, regularizers, utils
from ._utils import FLOATX, shape_tuple

__all__ = ["Variable", "Layer"]


class Variable:
    """A named weight: an ndarray plus ``trainable`` (Keras' ``keras.Variable``).

    Optimizers update :attr:`value` in place; :attr:`tensor` is a
    :class:`~fastbn.autograd.Tensor` on the same memory (``requires_grad``
    when trainable), which is what layers compute with.

    Parameters
    ----------
    value : array_like
        The initial value, kept C-contiguous (no copy when it already is).
    name : str
        The variable's path, ``"<layer>/<weight>"``.
    trainable : bool, default True
        Whether optimizers update it (``gamma``, ``kernel``) or not
        (``moving_mean``).
    regularizer : callable, optional
        Its penalty, added to the training loss (see :mod:`fastbn.nn.regularizers`).
    constraint : callable, optional
        Applied to the value after each optimizer step (see
        :mod:`fastbn.nn.constraints`).

    Attributes
    ----------
    name, path : str
        ``"<layer>/<weight>"``, e.g. ``"batch_normalization/gamma"``.
    value : ndarray
    trainable : bool

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import Variable
    >>> v = Variable(np.zeros(3, np.float32), name="dense/bias")
    >>> v.name, v.shape, v.trainable
    ('dense/bias', (3,), True)
    >>> v.assign([1, 2, 3]); v.numpy()
    array([1., 2., 3.], dtype=float32)
    """

    __slots__ = ("name", "value", "trainable", "tensor", "regularizer", "constraint")

    def __init__(self, value, name, trainable=True, regularizer=None, constraint=None):
        self.name = name
        self.regularizer, self.constraint = regularizer, constraint
        self.value = np.ascontiguousarray(value)
        self.trainable = bool(trainable)
        self.tensor = ag.Tensor(self.value, requires_grad=self.trainable)

    @property
    def path(self):
        return self.name

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    def numpy(self):
        """A copy of the value.

        Returns
        -------
        ndarray
        """
        return self.value.copy()

    def assign(self, value):
        """Overwrite the value in place (same shape; cast to the variable's dtype).

        Parameters
        ----------
        value : array_like
            The new value, of the variable's shape.

        Raises
        ------
        ValueError
            If the shapes differ.
        """
        value = np.asarray(value)
        if value.shape != self.value.shape:
            raise ValueError(f"cannot assign a value of shape {value.shape} to variable "
                             f"{self.name!r} of shape {self.value.shape}")
        self.value[...] = value

    def __array__(self, dtype=None, copy=None):
        return self.value if dtype is None else self.value.astype(dtype)

    def __repr__(self):
        return (f"<Variable path={self.name}, shape={self.shape}, dtype={self.dtype}, "
                f"trainable={self.trainable}>")


def _marks_built(build):
    @functools.wraps(build)
    def wrapper(self, input_shape):
        input_shape = tuple(input_shape)
        build(self, input_shape)
        self.built = True
        self.input_shape = input_shape
        self.output_shape = self.compute_output_shape(input_shape)
    return wrapper


#: Keras 1 keyword arguments that Keras 3 rejects, and what to write instead.
_KERAS1_NAMES = {
    "init": "use kernel_initializer= (e.g. kernel_initializer='uniform')",
    "mode": "it has no equivalent (Keras 3 normalises each feature over the batch); "
            "remove it",
    "weights": "build the layer, then call layer.set_weights([...])",
    "W_regularizer": "use kernel_regularizer=",
    "b_regularizer": "use bias_regularizer=",
    "W_constraint": "use kernel_constraint=",
    "b_constraint": "use bias_constraint=",
    "beta_init": "use beta_initializer=",
    "gamma_init": "use gamma_initializer=",
    "bias": "use use_bias=",
}


class Layer:
    """Base class of all layers.

    Parameters
    ----------
    name : str, optional
        Default: the snake-case class name, numbered in the session
        (``dense``, ``dense_1``, ...).
    input_shape : tuple of int, optional
        Shape of one sample (no batch axis), on the first layer of a
        :class:`~fastbn.nn.Sequential` so it can be built at once (Keras).
    trainable : bool, default True
        False freezes the layer's variables (and puts a BatchNormalization
        in inference mode, as Keras 3 does).
    dtype : {None, "float32"}, optional
        Layers compute in float32; anything else raises ``ValueError``.
    activity_regularizer : str or callable, optional
        A penalty on the layer's output, divided by the batch size (Keras 3),
        added to the training loss (see :mod:`fastbn.nn.regularizers`).
    **kwargs
        ``input_dim=n``: Keras' shorthand for ``input_shape=(n,)``. Any
        other keyword raises ``TypeError``, naming it; Keras 1 names
        (``init``, ``mode``, ``weights``, ...) raise it naming the Keras 3
        spelling.

    Raises
    ------
    TypeError
        For an unknown keyword argument.
    ValueError
        For a ``dtype`` other than float32.

    Notes
    -----
    Subclasses implement ``build(input_shape)`` (create variables with
    :meth:`add_weight`), ``call(x, training)`` and
    ``compute_output_shape(input_shape)``; shapes include the batch axis as
    ``None``.

    Examples
    --------
    A layer that scales its input by a learned per-feature factor:

    >>> import numpy as np
    >>> from fastbn import nn
    >>> class Scale(nn.Layer):
    ...     def build(self, input_shape):
    ...         self.factor = self.add_weight("factor", input_shape[-1:], "ones")
    ...     def call(self, x, training=False):
    ...         return x * self.factor.tensor
    >>> layer = Scale(name="scale")
    >>> layer(np.array([[1.0, 2.0]]))
    Tensor([[1., 2.]], dtype=float32, requires_grad=True)
    >>> [v.name for v in layer.variables], layer.count_params()
    (['scale/factor'], 2)
    """

    def __init__(self, *, name=None, input_shape=None, trainable=True, dtype=None,
                 activity_regularizer=None, **kwargs):
        input_dim = kwargs.pop("input_dim", None)
        if input_dim is not None:                  # Keras 3 takes it as input_shape=(input_dim,)
            if input_shape is not None:
                raise TypeError(f"{type(self).__name__}: pass input_shape or input_dim, "
                                f"not both")
            input_shape = (input_dim,)
        for old_name in sorted(kwargs):
            if old_name in _KERAS1_NAMES:
                raise TypeError(f"{type(self).__name__}: {old_name}= is a Keras 1 argument "
                                f"that Keras 3 removed; {_KERAS1_NAMES[old_name]}")
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) "
                            f"{', '.join(sorted(kwargs))}")
        if dtype not in (None, "float32", np.float32):
            raise ValueError(f"{type(self).__name__}: fastbn.nn layers compute in float32; "
                             f"got dtype={dtype!r}")
        self.name = name if name is not None else utils.unique_name(
            utils.to_snake_case(type(self).__name__))
        self.input_shape_arg = (None if input_shape is None
                                else shape_tuple(input_shape, "input_shape"))
        self.trainable = trainable
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self._activity_losses = []
        self.built = False
        self._variables = []
        self.input_shape = None
        self.output_shape = None

    # ------------------------------------------------------------- weights
    def add_weight(self, name, shape, initializer, trainable=True, regularizer=None,
                   constraint=None):
        """Create a variable ``<layer name>/<name>`` initialised by ``initializer``.

        Parameters
        ----------
        name : str
            The weight's name within the layer (``"kernel"``, ``"gamma"``).
        shape : tuple of int
        initializer : str or callable
            A name (``"zeros"``, ``"ones"``, ``"glorot_uniform"``,
            ``"he_normal"``) or an initializer (see :mod:`fastbn.nn.initializers`).
        trainable : bool, default True
        regularizer : str or callable, optional
            See :mod:`fastbn.nn.regularizers`.
        constraint : str or callable, optional
            See :mod:`fastbn.nn.constraints`.

        Returns
        -------
        Variable
            float32, also listed in :attr:`variables`.
        """
        init = initializers.get(initializer)
        value = np.asarray(init(tuple(shape), FLOATX), dtype=FLOATX)
        v = Variable(value, f"{self.name}/{name}", trainable=trainable,
                     regularizer=regularizers.get(regularizer),
                     constraint=constraints.get(constraint))
        self._variables.append(v)
        return v

    @property
    def variables(self):
        """All variables, in creation order (Keras' ``weights``)."""
        return list(self._variables)

    weights = variables

    @property
    def trainable_variables(self):
        return [v for v in self._variables if v.trainable and self.trainable]

    trainable_weights = trainable_variables

    @property
    def non_trainable_variables(self):
        return [v for v in self._variables if not (v.trainable and self.trainable)]

    non_trainable_weights = non_trainable_variables

    @property
    def losses(self):
        """The penalties of the trainable weights' regularizers (scalar Tensors, with
        gradients), then those of ``activity_regularizer`` from the last call (Keras')."""
        return ([v.regularizer(v.tensor) for v in self.trainable_variables
                 if v.regularizer is not None] + list(self._activity_losses))

    def _activity_penalty(self, out):
        """Record ``activity_regularizer(out) / batch size`` as this call's activity loss."""
        loss = self.activity_regularizer(out)
        if out.ndim:
            loss = loss * (1.0 / out.shape[0])
        self._activity_losses = [loss]
        return loss

    def count_params(self):
        """Number of scalars in the variables.

        Returns
        -------
        int

        Raises
        ------
        ValueError
            If the layer is not built yet.
        """
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built yet, so it has no weights; "
                             f"call it on data or give the model an input_shape first")
        return int(sum(v.value.size for v in self._variables))

    def get_weights(self):
        """Copies of the variables' values, in order.

        Returns
        -------
        list of ndarray
        """
        return [v.numpy() for v in self._variables]

    def set_weights(self, weights):
        """Assign values to the variables, in order (shapes must match).

        Parameters
        ----------
        weights : list of array_like
            One value per variable, as :meth:`get_weights` returns them.

        Raises
        ------
        ValueError
            If the number of values or a shape differs.
        """
        if len(weights) != len(self._variables):
            raise ValueError(f"layer {self.name!r} has {len(self._variables)} weights, got "
                             f"{len(weights)}")
        for v, w in zip(self._variables, weights):
            v.assign(w)

    # ------------------------------------------------------------- calling
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "build" in cls.__dict__:          # calling build() directly marks it built (Keras)
            cls.build = _marks_built(cls.__dict__["build"])

    def build(self, input_shape):
        """Create the layer's weights for inputs of ``input_shape`` (with ``None`` batch).

        Called once, on the first call of the layer (or when a model is
        built); subclasses with weights override it and call :meth:`add_weight`.

        Parameters
        ----------
        input_shape : tuple
            The input's shape, batch axis first (``None``), e.g. ``(None, 784)``.
        """

    def _build_once(self, input_shape):
        input_shape = tuple(input_shape)
        if not self.built:
            self.build(input_shape)
        else:
            self._check_input(input_shape)
        return self.output_shape

    def _check_input(self, shape):
        """Raise if a built layer cannot take inputs of ``shape`` (layers without weights take any)."""


    def compute_output_shape(self, input_shape):
        return input_shape

    #: Whether the layer passes its input's mask on (Keras' ``supports_masking``).
    supports_masking = False

    def compute_mask(self, x, mask=None):
        """The mask of the layer's output (Keras): the input's when the layer
        ``supports_masking``, else None.

        Parameters
        ----------
        x : Tensor
            The layer's input.
        mask : ndarray of bool, optional
            The input's mask.

        Returns
        -------
        ndarray of bool or None
        """
        return mask if self.supports_masking else None

    def _takes_mask(self):
        """Whether ``call`` has a ``mask`` argument (Keras passes masks only then)."""
        cls = type(self)
        takes = cls.__dict__.get("_call_takes_mask")
        if takes is None:
            takes = "mask" in inspect.signature(cls.call).parameters
            cls._call_takes_mask = takes
        return takes

    def call(self, x, training=False):
        raise NotImplementedError

    def __call__(self, x, training=False, mask=None):
        """Apply the layer (building it on first use); returns a Tensor.

        ``training`` chooses batch statistics (BatchNormalization) and active
        dropout; the default, False, is inference, as when Keras calls a
        layer outside ``fit``. ``mask`` (booleans, one per sample position,
        shaped like ``x`` without its last axis) reaches layers whose ``call``
        takes one (BatchNormalization: statistics of the unmasked positions).
        """
        if not isinstance(x, ag.Tensor):
            x = np.asarray(x)
            if x.dtype != FLOATX:
                x = x.astype(FLOATX)
            x = ag.Tensor(x)
        elif x.dtype != FLOATX and x.dtype.kind in "iub":
            x = ag.Tensor(x.data.astype(FLOATX))
        self._build_once((None,) + x.shape[1:])
        if training is not None:
            _bn.check_training(training, f"{type(self).__name__} {self.name!r}")
        if mask is not None and self._takes_mask():
            out = self.call(x, training=training, mask=mask)
        else:
            out = self.call(x, training=training)
        if self.activity_regularizer is not None:
            self._activity_penalty(out)
        return out

    # -------------------------------------------------------------- config
    _BASE_ARGS = ("name", "input_shape", "trainable", "dtype", "activity_regularizer")

    def get_config(self):
        """The layer's constructor arguments, JSON-ready (Keras' ``get_config``).

        Initializers, regularizers and constraints appear in their
        ``{"class_name": ..., "config": ...}`` form, activations by name;
        :meth:`from_config` rebuilds an equal, unbuilt layer (weights are not
        part of the config).

        Returns
        -------
        dict

        Raises
        ------
        TypeError
            For an argument that has no config (a plain function as an
            initializer, activation or regularizer).

        Examples
        --------
        >>> from fastbn import nn
        >>> config = nn.Dense(3, activation="relu", name="d").get_config()
        >>> config["units"], config["activation"], config["kernel_initializer"]
        (3, 'relu', {'class_name': 'GlorotUniform', 'config': {'seed': None}})
        >>> nn.Dense.from_config(config).get_config() == config
        True
        """
        config = {"name": self.name, "trainable": self.trainable, "dtype": "float32"}
        if self.input_shape_arg is not None:
            config["input_shape"] = list(self.input_shape_arg)
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = _serialize(self.activity_regularizer,
                                                        "activity_regularizer", self)
        for arg in inspect.signature(type(self).__init__).parameters.values():
            if arg.name == "self" or arg.name in self._BASE_ARGS or arg.kind in (
                    arg.VAR_KEYWORD, arg.VAR_POSITIONAL):
                continue
            if not hasattr(self, arg.name):
                raise NotImplementedError(f"{type(self).__name__}.get_config: argument "
                                          f"{arg.name!r} is not kept as an attribute; "
                                          f"override get_config")
            config[arg.name] = _serialize(getattr(self, arg.name), arg.name, self)
        return config

    from_config = _serialization.from_config

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _serialize(value, arg, layer):
    """A constructor argument's JSON form: objects as Keras' {"class_name", "config"}."""
    if isinstance(value, initializers.Initializer):
        return initializers.serialize(value)
    if isinstance(value, regularizers.Regularizer):
        return regularizers.serialize(value)
    if isinstance(value, constraints.Constraint):
        return constraints.serialize(value)
    if isinstance(value, (tuple, list)):
        return [_serialize(v, arg, layer) for v in value]
    if isinstance(value, dict):
        return {str(k): _serialize(v, arg, layer) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if arg == "activation" or arg.endswith("activation"):
        name = activations.keras_name(value)
        if name is not None:
            return name
    raise TypeError(f"{type(layer).__name__} {layer.name!r}: {arg}={value!r} has no config "
                    f"(use a name or a fastbn.nn object instead of a plain function)")


Layer.build = _marks_built(Layer.build)
