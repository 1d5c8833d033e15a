r"""Differentiable operations: one :class:`~fastbn.autograd.Function` each.

Every op is a ``Function`` subclass (``Add``, ``MatMul``, ``BatchNorm`` ...)
and a lowercase function that applies it (``add``, ``matmul``,
``batch_norm`` ...). Inputs may be tensors, arrays or Python numbers; Python
numbers keep the tensor's dtype (NumPy's weak scalars), so float32 stays
float32. Broadcasting ops reduce their gradients with
:func:`~fastbn.autograd.unbroadcast`.

``batch_norm`` calls :func:`fastbn.functional.batch_norm_forward` and
:func:`fastbn.functional.batch_norm_backward` (the kernels' analytic
gradient); it is never decomposed into the primitive ops here.
"""
import numpy as np

from .. import _activations, _conv, functional
from .tensor import Function, Tensor, primitive, unbroadcast

__all__ = [
    "add", "sub", "mul", "div", "neg", "matmul", "sum", "mean", "reshape", "transpose",
    "relu", "leaky_relu", "elu", "tanh", "sigmoid", "softmax", "log_softmax",
    "sparse_categorical_crossentropy", "softmax_sparse_categorical_crossentropy",
    "dropout", "batch_norm", "dense", "conv2d", "max_pool2d", "avg_pool2d",
    "global_average_pool2d", "abs", "selu", "gelu", "silu", "swish", "softplus",
    "categorical_crossentropy", "binary_crossentropy",
    "Add", "Sub", "Mul", "Div", "Neg", "MatMul", "Sum", "Mean", "Reshape", "Transpose",
    "ReLU", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax",
    "SparseCategoricalCrossentropy", "SoftmaxSparseCategoricalCrossentropy",
    "Dropout", "BatchNorm", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D",
    "Abs", "SELU", "GELU", "SiLU", "Softplus", "CategoricalCrossentropy", "BinaryCrossentropy",
]

_py_sum = sum


def _operand(x, like):
    """A non-tensor operand in a form that keeps ``like``'s dtype.

    Python numbers stay Python numbers (weak in NumPy 2's promotion, so
    ``float32 * 2.0`` is float32); everything else becomes an ndarray.
    """
    if type(x) is Tensor or isinstance(x, (int, float)):
        return x
    return np.asarray(x)


def _binary(cls, a, b):
    if type(a) is not Tensor:
        a = _operand(a, b)
    if type(b) is not Tensor:
        b = _operand(b, a)
    return cls.apply(a, b)


def _shape(x):
    return np.shape(x)


# --------------------------------------------------------------- arithmetic
class Add(Function):
    """``a + b`` with broadcasting.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Add, Tensor
    >>> Add.apply(Tensor(np.array([1.0, 2.0])), 1.0)
    Tensor([2., 3.])
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (unbroadcast(grad, sa) if na else None,
                unbroadcast(grad, sb) if nb else None)


class Sub(Function):
    """``a - b`` with broadcasting.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Sub, Tensor
    >>> Sub.apply(Tensor(np.array([1.0, 2.0])), 1.0)
    Tensor([0., 1.])
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (unbroadcast(grad, sa) if na else None,
                unbroadcast(-grad, sb) if nb else None)


class Mul(Function):
    """``a * b`` with broadcasting.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Mul, Tensor
    >>> Mul.apply(Tensor(np.array([1.0, 2.0])), 3.0)
    Tensor([3., 6.])
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (unbroadcast(grad * b, _shape(a)) if na else None,
                unbroadcast(grad * a, _shape(b)) if nb else None)


class Div(Function):
    """``a / b`` with broadcasting.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Div, Tensor
    >>> Div.apply(Tensor(np.array([1.0, 2.0])), 4.0)
    Tensor([0.25, 0.5 ])
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.divide(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = grad / b
        return (unbroadcast(ga, _shape(a)) if na else None,
                unbroadcast(-ga * a / b, _shape(b)) if nb else None)


class Neg(Function):
    """``-x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Neg, Tensor
    >>> Neg.apply(Tensor(np.array([1.0, -2.0])))
    Tensor([-1.,  2.])
    """

    @staticmethod
    def forward(ctx, x):
        return np.negative(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def add(a, b):
    """Elementwise ``a + b`` with NumPy broadcasting.

    Parameters
    ----------
    a, b : Tensor, array_like or number

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, add
    >>> b = Tensor(np.zeros(3), requires_grad=True)
    >>> add(np.ones((2, 3)), b).sum().backward()
    >>> b.grad                      # summed over the broadcast axis
    array([2., 2., 2.])
    """
    return _binary(Add, a, b)


def sub(a, b):
    """Elementwise ``a - b`` with NumPy broadcasting.

    Parameters
    ----------
    a, b : Tensor, array_like or number
        The operands; Python numbers keep the tensor operand's dtype.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, sub
    >>> b = Tensor(np.array([1.0]), requires_grad=True)
    >>> sub(np.ones(4), b).sum().backward()
    >>> b.grad
    array([-4.])
    """
    return _binary(Sub, a, b)


def mul(a, b):
    """Elementwise ``a * b`` with NumPy broadcasting.

    Parameters
    ----------
    a, b : Tensor, array_like or number
        The operands; Python numbers keep the tensor operand's dtype.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, mul
    >>> a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    >>> mul(a, 3.0).sum().backward()
    >>> a.grad
    array([3., 3.])
    """
    return _binary(Mul, a, b)


def div(a, b):
    """Elementwise ``a / b`` with NumPy broadcasting.

    Parameters
    ----------
    a, b : Tensor, array_like or number
        The operands; Python numbers keep the tensor operand's dtype.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, div
    >>> b = Tensor(np.array([2.0]), requires_grad=True)
    >>> div(1.0, b).sum().backward()     # d(1/b)/db = -1/b**2
    >>> b.grad
    array([-0.25])
    """
    return _binary(Div, a, b)


def neg(x):
    """Elementwise ``-x``.

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, neg
    >>> neg(Tensor(np.array([1.0, -2.0])))
    Tensor([-1.,  2.])
    """
    return Neg.apply(x)


# ------------------------------------------------------------------- linear
class MatMul(Function):
    """``a @ b`` (NumPy's matmul: 1-D operands promoted, batch axes broadcast).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import MatMul, Tensor
    >>> MatMul.apply(Tensor(np.array([[1.0, 2.0]])), np.array([[3.0], [4.0]]))
    Tensor([[11.]])
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad
        if a.ndim == 1:
            g = np.expand_dims(g, -2)
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        ga = gb = None
        if na:
            ga = unbroadcast(np.matmul(g, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        if nb:
            gb = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), g), b2.shape).reshape(b.shape)
        return ga, gb


def matmul(a, b):
    """Matrix product ``a @ b`` with NumPy's rules.

    Parameters
    ----------
    a, b : Tensor, array_like or number
        The operands; Python numbers keep the tensor operand's dtype.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, matmul
    >>> w = Tensor(np.eye(2), requires_grad=True)
    >>> matmul(np.array([[1.0, 2.0]]), w).sum().backward()
    >>> w.grad
    array([[1., 1.],
           [2., 2.]])
    """
    return _binary(MatMul, a, b)


class Dense(Function):
    """``x @ kernel + bias`` on the last axis of ``x``: one op instead of two.

    A Keras ``Dense`` step at batch 32 is a BLAS call plus Python overhead,
    so one tape node instead of ``matmul`` + ``add`` saves a node per layer,
    and ``dx`` is skipped when ``x`` needs no gradient (the first layer's
    input): 87 us of 0.3 ms of matmuls per step for (32, 784) x (784, 300).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Dense, Tensor
    >>> Dense.apply(np.array([[1.0, 2.0]]), Tensor(np.array([[3.0], [4.0]])), Tensor(np.ones(1)))
    Tensor([[12.]])
    """

    @staticmethod
    def forward(ctx, x, kernel, bias=None):
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
        y = x2 @ kernel
        if bias is not None:
            y += bias
        ctx.save_for_backward(x2, kernel)
        ctx.xshape = x.shape
        return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (kernel.shape[1],))

    @staticmethod
    def backward(ctx, grad):
        x2, kernel = ctx.saved_tensors
        nx, nk, nb = (ctx.needs_input_grad + (False,))[:3]
        g2 = grad if grad.ndim == 2 else grad.reshape(-1, grad.shape[-1])
        gx = (g2 @ kernel.T).reshape(ctx.xshape) if nx else None
        gk = x2.T @ g2 if nk else None
        gb = g2.sum(axis=0) if nb else None
        return (gx, gk, gb) if len(ctx.needs_input_grad) == 3 else (gx, gk)


def dense(x, kernel, bias=None):
    """Affine map on the last axis: ``x @ kernel + bias`` (Keras' Dense).

    Parameters
    ----------
    x : Tensor or array_like
        ``(..., in)``.
    kernel : Tensor
        ``(in, out)``.
    bias : Tensor, optional
        ``(out,)``.

    Returns
    -------
    Tensor
        ``(..., out)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, dense
    >>> k = Tensor(np.array([[1.0], [2.0]]), requires_grad=True)
    >>> b = Tensor(np.array([0.5]), requires_grad=True)
    >>> y = dense(np.array([[1.0, 1.0], [0.0, 1.0]]), k, b)
    >>> y
    Tensor([[3.5],
            [2.5]], requires_grad=True)
    >>> y.sum().backward()
    >>> k.grad.ravel(), b.grad
    (array([1., 2.]), array([2.]))
    """
    if type(x) is not Tensor:
        x = np.asarray(x)
    if bias is None:
        return Dense.apply(x, kernel)
    return Dense.apply(x, kernel, bias)


# --------------------------------------------------------------- reductions
def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes))


class Sum(Function):
    """Sum over ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Sum, Tensor
    >>> Sum.apply(Tensor(np.ones((2, 3))), axis=0)
    Tensor([2., 2., 2.])
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, _axes(axis, x.ndim), keepdims
        return np.asarray(np.sum(x, axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, grad):
        if not ctx.keepdims:
            grad = np.expand_dims(grad, ctx.axes)
        return np.broadcast_to(grad, ctx.shape)


class Mean(Function):
    """Mean over ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Mean, Tensor
    >>> Mean.apply(Tensor(np.arange(6.0).reshape(2, 3)), axis=1)
    Tensor([1., 4.])
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, _axes(axis, x.ndim), keepdims
        return np.asarray(np.mean(x, axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, grad):
        if not ctx.keepdims:
            grad = np.expand_dims(grad, ctx.axes)
        n = 1
        for a in ctx.axes:
            n *= ctx.shape[a]
        return np.broadcast_to(grad / max(n, 1), ctx.shape)


def sum(x, axis=None, keepdims=False):  # noqa: A001  (NumPy's name)
    """Sum over ``axis`` (None: all axes), as :func:`numpy.sum`.

    Parameters
    ----------
    x : Tensor or array_like
    axis : int or tuple of ints, optional
        The axes to reduce; all axes when None.
    keepdims : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, sum
    >>> x = Tensor(np.ones((2, 3)), requires_grad=True)
    >>> sum(x, axis=1)
    Tensor([3., 3.], requires_grad=True)
    """
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean over ``axis`` (None: all axes), as :func:`numpy.mean`.

    Parameters
    ----------
    x : Tensor or array_like
    axis : int or tuple of ints, optional
        The axes to reduce; all axes when None.
    keepdims : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, mean
    >>> x = Tensor(np.arange(4.0), requires_grad=True)
    >>> mean(x).backward()
    >>> x.grad
    array([0.25, 0.25, 0.25, 0.25])
    """
    return Mean.apply(x, axis=axis, keepdims=keepdims)


# ------------------------------------------------------------------- shapes
class Reshape(Function):
    """``x.reshape(shape)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Reshape, Tensor
    >>> Reshape.apply(Tensor(np.arange(6.0)), (3, 2)).shape
    (3, 2)
    """

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape), None


class Transpose(Function):
    """``x.transpose(axes)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, Transpose
    >>> Transpose.apply(Tensor(np.zeros((2, 3))), (1, 0)).shape
    (3, 2)
    """

    @staticmethod
    def forward(ctx, x, axes=None):
        ctx.inverse = None if axes is None else tuple(np.argsort(axes))
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, ctx.inverse), None


def reshape(x, shape):
    """``x`` with a new shape (a view where NumPy can make one).

    Parameters
    ----------
    x : Tensor or array_like
    shape : int or tuple of ints
        The new shape; one entry may be -1.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, reshape
    >>> reshape(Tensor(np.arange(6.0)), (2, -1)).shape
    (2, 3)
    """
    return Reshape.apply(x, tuple(shape) if not isinstance(shape, int) else (shape,))


def transpose(x, axes=None):
    """``x`` with its axes permuted (reversed when ``axes`` is None).

    Parameters
    ----------
    x : Tensor or array_like
    axes : tuple of ints, optional
        A permutation of ``range(x.ndim)``; reversed order when None.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, transpose
    >>> transpose(Tensor(np.zeros((2, 3, 4))), (1, 2, 0)).shape
    (3, 4, 2)
    """
    return Transpose.apply(x, None if axes is None else tuple(axes))


# -------------------------------------------------------------- activations
class ReLU(Function):
    """``max(x, 0)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import ReLU, Tensor
    >>> ReLU.apply(Tensor(np.array([-1.0, 2.0])))
    Tensor([0., 2.])
    """

    @staticmethod
    def forward(ctx, x):
        y = np.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (y > 0)


class LeakyReLU(Function):
    """``x`` where positive, ``negative_slope * x`` elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import LeakyReLU, Tensor
    >>> LeakyReLU.apply(Tensor(np.array([-1.0, 2.0])), negative_slope=0.1)
    Tensor([-0.1,  2. ])
    """

    @staticmethod
    def forward(ctx, x, negative_slope=0.2):
        ctx.save_for_backward(x)
        ctx.slope = negative_slope
        return np.where(x > 0, x, x * np.asarray(negative_slope, x.dtype))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return np.where(x > 0, grad, grad * np.asarray(ctx.slope, grad.dtype))


class ELU(Function):
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import ELU, Tensor
    >>> ELU.apply(Tensor(np.array([0.0, 2.0])))
    Tensor([0., 2.])
    """

    @staticmethod
    def forward(ctx, x, alpha=1.0):
        ctx.alpha = alpha
        if x.dtype == np.float32:
            # a vectorized kernel: 5x faster than np.expm1 on (32, 300)
            y = _activations.elu_forward(x, alpha)
            ctx.save_for_backward(x, y)
            return y
        pos = x > 0
        y = np.expm1(np.minimum(x, 0))    # no overflow warnings for large positive x
        if alpha != 1.0:
            y *= np.asarray(alpha, x.dtype)
        np.copyto(y, x, where=pos)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        # d/dx alpha (e^x - 1) = alpha e^x = y + alpha on the negative side
        if x.dtype == np.float32 and grad.dtype == np.float32:
            return _activations.elu_backward(x, grad, ctx.alpha)
        d = y + np.asarray(ctx.alpha, y.dtype)
        np.copyto(d, 1, where=x > 0)
        d *= grad
        return d


class Tanh(Function):
    """Hyperbolic tangent.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tanh, Tensor
    >>> Tanh.apply(Tensor(np.array([0.0])))
    Tensor([0.])
    """

    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class Sigmoid(Function):
    """Logistic sigmoid ``1 / (1 + exp(-x))``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Sigmoid, Tensor
    >>> Sigmoid.apply(Tensor(np.array([0.0])))
    Tensor([0.5])
    """

    @staticmethod
    def forward(ctx, x):
        # exp of a non-positive number only: no overflow for large |x|
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y * (1 - y)


class Softmax(Function):
    """``exp(x) / sum(exp(x))`` along ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Softmax, Tensor
    >>> Softmax.apply(Tensor(np.zeros((1, 4))))
    Tensor([[0.25, 0.25, 0.25, 0.25]])
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(e)
        ctx.axis = axis
        return e

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        gy = grad * y
        return gy - y * gy.sum(axis=ctx.axis, keepdims=True)


class LogSoftmax(Function):
    """``x - log(sum(exp(x)))`` along ``axis``, without overflow.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import LogSoftmax, Tensor
    >>> np.exp(LogSoftmax.apply(Tensor(np.zeros((1, 2)))).data)
    array([[0.5, 0.5]])
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        z = x - x.max(axis=axis, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(z)
        ctx.axis = axis
        return z

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad - np.exp(z) * grad.sum(axis=ctx.axis, keepdims=True)


def relu(x):
    """Rectified linear unit, ``max(x, 0)``.

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, relu
    >>> relu(Tensor(np.array([-1.0, 2.0])))
    Tensor([0., 2.])
    """
    return ReLU.apply(x)


def leaky_relu(x, negative_slope=0.2):
    """Leaky ReLU: ``x`` where positive, ``negative_slope * x`` elsewhere.

    The default slope is Keras' ``activations.leaky_relu`` (0.2); the
    ``LeakyReLU`` layer defaults to 0.3, as in Keras.

    Parameters
    ----------
    x : Tensor or array_like
    negative_slope : float, default 0.2
        The slope for negative inputs.

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, leaky_relu
    >>> leaky_relu(Tensor(np.array([-1.0, 2.0])))
    Tensor([-0.2,  2. ])
    """
    return LeakyReLU.apply(x, negative_slope=negative_slope)


def elu(x, alpha=1.0):
    r"""Exponential linear unit.

    .. math:: \mathrm{elu}(x) = x \ (x > 0), \qquad \alpha (e^x - 1) \ (x \le 0)

    Parameters
    ----------
    x : Tensor or array_like
    alpha : float, default 1.0
        The value that the output approaches for large negative ``x`` is ``-alpha``.

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, elu
    >>> elu(Tensor(np.array([-1.0, 2.0])))
    Tensor([-0.63212056,  2.        ])
    """
    return ELU.apply(x, alpha=alpha)


def tanh(x):
    """Hyperbolic tangent.

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, tanh
    >>> tanh(Tensor(np.array([0.0])))
    Tensor([0.])
    """
    return Tanh.apply(x)


def sigmoid(x):
    """Logistic sigmoid, ``1 / (1 + exp(-x))``, stable for large ``|x|``.

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, sigmoid
    >>> sigmoid(Tensor(np.array([0.0, -1000.0])))
    Tensor([0.5, 0. ])
    """
    return Sigmoid.apply(x)


def softmax(x, axis=-1):
    r"""Softmax along ``axis``: :math:`e^{x_i} / \sum_j e^{x_j}` (max subtracted first).

    Parameters
    ----------
    x : Tensor or array_like
    axis : int, default -1
        The axis along which the entries sum to one.

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, softmax
    >>> softmax(Tensor(np.array([[0.0, np.log(3.0)]])))
    Tensor([[0.25, 0.75]])
    """
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    r"""Log of the softmax along ``axis``, :math:`x_i - \log\sum_j e^{x_j}`, stable.

    Parameters
    ----------
    x : Tensor or array_like
    axis : int, default -1
        The axis along which the entries sum to one.

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, log_softmax
    >>> log_softmax(Tensor(np.array([[1000.0, 1000.0]])))
    Tensor([[-0.69314718, -0.69314718]])
    """
    return LogSoftmax.apply(x, axis=axis)


@primitive
def Abs(ctx, x):
    """``|x|``; the gradient at 0 is 0 (NumPy's ``sign``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Abs, Tensor
    >>> Abs.apply(Tensor(np.array([-1.0, 2.0])))
    Tensor([1., 2.])
    """
    ctx.save_for_backward(x)
    return np.abs(x)


@Abs.defvjp
def _(ctx, grad):
    (x,) = ctx.saved_tensors
    return grad * np.sign(x)


#: Keras' (and Klambauer et al.'s) SELU constants.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@primitive
def SELU(ctx, x):
    r"""Scaled ELU: :math:`\lambda x` for :math:`x > 0`, :math:`\lambda\alpha(e^x - 1)` elsewhere.

    :math:`\alpha \approx 1.6733`, :math:`\lambda \approx 1.0507` (Keras' constants).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import SELU, Tensor
    >>> SELU.apply(Tensor(np.array([0.0, 1.0])))
    Tensor([0.        , 1.05070099])
    """
    e = np.expm1(np.minimum(x, 0))          # no overflow warnings for large positive x
    y = np.where(x > 0, x, e * np.asarray(SELU_ALPHA, x.dtype)) * np.asarray(SELU_SCALE,
                                                                             x.dtype)
    ctx.save_for_backward(x, e)
    return y


@SELU.defvjp
def _(ctx, grad):
    x, e = ctx.saved_tensors
    d = np.where(x > 0, np.asarray(SELU_SCALE, x.dtype),
                 (e + 1) * np.asarray(SELU_SCALE * SELU_ALPHA, x.dtype))
    return grad * d


@primitive
def GELU(ctx, x, approximate=False):
    r"""Gaussian error linear unit, :math:`x\,\Phi(x)` (``approximate=False``, Keras' default).

    ``approximate=True`` is the tanh form
    :math:`\tfrac12 x (1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import GELU, Tensor
    >>> GELU.apply(Tensor(np.array([0.0, 1.0])))
    Tensor([0.        , 0.84134475])
    """
    ctx.approximate = approximate
    ctx.save_for_backward(x)
    if not approximate:
        return _activations.gelu_forward(x)
    c = np.asarray(np.sqrt(2 / np.pi), x.dtype)
    t = np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x ** 3))
    ctx.t = t
    return 0.5 * x * (1 + t)


@GELU.defvjp
def _(ctx, grad):
    (x,) = ctx.saved_tensors
    if not ctx.approximate:
        return _activations.gelu_backward(x, grad)
    t = ctx.t
    c = np.asarray(np.sqrt(2 / np.pi), x.dtype)
    du = c * (1 + np.asarray(3 * 0.044715, x.dtype) * x * x)
    return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)


def _sigmoid(x):
    e = np.exp(-np.abs(x))                       # exp of a non-positive number only
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@primitive
def SiLU(ctx, x):
    """Swish / SiLU, ``x * sigmoid(x)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import SiLU, Tensor
    >>> SiLU.apply(Tensor(np.array([0.0, 1.0])))
    Tensor([0.        , 0.73105858])
    """
    s = _sigmoid(x)
    ctx.save_for_backward(x, s)
    return x * s


@SiLU.defvjp
def _(ctx, grad):
    x, s = ctx.saved_tensors
    return grad * (s * (1 + x * (1 - s)))


@primitive
def Softplus(ctx, x):
    """``log(1 + exp(x))``, computed as ``max(x, 0) + log1p(exp(-|x|))`` (no overflow).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Softplus, Tensor
    >>> Softplus.apply(Tensor(np.array([0.0, 1000.0])))
    Tensor([6.93147181e-01, 1.00000000e+03])
    """
    ctx.save_for_backward(x)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


@Softplus.defvjp
def _(ctx, grad):
    (x,) = ctx.saved_tensors
    return grad * _sigmoid(x)


def abs(x):  # noqa: A001  (NumPy's name)
    """Absolute value, ``|x|``.

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, abs
    >>> abs(Tensor(np.array([-1.0, 2.0])))
    Tensor([1., 2.])
    """
    return Abs.apply(x)


def selu(x):
    r"""Scaled exponential linear unit (Keras' ``selu``).

    .. math:: \mathrm{selu}(x) = \lambda x \ (x > 0), \qquad \lambda \alpha (e^x - 1) \ (x \le 0)

    with :math:`\alpha = 1.67326324` and :math:`\lambda = 1.05070098`.

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, selu
    >>> selu(Tensor(np.array([-1.0, 1.0])))
    Tensor([-1.11133074,  1.05070099])
    """
    return SELU.apply(x)


def gelu(x, approximate=False):
    r"""Gaussian error linear unit, :math:`x\,\Phi(x)` (Keras' ``gelu``).

    Parameters
    ----------
    x : Tensor or array_like
    approximate : bool, default False
        Use the tanh approximation instead of the exact ``erf`` form.

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, gelu
    >>> gelu(Tensor(np.array([-1.0, 1.0])))
    Tensor([-0.15865525,  0.84134475])
    """
    return GELU.apply(x, approximate=bool(approximate))


def silu(x):
    """Swish / SiLU, ``x * sigmoid(x)`` (Keras' ``silu``, also named ``swish``).

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, silu
    >>> silu(Tensor(np.array([-1.0, 1.0])))
    Tensor([-0.26894142,  0.73105858])
    """
    return SiLU.apply(x)


swish = silu


def softplus(x):
    """``log(1 + exp(x))``, without overflow (Keras' ``softplus``).

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, softplus
    >>> softplus(Tensor(np.array([0.0])))
    Tensor([0.69314718])
    """
    return Softplus.apply(x)


# ------------------------------------------------------------------- losses
def _labels(labels, output_shape, fn):
    """Integer class indices shaped like ``output_shape[:-1]`` (a trailing 1 dropped)."""
    y = np.asarray(labels)
    if y.ndim == len(output_shape) and y.shape[-1:] == (1,):
        y = y[..., 0]
    if y.shape != output_shape[:-1]:
        raise ValueError(f"{fn}: labels have shape {y.shape}, but the predictions "
                         f"{output_shape}; pass one class index per row, shape "
                         f"{output_shape[:-1]}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.intp)
        else:
            raise TypeError(f"{fn}: labels must be integer class indices, got dtype {y.dtype}")
    k = output_shape[-1]
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{fn}: labels must be in [0, {k}) for {k} classes, got values "
                         f"from {y.min()} to {y.max()}")
    return y


def _pick(a, y):
    """``a[..., y]`` row by row: the entry of each row's label."""
    return np.take_along_axis(a, y[..., None], axis=-1)[..., 0]


class SparseCategoricalCrossentropy(Function):
    r"""Mean of ``-log p[label]`` over the rows, Keras' way.

    From probabilities (``from_logits=False``) Keras renormalizes each row,
    ``q = p / sum(p)``, clips ``q`` to ``[epsilon, 1 - epsilon]`` and takes
    ``-log q[y]``; the gradient is zero where the clip is active. From
    logits it is ``-log_softmax(z)[y]``, computed without overflow.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import SparseCategoricalCrossentropy, Tensor
    >>> p = Tensor(np.array([[0.5, 0.5], [0.25, 0.75]]))
    >>> loss = SparseCategoricalCrossentropy.apply(p, np.array([0, 1]))
    >>> bool(np.isclose(loss.data, -(np.log(0.5) + np.log(0.75)) / 2))
    True
    """

    @staticmethod
    def forward(ctx, output, labels, from_logits=False, epsilon=1e-7):
        fn = "sparse_categorical_crossentropy"
        y = _labels(labels, output.shape, fn)
        n = max(y.size, 1)
        ctx.from_logits, ctx.n = from_logits, n
        if from_logits:
            z = output - output.max(axis=-1, keepdims=True)
            z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
            ctx.save_for_backward(z, y)
            return np.asarray(-_pick(z, y).sum() / n, dtype=output.dtype)
        s = output.sum(axis=-1)
        qy = _pick(output, y) / s
        inside = (qy >= epsilon) & (qy <= 1 - epsilon)
        qc = np.clip(qy, epsilon, 1 - epsilon)
        ctx.save_for_backward(s, qy, inside, y)
        ctx.k, ctx.dtype = output.shape[-1], output.dtype
        return np.asarray(-np.log(qc).sum() / n, dtype=output.dtype)

    @staticmethod
    def backward(ctx, grad):
        if ctx.from_logits:
            z, y = ctx.saved_tensors
            d = np.exp(z)                                # softmax
            np.put_along_axis(d, y[..., None], _pick(d, y)[..., None] - 1, axis=-1)
            d *= grad / ctx.n
            return d, None
        s, qy, inside, y = ctx.saved_tensors
        # L_i = -log(q_iy), q = p / s:  dL_i/dp_ij = (1 - [j == y_i] / q_iy) / s_i,
        # and 0 on rows whose q_iy the clip holds
        row = np.divide(1.0, s, out=np.zeros_like(s), where=inside)
        d = np.empty(s.shape + (ctx.k,), ctx.dtype)
        d[...] = row[..., None]
        at_label = row - np.divide(row, qy, out=np.zeros_like(row), where=inside)
        np.put_along_axis(d, y[..., None], at_label[..., None].astype(ctx.dtype), axis=-1)
        d *= grad / ctx.n
        return d, None


class SoftmaxSparseCategoricalCrossentropy(Function):
    """``sparse_categorical_crossentropy(softmax(z), y)`` in one stable step.

    Equal to the composition (Keras' clip of the probability at
    ``[epsilon, 1 - epsilon]`` included) but computed from the logits: the
    log-probability comes from a log-sum-exp and the gradient is
    ``(softmax(z) - onehot(y)) / n`` (zero on rows whose probability is
    clipped), instead of ``-1/p`` pushed through the softmax Jacobian.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import SoftmaxSparseCategoricalCrossentropy, Tensor
    >>> z = Tensor(np.zeros((1, 2)), requires_grad=True)
    >>> loss = SoftmaxSparseCategoricalCrossentropy.apply(z, np.array([0]))
    >>> loss.backward()
    >>> z.grad                          # softmax(z) - onehot(y)
    array([[-0.5,  0.5]])
    """

    @staticmethod
    def forward(ctx, logits, labels, epsilon=1e-7):
        y = _labels(labels, logits.shape, "softmax_sparse_categorical_crossentropy")
        n = max(y.size, 1)
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=-1, keepdims=True)
        logp = _pick(z, y) - np.log(s[..., 0])
        lo, hi = np.log(epsilon), np.log1p(-epsilon)
        inside = (logp >= lo) & (logp <= hi)
        e /= s
        ctx.save_for_backward(e, y, inside)
        ctx.n = n
        return np.asarray(-np.clip(logp, lo, hi).sum() / n, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad):
        p, y, inside = ctx.saved_tensors
        d = p.copy()
        np.put_along_axis(d, y[..., None], _pick(p, y)[..., None] - 1, axis=-1)
        d *= (inside[..., None] * (grad / ctx.n)).astype(d.dtype)
        return d, None


def sparse_categorical_crossentropy(output, labels, from_logits=False, epsilon=1e-7):
    r"""Mean sparse categorical cross-entropy, exactly as Keras computes it.

    .. math::

        L = -\frac{1}{n}\sum_i \log \mathrm{clip}\Big(\frac{p_{i,y_i}}{\sum_j p_{ij}},
            \epsilon, 1 - \epsilon\Big)
        \qquad\text{or, from logits,}\qquad
        L = -\frac{1}{n}\sum_i \mathrm{log\_softmax}(z_i)_{y_i}

    Parameters
    ----------
    output : Tensor
        ``(..., classes)`` probabilities (e.g. after a softmax) or logits.
    labels : array_like of int
        Class indices, shape ``output.shape[:-1]`` (a trailing axis of 1 is
        accepted, as in Keras).
    from_logits : bool, default False
        ``output`` holds logits; the log-softmax is fused in, so large logits
        neither overflow nor lose the gradient.
    epsilon : float, default 1e-7
        Keras' ``backend.epsilon()``; the probability clip.

    Returns
    -------
    Tensor
        A scalar in ``output``'s dtype.

    Raises
    ------
    ValueError
        For labels of the wrong shape or outside ``[0, classes)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, sparse_categorical_crossentropy
    >>> p = Tensor(np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]))
    >>> round(float(sparse_categorical_crossentropy(p, [1, 2]).data), 4)   # Keras: 1.177
    1.1769
    >>> z = Tensor(np.array([[1000.0, 0.0]]), requires_grad=True)
    >>> loss = sparse_categorical_crossentropy(z, [1], from_logits=True)
    >>> float(loss.data)
    1000.0
    >>> loss.backward(); z.grad
    array([[ 1., -1.]])
    """
    return SparseCategoricalCrossentropy.apply(output, labels, from_logits=from_logits,
                                               epsilon=epsilon)


def softmax_sparse_categorical_crossentropy(logits, labels, epsilon=1e-7):
    """``sparse_categorical_crossentropy(softmax(logits), labels)``, fused and stable.

    What ``Dense(..., activation="softmax")`` followed by Keras'
    ``"sparse_categorical_crossentropy"`` computes (the probability clip
    included), from the logits in one op.

    Parameters
    ----------
    logits : Tensor
        ``(..., classes)``, before the softmax.
    labels : array_like of int
        Class indices, shaped like ``logits.shape[:-1]`` (a trailing 1 allowed).
    epsilon : float, default 1e-7
        Keras' clip of the probability at ``[epsilon, 1 - epsilon]``.

    Returns
    -------
    Tensor
        The mean loss, a scalar.

    Raises
    ------
    ValueError
        If the labels' shape, dtype or values do not fit ``logits``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import (Tensor, softmax, sparse_categorical_crossentropy,
    ...                              softmax_sparse_categorical_crossentropy)
    >>> z = Tensor(np.array([[2.0, 0.5, -1.0]]))
    >>> a = softmax_sparse_categorical_crossentropy(z, [1]).data
    >>> b = sparse_categorical_crossentropy(softmax(z), [1]).data
    >>> bool(np.isclose(a, b))
    True
    """
    return SoftmaxSparseCategoricalCrossentropy.apply(logits, labels, epsilon=epsilon)



def _target(target, output_shape, fn):
    """``target`` as an array of the prediction's shape (a trailing axis of 1 added or dropped)."""
    t = np.asarray(target)
    if t.ndim == len(output_shape) - 1 and output_shape[-1:] == (1,):
        t = t[..., None]
    elif t.ndim == len(output_shape) + 1 and t.shape[-1:] == (1,):
        t = t[..., 0]
    if t.shape != tuple(output_shape):
        raise ValueError(f"{fn}: targets have shape {t.shape}, but the predictions "
                         f"{tuple(output_shape)}; pass one target per prediction"
                         + (" (one-hot rows; for class indices use "
                            "sparse_categorical_crossentropy)"
                            if fn == "categorical_crossentropy" else ""))
    if t.dtype.kind not in "fiub":
        raise TypeError(f"{fn}: targets must hold numbers, got dtype {t.dtype}")
    return t


@primitive
def CategoricalCrossentropy(ctx, output, target, from_logits=False, epsilon=1e-7):
    r"""Per-sample :math:`-\sum_j t_j \log q_j` over the last axis, Keras' way.

    From probabilities, ``q = p / sum(p)`` clipped to ``[epsilon, 1 - epsilon]``
    (the gradient is zero where the clip is active); from logits,
    ``q = softmax(z)`` as a stable log-softmax. Targets get no gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import CategoricalCrossentropy, Tensor
    >>> p = Tensor(np.array([[0.5, 0.5], [0.25, 0.75]]))
    >>> CategoricalCrossentropy.apply(p, np.array([[1.0, 0.0], [0.0, 1.0]])).data.round(4)
    array([0.6931, 0.2877])
    """
    t = _target(target, output.shape, "categorical_crossentropy").astype(output.dtype)
    ctx.from_logits = from_logits
    if from_logits:
        z = output - output.max(axis=-1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
        ctx.save_for_backward(z, t)
        return -(t * z).sum(axis=-1)
    s = output.sum(axis=-1, keepdims=True)
    q = output / s
    qc = np.clip(q, np.asarray(epsilon, q.dtype), np.asarray(1 - epsilon, q.dtype))
    inside = (q >= epsilon) & (q <= 1 - epsilon)
    ctx.save_for_backward(s, q, qc, inside, t)
    return -(t * np.log(qc)).sum(axis=-1)


@CategoricalCrossentropy.defvjp
def _(ctx, grad):
    g = np.asarray(grad)[..., None]
    if ctx.from_logits:
        z, t = ctx.saved_tensors
        # d/dz_j: softmax_j * sum(t) - t_j
        return g * (np.exp(z) * t.sum(axis=-1, keepdims=True) - t), None
    s, q, qc, inside, t = ctx.saved_tensors
    # L = -sum_k t_k log qc_k, q = p / s: dL/dp_j = (u_j - sum_k u_k q_k) / s,
    # u_k = dL/dq_k = -t_k / qc_k (0 where the clip holds q_k)
    u = np.where(inside, -t / qc, 0).astype(q.dtype)
    d = (u - (u * q).sum(axis=-1, keepdims=True)) / s
    return g * d, None


@primitive
def BinaryCrossentropy(ctx, output, target, from_logits=False, epsilon=1e-7):
    r"""Element-wise :math:`-(t \log p + (1 - t)\log(1 - p))`, Keras' way.

    From probabilities, ``p`` clipped to ``[epsilon, 1 - epsilon]`` (zero
    gradient where the clip is active); from logits, ``p = sigmoid(z)`` in a
    stable form (``t softplus(-z) + (1 - t) softplus(z)``, gradient
    ``sigmoid(z) - t``). Targets get no gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import BinaryCrossentropy, Tensor
    >>> BinaryCrossentropy.apply(Tensor(np.array([0.5, 0.9])), np.array([1.0, 1.0])).data.round(4)
    array([0.6931, 0.1054])
    """
    t = _target(target, output.shape, "binary_crossentropy").astype(output.dtype)
    ctx.from_logits = from_logits
    if from_logits:
        sp = np.log1p(np.exp(-np.abs(output)))           # softplus(-|z|)
        ctx.save_for_backward(output, t)
        # softplus(z) = max(z, 0) + sp, softplus(-z) = max(-z, 0) + sp
        return t * (np.maximum(-output, 0) + sp) + (1 - t) * (np.maximum(output, 0) + sp)
    pc = np.clip(output, np.asarray(epsilon, output.dtype),
                 np.asarray(1 - epsilon, output.dtype))
    inside = (output >= epsilon) & (output <= 1 - epsilon)
    ctx.save_for_backward(pc, inside, t)
    return -(t * np.log(pc) + (1 - t) * np.log(1 - pc))


@BinaryCrossentropy.defvjp
def _(ctx, grad):
    if ctx.from_logits:
        z, t = ctx.saved_tensors
        return grad * (_sigmoid(z) - t), None
    pc, inside, t = ctx.saved_tensors
    d = np.where(inside, (pc - t) / (pc * (1 - pc)), 0).astype(pc.dtype)
    return grad * d, None


def categorical_crossentropy(output, target, from_logits=False, epsilon=1e-7):
    r"""Per-sample categorical cross-entropy of one-hot (or soft) targets, as Keras computes it.

    .. math::

        L_i = -\sum_j t_{ij} \log \mathrm{clip}\Big(\frac{p_{ij}}{\sum_k p_{ik}},
            \epsilon, 1 - \epsilon\Big)
        \qquad\text{or, from logits,}\qquad
        L_i = -\sum_j t_{ij}\, \mathrm{log\_softmax}(z_i)_j

    Parameters
    ----------
    output : Tensor
        ``(..., classes)`` probabilities or logits.
    target : array_like
        Same shape: one-hot or soft labels.
    from_logits : bool, default False
    epsilon : float, default 1e-7
        Keras' ``backend.epsilon()``.

    Returns
    -------
    Tensor
        ``output.shape[:-1]``: one loss per sample.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, categorical_crossentropy
    >>> categorical_crossentropy(Tensor(np.array([[0.25, 0.75]])), [[0, 1]]).data.round(4)
    array([0.2877])
    """
    return CategoricalCrossentropy.apply(output, target, from_logits=bool(from_logits),
                                         epsilon=epsilon)


def binary_crossentropy(output, target, from_logits=False, epsilon=1e-7):
    r"""Element-wise binary cross-entropy, as Keras' ``ops.binary_crossentropy`` computes it.

    .. math:: L = -\big(t \log \mathrm{clip}(p, \epsilon, 1 - \epsilon)
              + (1 - t) \log(1 - \mathrm{clip}(p, \epsilon, 1 - \epsilon))\big)

    Parameters
    ----------
    output : Tensor
        Probabilities, or logits with ``from_logits=True``.
    target : array_like
        Same shape, values in ``[0, 1]``.
    from_logits : bool, default False
    epsilon : float, default 1e-7

    Returns
    -------
    Tensor
        Same shape as ``output`` (not reduced).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, binary_crossentropy
    >>> binary_crossentropy(Tensor(np.array([0.0])), [1.0], from_logits=True).data.round(4)
    array([0.6931])
    """
    return BinaryCrossentropy.apply(output, target, from_logits=bool(from_logits),
                                    epsilon=epsilon)


# ------------------------------------------------------------ regularization
class Dropout(Function):
    """Inverted dropout: zero each element with probability ``rate``, scale the rest.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Dropout, Tensor
    >>> y = Dropout.apply(Tensor(np.ones(6)), 0.5, np.random.default_rng(0))
    >>> sorted(set(y.data.tolist()))
    [0.0, 2.0]
    """

    @staticmethod
    def forward(ctx, x, rate, rng):
        keep = rng.random(x.shape, dtype=np.float64 if x.dtype == np.float64
                          else np.float32) >= rate
        mask = keep.astype(x.dtype)
        mask *= np.asarray(1.0 / (1.0 - rate), x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None


def dropout(x, rate, training=True, rng=None):
    """Dropout as Keras does it: in training, zero with probability ``rate``, scale by ``1/(1-rate)``.

    Parameters
    ----------
    x : Tensor
    rate : float
        Fraction to drop, in ``[0, 1)``.
    training : bool, default True
        False returns ``x`` unchanged.
    rng : numpy.random.Generator, optional
        Source of the mask (pass one for reproducible runs; ``fastbn.nn``
        passes its seeded generator).

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, dropout
    >>> y = dropout(Tensor(np.ones(8)), 0.5, rng=np.random.default_rng(0))
    >>> sorted(set(y.data.tolist()))
    [0.0, 2.0]
    >>> dropout(Tensor(np.ones(2)), 0.5, training=False)
    Tensor([1., 1.])
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate!r}")
    if not training or rate == 0.0:
        return x if type(x) is Tensor else Tensor(x)
    return Dropout.apply(x, rate, np.random.default_rng() if rng is None else rng)


# --------------------------------------------------------------- batch norm
class BatchNorm(Function):
    """Batch normalization through :mod:`fastbn.functional` (analytic backward).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import BatchNorm, Tensor
    >>> BatchNorm.apply(Tensor(np.array([[1.0], [3.0]])), None, None, epsilon=0.0)
    Tensor([[-1.],
            [ 1.]])
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, axis=-1, epsilon=1e-3, training=True,
                moving_mean=None, moving_variance=None, momentum=0.99, comm=None, mask=None):
        ctx.mask = mask
        if mask is not None and comm is not None:
            raise NotImplementedError("batch_norm: a mask with synchronized "
                                      "data-parallel statistics is not implemented")
        # module attribute looked up per call: replaced kernels are picked up
        if comm is None:
            y, mean, invstd = functional.batch_norm_forward(
                x, gamma, beta, axis=axis, epsilon=epsilon, training=training,
                moving_mean=moving_mean, moving_variance=moving_variance, momentum=momentum,
                mask=mask)
        else:       # an MPI communicator: statistics of the global batch
            from .. import distributed
            y, mean, invstd = distributed.batch_norm_forward(
                x, gamma, beta, comm=comm, axis=axis, epsilon=epsilon, training=training,
                moving_mean=moving_mean, moving_variance=moving_variance, momentum=momentum)
        ctx.save_for_backward(x, mean, invstd, gamma)
        ctx.axis, ctx.training, ctx.comm = axis, training, comm
        return y

    @staticmethod
    def backward(ctx, grad):
        x, mean, invstd, gamma = ctx.saved_tensors
        nx, ng, nb = ctx.needs_input_grad
        if ctx.comm is None:
            dx, dgamma, dbeta = functional.batch_norm_backward(
                grad, x, mean, invstd, gamma, axis=ctx.axis, training=ctx.training,
                mask=ctx.mask)
        else:       # dgamma, dbeta: this process's share, summed by data-parallel training
            from .. import distributed
            dx, dgamma, dbeta = distributed.batch_norm_backward(
                grad, x, mean, invstd, gamma, comm=ctx.comm, axis=ctx.axis,
                training=ctx.training)
        return (dx if nx else None, dgamma if ng else None, dbeta if nb else None)


def batch_norm(x, gamma=None, beta=None, *, axis=-1, epsilon=1e-3, training=True,
               moving_mean=None, moving_variance=None, momentum=0.99, comm=None, mask=None):
    r"""Batch normalization with gradients for ``x``, ``gamma`` and ``beta``.

    The forward pass is :func:`fastbn.functional.batch_norm_forward` and the
    backward pass :func:`fastbn.functional.batch_norm_backward`: the
    kernels' analytic gradient, not a composition of primitive ops. With
    ``training=True`` the batch statistics are used (and the moving
    statistics, when given, updated in place with Keras' ``momentum``) and
    the gradient flows through them; with ``training=False`` the moving
    statistics are used and treated as constants.

    Parameters
    ----------
    x : Tensor
    gamma, beta : Tensor, ndarray or None
        Scale and offset, shaped like ``x`` along ``axis``.
    axis : int or tuple of ints, default -1
        The feature axes that are kept (Keras).
    epsilon, training, moving_mean, moving_variance, momentum
        As in :func:`fastbn.functional.batch_norm_forward`.
    comm : MPI communicator, optional
        Synchronize the statistics over its processes (:mod:`fastbn.distributed`).
    mask : array_like of bool, optional
        Keras' mask over the sample positions (see
        :func:`fastbn.functional.batch_norm_forward`).

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Tensor, batch_norm
    >>> x = Tensor(np.array([[1.0], [3.0]]), requires_grad=True)
    >>> g = Tensor(np.ones(1), requires_grad=True)
    >>> y = batch_norm(x, g, None, epsilon=0.0)
    >>> y
    Tensor([[-1.],
            [ 1.]], requires_grad=True)
    >>> (y * np.array([[0.0], [1.0]])).sum().backward()
    >>> g.grad, x.grad
    (array([1.]), array([[0.],
           [0.]]))
    """
    return BatchNorm.apply(x, gamma, beta, axis=axis, epsilon=epsilon, training=training,
                           moving_mean=moving_mean, moving_variance=moving_variance,
                           momentum=momentum, comm=comm, mask=mask)


# ------------------------------------------------------ convolution, pooling
# The window ops are written with ``primitive`` / ``defvjp``: the maths and a
# docstring each. Arrays are channels-last (N, H, W, C) inside; a
# channels-first (N, C, H, W) input is read through its NHWC view (no copy)
# and results are returned in the caller's layout.
def _pair(value, what, fn):
    """``value`` as a pair of positive ints (Keras takes an int or a pair)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if (len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                              or v < 1 for v in pair)):
        raise ValueError(f"{fn}: {what} must be a positive int or a pair of them, "
                         f"got {value!r}")
    return int(pair[0]), int(pair[1])


def _window(size, k, stride, padding):
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
    ho, pt = _window(h, kh, sh, padding)
    wo, pl = _window(w, kw, sw, padding)
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


@primitive
def Conv2D(ctx, x, kernel, bias=None, geometry=None, channels_first=False, relu=False):
    r"""2-D convolution (cross-correlation, as in Keras), in blocks of samples.

    With ``cols`` the ``(rows, kh*kw*C)`` windows of a block of samples
    (im2col) and ``K`` the ``(kh, kw, C, F)`` kernel read as ``(kh*kw*C, F)``:

    .. math:: y = \mathrm{cols}\, K + b, \quad
              dK = \textstyle\sum_\mathrm{blocks} \mathrm{cols}^T dy, \quad
              db = \textstyle\sum dy, \quad
              dx = \mathrm{col2im}(dy\, K^T)

    Each block's windows, products (BLAS, one thread) and bias are done by
    one thread while they are in its cache, the blocks shared by
    :func:`fastbn._config.threads` threads; kernels of few taps (a first
    layer on one channel) are summed window by window instead
    (:func:`fastbn._conv.conv2d_forward`). ``relu=True`` applies ReLU
    in the same pass as the bias (the gradient is masked by the output),
    which ``nn.Conv2D(..., activation="relu")`` uses. The kernel and bias
    gradients are the same bits for any thread count. Call it through
    :func:`conv2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import Conv2D, Tensor
    >>> geometry = (2, 2, 1, 1, 0, 0, 1, 1)       # kh, kw, sh, sw, pt, pl, ho, wo
    >>> Conv2D.apply(Tensor(np.ones((1, 2, 2, 1))), np.ones((2, 2, 1, 1)), geometry=geometry)
    Tensor([[[[4.]]]])
    """
    ho, wo = geometry[6:]
    dtype = _float_type(x, kernel, *(() if bias is None else (bias,)))
    xv = _nhwc(x, channels_first).astype(dtype, copy=False)
    y = np.empty((xv.shape[0], ho, wo, kernel.shape[3]), dtype)
    _conv.conv2d_forward(xv, kernel, bias, geometry, relu, y)
    ctx.save_for_backward(xv, kernel, y if relu else None)
    ctx.geometry, ctx.channels_first, ctx.relu = geometry, channels_first, relu
    ctx.x_dtype = x.dtype
    if channels_first:
        y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    return y


@Conv2D.defvjp
def _(ctx, grad):
    xv, kernel, y = ctx.saved_tensors
    nx, nk, nb = ctx.needs_input_grad
    cf = ctx.channels_first
    dx, dxv = (_empty(*xv.shape, xv.dtype, cf) if nx else (None, None))
    dk, db = _conv.conv2d_backward(xv, kernel, y, _nhwc(grad, cf), ctx.geometry,
                                   ctx.relu, nx, dxv)
    return (dx.astype(ctx.x_dtype, copy=False) if nx else None,
            dk.reshape(kernel.shape).astype(kernel.dtype, copy=False) if nk else None,
            db if nb else None)


@primitive
def MaxPool2D(ctx, x, geometry=None, channels_first=False):
    """Window maxima; the gradient goes to each window's first maximum
    (PyTorch's and TensorFlow's choice for ties). Call it through :func:`max_pool2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import MaxPool2D, Tensor
    >>> x = Tensor(np.arange(4.0).reshape(1, 2, 2, 1))
    >>> MaxPool2D.apply(x, geometry=(2, 2, 2, 2, 0, 0, 1, 1))
    Tensor([[[[3.]]]])
    """
    kh, kw, sh, sw, pt, pl, ho, wo = geometry
    xv = _nhwc(x, channels_first)
    y, yv = _empty(xv.shape[0], ho, wo, xv.shape[3], x.dtype, channels_first)
    ctx.arg = _conv.max_pool_forward(xv, kh, kw, sh, sw, pt, pl, yv)
    ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
    ctx.geometry, ctx.channels_first = geometry, channels_first
    return y


@MaxPool2D.defvjp
def _(ctx, grad):
    kh, kw, sh, sw, pt, pl, _, _ = ctx.geometry
    dx = np.empty(ctx.x_shape, ctx.x_dtype)
    _conv.max_pool_backward(_nhwc(grad, ctx.channels_first), ctx.arg, kh, kw, sh, sw,
                            pt, pl, _nhwc(dx, ctx.channels_first))
    return dx


@primitive
def AvgPool2D(ctx, x, geometry=None, channels_first=False):
    """Window means over the inputs each window covers ("same" padding is not
    counted, as in Keras). Call it through :func:`avg_pool2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import AvgPool2D, Tensor
    >>> x = Tensor(np.arange(4.0).reshape(1, 2, 2, 1))
    >>> AvgPool2D.apply(x, geometry=(2, 2, 2, 2, 0, 0, 1, 1))
    Tensor([[[[1.5]]]])
    """
    kh, kw, sh, sw, pt, pl, ho, wo = geometry
    xv = _nhwc(x, channels_first)
    y, yv = _empty(xv.shape[0], ho, wo, xv.shape[3], _float_type(x), channels_first)
    _conv.avg_pool_forward(xv, kh, kw, sh, sw, pt, pl, yv)
    ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
    ctx.geometry, ctx.channels_first = geometry, channels_first
    return y


@AvgPool2D.defvjp
def _(ctx, grad):
    kh, kw, sh, sw, pt, pl, _, _ = ctx.geometry
    dx = np.empty(ctx.x_shape, _float_type(np.empty(0, ctx.x_dtype)))
    _conv.avg_pool_backward(_nhwc(grad, ctx.channels_first), kh, kw, sh, sw, pt, pl,
                            _nhwc(dx, ctx.channels_first))
    return dx


@primitive
def GlobalAvgPool2D(ctx, x, channels_first=False, keepdims=False):
    """The mean over rows and columns per sample and channel. Call it through
    :func:`global_average_pool2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.autograd import GlobalAvgPool2D, Tensor
    >>> GlobalAvgPool2D.apply(Tensor(np.arange(4.0).reshape(1, 2, 2, 1)))
    Tensor([[1.5]])
    """
    axes = (2, 3) if channels_first else (1, 2)
    ctx.x_shape, ctx.axes = x.shape, axes
    return np.mean(x, axis=axes, keepdims=keepdims, dtype=np.float64).astype(_float_type(x))


@GlobalAvgPool2D.defvjp
def _(ctx, grad):
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
    ``y``, ``dK`` and ``dx`` (see :class:`Conv2D`).

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
    geometry, cf = _geometry(x, kshape[:2], _pair(strides, "strides", fn), padding,
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
    pool = _pair(pool_size, "pool_size", fn)
    strides = pool if strides is None else _pair(strides, "strides", fn)
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
        In ``x``'s layout; the gradient reaches each window's first maximum.

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
