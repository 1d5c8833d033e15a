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


# ------------------------------------------------------------------ layers
def article_model(nn):
    """The Keras batch-normalization article's CNN, written once for fastbn.nn and
    for Keras (``nn`` is either; Keras' layers are in ``keras.layers``)."""
    L = getattr(nn, "layers", nn)
    return nn.Sequential([
        L.Conv2D(32, kernel_size=(3, 3), activation="relu", input_shape=(28, 28, 1)),
        L.BatchNormalization(), L.MaxPooling2D(pool_size=(2, 2)), L.BatchNormalization(),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        L.BatchNormalization(), L.MaxPooling2D(pool_size=(2, 2)), L.BatchNormalization(),
        L.Flatten(), L.Dense(256, activation="relu"), L.BatchNormalization(),
        L.Dense(10, activation="softmax")])


# Keras 3 on JAX (KERAS_BACKEND=jax, 2026-12-06), article_model(keras): each layer's name,
# output shape and count_params(); its summary's total, as fastbn's, is 433,034 (1.65 MB)
KERAS_SUMMARY = [
    ("conv2d", (None, 26, 26, 32), 320), ("batch_normalization", (None, 26, 26, 32), 128),
    ("max_pooling2d", (None, 13, 13, 32), 0), ("batch_normalization_1", (None, 13, 13, 32), 128),
    ("conv2d_1", (None, 11, 11, 64), 18496), ("batch_normalization_2", (None, 11, 11, 64), 256),
    ("max_pooling2d_1", (None, 5, 5, 64), 0), ("batch_normalization_3", (None, 5, 5, 64), 256),
    ("flatten", (None, 1600), 0), ("dense", (None, 256), 409856),
    ("batch_normalization_4", (None, 256), 1024), ("dense_1", (None, 10), 2570),
]


def test_article_model_has_keras_shapes_and_parameter_counts():
    from fastbn import nn
    nn.clear_session()
    model = article_model(nn)
    got = [(layer.name, layer.output_shape, layer.count_params()) for layer in model.layers]
    assert got == KERAS_SUMMARY
    assert model.count_params() == 433034
    lines = []
    model.summary(print_fn=lines.append)
    assert " Total params: 433,034 (1.65 MB)" in lines


def test_conv_layer_kernel_is_glorot_with_keras_fans():
    from fastbn import nn
    nn.set_random_seed(0)
    layer = nn.Conv2D(64, (3, 3))
    layer.build((None, 13, 13, 32))
    limit = np.sqrt(6.0 / (9 * 32 + 9 * 64))
    k = layer.kernel.value
    assert k.shape == (3, 3, 32, 64) and k.dtype == np.float32
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.95 * limit


@pytest.mark.parametrize("padding,strides", [("valid", (1, 1)), ("same", (2, 2))])
def test_layers_channels_first_match_channels_last(padding, strides):
    from fastbn import nn
    x = _rng("cf").standard_normal((2, 9, 8, 3)).astype(np.float32)
    a = nn.Conv2D(4, 3, strides=strides, padding=padding)
    b = nn.Conv2D(4, 3, strides=strides, padding=padding, data_format="channels_first")
    a.build((None, 9, 8, 3))
    b.build((None, 3, 9, 8))
    b.set_weights(a.get_weights())
    ya, yb = a(x), b(x.transpose(0, 3, 1, 2))
    assert a.output_shape[1:] == ya.shape[1:]
    assert b.output_shape[1:] == yb.shape[1:]
    np.testing.assert_allclose(yb.data, ya.data.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    for cls in (nn.MaxPooling2D, nn.AveragePooling2D):
        pa, pb = cls(3, 2, padding), cls(3, 2, padding, data_format="channels_first")
        za, zb = pa(x), pb(x.transpose(0, 3, 1, 2))
        assert pa.compute_output_shape((None,) + x.shape[1:])[1:] == za.shape[1:]
        np.testing.assert_array_equal(zb.data, za.data.transpose(0, 3, 1, 2))
    g = nn.GlobalAveragePooling2D(data_format="channels_first", keepdims=True)
    assert g(x.transpose(0, 3, 1, 2)).shape == g.compute_output_shape((2, 3, 9, 8)) \
        == (2, 3, 1, 1)


@pytest.mark.parametrize("make,match", [
    (lambda nn: nn.Conv2D(0, 3), "filters"),
    (lambda nn: nn.Conv2D(4, (3, 3, 3)), "kernel_size"),
    (lambda nn: nn.Conv2D(4, 3, padding="full"), "padding"),
    (lambda nn: nn.MaxPooling2D(data_format="NCHW"), "data_format"),
])
def test_layer_arguments_are_checked(make, match):
    from fastbn import nn
    with pytest.raises(ValueError, match=match):
        make(nn)


def test_conv_layer_on_images_without_a_channels_axis_says_what_to_do():
    from fastbn import nn
    with pytest.raises(ValueError, match=r"input_shape=\(28, 28, 1\)"):
        nn.Sequential([nn.Conv2D(4, 3, input_shape=(28, 28))])


def test_article_program_runs_by_changing_imports_only():
    """The article's compile / fit / evaluate lines, verbatim, on a small slice."""
    from fastbn import nn
    from synthetic_data import synthetic_mnist
    (x, y), (x_test, y_test) = synthetic_mnist(n_train=100, n_test=20)
    x = x.reshape(-1, 28, 28, 1) / 255.0
    x_test = x_test.reshape(-1, 28, 28, 1) / 255.0
    nn.clear_session()
    nn.set_random_seed(0)
    model = article_model(nn)
    model.compile(loss=nn.losses.sparse_categorical_crossentropy,
                  optimizer=nn.optimizers.Adam(), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=250, epochs=1, verbose=0, validation_split=0.2)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    score = model.evaluate(x_test, y_test, verbose=0)
    assert isinstance(score, list) and len(score) == 2 and np.isfinite(score).all()


@pytest.mark.parametrize("data_format,axis", [("channels_last", -1), ("channels_first", 1)])
def test_batch_norm_after_conv_reads_the_conv_output_in_place(data_format, axis, monkeypatch):
    """BN after a conv normalises the conv's own array: channels-last on the rows
    kernels ((N*H*W, C) read as rows), channels-first on the planes kernels."""
    from fastbn import _bn, nn
    seen = []
    run = _bn.dispatch.run

    def spy(kern, xk, arrays=1):
        fn = run(kern, xk, arrays)

        def call(*args):
            seen.append((kern.__name__, [a for a in args if isinstance(a, np.ndarray)]))
            return fn(*args)
        return call
    monkeypatch.setattr(_bn.dispatch, "run", spy)
    x = _rng("bn").standard_normal((8, 3, 28, 28) if axis == 1 else (8, 28, 28, 3))
    conv = nn.Conv2D(16, 3, data_format=data_format)
    y = conv(x.astype(np.float32))
    seen.clear()
    bn = nn.BatchNormalization(axis=axis)
    bn(y, training=True)
    kind = "rows" if axis == -1 else "planes"
    assert any(kind in name and any(np.shares_memory(a, y.data) for a in arrays)
               for name, arrays in seen), [name for name, _ in seen]


def _assert_bitwise_identical_with_1_and_2_threads(step):
    """``step()``'s list of arrays, each run in a fresh session seeded 0, is bitwise the
    same with 1 and with 2 Numba threads (skips where Numba has fewer than 2)."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    from fastbn import nn
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            nn.clear_session()
            nn.set_random_seed(0)
            results.append(step())
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_cnn_training_step_is_bitwise_identical_with_1_and_2_threads():
    from fastbn import nn
    from synthetic_data import synthetic_mnist
    (x, y), _ = synthetic_mnist(n_train=16, n_test=1)
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)

    def step():
        model = article_model(nn)
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        model.build((None, 28, 28, 1))
        model._make_plan()
        loss, out = model.step_plan().backprop(x, y.astype(np.intp))
        return ([out.data.copy()] + [v.tensor.grad.copy() for v in model.trainable_variables]
                + [v.numpy() for v in model.non_trainable_variables])
    _assert_bitwise_identical_with_1_and_2_threads(step)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_conv2d_with_fused_relu_equals_conv_then_relu(data_format):
    rng = _rng("relu", data_format)
    x = rng.standard_normal((2, 3, 7, 6) if data_format == "channels_first" else (2, 7, 6, 3))
    k, b = rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    fused = ag.conv2d(x, k, b, padding="same", data_format=data_format, activation="relu")
    plain = ag.relu(ag.conv2d(x, k, b, padding="same", data_format=data_format))
    np.testing.assert_array_equal(fused.data, plain.data)
    check_vjp(lambda x, k, b: ag.conv2d(x, k, b, data_format=data_format, activation="relu"),
              x, k, b)
    check_vjp(lambda x, k: ag.conv2d(x, k, data_format=data_format, activation="relu"), x, k)


def test_channels_first_conv_then_bn_is_bitwise_identical_with_1_and_2_threads():
    from fastbn import nn
    x = _rng("cf-bits").standard_normal((16, 1, 28, 28)).astype(np.float32)

    def step():
        conv = nn.Conv2D(32, 3, activation="relu", data_format="channels_first")
        bn = nn.BatchNormalization(axis=1)
        z = bn(conv(x), training=True)
        z.backward(np.cos(np.arange(z.data.size, dtype=np.float32)).reshape(z.shape))
        return [z.data.copy(), conv.kernel.tensor.grad.copy(), bn.gamma.tensor.grad.copy(),
                bn.moving_variance.numpy()]
    _assert_bitwise_identical_with_1_and_2_threads(step)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("taps", [0, 10 ** 6])           # im2col + BLAS; window by window
@pytest.mark.parametrize("block_bytes", [1, 1 << 20])    # a block per sample; one block
def test_conv2d_paths_and_blocks_match_reference(taps, block_bytes, data_format, monkeypatch):
    """Both ways of computing a convolution, in one block or a block per
    sample, with strides and padding, give the float64 reference's output
    and gradients (the kernel and bias gradients are summed over blocks)."""
    from fastbn import _config
    monkeypatch.setattr(_config, "DIRECT_MAX_TAPS", taps)
    monkeypatch.setattr(_config, "BLOCK_BYTES", block_bytes)
    rng = _rng("paths", taps, block_bytes, data_format)
    cf = data_format == "channels_first"
    for shape, k, f, strides, padding in CONV_CASES:
        x = rng.standard_normal(shape)
        kernel, bias = rng.standard_normal(k + (shape[3], f)), rng.standard_normal(f)
        xin = x.transpose(0, 3, 1, 2) if cf else x
        for relu in (False, True):
            xt, kt, bt = (ag.Tensor(a, requires_grad=True) for a in (xin, kernel, bias))
            y = ag.conv2d(xt, kt, bt, strides=strides, padding=padding, data_format=data_format,
                          activation="relu" if relu else None)
            want = R.conv2d(x, kernel, bias, strides, padding)
            mask = want > 0 if relu else np.ones(want.shape, bool)
            want = want * mask
            g = np.cos(np.arange(want.size)).reshape(want.shape)
            y.backward(g.transpose(0, 3, 1, 2) if cf else g)
            got = y.data.transpose(0, 2, 3, 1) if cf else y.data
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
            gm = g * mask                                     # the reference's gradients
            np.testing.assert_allclose(bt.grad, gm.sum(axis=(0, 1, 2)), rtol=1e-12)
            _, dk, dx = R.conv2d_grads(x, kernel, gm, strides, padding)
            np.testing.assert_allclose(kt.grad, dk, rtol=1e-11, atol=1e-12)
            np.testing.assert_allclose(xt.grad.transpose(0, 2, 3, 1) if cf else xt.grad, dx,
                                       rtol=1e-11, atol=1e-12)


def test_integer_images_are_not_truncated():
    """uint8 images (as the datasets load them) give float results: a
    convolution, an average and a global average of integers are not integers."""
    x = (np.arange(2 * 5 * 5 * 2) % 7).astype(np.uint8).reshape(2, 5, 5, 2)
    k = np.full((3, 3, 2, 3), 0.25)
    y = ag.conv2d(x, k)
    assert y.data.dtype == np.float64
    np.testing.assert_allclose(y.data, R.conv2d(x, k), rtol=1e-12)
    a = ag.avg_pool2d(x)
    assert a.data.dtype == np.float64
    np.testing.assert_allclose(a.data, R.pool2d(x, (2, 2), (2, 2), "valid", np.mean))
    g = ag.global_average_pool2d(x)
    np.testing.assert_allclose(g.data, x.mean(axis=(1, 2)))
    assert ag.max_pool2d(x).data.dtype == np.uint8                  # a maximum is exact
    # a float64 kernel on float32 images: NumPy's promotion, as before
    assert ag.conv2d(x.astype(np.float32), k).data.dtype == np.float64
