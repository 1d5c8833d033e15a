"""nn.regularizers and nn.constraints on Dense, Conv2D and BatchNormalization; layer and model
``losses``; the frozen BatchNormalization. Float64 references, Keras side by side where
installed."""

import numpy as np
import pytest

from fastbn import nn
from fastbn.autograd import Tensor

from test_autograd import check_vjp


W = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.5]])


@pytest.mark.parametrize("reg,expect", [
    ("l1", 0.01 * np.abs(W).sum()),
    ("l2", 0.01 * (W ** 2).sum()),
    ("l1_l2", 0.01 * np.abs(W).sum() + 0.01 * (W ** 2).sum()),
    (nn.regularizers.L1(0.3), 0.3 * np.abs(W).sum()),
    (nn.regularizers.L2(0.2), 0.2 * (W ** 2).sum()),
    (nn.regularizers.L1L2(l1=0.1), 0.1 * np.abs(W).sum()),
    (nn.regularizers.L1L2(), 0.0),
])
def test_regularizer_values_and_gradients(reg, expect):
    r = nn.regularizers.get(reg)
    assert float(r(Tensor(W)).data) == pytest.approx(expect, rel=1e-12)
    if expect:
        check_vjp(r, W + 0.01)


def test_regularizer_config_and_errors():
    for r in (nn.regularizers.L1(0.5), nn.regularizers.L2(), nn.regularizers.L1L2(0.1, 0.2)):
        back = nn.regularizers.get(nn.regularizers.serialize(r))
        assert type(back) is type(r) and back.get_config() == r.get_config()
    with pytest.raises(ValueError, match="l1"):
        nn.regularizers.L1(-1.0)
    with pytest.raises(ValueError, match="unknown regularizer"):
        nn.regularizers.get("l3")


def test_regularizers_match_keras(keras):
    w = W.astype(np.float32)
    for name in ("l1", "l2"):
        k = float(keras.regularizers.get(name)(w))
        assert float(nn.regularizers.get(name)(Tensor(w)).data) == pytest.approx(k, rel=1e-6)
    k = float(keras.regularizers.L1L2(l1=0.01, l2=0.01)(w))       # what "l1_l2" documents
    assert float(nn.regularizers.get("l1_l2")(Tensor(w)).data) == pytest.approx(k, rel=1e-6)


def _dense_model(**kw):
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Dense(3, input_shape=(4,), **kw)])
    model.compile(loss="mse", optimizer=nn.SGD(0.1))
    return model


def test_dense_penalties_join_the_loss_and_its_gradient():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.standard_normal((8, 3)).astype(np.float32)
    plain = _dense_model()
    reg = _dense_model(kernel_regularizer=nn.regularizers.L2(0.1), bias_regularizer="l1",
                       activity_regularizer=nn.regularizers.L2(0.05))
    reg.set_weights(plain.get_weights())
    reg.layers[0].bias.assign([0.5, -0.5, 0.0])
    plain.layers[0].bias.assign([0.5, -0.5, 0.0])
    k0, b0 = (w.astype(np.float64) for w in reg.get_weights())
    out = x.astype(np.float64) @ k0 + b0
    penalty = 0.1 * (k0 ** 2).sum() + 0.01 * np.abs(b0).sum() + 0.05 * (out ** 2).sum() / 8
    data = ((out - y) ** 2).mean()
    loss = reg.train_on_batch(x, y)
    assert loss == pytest.approx(data + penalty, rel=1e-5)
    assert plain.train_on_batch(x, y) == pytest.approx(data, rel=1e-5)
    # one SGD step: the penalty's gradient is added to the data gradient
    d_out = 2 * (out - y) / out.size + 2 * 0.05 * out / 8
    gk = x.T.astype(np.float64) @ d_out + 0.2 * k0
    gb = d_out.sum(0) + 0.01 * np.sign(b0)
    np.testing.assert_allclose(reg.layers[0].kernel.value, k0 - 0.1 * gk, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reg.layers[0].bias.value, b0 - 0.1 * gb, rtol=1e-5, atol=1e-6)


def test_layer_and_model_losses():
    bn = nn.BatchNormalization(gamma_regularizer="l2", beta_regularizer=nn.regularizers.L1(0.5))
    dense = nn.Dense(2, kernel_regularizer="l1", activity_regularizer="l2")
    model = nn.Sequential([nn.Input((3,)), dense, bn])
    bn.beta.assign([1.0, -2.0])
    assert [float(t.data) for t in bn.losses] == pytest.approx([0.01 * 2, 0.5 * 3])
    assert float(dense.losses[0].data) == pytest.approx(0.01 * np.abs(dense.kernel.value).sum())
    x = np.ones((4, 3), np.float32)
    out = dense(x)
    assert len(dense.losses) == 2
    assert float(dense.losses[1].data) == pytest.approx(0.01 * (out.data ** 2).sum() / 4,
                                                        rel=1e-6)
    assert len(model.losses) == 4
    bn.trainable = False                  # frozen weights are not regularized (Keras)
    assert bn.losses == [] and len(model.losses) == 2


def test_batch_norm_regularizers_train():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Input((3,)),
                           nn.BatchNormalization(gamma_regularizer=nn.regularizers.L2(10.0)),
                           nn.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.01))
    for _ in range(20):
        model.train_on_batch(x, y)
    gamma = model.layers[0].gamma.value
    assert (gamma < 0.5).all()            # L2(10): gamma decays ~(1 - 0.2) per step


def test_conv2d_takes_regularizers_and_constraints():
    layer = nn.Conv2D(2, 3, kernel_regularizer="l2", kernel_constraint="non_neg",
                      bias_constraint=nn.constraints.MaxNorm(1.0))
    layer(np.zeros((1, 5, 5, 1), np.float32))
    assert layer.kernel.regularizer is not None and layer.kernel.constraint is not None
    assert len(layer.losses) == 1


# ------------------------------------------------------------ constraints
def _ref_norms(w, axis):
    return np.sqrt((w ** 2).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("c,ref", [
    ("non_neg", lambda w: np.maximum(w, 0)),
    ("max_norm", lambda w: w * np.minimum(_ref_norms(w, 0), 2.0) / (1e-7 + _ref_norms(w, 0))),
    ("unit_norm", lambda w: w / (1e-7 + _ref_norms(w, 0))),
    ("min_max_norm", lambda w: w * np.clip(_ref_norms(w, 0), 0, 1) / (1e-7 + _ref_norms(w, 0))),
    (nn.constraints.MaxNorm(1.5, axis=1),
     lambda w: w * np.minimum(_ref_norms(w, 1), 1.5) / (1e-7 + _ref_norms(w, 1))),
    (nn.constraints.MinMaxNorm(1.0, 2.0, rate=0.5, axis=[0, 1]),
     lambda w: w * (0.5 * np.clip(_ref_norms(w, (0, 1)), 1, 2) + 0.5 * _ref_norms(w, (0, 1)))
     / (1e-7 + _ref_norms(w, (0, 1)))),
])
def test_constraint_values(c, ref):
    np.testing.assert_allclose(nn.constraints.get(c)(W), ref(W), rtol=1e-12)


def test_constraints_match_keras(keras):
    w = W.astype(np.float32) * 3
    for name in ("non_neg", "max_norm", "unit_norm", "min_max_norm"):
        k = np.asarray(keras.constraints.get(name)(w))
        np.testing.assert_allclose(nn.constraints.get(name)(w), k, rtol=1e-6, atol=1e-7)


def test_constraints_apply_after_each_step():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = 5 * rng.standard_normal((16, 3)).astype(np.float32)
    free = _dense_model()
    held = _dense_model(kernel_constraint=nn.constraints.MaxNorm(0.5),
                        bias_constraint="non_neg")
    held.set_weights(free.get_weights())
    free.train_on_batch(x, y)
    held.train_on_batch(x, y)
    k, b = free.get_weights()
    np.testing.assert_allclose(held.layers[0].kernel.value,
                               nn.constraints.MaxNorm(0.5)(k), rtol=1e-6)
    np.testing.assert_array_equal(held.layers[0].bias.value, np.maximum(b, 0))
    held.fit(x, y, epochs=3, verbose=0)
    assert (np.linalg.norm(held.layers[0].kernel.value, axis=0) <= 0.5 + 1e-6).all()
    assert (held.layers[0].bias.value >= 0).all()
    with pytest.raises(ValueError, match="unknown constraint"):
        nn.constraints.get("nonneg")


def test_constraint_configs_round_trip():
    for c in (nn.constraints.NonNeg(), nn.constraints.MaxNorm(3.0, axis=[0, 1]),
              nn.constraints.MinMaxNorm(0.5, 2.0, 0.3, 1), nn.constraints.UnitNorm(1)):
        back = nn.constraints.get(nn.constraints.serialize(c))
        assert type(back) is type(c) and back.get_config() == c.get_config()


# ---------------------------------------------------- the frozen layer
def test_frozen_batch_norm_returns_input_with_fresh_statistics():
    """trainable=False: inference mode (Keras 3), even in fit; fresh moving statistics
    (mean 0, variance 1) give x / sqrt(1 + epsilon), i.e. the input, up to epsilon."""
    bn = nn.BatchNormalization(trainable=False, epsilon=1e-3)
    x = 3 + 2 * np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    out = bn(x, training=True).data
    np.testing.assert_allclose(out, x / np.sqrt(1 + 1e-3), rtol=1e-6)
    assert bn.trainable_weights == [] and len(bn.non_trainable_weights) == 4
    model = nn.Sequential([nn.Input((3,)), bn, nn.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.1))
    model.fit(x, (x[:, 0] > 3).astype(int), epochs=2, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.value, np.zeros(3, np.float32))
    np.testing.assert_array_equal(bn.moving_variance.value, np.ones(3, np.float32))
    np.testing.assert_array_equal(bn.gamma.value, np.ones(3, np.float32))
