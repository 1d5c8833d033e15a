"""Convolution and pooling ops and layers: the float64 reference, finite
differences, channels-first, PyTorch side by side, and Keras' shapes."""
import zlib

import numpy as np
import pytest

from fastbn import autograd as ag

import reference as R
from test_autograd import check_vjp

# (x shape NHWC, kernel (kh, kw), filters, strides, padding)
CONV_CASES = [
    ((2, 5, 6, 3), (3, 3), 4, (1, 1), "valid"),
    ((2, 5, 6, 3), (3, 3), 4, (1, 1), "same"),
    ((2, 7, 6, 2), (3, 2), 3, (2, 2), "valid"),
    ((2, 7, 6, 2), (3, 2), 3, (2, 3), "same"),
    ((1, 4, 4, 1), (4, 4), 2, (1, 1), "valid"),
    ((3, 6, 5, 2), (1, 1), 3, (2, 1), "same"),
]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@pytest.mark.parametrize("shape,k,f,strides,padding", CONV_CASES)
def test_conv2d_matches_reference_and_finite_differences(shape, k, f, strides, padding):
    rng = _rng(shape, k, strides, padding)
    x = rng.standard_normal(shape)
    kernel = rng.standard_normal(k + (shape[3], f))
    bias = rng.standard_normal(f)
    y = ag.conv2d(x, kernel, bias, strides=strides, padding=padding)
    np.testing.assert_allclose(y.data, R.conv2d(x, kernel, bias, strides, padding),
                               rtol=1e-12, atol=1e-12)
    check_vjp(lambda x, k, b: ag.conv2d(x, k, b, strides=strides, padding=padding),
              x, kernel, bias)
    # channels-first: the same numbers in NCHW, gradients too
    check_vjp(lambda x, k, b: ag.conv2d(x, k, b, strides=strides, padding=padding,
                                        data_format="channels_first"),
              x.transpose(0, 3, 1, 2), kernel, bias)
    ycf = ag.conv2d(x.transpose(0, 3, 1, 2), kernel, bias, strides=strides, padding=padding,
                    data_format="channels_first")
    assert ycf.data.flags.c_contiguous
    np.testing.assert_allclose(ycf.data, y.data.transpose(0, 3, 1, 2), rtol=1e-13)


POOL_CASES = [
    ((2, 6, 6, 3), (2, 2), None, "valid"),
    ((2, 5, 7, 2), (2, 2), None, "valid"),     # odd sizes: the last row/column dropped
    ((2, 5, 7, 2), (2, 2), None, "same"),
    ((2, 7, 6, 2), (3, 3), (2, 2), "valid"),   # overlapping windows
    ((2, 7, 6, 2), (3, 2), (1, 2), "same"),
]


@pytest.mark.parametrize("reduce,op", [(np.max, ag.max_pool2d), (np.mean, ag.avg_pool2d)])
@pytest.mark.parametrize("shape,pool,strides,padding", POOL_CASES)
def test_pooling_matches_reference_and_finite_differences(shape, pool, strides, padding,
                                                          reduce, op):
    x = _rng(shape, pool, strides, padding).standard_normal(shape)
    y = op(x, pool, strides, padding)
    np.testing.assert_allclose(y.data, R.pool2d(x, pool, strides or pool, padding, reduce),
                               rtol=1e-12, atol=1e-12)
    check_vjp(lambda x: op(x, pool, strides, padding), x)
    check_vjp(lambda x: op(x, pool, strides, padding, data_format="channels_first"),
              x.transpose(0, 3, 1, 2))


def test_global_average_pool2d():
    x = _rng("gap").standard_normal((3, 4, 5, 2))
    np.testing.assert_allclose(ag.global_average_pool2d(x).data, x.mean(axis=(1, 2)))
    assert ag.global_average_pool2d(x, keepdims=True).shape == (3, 1, 1, 2)
    check_vjp(ag.global_average_pool2d, x)
    check_vjp(lambda x: ag.global_average_pool2d(x, keepdims=True), x)
    check_vjp(lambda x: ag.global_average_pool2d(x, data_format="channels_first"), x)


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_tie():
    x = ag.Tensor(np.ones((1, 2, 2, 1)), requires_grad=True)
    ag.max_pool2d(x).sum().backward()
    np.testing.assert_array_equal(x.grad[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_float32_stays_float32():
    x = np.ones((2, 4, 4, 3), np.float32)
    k = ag.Tensor(np.ones((3, 3, 3, 2), np.float32), requires_grad=True)
    y = ag.max_pool2d(ag.conv2d(x, k, np.zeros(2, np.float32), padding="same"))
    assert y.dtype == np.float32
    y.sum().backward()
    assert k.grad.dtype == np.float32


@pytest.mark.parametrize("call,match", [
    (lambda: ag.conv2d(np.ones((4, 4, 1)), np.ones((3, 3, 1, 1))), "4-D input"),
    (lambda: ag.conv2d(np.ones((1, 4, 4, 2)), np.ones((3, 3, 1, 1))), "x has 2"),
    (lambda: ag.conv2d(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1)),), "kernel must be"),
    (lambda: ag.conv2d(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 2)), np.ones(3)), "bias"),
    (lambda: ag.conv2d(np.ones((1, 2, 2, 1)), np.ones((3, 3, 1, 1))), "does not fit"),
    (lambda: ag.conv2d(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), padding="full"),
     "padding"),
    (lambda: ag.conv2d(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), strides=0), "strides"),
    (lambda: ag.max_pool2d(np.ones((1, 4, 4, 1)), data_format="NHWC"), "data_format"),
    (lambda: ag.avg_pool2d(np.ones((1, 4, 4, 1)), pool_size=(2, 2, 2)), "pool_size"),
])
def test_bad_arguments_say_what_to_do(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_and_pooling_match_pytorch(padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng("torch", padding)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)      # NCHW
    k = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = ag.conv2d(x, k, b, padding=padding, data_format="channels_first").data
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(k.transpose(3, 2, 0, 1).copy()),
                    torch.from_numpy(b), padding=padding).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    if padding == "valid":             # PyTorch pads symmetrically only
        y = ag.max_pool2d(x, 2, data_format="channels_first").data
        np.testing.assert_array_equal(y, F.max_pool2d(torch.from_numpy(x), 2).numpy())
        y = ag.avg_pool2d(x, 3, 2, data_format="channels_first").data
        np.testing.assert_allclose(y, F.avg_pool2d(torch.from_numpy(x), 3, 2).numpy(),
                                   rtol=1e-6, atol=1e-6)
