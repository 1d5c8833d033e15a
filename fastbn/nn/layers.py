"""Layers with Keras' names, arguments and defaults.

A layer creates its variables when it first sees its input shape (``build``),
named ``<layer name>/<weight name>`` as in Keras (``dense/kernel``,
``batch_normalization/moving_mean``). Calling a layer runs
:mod:`fastbn.autograd` ops on a :class:`~fastbn.autograd.Tensor`, so the
variables that are trainable receive gradients.
"""
import functools
import inspect
import math

import numpy as np

from .. import _bn
from .. import autograd as ag
from .. import functional as F
from . import _serialization, activations, constraints, initializers, regularizers, utils

__all__ = ["Variable", "Layer", "Input", "Dense", "BatchNormalization", "Activation", "Masking",
           "LeakyReLU", "Flatten", "Dropout", "Conv2D", "MaxPooling2D", "AveragePooling2D",
           "GlobalAveragePooling2D"]

FLOATX = np.float32


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


def _shape_tuple(shape, what):
    try:
        out = tuple(None if s is None else int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{what} must be a list or tuple of ints, got {shape!r}") from None
    if any(s is not None and s < 0 for s in out):
        raise ValueError(f"{what} has a negative dimension: {shape!r}")
    return out


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
                                else _shape_tuple(input_shape, "input_shape"))
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
        name = activations.name_of(value)
        if activations._BY_NAME.get(name) is value:
            return name
    raise TypeError(f"{type(layer).__name__} {layer.name!r}: {arg}={value!r} has no config "
                    f"(use a name or a fastbn.nn object instead of a plain function)")


Layer.build = _marks_built(Layer.build)


def _fmt(shape):
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class Input:
    """The input of a :class:`~fastbn.nn.Sequential`: ``Input(shape=(28, 28))``.

    Keras 3's preferred alternative to ``input_shape=`` on the first layer;
    it is not a layer of the model (``model.layers`` does not list it).

    Parameters
    ----------
    shape : tuple of int
        Shape of one sample, without the batch axis.
    name : str, optional

    Examples
    --------
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Input(shape=(4,)), nn.Dense(2)])
    >>> model.count_params()
    10
    """

    def __init__(self, shape, name=None):
        self.shape = (None,) + _shape_tuple(shape, "Input shape")
        self.name = name


def _kernel_and_bias_args(layer, activation, use_bias, kernel_initializer, bias_initializer,
                          kernel_regularizer, bias_regularizer, kernel_constraint,
                          bias_constraint):
    """Keep Dense's and Conv2D's shared arguments on ``layer``, each resolved by its
    module's ``get`` (Keras names, config dicts, objects or callables)."""
    layer.activation = activations.get(activation)
    layer.use_bias = bool(use_bias)
    layer.kernel_initializer = initializers.get(kernel_initializer)
    layer.bias_initializer = initializers.get(bias_initializer)
    layer.kernel_regularizer = regularizers.get(kernel_regularizer)
    layer.bias_regularizer = regularizers.get(bias_regularizer)
    layer.kernel_constraint = constraints.get(kernel_constraint)
    layer.bias_constraint = constraints.get(bias_constraint)
    layer.kernel = layer.bias = None


def _add_kernel_and_bias(layer, kernel_shape, units):
    """Create ``layer.kernel`` of ``kernel_shape`` and, with ``use_bias``, ``layer.bias``
    of ``(units,)``, with the layer's initializers, regularizers and constraints."""
    layer.kernel = layer.add_weight("kernel", kernel_shape, layer.kernel_initializer,
                                    regularizer=layer.kernel_regularizer,
                                    constraint=layer.kernel_constraint)
    if layer.use_bias:
        layer.bias = layer.add_weight("bias", (units,), layer.bias_initializer,
                                      regularizer=layer.bias_regularizer,
                                      constraint=layer.bias_constraint)


class Dense(Layer):
    """Densely connected layer: ``activation(x @ kernel + bias)`` on the last axis.

    Parameters
    ----------
    units : int
        Output features.
    activation : str, callable or None, default None
        ``"relu"``, ``"elu"``, ``"tanh"``, ``"sigmoid"``, ``"softmax"``,
        ``"leaky_relu"``, ``"linear"``/None, or a function of a Tensor.
    use_bias : bool, default True
    kernel_initializer : str or callable, default "glorot_uniform"
    bias_initializer : str or callable, default "zeros"
    kernel_regularizer, bias_regularizer, activity_regularizer : str or callable, optional
        Penalties added to the training loss (:mod:`fastbn.nn.regularizers`).
    kernel_constraint, bias_constraint : str or callable, optional
        Projections applied after each optimizer step (:mod:`fastbn.nn.constraints`).

    **kwargs
        ``name``, ``input_shape``, ``input_dim``, ``trainable``, ``dtype``: see
        :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> layer = nn.Dense(2, kernel_initializer="ones", bias_initializer="ones")
    >>> layer(np.array([[1.0, 2.0, 3.0]]))
    Tensor([[7., 7.]], dtype=float32, requires_grad=True)
    >>> [v.shape for v in layer.variables]
    [(3, 2), (2,)]
    """

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense: units must be a positive integer, got {units!r}")
        self.units = int(units)
        _kernel_and_bias_args(self, activation, use_bias, kernel_initializer,
                              bias_initializer, kernel_regularizer, bias_regularizer,
                              kernel_constraint, bias_constraint)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"Dense {self.name!r}: needs inputs with a known last dimension, "
                             f"got shape {_fmt(input_shape)}")
        _add_kernel_and_bias(self, (input_shape[-1], self.units), self.units)

    def _check_input(self, shape):
        if shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"Dense {self.name!r} expects inputs whose last dimension is "
                             f"{self.kernel.shape[0]}, got shape {_fmt(shape)}"
                             + ("; add a Flatten layer first" if len(shape) > 2 else ""))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x, training=False):
        return self.activation(self.call_linear(x))

    def call_linear(self, x):
        """``x @ kernel + bias``, without the activation.

        Parameters
        ----------
        x : Tensor
            ``(..., in)``.

        Returns
        -------
        Tensor
            ``(..., units)``.
        """
        if self.bias is None:
            return ag.Dense.apply(x, self.kernel.tensor)
        return ag.Dense.apply(x, self.kernel.tensor, self.bias.tensor)


class BatchNormalization(Layer):
    r"""Batch normalization, Keras' layer, on fastbn's kernels.

    In training (``fit``, or ``training=True``) each feature is normalised
    with the batch mean and (biased) variance, and the moving statistics are
    updated in place, ``moving = moving * momentum + batch * (1 - momentum)``;
    in inference (``evaluate``, ``predict``, ``training=False``) the moving
    statistics are used. With ``trainable=False`` the layer always runs in
    inference mode (Keras 3).

    Called as ``layer(x, training=True, mask=m)`` (``m``: one boolean per
    sample position, shaped like ``x`` without the feature axes; a
    :class:`Masking` layer in a :class:`~fastbn.nn.Sequential` provides it),
    the batch statistics and the moving statistics' update come from the
    unmasked positions only; a fully masked batch gives zeros; in inference
    the mask changes nothing (Keras).

    Parameters
    ----------
    axis : int or list/tuple of int, default -1
        The feature axis or axes (kept; statistics are taken over the rest).
    momentum : float, default 0.99
        Weight of the old moving statistics in each update (Keras' convention;
        PyTorch's ``momentum=0.1`` is Keras' 0.9).
    epsilon : float, default 1e-3
        Added to the variance before its square root, to keep the division
        finite (Keras' default; PyTorch's is 1e-5).
    center, scale : bool, default True
        Learn ``beta`` / ``gamma``.
    beta_initializer : str or callable, default "zeros"
    gamma_initializer : str or callable, default "ones"
    moving_mean_initializer : str or callable, default "zeros"
    moving_variance_initializer : str or callable, default "ones"
    beta_regularizer, gamma_regularizer : str or callable, optional
        Penalties on ``beta`` / ``gamma`` added to the training loss
        (:mod:`fastbn.nn.regularizers`).
    beta_constraint, gamma_constraint : str or callable, optional
        Projections of ``beta`` / ``gamma`` after each optimizer step
        (:mod:`fastbn.nn.constraints`).
    renorm : bool, default False
        Batch renormalization (Ioffe, 2017), as Keras 3 does it: in training
        the normalized batch is corrected by :math:`r = \sigma_B / \sigma_R`
        and :math:`d = (\mu_B - \mu_R) / \sigma_R` (clipped, held constant
        in the backward pass), :math:`\hat x r + d`, where :math:`\mu_R,
        \sigma_R` are the moving ``renorm_mean`` / ``renorm_stddev``
        (``max(renorm_stddev, sqrt(epsilon))``) and :math:`\sigma_B =
        \sqrt{\mathrm{var}_B + \epsilon}`. Extra non-trainable variables:
        ``moving_stddev``, ``renorm_mean``, ``renorm_stddev`` (the stddevs start
        at the square root of the moving variance's initial value);
        ``moving_variance`` becomes ``max(moving_stddev^2 - epsilon, 0)``.
        Inference is the plain layer's.
    renorm_clipping : dict, optional
        Keys ``"rmax"``, ``"rmin"``, ``"dmax"`` (each optional): ``r`` is
        clipped to ``[rmin, rmax]``, ``d`` to ``[-dmax, dmax]``. Another key,
        ``rmax < rmin`` or a negative ``dmax`` is a ``ValueError``.
    renorm_momentum : float, default 0.99
        Momentum of ``renorm_mean`` / ``renorm_stddev``.
    synchronized : bool, default False
        In data-parallel training (:class:`fastbn.distributed.DataParallel`),
        normalise with the statistics of the global batch, over every process
        (Keras' name; PyTorch's ``SyncBatchNorm``). Outside it, in a single
        process, the layer is the plain one. ``comm``, set by
        ``DataParallel.distribute``, is the communicator used (None: none).

    **kwargs
        ``name``, ``input_shape``, ``input_dim``, ``trainable``, ``dtype``: see
        :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> nn.clear_session()
    >>> bn = nn.BatchNormalization(epsilon=0.0)
    >>> bn(np.array([[1.0], [3.0]]), training=True)
    Tensor([[-1.],
            [ 1.]], dtype=float32, requires_grad=True)
    >>> [(v.name, v.trainable) for v in bn.variables]        # doctest: +NORMALIZE_WHITESPACE
    [('batch_normalization/gamma', True), ('batch_normalization/beta', True),
     ('batch_normalization/moving_mean', False), ('batch_normalization/moving_variance', False)]
    >>> bn.moving_mean.numpy()                     # 0.99 * 0 + 0.01 * 2
    array([0.02], dtype=float32)
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, renorm=False, renorm_clipping=None,
                 renorm_momentum=0.99, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        self.synchronized, self.comm = bool(synchronized), None
        self.renorm = bool(renorm)
        if self.renorm:                       # Keras' checks, in Keras' order
            renorm_clipping = dict(renorm_clipping or {})
            keys = ["rmax", "rmin", "dmax"]
            if set(renorm_clipping) - set(keys):
                raise ValueError(f"BatchNormalization: invalid keys for renorm_clipping: "
                                 f"{renorm_clipping}; supported: {keys}")
            rmax, rmin = renorm_clipping.get("rmax"), renorm_clipping.get("rmin")
            dmax = renorm_clipping.get("dmax")
            if rmax is not None and rmin is not None and rmax < rmin:
                raise ValueError(f"BatchNormalization: rmax should be greater than rmin in "
                                 f"renorm_clipping; got rmax={rmax}, rmin={rmin}")
            if dmax is not None and dmax < 0:
                raise ValueError(f"BatchNormalization: dmax should be non-negative in "
                                 f"renorm_clipping; got dmax={dmax}")
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = _bn.check_momentum(renorm_momentum, "BatchNormalization")
        self.moving_stddev = self.renorm_mean = self.renorm_stddev = None
        if isinstance(axis, (list, tuple)):
            if not axis or not all(isinstance(a, (int, np.integer)) for a in axis):
                raise TypeError(f"BatchNormalization: axis must be an int or a non-empty "
                                f"list/tuple of ints, got {axis!r}")
            self.axis = [int(a) for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = int(axis)
        else:
            raise TypeError(f"BatchNormalization: axis must be an int or a list/tuple of "
                            f"ints, got {axis!r}")
        self.momentum = _bn.check_momentum(momentum, "BatchNormalization")
        self.epsilon = _bn.check_epsilon(epsilon, "BatchNormalization")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        self._axes = None

    def build(self, input_shape):
        ndim = len(input_shape)
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        norm = []
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(f"BatchNormalization {self.name!r}: axis {a} is out of range "
                                 f"for inputs of shape {_fmt(input_shape)}")
            norm.append(a % ndim)
        if 0 in norm:
            raise ValueError(f"BatchNormalization {self.name!r}: axis {self.axis!r} includes "
                             f"the batch axis 0; name the feature axes, e.g. axis=-1")
        if len(set(norm)) != len(norm):
            raise ValueError(f"BatchNormalization {self.name!r}: axis {self.axis!r} repeats "
                             f"an axis")
        norm = sorted(norm)
        shape = tuple(input_shape[a] for a in norm)
        if any(s is None for s in shape):
            raise ValueError(f"BatchNormalization {self.name!r}: the feature axes of "
                             f"{_fmt(input_shape)} must have known sizes")
        self._axes = norm[0] if len(norm) == 1 else tuple(norm)
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer,
                                         regularizer=self.gamma_regularizer,
                                         constraint=self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", shape, self.beta_initializer,
                                        regularizer=self.beta_regularizer,
                                        constraint=self.beta_constraint)
        self.moving_mean = self.add_weight("moving_mean", shape, self.moving_mean_initializer,
                                           trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape,
                                               self.moving_variance_initializer, trainable=False)
        if self.renorm:
            # Keras: the moving and renorm stddevs start at sqrt(moving variance initializer)
            def stddev_init(shape, dtype=FLOATX):
                return np.sqrt(self.moving_variance_initializer(shape, dtype))
            self.moving_stddev = self.add_weight("moving_stddev", shape, stddev_init,
                                                 trainable=False)
            self.renorm_mean = self.add_weight("renorm_mean", shape,
                                               self.moving_mean_initializer, trainable=False)
            self.renorm_stddev = self.add_weight("renorm_stddev", shape, stddev_init,
                                                 trainable=False)

    def _check_input(self, shape):
        want = self.input_shape
        if len(shape) != len(want) or any(shape[a] != want[a] for a in
                                          ((self._axes,) if isinstance(self._axes, int)
                                           else self._axes)):
            raise ValueError(f"BatchNormalization {self.name!r} was built for inputs of "
                             f"shape {_fmt(want)} (features on axis {self.axis}), got "
                             f"{_fmt(shape)}")

    supports_masking = True

    def call(self, x, training=False, mask=None):
        training = bool(training) and self.trainable
        if mask is not None and training:
            if self.renorm:
                raise NotImplementedError("BatchNormalization: renorm=True with a mask is "
                                          "not implemented")
            return ag.BatchNorm.apply(
                x, None if self.gamma is None else self.gamma.tensor,
                None if self.beta is None else self.beta.tensor,
                axis=self._axes, epsilon=self.epsilon, training=True,
                moving_mean=self.moving_mean.value, moving_variance=self.moving_variance.value,
                momentum=self.momentum, mask=np.asarray(mask))
        if training and self.renorm:
            return self._call_renorm(x)
        return ag.BatchNorm.apply(
            x, None if self.gamma is None else self.gamma.tensor,
            None if self.beta is None else self.beta.tensor,
            axis=self._axes, epsilon=self.epsilon, training=training,
            moving_mean=self.moving_mean.value, moving_variance=self.moving_variance.value,
            momentum=self.momentum, comm=self.comm if self.synchronized else None)

    def _call_renorm(self, x):
        """Batch renormalization in training, Keras 3's rule (see the class docstring)."""
        if self.synchronized and self.comm is not None:
            raise NotImplementedError("BatchNormalization: renorm=True with synchronized "
                                      "data-parallel statistics is not implemented")
        feats = (self._axes,) if isinstance(self._axes, int) else self._axes
        reduced = tuple(a for a in range(x.ndim) if a not in feats)
        mean, var = (m.astype(np.float64) for m in F.moments(x.data, axis=reduced))
        eps = self.epsilon
        stddev = np.sqrt(var + eps)
        renorm_stddev = np.maximum(self.renorm_stddev.value, np.sqrt(eps))
        r = stddev / renorm_stddev
        d = (mean - self.renorm_mean.value) / renorm_stddev
        clip = self.renorm_clipping
        if clip.get("rmin") is not None:
            r = np.maximum(r, clip["rmin"])
        if clip.get("rmax") is not None:
            r = np.minimum(r, clip["rmax"])
        if clip.get("dmax") is not None:
            d = np.clip(d, -clip["dmax"], clip["dmax"])
        r, d = r.astype(FLOATX), d.astype(FLOATX)         # constants: no gradient (Keras)
        if self.gamma is not None:
            gamma, beta = self.gamma.tensor * r, self.gamma.tensor * d
        else:
            gamma, beta = r, d
        if self.beta is not None:
            beta = self.beta.tensor + beta
        out = ag.BatchNorm.apply(x, gamma, beta, axis=self._axes, epsilon=eps, training=True)
        rm, m = self.renorm_momentum, self.momentum
        self.renorm_mean.assign(self.renorm_mean.value * rm + mean * (1.0 - rm))
        self.renorm_stddev.assign(self.renorm_stddev.value * rm + stddev * (1.0 - rm))
        self.moving_mean.assign(self.moving_mean.value * m + mean * (1.0 - m))
        moving_stddev = self.moving_stddev.value * m + stddev * (1.0 - m)
        self.moving_stddev.assign(moving_stddev)
        self.moving_variance.assign(np.maximum(moving_stddev.astype(np.float64) ** 2 - eps, 0))
        return out


class Activation(Layer):
    """Applies an activation function (Keras name or callable).

    Parameters
    ----------
    activation : str or callable
        A name (see :func:`fastbn.nn.activations.get`) or a function of a Tensor.
    **kwargs
        ``name``, ``input_shape``, ``input_dim``, ``trainable``, ``dtype``: see
        :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> nn.Activation("relu")(np.array([[-1.0, 2.0]]))
    Tensor([[0., 2.]], dtype=float32)
    """

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def call(self, x, training=False):
        return self.activation(x)


class LeakyReLU(Layer):
    """Leaky ReLU: ``x`` where positive, ``negative_slope * x`` elsewhere (Keras default 0.3).

    Parameters
    ----------
    negative_slope : float, default 0.3
        The slope for negative inputs (Keras 2 called it ``alpha``, also accepted).
    **kwargs
        ``name``, ``input_shape``, ``input_dim``, ``trainable``, ``dtype``: see
        :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> nn.LeakyReLU()(np.array([[-1.0, 2.0]]))
    Tensor([[-0.3,  2. ]], dtype=float32)
    """

    supports_masking = True

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:                  # Keras 2's name for it
            negative_slope = kwargs.pop("alpha")
        super().__init__(**kwargs)
        if not negative_slope >= 0:
            raise ValueError(f"LeakyReLU: negative_slope must be >= 0, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def call(self, x, training=False):
        return ag.leaky_relu(x, self.negative_slope)


class Flatten(Layer):
    """Flattens each sample to one axis: ``(N, 28, 28)`` -> ``(N, 784)``.

    Parameters
    ----------
    name, input_shape, trainable, dtype, activity_regularizer, **kwargs
        As for :class:`Layer` (``input_shape=[28, 28]`` on the first layer,
        as in the Keras notebooks).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> nn.Flatten()(np.zeros((2, 3, 4))).shape
    (2, 12)
    """

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if any(s is None for s in rest) else math.prod(rest))

    def call(self, x, training=False):
        if x.ndim == 2:
            return x
        return ag.Reshape.apply(x, (x.shape[0], -1))


class Masking(Layer):
    """Mask the time steps whose features all equal ``mask_value`` (Keras' ``Masking``).

    The output is the input with those steps zeroed; its mask (one boolean
    per step, ``any(x != mask_value, axis=-1)``) reaches the following layers
    of a :class:`~fastbn.nn.Sequential` that take one, such as
    :class:`BatchNormalization`, whose training statistics then leave the
    masked steps out. When the model's output still carries the mask, the
    loss is averaged over the unmasked steps only (Keras).

    Parameters
    ----------
    mask_value : float, default 0.0
    **kwargs
        ``name``, ``input_shape``, ``input_dim``, ``trainable``, ``dtype``: see
        :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> x = np.array([[[1.0, 2.0], [0.0, 0.0]]])
    >>> nn.Masking().compute_mask(x)
    array([[ True, False]])
    """

    supports_masking = True

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def compute_mask(self, x, mask=None):
        data = x.data if isinstance(x, ag.Tensor) else np.asarray(x)
        return np.any(data != self.mask_value, axis=-1)

    def call(self, x, training=False):
        keep = self.compute_mask(x)[..., None].astype(x.dtype)
        return x * keep


class Dropout(Layer):
    """Randomly zeroes a fraction ``rate`` of the inputs in training, scaling the rest.

    Parameters
    ----------
    rate : float
        In ``[0, 1)``.
    seed : int, optional
        A private generator; by default the session's
        (:func:`fastbn.nn.set_random_seed`).

    **kwargs
        ``name``, ``input_shape``, ``input_dim``, ``trainable``, ``dtype``: see
        :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> layer = nn.Dropout(0.5, seed=0)
    >>> layer(np.ones((1, 4)))                        # inference: unchanged
    Tensor([[1., 1., 1., 1.]], dtype=float32)
    >>> sorted(set(layer(np.ones((1, 8)), training=True).data.ravel().tolist()))
    [0.0, 2.0]
    """

    supports_masking = True

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        return ag.dropout(x, self.rate, training=True,
                          rng=utils.get_rng() if self._rng is None else self._rng)


# ------------------------------------------------------- convolution, pooling
def _data_format(value, layer):
    """Keras' ``data_format``: None means its default, ``"channels_last"``."""
    value = "channels_last" if value is None else value
    if value not in ("channels_last", "channels_first"):
        raise ValueError(f"{layer}: data_format must be 'channels_last' or 'channels_first' "
                         f"(or None), got {value!r}")
    return value


def _padding(value, layer):
    value = str(value).lower()
    if value not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', got {value!r}")
    return value


def _spatial(input_shape, data_format, layer, name):
    """``(rows, cols, channels)`` of a 4-D input shape, checked."""
    if len(input_shape) != 4:
        want = "(rows, cols, channels)" if data_format == "channels_last" \
            else "(channels, rows, cols)"
        raise ValueError(f"{layer} {name!r}: needs 4-D inputs, (batch,) + {want}, got shape "
                         f"{_fmt(input_shape)}; for 28x28 images give input_shape=(28, 28, 1)")
    if data_format == "channels_first":
        return input_shape[2], input_shape[3], input_shape[1]
    return input_shape[1], input_shape[2], input_shape[3]


def _out_shape(n, rows, cols, channels, data_format):
    return (n, channels, rows, cols) if data_format == "channels_first" \
        else (n, rows, cols, channels)


def _out_len(size, k, stride, padding):
    if size is None:
        return None
    return ag.ops._window(size, k, stride, padding)[0]


class Conv2D(Layer):
    """2-D convolution layer: ``activation(conv2d(x, kernel) + bias)`` (Keras' ``Conv2D``).

    The kernel is ``(kh, kw, in_channels, filters)``, as in Keras, and
    ``glorot_uniform`` draws it with Keras' fans (receptive field x channels).
    The convolution is :func:`fastbn.autograd.conv2d`.

    Parameters
    ----------
    filters : int
        Output channels.
    kernel_size : int or pair of int
    strides : int or pair of int, default (1, 1)
    padding : {"valid", "same"}, default "valid"
    data_format : {None, "channels_last", "channels_first"}, default None
        None is Keras' default, ``"channels_last"``: inputs ``(batch, rows,
        cols, channels)``; ``"channels_first"``: ``(batch, channels, rows, cols)``.
    activation : str, callable or None, default None
    use_bias : bool, default True
    kernel_initializer : str or callable, default "glorot_uniform"
    bias_initializer : str or callable, default "zeros"
    kernel_regularizer, bias_regularizer, activity_regularizer : str or callable, optional
        Penalties added to the training loss (:mod:`fastbn.nn.regularizers`).
    kernel_constraint, bias_constraint : str or callable, optional
        Projections applied after each optimizer step (:mod:`fastbn.nn.constraints`).
    **kwargs
        ``name``, ``input_shape``, ``trainable``, ``dtype``: see :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> layer = nn.Conv2D(4, (3, 3), activation="relu")
    >>> layer(np.ones((2, 28, 28, 1))).shape
    (2, 26, 26, 4)
    >>> [v.shape for v in layer.variables]
    [(3, 3, 1, 4), (4,)]
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) \
                or filters < 1:
            raise ValueError(f"Conv2D: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = ag.ops._pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = ag.ops._pair(strides, "strides", "Conv2D")
        self.padding = _padding(padding, "Conv2D")
        self.data_format = _data_format(data_format, "Conv2D")
        _kernel_and_bias_args(self, activation, use_bias, kernel_initializer,
                              bias_initializer, kernel_regularizer, bias_regularizer,
                              kernel_constraint, bias_constraint)

    def build(self, input_shape):
        channels = _spatial(input_shape, self.data_format, "Conv2D", self.name)[2]
        if channels is None:
            raise ValueError(f"Conv2D {self.name!r}: the channels axis of "
                             f"{_fmt(input_shape)} must have a known size")
        _add_kernel_and_bias(self, self.kernel_size + (channels, self.filters), self.filters)

    def _check_input(self, shape):
        channels = _spatial(shape, self.data_format, "Conv2D", self.name)[2]
        if channels != self.kernel.shape[2]:
            raise ValueError(f"Conv2D {self.name!r} was built for {self.kernel.shape[2]} "
                             f"input channels, got shape {_fmt(shape)} ({self.data_format})")

    def compute_output_shape(self, input_shape):
        rows, cols, _ = _spatial(input_shape, self.data_format, "Conv2D", self.name)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return _out_shape(input_shape[0], _out_len(rows, kh, sh, self.padding),
                          _out_len(cols, kw, sw, self.padding), self.filters, self.data_format)

    def call(self, x, training=False):
        relu = self.activation is ag.relu               # fused into the convolution's pass
        y = ag.conv2d(x, self.kernel.tensor, None if self.bias is None else self.bias.tensor,
                      strides=self.strides, padding=self.padding, data_format=self.data_format,
                      activation="relu" if relu else None)
        return y if relu else self.activation(y)


class _Pooling2D(Layer):
    _op = None

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(**kwargs)
        kind = type(self).__name__
        self.pool_size = ag.ops._pair(pool_size, "pool_size", kind)
        self.strides = self.pool_size if strides is None \
            else ag.ops._pair(strides, "strides", kind)
        self.padding = _padding(padding, kind)
        self.data_format = _data_format(data_format, kind)

    def compute_output_shape(self, input_shape):
        rows, cols, channels = _spatial(input_shape, self.data_format, type(self).__name__,
                                        self.name)
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        return _out_shape(input_shape[0], _out_len(rows, kh, sh, self.padding),
                          _out_len(cols, kw, sw, self.padding), channels, self.data_format)

    def call(self, x, training=False):
        return type(self)._op(x, self.pool_size, self.strides, self.padding, self.data_format)


class MaxPooling2D(_Pooling2D):
    """The maximum of each window (Keras' ``MaxPooling2D``), :func:`fastbn.autograd.max_pool2d`.

    Parameters
    ----------
    pool_size : int or pair of int, default (2, 2)
    strides : int, pair of int or None, default None
        None: ``pool_size``.
    padding : {"valid", "same"}, default "valid"
        ``"valid"`` drops a last row or column that does not fill a window
        (26 -> 13, 11 -> 5).
    data_format : {None, "channels_last", "channels_first"}, default None
    **kwargs
        ``name``, ``input_shape``, ``trainable``, ``dtype``: see :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> nn.MaxPooling2D()(np.ones((2, 11, 11, 3))).shape
    (2, 5, 5, 3)
    """

    _op = staticmethod(ag.max_pool2d)


class AveragePooling2D(_Pooling2D):
    """The mean of each window (Keras' ``AveragePooling2D``), :func:`fastbn.autograd.avg_pool2d`.

    Parameters
    ----------
    pool_size : int or pair of int, default (2, 2)
    strides : int, pair of int or None, default None
        None: ``pool_size``.
    padding : {"valid", "same"}, default "valid"
        With ``"same"`` a window's mean is over the inputs it covers.
    data_format : {None, "channels_last", "channels_first"}, default None
    **kwargs
        ``name``, ``input_shape``, ``trainable``, ``dtype``: see :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> nn.AveragePooling2D(padding="same")(np.ones((2, 5, 5, 3))).shape
    (2, 3, 3, 3)
    """

    _op = staticmethod(ag.avg_pool2d)


class GlobalAveragePooling2D(Layer):
    """The mean over rows and columns per channel (Keras' ``GlobalAveragePooling2D``).

    Parameters
    ----------
    data_format : {None, "channels_last", "channels_first"}, default None
    keepdims : bool, default False
        Keep the rows and columns axes as length 1.
    **kwargs
        ``name``, ``input_shape``, ``trainable``, ``dtype``: see :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> nn.GlobalAveragePooling2D()(np.ones((2, 5, 5, 3))).shape
    (2, 3)
    """

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format(data_format, "GlobalAveragePooling2D")
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape):
        _, _, channels = _spatial(input_shape, self.data_format, "GlobalAveragePooling2D",
                                  self.name)
        if self.keepdims:
            return _out_shape(input_shape[0], 1, 1, channels, self.data_format)
        return (input_shape[0], channels)

    def call(self, x, training=False):
        return ag.global_average_pool2d(x, self.data_format, self.keepdims)
