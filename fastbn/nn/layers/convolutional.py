"""Keras' convolution layer: Conv2D."""
import numpy as np

from ... import autograd as ag
from .._format import format_shape
from ._utils import (add_kernel_and_bias, check_data_format, check_padding,
                     kernel_and_bias_args, output_length, output_shape_of, spatial_dims)
from .base import Layer

__all__ = ["Conv2D"]


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
        self.kernel_size = ag.ops.conv.pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = ag.ops.conv.pair(strides, "strides", "Conv2D")
        self.padding = check_padding(padding, "Conv2D")
        self.data_format = check_data_format(data_format, "Conv2D")
        kernel_and_bias_args(self, activation, use_bias, kernel_initializer,
                             bias_initializer, kernel_regularizer, bias_regularizer,
                             kernel_constraint, bias_constraint)

    def build(self, input_shape):
        channels = spatial_dims(input_shape, self.data_format, "Conv2D", self.name)[2]
        if channels is None:
            raise ValueError(f"Conv2D {self.name!r}: the channels axis of "
                             f"{format_shape(input_shape)} must have a known size")
        add_kernel_and_bias(self, self.kernel_size + (channels, self.filters), self.filters)

    def _check_input(self, shape):
        channels = spatial_dims(shape, self.data_format, "Conv2D", self.name)[2]
        if channels != self.kernel.shape[2]:
            raise ValueError(f"Conv2D {self.name!r} was built for {self.kernel.shape[2]} "
                             f"input channels, got shape {format_shape(shape)} "
                             f"({self.data_format})")

    def compute_output_shape(self, input_shape):
        rows, cols, _ = spatial_dims(input_shape, self.data_format, "Conv2D", self.name)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return output_shape_of(input_shape[0], output_length(rows, kh, sh, self.padding),
                               output_length(cols, kw, sw, self.padding), self.filters,
                               self.data_format)

    def call(self, x, training=False):
        relu = self.activation is ag.relu               # fused into the convolution's pass
        y = ag.conv2d(x, self.kernel.tensor, None if self.bias is None else self.bias.tensor,
                      strides=self.strides, padding=self.padding, data_format=self.data_format,
                      activation="relu" if relu else None)
        return y if relu else self.activation(y)
