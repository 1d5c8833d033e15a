r"""Convolution and pooling: ``conv2d``, ``max_pool2d``, ``avg_pool2d``, ``global_average_pool2d``.

Arrays are channels-last (N, H, W, C) inside; a channels-first (N, C, H, W)
input is read through its NHWC view (no copy) and results are returned in
the caller's layout. ``pair`` and ``window`` check and measure the windows
for these ops and for :mod:`fastbn.nn`'s layers.
"""
import numpy as np

# The engine's convolution and pooling dispatch (one import: the line to change when it moves).
from ..._conv import (avg_pool_backward, avg_pool_forward, conv2d_backward, conv2d_forward,
                      max_pool_backward, max_pool_forward)
from ..tensor import Function, Tensor

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "global_average_pool2d"]


def pair(value, what, fn):
    """``value`` as a pair of positive ints (Keras takes an int or a pair)."""
    both = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if (len(both) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                              or v < 1 for v in both)):
        raise ValueError(f"{fn}: {what} must be a positive int or a pair of them, "
                         f"got {value!r}")
    return int(both[0]), int(both[1])


def window(size, k, stride, padding):
    """Output length and padding before the first element (Keras/TensorFlow's rule).

    ``"valid"``: windows inside the input, ``(size - k) // stride + 1``;
    ``"same"``: ``ceil(size / stride)`` windows, the padding split with the
    odd element after.
    """
    if padding == "valid":
        return (size - k) // stride + 1, 0
    out = -(-size // stride)
    return out, max((out - 1) * stride + k - size, 0) // 2


def _geometry(x, pool, strides, padding, data_format, fn):
    """Checked options and ``(nhwc view, (kh, kw, sh, sw, pt, pl, ho, wo), channels_first)``."""
    if np.ndim(x) != 4:
        raise ValueError(f"{fn}: needs a 4-D input (batch, rows, cols, channels) or, with "
                         f"data_format='channels_first', (batch, channels, rows, cols); "
                         f"got shape {np.shape(x)}")
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"{fn}: padding must be 'valid' or 'same', got {padding!r}")
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"{fn}: data_format must be 'channels_last' or 'channels_first', "
                         f"got {data_format!r}")
    cf = data_format == "channels_first"
    shape = np.shape(x)
    n, h, w, c = (shape[0], shape[2], shape[3], shape[1]) if cf else shape
    kh, kw = pool
    sh, sw = strides
    ho, pt = window(h, kh, sh, padding)
    wo, pl = window(w, kw, sw, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"{fn}: a {kh}x{kw} window does not fit in {h}x{w} inputs with "
                         f"padding='valid'; use padding='same' or a smaller window")
    return (kh, kw, sh, sw, pt, pl, ho, wo), cf


def _float_type(*arrays):
    """The arrays' common dtype, float64 where that is not a float (uint8
    images): sums and means of integers are not integers."""
    dtype = np.result_type(*arrays)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def _nhwc(a, cf):
    return a.transpose(0, 2, 3, 1) if cf else a


def _empty(n, ho, wo, c, dtype, cf):
    """A new array in the caller's layout and its NHWC view."""
    if cf:
        out = np.empty((n, c, ho, wo), dtype)
        return out, out.transpose(0, 2, 3, 1)
    out = np.empty((n, ho, wo, c), dtype)
    return out, out


class Conv2D(Function):
    """2-D convolution with an optional fused ReLU, in blocks of samples; see :func:`conv2d`."""

    @staticmethod
    def forward(ctx, x, kernel, bias=None, geometry=None, channels_first=False, relu=False):
        ho, wo = geometry[6:]
        dtype = _float_type(x, kernel, *(() if bias is None else (bias,)))
        xv = _nhwc(x, channels_first).astype(dtype, copy=False)
        y = np.empty((xv.shape[0], ho, wo, kernel.shape[3]), dtype)
        conv2d_forward(xv, kernel, bias, geometry, relu, y)
        ctx.save_for_backward(xv, kernel, y if relu else None)
        ctx.geometry, ctx.channels_first, ctx.relu = geometry, channels_first, relu
        ctx.x_dtype = x.dtype
        if channels_first:
            y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
        return y

    @staticmethod
    def backward(ctx, grad):
        xv, kernel, y = ctx.saved_tensors
        nx, nk, nb = ctx.needs_input_grad
        cf = ctx.channels_first
        dx, dxv = (_empty(*xv.shape, xv.dtype, cf) if nx else (None, None))
        dk, db = conv2d_backward(xv, kernel, y, _nhwc(grad, cf), ctx.geometry, ctx.relu, nx,
                                 dxv)
        return (dx.astype(ctx.x_dtype, copy=False) if nx else None,
                dk.reshape(kernel.shape).astype(kernel.dtype, copy=False) if nk else None,
                db if nb else None)


class MaxPool2D(Function):
    """Window maxima, the gradient to each window's first maximum; see :func:`max_pool2d`."""

    @staticmethod
    def forward(ctx, x, geometry=None, channels_first=False):
        kh, kw, sh, sw, pt, pl, ho, wo = geometry
        xv = _nhwc(x, channels_first)
        y, yv = _empty(xv.shape[0], ho, wo, xv.shape[3], x.dtype, channels_first)
        ctx.arg = max_pool_forward(xv, kh, kw, sh, sw, pt, pl, yv)
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        ctx.geometry, ctx.channels_first = geometry, channels_first
        return y

    @staticmethod
    def backward(ctx, grad):
        kh, kw, sh, sw, pt, pl, _, _ = ctx.geometry
        dx = np.empty(ctx.x_shape, ctx.x_dtype)
        max_pool_backward(_nhwc(grad, ctx.channels_first), ctx.arg, kh, kw, sh, sw, pt, pl,
                          _nhwc(dx, ctx.channels_first))
        return dx


class AvgPool2D(Function):
    """Window means over the inputs each window covers; see :func:`avg_pool2d`."""

    @staticmethod
    def forward(ctx, x, geometry=None, channels_first=False):
        kh, kw, sh, sw, pt, pl, ho, wo = geometry
        xv = _nhwc(x, channels_first)
        y, yv = _empty(xv.shape[0], ho, wo, xv.shape[3], _float_type(x), channels_first)
        avg_pool_forward(xv, kh, kw, sh, sw, pt, pl, yv)
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        ctx.geometry, ctx.channels_first = geometry, channels_first
        return y

    @staticmethod
    def backward(ctx, grad):
        kh, kw, sh, sw, pt, pl, _, _ = ctx.geometry
        dx = np.empty(ctx.x_shape, _float_type(np.empty(0, ctx.x_dtype)))
        avg_pool_backward(_nhwc(grad, ctx.channels_first), kh, kw, sh, sw, pt, pl,
                          _nhwc(dx, ctx.channels_first))
        return dx


class GlobalAvgPool2D(Function):
    """The mean over rows and columns; see :func:`global_average_pool2d`."""

    @staticmethod
    def forward(ctx, x, channels_first=False, keepdims=False):
        axes = (2, 3) if channels_first else (1, 2)
        ctx.x_shape, ctx.axes = x.shape, axes
        return np.mean(x, axis=axes, keepdims=keepdims, dtype=np.float64).astype(_float_type(x))

    @staticmethod
    def backward(ctx, grad):
        shape, axes = ctx.x_shape, ctx.axes
        g = grad if grad.ndim == 4 else np.expand_dims(grad, axes)
        return np.broadcast_to(g / (shape[axes[0]] * shape[axes[1]]), shape).copy()


def conv2d(x, kernel, bias=None, strides=1, padding="valid", data_format="channels_last",
           activation=None):
    r"""2-D convolution of a batch of images with gradients for all three inputs.

    Keras' ``Conv2D`` without the activation: cross-correlation,

    .. math:: y_{n,i,j,f} = b_f + \sum_{p,q,c} x_{n,\,i s_h + p - p_t,\,j s_w + q - p_l,\,c}
              \, K_{p,q,c,f}

    with zeros outside ``x``. Computed as one BLAS matrix product each for
    ``y``, ``dK`` and ``dx`` (see Notes).

    Parameters
    ----------
    x : Tensor or ndarray
        ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``data_format="channels_first"``.
    kernel : Tensor or ndarray
        ``(kh, kw, C, F)`` (Keras' layout in both data formats).
    bias : Tensor, ndarray or None
        ``(F,)``.
    strides : int or pair of int, default 1
    padding : {"valid", "same"}, default "valid"
        ``"valid"``: windows inside ``x`` only, ``(H - kh) // sh + 1`` rows;
        ``"same"``: ``ceil(H / sh)`` rows, zero padding split as in Keras (the
        odd row after).
    data_format : {"channels_last", "channels_first"}, default "channels_last"
    activation : {None, "relu"}, default None
        ``"relu"`` applies ReLU in the pass that adds the bias.

    Returns
    -------
    Tensor
        ``(N, ho, wo, F)``, or ``(N, F, ho, wo)`` for channels-first, C-contiguous.

    Raises
    ------
    ValueError
        For inputs that are not 4-D, a kernel whose channels differ from the
        input's, a bias that is not ``(F,)``, an unknown padding or data
        format, or a window that does not fit with ``"valid"``.

    Notes
    -----
    With ``cols`` the ``(rows, kh*kw*C)`` windows of a block of samples
    (im2col) and ``K`` the ``(kh, kw, C, F)`` kernel read as ``(kh*kw*C, F)``:

    .. math:: y = \mathrm{cols}\, K + b, \quad
              dK = \textstyle\sum_\mathrm{blocks} \mathrm{cols}^T dy, \quad
              db = \textstyle\sum dy, \quad
              dx = \mathrm{col2im}(dy\, K^T)

    Each block's windows, products (BLAS, one thread) and bias are done by
    one thread while they are in its cache, the blocks shared by
    :func:`fastbn._config.threads` threads; kernels of few taps (a first
    layer on one channel) are summed window by window instead.
    ``activation="relu"`` applies ReLU in the same pass as the bias (the
    gradient is masked by the output), which ``nn.Conv2D(..., activation="relu")``
    uses. The kernel and bias gradients are the same bits for any thread count.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, conv2d
    >>> x = Tensor(np.arange(9.0).reshape(1, 3, 3, 1))
    >>> k = Tensor(np.ones((2, 2, 1, 1)), requires_grad=True)
    >>> y = conv2d(x, k)
    >>> y.data[0, :, :, 0]
    array([[ 8., 12.],
           [20., 24.]])
    >>> y.sum().backward()
    >>> k.grad[:, :, 0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    >>> conv2d(x, k, padding="same").shape
    (1, 3, 3, 1)
    """
    fn = "conv2d"
    if np.ndim(kernel) != 4:
        raise ValueError(f"{fn}: kernel must be (rows, cols, in_channels, filters), got "
                         f"shape {np.shape(kernel)}")
    kshape = np.shape(kernel)
    geometry, cf = _geometry(x, kshape[:2], pair(strides, "strides", fn), padding,
                             data_format, fn)
    channels = np.shape(x)[1 if cf else 3]
    if kshape[2] != channels:
        raise ValueError(f"{fn}: the kernel takes {kshape[2]} input channels but x has "
                         f"{channels} (shape {np.shape(x)}, {data_format})")
    if bias is not None and np.shape(bias) != (kshape[3],):
        raise ValueError(f"{fn}: bias must have shape ({kshape[3]},), one per filter, got "
                         f"{np.shape(bias)}")
    if activation not in (None, "relu"):
        raise ValueError(f"{fn}: activation must be None or 'relu', got {activation!r}")
    if type(x) is not Tensor:
        x = np.asarray(x)
    return Conv2D.apply(x, kernel, bias, geometry=geometry, channels_first=cf,
                        relu=activation == "relu")


def _pool(cls, fn, x, pool_size, strides, padding, data_format):
    pool = pair(pool_size, "pool_size", fn)
    strides = pool if strides is None else pair(strides, "strides", fn)
    geometry, cf = _geometry(x, pool, strides, padding, data_format, fn)
    if type(x) is not Tensor:
        x = np.asarray(x)
    return cls.apply(x, geometry=geometry, channels_first=cf)


def max_pool2d(x, pool_size=2, strides=None, padding="valid", data_format="channels_last"):
    """The maximum of each ``pool_size`` window (Keras' ``MaxPooling2D``).

    Parameters
    ----------
    x : Tensor or ndarray
        ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``data_format="channels_first"``.
    pool_size : int or pair of int, default 2
    strides : int, pair of int or None
        Default: ``pool_size``.
    padding : {"valid", "same"}, default "valid"
        As in :func:`conv2d`; padded places never win the maximum.
    data_format : {"channels_last", "channels_first"}, default "channels_last"

    Returns
    -------
    Tensor
        In ``x``'s layout; the gradient reaches each window's first maximum
        (PyTorch's and TensorFlow's choice for ties).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, max_pool2d
    >>> x = Tensor(np.array([[1.0, 5, 2], [4, 3, 0], [7, 8, 9]]).reshape(1, 3, 3, 1),
    ...            requires_grad=True)
    >>> max_pool2d(x).data.ravel()                     # 'valid' drops the last row and column
    array([5.])
    >>> max_pool2d(x, padding="same").data.ravel()
    array([5., 2., 8., 9.])
    >>> max_pool2d(x).sum().backward()
    >>> x.grad[0, :, :, 0]
    array([[0., 1., 0.],
           [0., 0., 0.],
           [0., 0., 0.]])
    """
    return _pool(MaxPool2D, "max_pool2d", x, pool_size, strides, padding, data_format)


def avg_pool2d(x, pool_size=2, strides=None, padding="valid", data_format="channels_last"):
    """The mean of each ``pool_size`` window (Keras' ``AveragePooling2D``).

    Parameters
    ----------
    x : Tensor or ndarray
        ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``data_format="channels_first"``.
    pool_size : int or pair of int, default 2
    strides : int, pair of int or None
        Default: ``pool_size``.
    padding : {"valid", "same"}, default "valid"
        As in :func:`conv2d`; a window's mean is over the inputs it covers,
        padding not counted (Keras).
    data_format : {"channels_last", "channels_first"}, default "channels_last"

    Returns
    -------
    Tensor
        In ``x``'s layout.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, avg_pool2d
    >>> x = Tensor(np.arange(9.0).reshape(1, 3, 3, 1))
    >>> avg_pool2d(x, padding="same").data[0, :, :, 0]
    array([[2. , 3.5],
           [6.5, 8. ]])
    """
    return _pool(AvgPool2D, "avg_pool2d", x, pool_size, strides, padding, data_format)


def global_average_pool2d(x, data_format="channels_last", keepdims=False):
    """The mean over rows and columns, per sample and channel (Keras'
    ``GlobalAveragePooling2D``).

    Parameters
    ----------
    x : Tensor or ndarray
        ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``data_format="channels_first"``.
    data_format : {"channels_last", "channels_first"}, default "channels_last"
    keepdims : bool, default False
        Keep the rows and columns axes as length 1.

    Returns
    -------
    Tensor
        ``(N, C)`` (summed in float64).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, global_average_pool2d
    >>> global_average_pool2d(np.arange(8.0).reshape(1, 2, 2, 2))
    Tensor([[3., 4.]])
    """
    fn = "global_average_pool2d"
    if np.ndim(x) != 4:
        raise ValueError(f"{fn}: needs a 4-D input, got shape {np.shape(x)}")
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"{fn}: data_format must be 'channels_last' or 'channels_first', "
                         f"got {data_format!r}")
    if type(x) is not Tensor:
        x = np.asarray(x)
    return GlobalAvgPool2D.apply(x, channels_first=data_format == "channels_first",
                                 keepdims=bool(keepdims))
