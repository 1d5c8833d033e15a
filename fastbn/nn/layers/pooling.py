"""Keras' pooling layers: MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D."""
from ... import autograd as ag
from ._utils import (check_data_format, check_padding, output_length, output_shape_of,
                     spatial_dims)
from .base import Layer

__all__ = ["MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D"]


class _Pooling2D(Layer):
    _op = None

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(**kwargs)
        kind = type(self).__name__
        self.pool_size = ag.ops.conv.pair(pool_size, "pool_size", kind)
        self.strides = self.pool_size if strides is None \
            else ag.ops.conv.pair(strides, "strides", kind)
        self.padding = check_padding(padding, kind)
        self.data_format = check_data_format(data_format, kind)

    def compute_output_shape(self, input_shape):
        rows, cols, channels = spatial_dims(input_shape, self.data_format,
                                            type(self).__name__, self.name)
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        return output_shape_of(input_shape[0], output_length(rows, kh, sh, self.padding),
                               output_length(cols, kw, sw, self.padding), channels,
                               self.data_format)

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
        self.data_format = check_data_format(data_format, "GlobalAveragePooling2D")
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape):
        _, _, channels = spatial_dims(input_shape, self.data_format, "GlobalAveragePooling2D",
                                      self.name)
        if self.keepdims:
            return output_shape_of(input_shape[0], 1, 1, channels, self.data_format)
        return (input_shape[0], channels)

    def call(self, x, training=False):
        return ag.global_average_pool2d(x, self.data_format, self.keepdims)
