"""Keras' core layers: Input, Dense, Activation, LeakyReLU, Flatten, Masking, Dropout."""
import math

import numpy as np

from ... import autograd as ag
from .. import activations, utils
from .._format import format_shape
from ._utils import add_kernel_and_bias, kernel_and_bias_args, shape_tuple
from .base import Layer

__all__ = ["Input", "Dense", "Activation", "LeakyReLU", "Flatten", "Masking", "Dropout"]


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
        self.shape = (None,) + shape_tuple(shape, "Input shape")
        self.name = name


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
        kernel_and_bias_args(self, activation, use_bias, kernel_initializer,
                             bias_initializer, kernel_regularizer, bias_regularizer,
                             kernel_constraint, bias_constraint)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"Dense {self.name!r}: needs inputs with a known last dimension, "
                             f"got shape {format_shape(input_shape)}")
        add_kernel_and_bias(self, (input_shape[-1], self.units), self.units)

    def _check_input(self, shape):
        if shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"Dense {self.name!r} expects inputs whose last dimension is "
                             f"{self.kernel.shape[0]}, got shape {format_shape(shape)}"
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
            return ag.ops.math.Dense.apply(x, self.kernel.tensor)
        return ag.ops.math.Dense.apply(x, self.kernel.tensor, self.bias.tensor)


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
        return ag.ops.math.Reshape.apply(x, (x.shape[0], -1))


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
