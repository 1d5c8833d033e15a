"""What several layer families share: the float type, shape checks, the kernel-and-bias
arguments of Dense and Conv2D, and the convolution and pooling geometry."""
import numpy as np

from ... import autograd as ag
from .. import activations, constraints, initializers, regularizers
from .._format import format_shape

FLOATX = np.float32


def shape_tuple(shape, what):
    try:
        out = tuple(None if s is None else int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{what} must be a list or tuple of ints, got {shape!r}") from None
    if any(s is not None and s < 0 for s in out):
        raise ValueError(f"{what} has a negative dimension: {shape!r}")
    return out


def kernel_and_bias_args(layer, activation, use_bias, kernel_initializer, bias_initializer,
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


def add_kernel_and_bias(layer, kernel_shape, units):
    """Create ``layer.kernel`` of ``kernel_shape`` and, with ``use_bias``, ``layer.bias``
    of ``(units,)``, with the layer's initializers, regularizers and constraints."""
    layer.kernel = layer.add_weight("kernel", kernel_shape, layer.kernel_initializer,
                                    regularizer=layer.kernel_regularizer,
                                    constraint=layer.kernel_constraint)
    if layer.use_bias:
        layer.bias = layer.add_weight("bias", (units,), layer.bias_initializer,
                                      regularizer=layer.bias_regularizer,
                                      constraint=layer.bias_constraint)


# ------------------------------------------------------- convolution, pooling
def check_data_format(value, layer):
    """Keras' ``data_format``: None means its default, ``"channels_last"``."""
    value = "channels_last" if value is None else value
    if value not in ("channels_last", "channels_first"):
        raise ValueError(f"{layer}: data_format must be 'channels_last' or 'channels_first' "
                         f"(or None), got {value!r}")
    return value


def check_padding(value, layer):
    value = str(value).lower()
    if value not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', got {value!r}")
    return value


def spatial_dims(input_shape, data_format, layer, name):
    """``(rows, cols, channels)`` of a 4-D input shape, checked."""
    if len(input_shape) != 4:
        want = "(rows, cols, channels)" if data_format == "channels_last" \
            else "(channels, rows, cols)"
        raise ValueError(f"{layer} {name!r}: needs 4-D inputs, (batch,) + {want}, got shape "
                         f"{format_shape(input_shape)}; for 28x28 images give "
                         f"input_shape=(28, 28, 1)")
    if data_format == "channels_first":
        return input_shape[2], input_shape[3], input_shape[1]
    return input_shape[1], input_shape[2], input_shape[3]


def output_shape_of(n, rows, cols, channels, data_format):
    return (n, channels, rows, cols) if data_format == "channels_first" \
        else (n, rows, cols, channels)


def output_length(size, k, stride, padding):
    if size is None:
        return None
    return ag.ops.conv.window(size, k, stride, padding)[0]
