"""fastbn.autograd: every op gradient-checked, and the tape's bookkeeping."""
import zlib

import numpy as np
import pytest

from fastbn import autograd as ag
from fastbn.autograd import Function, Tensor, no_grad

import reference as R


# ------------------------------------------------------------ the one checker
def check_vjp(f, *inputs, wrt=None, h=1e-6, seed=0, rtol=1e-6, atol=1e-9):
    """Random-projection VJP of ``f`` against central differences, in float64.

    For random input directions ``v_i`` and a random output weighting ``u``,
    one backward pass gives ``sum_i <grad_i(u . f), v_i>``; two forward
    passes give ``(u . f(x + h v) - u . f(x - h v)) / 2h``. Agreement checks
    the whole Jacobian along a random direction, whatever its size.
    ``wrt`` lists the indices of the inputs to differentiate (default: all).
    """
    rng = np.random.default_rng(seed)
    xs = [np.asarray(x, dtype=np.float64) for x in inputs]
    wrt = range(len(xs)) if wrt is None else wrt
    vs = [rng.standard_normal(x.shape) if i in wrt else np.zeros(x.shape)
          for i, x in enumerate(xs)]
    ts = [Tensor(x.copy(), requires_grad=i in wrt) for i, x in enumerate(xs)]
    out = f(*ts)
    assert out.dtype == np.float64
    u = rng.standard_normal(out.shape)
    (out * u).sum().backward()
    analytic = sum(float(np.sum(ts[i].grad * vs[i])) for i in wrt)

    def proj(sign):
        return float(np.sum(u * f(*[Tensor(x + sign * h * v) for x, v in zip(xs, vs)]).data))
    numeric = (proj(+1) - proj(-1)) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)
    for i in wrt:                                 # gradients come back shaped like inputs
        assert ts[i].grad.shape == xs[i].shape


def _positive(shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def _normal(shape):
    return lambda rng: rng.standard_normal(shape)


def _probs(shape):
    def make(rng):
        e = np.exp(rng.standard_normal(shape))
        return e / e.sum(-1, keepdims=True)
    return make


LABELS = np.array([2, 0, 1, 2, 1])

# name -> (function of tensors, input generators)
OPS = {
    "add": (ag.add, [_normal((3, 4)), _normal((3, 4))]),
    "add_bcast_row": (ag.add, [_normal((3, 4)), _normal((4,))]),
    "add_bcast_both": (ag.add, [_normal((3, 1)), _normal((1, 4))]),
    "add_bcast_3d": (ag.add, [_normal((2, 3, 4)), _normal((3, 1))]),
    "add_scalar_tensor": (ag.add, [_normal((2, 3)), _normal(())]),
    "add_number": (lambda a: a + 2.5, [_normal((2, 3))]),
    "radd_number": (lambda a: 2.5 + a, [_normal((2, 3))]),
    "sub": (ag.sub, [_normal((3, 4)), _normal((4,))]),
    "rsub_array": (lambda a: np.ones((2, 3)) - a, [_normal((3,))]),
    "mul": (ag.mul, [_normal((3, 4)), _normal((3, 4))]),
    "mul_bcast": (ag.mul, [_normal((2, 3, 4)), _normal((1, 3, 1))]),
    "div": (ag.div, [_normal((3, 4)), _positive((3, 4))]),
    "div_bcast": (ag.div, [_normal((3, 4)), _positive((4,))]),
    "rdiv_number": (lambda a: 1.0 / a, [_positive((3,))]),
    "neg": (ag.neg, [_normal((3, 4))]),
    "matmul": (ag.matmul, [_normal((3, 4)), _normal((4, 5))]),
    "matmul_vec_mat": (ag.matmul, [_normal((4,)), _normal((4, 5))]),
    "matmul_mat_vec": (ag.matmul, [_normal((3, 4)), _normal((4,))]),
    "matmul_batched": (ag.matmul, [_normal((2, 3, 4)), _normal((4, 5))]),
    "matmul_batched_bcast": (ag.matmul, [_normal((2, 3, 4)), _normal((1, 4, 2))]),
    "dense": (ag.dense, [_normal((5, 4)), _normal((4, 3)), _normal((3,))]),
    "dense_no_bias": (ag.dense, [_normal((5, 4)), _normal((4, 3))]),
    "dense_3d": (ag.dense, [_normal((2, 5, 4)), _normal((4, 3)), _normal((3,))]),
    "sum_all": (ag.sum, [_normal((3, 4))]),
    "sum_axis0": (lambda x: ag.sum(x, axis=0), [_normal((3, 4))]),
    "sum_axes_keepdims": (lambda x: ag.sum(x, axis=(0, 2), keepdims=True),
                          [_normal((2, 3, 4))]),
    "mean_all": (ag.mean, [_normal((3, 4))]),
    "mean_axis_neg": (lambda x: x.mean(axis=-1), [_normal((2, 3, 4))]),
    "reshape": (lambda x: ag.reshape(x, (4, -1)), [_normal((2, 3, 4))]),
    "reshape_method": (lambda x: x.reshape(6, 4), [_normal((2, 3, 4))]),
    "transpose": (ag.transpose, [_normal((2, 3, 4))]),
    "transpose_axes": (lambda x: ag.transpose(x, (1, 2, 0)), [_normal((2, 3, 4))]),
    "T": (lambda x: x.T, [_normal((3, 4))]),
    "relu": (ag.relu, [_normal((4, 5))]),
    "leaky_relu": (ag.leaky_relu, [_normal((4, 5))]),
    "leaky_relu_slope": (lambda x: ag.leaky_relu(x, 0.3), [_normal((4, 5))]),
    "elu": (ag.elu, [_normal((4, 5))]),
    "elu_alpha": (lambda x: ag.elu(x, alpha=0.5), [_normal((4, 5))]),
    "tanh": (ag.tanh, [_normal((4, 5))]),
    "sigmoid": (ag.sigmoid, [lambda rng: 5 * rng.standard_normal((4, 5))]),
    "softmax": (ag.softmax, [_normal((4, 5))]),
    "softmax_axis0": (lambda x: ag.softmax(x, axis=0), [_normal((4, 5))]),
    "log_softmax": (ag.log_softmax, [_normal((4, 5))]),
    "log_softmax_axis1_3d": (lambda x: ag.log_softmax(x, axis=1), [_normal((2, 4, 3))]),
    "scce_probs": (lambda p: ag.sparse_categorical_crossentropy(p, LABELS),
                   [_probs((5, 3))]),
    "scce_unnormalized": (lambda p: ag.sparse_categorical_crossentropy(p, LABELS),
                          [_positive((5, 3))]),
    "scce_logits": (lambda z: ag.sparse_categorical_crossentropy(z, LABELS, from_logits=True),
                    [_normal((5, 3))]),
    "scce_softmax_fused": (lambda z: ag.softmax_sparse_categorical_crossentropy(z, LABELS),
                           [_normal((5, 3))]),
    "scce_3d_labels": (lambda z: ag.sparse_categorical_crossentropy(
        z, np.array([[0, 1], [2, 2]]), from_logits=True), [_normal((2, 2, 3))]),
    "dropout": (lambda x: ag.dropout(x, 0.4, rng=np.random.default_rng(3)), [_normal((6, 5))]),
    "dropout_inference": (lambda x: ag.dropout(x, 0.4, training=False) * 1.0,
                          [_normal((6, 5))]),
    "composite": (lambda x, w: ag.tanh(x @ w).mean() + (x * x).sum(),
                  [_normal((3, 4)), _normal((4, 2))]),
}


@pytest.mark.parametrize("name", list(OPS))
def test_gradient(name):
    f, makers = OPS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    check_vjp(f, *[m(rng) for m in makers])


# batch norm: shapes x feature axes (ints and tuples) x training, gamma/beta on and off
BN_CASES = [
    ((8, 3), -1), ((8, 3), 0), ((4, 3, 5), 1), ((4, 3, 5), -1), ((4, 3, 5), (1, 2)),
    ((4, 3, 5), (0, 2)), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), (1, 3)), ((6, 2, 3), (-1, -2)),
]


def _feature_shape(shape, axis):
    feats = R.feature_axes(len(shape), axis)
    return tuple(shape[a] for a in feats)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,axis", BN_CASES)
def test_gradient_batch_norm(shape, axis, training):
    rng = np.random.default_rng(len(shape) * 7 + (axis if isinstance(axis, int) else 11))
    fshape = _feature_shape(shape, axis)
    x = rng.standard_normal(shape) * 3 + 1
    gamma = rng.uniform(0.5, 2.0, fshape)
    beta = rng.standard_normal(fshape)
    mm, mv = rng.standard_normal(fshape), rng.uniform(0.5, 2.0, fshape)

    def f(x, g, b):
        return ag.batch_norm(x, g, b, axis=axis, training=training,
                             moving_mean=None if training else mm,
                             moving_variance=None if training else mv)
    check_vjp(f, x, gamma, beta)


@pytest.mark.parametrize("training", [True, False])
def test_gradient_batch_norm_without_gamma_beta(training):
    x = np.random.default_rng(5).standard_normal((7, 4))
    kw = {} if training else dict(moving_mean=np.zeros(4), moving_variance=np.full(4, 2.0))
    check_vjp(lambda x: ag.batch_norm(x, None, None, training=training, **kw), x)


def test_batch_norm_matches_reference_and_updates_moving_stats():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5)).astype(np.float32) + 3
    g, b = rng.uniform(1, 2, 5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    mm, mv = np.zeros(5, np.float32), np.ones(5, np.float32)
    y = ag.batch_norm(Tensor(x), Tensor(g), Tensor(b), moving_mean=mm, moving_variance=mv,
                      momentum=0.9)
    ref, mean, _ = R.batch_norm_forward(x, g, b)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mm, 0.1 * mean, rtol=1e-5)      # updated in place
    var = x.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(mv, 0.9 + 0.1 * var, rtol=1e-5)


def test_batch_norm_calls_functional_at_call_time(monkeypatch):
    """The op goes through fastbn.functional (so replaced kernels are used), never primitives."""
    from fastbn import functional
    calls = []
    fwd, bwd = functional.batch_norm_forward, functional.batch_norm_backward
    monkeypatch.setattr(functional, "batch_norm_forward",
                        lambda *a, **k: calls.append("fwd") or fwd(*a, **k))
    monkeypatch.setattr(functional, "batch_norm_backward",
                        lambda *a, **k: calls.append("bwd") or bwd(*a, **k))
    x = Tensor(np.random.default_rng(1).standard_normal((4, 3)), requires_grad=True)
    ag.batch_norm(x).sum().backward()
    assert calls == ["fwd", "bwd"]


# ------------------------------------------------------------ losses, values
def test_scce_matches_keras_values():
    # Keras docs: SparseCategoricalCrossentropy()([1, 2], [[.05, .95, 0], [.1, .8, .1]]) = 1.177
    p = Tensor(np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]], np.float32))
    loss = ag.sparse_categorical_crossentropy(p, [1, 2])
    assert loss.dtype == np.float32
    assert float(loss.data) == pytest.approx((-np.log(0.95) - np.log(0.1)) / 2, rel=1e-6)


def test_scce_clips_like_keras_and_has_zero_gradient_there():
    p = Tensor(np.array([[1.0, 0.0], [0.3, 0.7]]), requires_grad=True)
    loss = ag.sparse_categorical_crossentropy(p, [1, 1])
    assert float(loss.data) == pytest.approx((-np.log(1e-7) - np.log(0.7)) / 2)
    loss.backward()
    np.testing.assert_array_equal(p.grad[0], 0.0)          # clipped row: no gradient
    np.testing.assert_allclose(p.grad[1], [0.5, 0.5 - 0.5 / 0.7])


def test_fused_softmax_scce_equals_composition_and_is_stable():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((6, 4))
    y = np.array([0, 1, 2, 3, 0, 1])
    a = Tensor(z, requires_grad=True)
    b = Tensor(z, requires_grad=True)
    la = ag.softmax_sparse_categorical_crossentropy(a, y)
    lb = ag.sparse_categorical_crossentropy(ag.softmax(b), y)
    la.backward()
    lb.backward()
    assert float(la.data) == pytest.approx(float(lb.data), rel=1e-12)
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)
    big = Tensor(np.array([[500.0, -500.0], [0.0, 1.0]]), requires_grad=True)
    loss = ag.softmax_sparse_categorical_crossentropy(big, [1, 1])   # row 0 clipped at 1e-7
    assert float(loss.data) == pytest.approx((-np.log(1e-7) - np.log(1 / (1 + np.e ** -1))) / 2)
    loss.backward()
    assert np.all(np.isfinite(big.grad)) and np.all(big.grad[0] == 0)


def test_scce_from_logits_large_values():
    z = Tensor(np.array([[1e4, 0.0, -1e4]], np.float32), requires_grad=True)
    loss = ag.sparse_categorical_crossentropy(z, [2], from_logits=True)
    assert float(loss.data) == pytest.approx(2e4)
    loss.backward()
    np.testing.assert_allclose(z.grad, [[1, 0, -1]])


@pytest.mark.parametrize("labels,match", [
    ([0, 3], r"labels must be in \[0, 3\)"),
    ([0, -1], r"labels must be in \[0, 3\)"),
    ([0, 1, 2], r"labels have shape \(3,\)"),
    ([0.5, 1], "integer class indices"),
])
def test_scce_bad_labels(labels, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ag.sparse_categorical_crossentropy(Tensor(np.full((2, 3), 1 / 3)), labels)


def test_scce_accepts_trailing_axis_and_float_integral_labels():
    p = Tensor(np.array([[0.2, 0.8], [0.6, 0.4]]))
    a = ag.sparse_categorical_crossentropy(p, np.array([[1], [0]]))
    b = ag.sparse_categorical_crossentropy(p, np.array([1.0, 0.0]))
    assert float(a.data) == float(b.data) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)


# ------------------------------------------------------------------ the tape
def test_tensor_used_twice_gets_summed_gradient():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (x * x + x).sum().backward()                 # d/dx (x^2 + x) = 2x + 1
    np.testing.assert_array_equal(x.grad, [3.0, 5.0, 7.0])
    y = Tensor(np.array([2.0]), requires_grad=True)
    z = y + y
    (z * z).sum().backward()                     # (2y)^2 -> 8y
    np.testing.assert_array_equal(y.grad, [16.0])


def test_diamond_graph_and_deep_chain():
    x = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    a = ag.tanh(x)
    b = a * 2
    c = a * 3
    (b + c).sum().backward()
    np.testing.assert_allclose(x.grad, 5 * (1 - np.tanh(x.data) ** 2))
    w = Tensor(np.ones(1), requires_grad=True)
    h = w
    for _ in range(3000):                       # far deeper than Python's recursion limit
        h = h * 1.0
    h.sum().backward()
    np.testing.assert_array_equal(w.grad, [1.0])


def test_gradients_accumulate_across_backward_calls():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad, [6.0, 6.0])
    w.zero_grad()
    assert w.grad is None


def test_shared_gradient_buffers_are_not_aliased():
    """Add hands one gradient array to both inputs; later accumulation must not leak."""
    a = Tensor(np.zeros(3), requires_grad=True)
    b = Tensor(np.zeros(3), requires_grad=True)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad, b.grad)
    (a * 2).sum().backward()
    np.testing.assert_array_equal(a.grad, [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(b.grad, [1.0, 1.0, 1.0])
    g = np.array([1.0, 2.0, 3.0])
    c = Tensor(np.zeros(3), requires_grad=True)
    (c + 0.0).backward(g)
    (c + 0.0).backward(g)
    np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])        # the caller's array untouched


def test_missing_backward_names_the_op():
    class Cube(Function):
        @staticmethod
        def forward(ctx, x):
            return x ** 3

    x = Tensor(np.ones(2), requires_grad=True)
    y = Cube.apply(x)
    np.testing.assert_array_equal(y.data, [1.0, 1.0])       # forward still runs
    with pytest.raises(NotImplementedError, match="Cube"):
        y.sum().backward()


def test_backward_returning_wrong_arity_is_reported():
    class Bad(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, grad):
            return grad

    t = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="Bad.backward returned 1 gradient"):
        Bad.apply(t, t).sum().backward()


def test_no_grad_detach_and_requires_grad_propagation():
    w = Tensor(np.ones(2), requires_grad=True)
    with no_grad():
        y = w * 2
    assert not y.requires_grad and y.is_leaf
    d = (w * 2).detach()
    assert not d.requires_grad and d.is_leaf and d.data is not None
    assert (Tensor(np.ones(2)) * 2).requires_grad is False
    assert (w * 2).requires_grad and not (w * 2).is_leaf

    @no_grad()
    def infer(t):
        return t * 3
    assert not infer(w).requires_grad
    assert ag.is_grad_enabled()


def test_backward_errors():
    with pytest.raises(RuntimeError, match="does not require gradients"):
        Tensor(np.ones(1)).backward()
    w = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="pass grad="):
        (w * 2).backward()
    with pytest.raises(RuntimeError, match=r"grad has shape \(2,\)"):
        (w * 2).backward(np.ones(2))
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3), requires_grad=True)


def test_float32_stays_float32():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = ag.elu(x * 2.0 + 1) / 3.0 - 0.5
    y = ag.softmax(y @ np.ones((3, 2), np.float32))
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_ndarray_on_the_left_uses_the_tensor_op():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = np.array([3.0, 4.0]) * w
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad, [3.0, 4.0])


def test_unbroadcast():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(ag.unbroadcast(g, (3, 1)), g.sum(axis=(0, 2))[:, None])
    np.testing.assert_array_equal(ag.unbroadcast(g, (4,)), g.sum(axis=(0, 1)))
    assert ag.unbroadcast(g, (2, 3, 4)) is g
    assert ag.unbroadcast(g, ()).shape == ()


def test_activation_values():
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(ag.elu(Tensor(x)).data, [np.expm1(-2.0), 0.0, 3.0])
    np.testing.assert_allclose(ag.leaky_relu(Tensor(x), 0.3).data, [-0.6, 0.0, 3.0])
    np.testing.assert_allclose(ag.sigmoid(Tensor(np.array([-800.0, 800.0]))).data, [0.0, 1.0])
    np.testing.assert_allclose(ag.softmax(Tensor(np.array([1e4, 1e4]))).data, [0.5, 0.5])


def test_dropout_keeps_expectation_and_rejects_bad_rate():
    x = Tensor(np.ones(20000, np.float32))
    y = ag.dropout(x, 0.25, rng=np.random.default_rng(0))
    assert y.dtype == np.float32
    assert abs(float(y.data.mean()) - 1.0) < 0.02
    assert float((y.data == 0).mean()) == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        ag.dropout(x, 1.0)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_float32_elu_kernel_matches_float64_expm1(alpha):
    """float32 ELU runs a vectorized kernel (own expm1); check it over the whole range."""
    x = np.concatenate([-np.logspace(-12, 2.5, 20001), np.logspace(-12, 2.5, 2001),
                        [0.0, -0.0, np.inf, -np.inf, -30.0, -26.0, -25.9]]).astype(np.float32)
    t = ag.Tensor(x, requires_grad=True)
    y = ag.elu(t, alpha)
    x64 = x.astype(np.float64)
    ref = np.where(x64 > 0, x64, alpha * np.expm1(np.minimum(x64, 0)))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, ref, rtol=1.2e-7, atol=0)
    g = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    y.backward(g)
    dref = g * np.where(x64 > 0, 1.0, alpha * np.exp(np.minimum(x64, 0)))
    np.testing.assert_allclose(t.grad, dref, rtol=3e-7, atol=1e-30)
    nan = ag.elu(ag.Tensor(np.array([np.nan, -1.0], np.float32)), alpha).data
    assert np.isnan(nan[0]) and nan[1] == np.float32(alpha * np.expm1(-1.0))
