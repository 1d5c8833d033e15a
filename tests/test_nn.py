"""fastbn.nn: layers, optimizers, initializers, Sequential, against hand-computed values.

Expected numbers are computed here with plain NumPy from the Keras formulas,
never by calling fastbn for the expected side.
"""
import math

import numpy as np
import pytest

from fastbn import nn


@pytest.fixture(autouse=True)
def fresh_session():
    nn.clear_session()
    nn.set_random_seed(1234)


def notebook_model():
    return nn.Sequential([
        nn.Flatten(input_shape=[28, 28]),
        nn.BatchNormalization(),
        nn.Dense(300, activation="elu", kernel_initializer="he_normal"),
        nn.BatchNormalization(),
        nn.Dense(100, activation="elu", kernel_initializer="he_normal"),
        nn.BatchNormalization(),
        nn.Dense(10, activation="softmax"),
    ])


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ summary, names
def test_notebook_summary_counts_and_variable_names(capsys):
    model = notebook_model()
    model.summary()
    out = capsys.readouterr().out
    assert "Total params: 271,346" in out
    assert "Trainable params: 268,978" in out
    assert "Non-trainable params: 2,368" in out
    assert model.count_params() == 271_346
    assert [(v.name, v.trainable) for v in model.layers[1].variables] == [
        ("batch_normalization/gamma", True), ("batch_normalization/beta", True),
        ("batch_normalization/moving_mean", False),
        ("batch_normalization/moving_variance", False)]
    assert [layer.name for layer in model.layers] == [
        "flatten", "batch_normalization", "dense", "batch_normalization_1", "dense_1",
        "batch_normalization_2", "dense_2"]
    assert model.layers[2].variables[0].shape == (784, 300)


def test_add_builds_the_same_model_as_a_list():
    a = notebook_model()
    nn.clear_session()
    b = nn.Sequential()
    for layer in [nn.Flatten(input_shape=[28, 28]), nn.BatchNormalization(),
                  nn.Dense(300, activation="elu"), nn.Dense(10, activation="softmax")]:
        b.add(layer)
    assert b.count_params() == 784 * 4 + 784 * 300 + 300 + 300 * 10 + 10
    assert a.layers[0].name == b.layers[0].name == "flatten"


def test_bn_center_scale_false_and_axis_list():
    bn = nn.BatchNormalization(axis=[1, 2], center=False, scale=False)
    y = bn(np.random.default_rng(0).standard_normal((8, 3, 4)).astype(np.float32),
           training=True)
    assert y.shape == (8, 3, 4)
    assert [v.name.split("/")[1] for v in bn.variables] == ["moving_mean", "moving_variance"]
    assert bn.moving_mean.shape == (3, 4) and bn.count_params() == 24


# ------------------------------------------------------------------ layers
def test_dense_forward_is_x_at_w_plus_b():
    layer = nn.Dense(3, activation="relu", input_shape=(4,))
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = np.array([0.5, -0.5, 0.0], np.float32)
    layer.build((None, 4))
    layer.set_weights([w, b])
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), np.maximum(x @ w + b, 0), rtol=1e-6)
    with pytest.raises(ValueError, match="not built"):
        nn.Dense(3).count_params()
    d = nn.Dense(3, use_bias=False)
    d.build((None, 4))
    assert d.count_params() == 12


def test_batch_norm_layer_training_vs_inference_and_moving_update():
    bn = nn.BatchNormalization(momentum=0.9, epsilon=1e-3)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 5)) * 3 + 7).astype(np.float32)
    y = bn(x, training=True).numpy()
    x64 = x.astype(np.float64)
    mu, var = x64.mean(0), x64.var(0)
    np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(var + 1e-3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mu, rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-6)
    y_inf = bn(x, training=False).numpy()           # moving statistics, not batch ones
    mm, mv = 0.1 * mu, 0.9 + 0.1 * var
    np.testing.assert_allclose(y_inf, (x64 - mm) / np.sqrt(mv + 1e-3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mm, rtol=1e-6)   # unchanged
    bn.trainable = False                            # Keras 3: frozen BN runs in inference
    np.testing.assert_allclose(bn(x, training=True).numpy(), y_inf, rtol=1e-6)


def test_dropout_layer():
    layer = nn.Dropout(0.5)
    x = np.ones((2000, 10), np.float32)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    y = layer(x, training=True).numpy()
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert abs(y.mean() - 1.0) < 0.05
    with pytest.raises(ValueError, match="rate"):
        nn.Dropout(1.0)


def test_flatten_and_activation_layers():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 12
    assert nn.Flatten()(x).shape == (2, 12)
    np.testing.assert_allclose(nn.Activation("relu")(x).numpy(), np.maximum(x, 0))
    np.testing.assert_allclose(nn.Activation("elu")(x).numpy(),
                               np.where(x > 0, x, np.expm1(np.minimum(x, 0))), rtol=1e-6)
    np.testing.assert_allclose(nn.LeakyReLU(negative_slope=0.1)(x).numpy(),
                               np.where(x > 0, x, 0.1 * x), rtol=1e-6)
    with pytest.raises(ValueError, match="swish_typo"):
        nn.Activation("swish_typo")


# ------------------------------------------------------------------ initializers
def test_initializers_follow_keras():
    rng_shape = (400, 300)
    w = nn.initializers.get("glorot_uniform")(rng_shape)
    limit = math.sqrt(6 / (400 + 300))
    assert w.dtype == np.float32 and np.abs(w).max() <= limit
    assert abs(w.std() - limit / math.sqrt(3)) < 0.02 * limit
    h = nn.initializers.get("he_normal")(rng_shape)
    std = math.sqrt(2 / 400)                        # Keras: truncated at 2 std, rescaled
    assert np.abs(h).max() <= 2 * std / 0.87962566103423978 + 1e-7
    assert abs(h.std() - std) < 0.03 * std
    np.testing.assert_array_equal(nn.initializers.get("zeros")((3,)), np.zeros(3))
    np.testing.assert_array_equal(nn.initializers.get("ones")((3,)), np.ones(3))
    with pytest.raises(ValueError, match="he_nromal"):
        nn.initializers.get("he_nromal")


# ------------------------------------------------------------------ optimizers
def test_sgd_plain_momentum_nesterov_by_hand():
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    w = np.array([1.0, 1.0])
    nn.SGD(learning_rate=0.1).apply([g1], [w])
    np.testing.assert_allclose(w, [0.9, 1.2])
    for nesterov in (False, True):
        w = np.array([1.0, 1.0])
        opt = nn.SGD(learning_rate=0.1, momentum=0.9, nesterov=nesterov)
        m = np.zeros(2)
        expect = w.copy()
        for g in (g1, g2):
            opt.apply([g], [w])
            m = 0.9 * m - 0.1 * g
            expect = expect + (0.9 * m - 0.1 * g if nesterov else m)
        np.testing.assert_allclose(w, expect, rtol=1e-12)


def test_adam_by_hand_and_one_step_counter_per_step():
    opt = nn.Adam(learning_rate=0.01)
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.9, 0.999, 1e-7)
    w1, w2 = np.array([1.0]), np.array([1.0])       # two variables, same gradients
    m = v = 0.0
    expect = 1.0
    for t, g in enumerate([0.5, -1.0, 2.0], start=1):
        opt.apply([np.array([g]), np.array([g])], [w1, w2])
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        alpha = 0.01 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        expect -= alpha * m / (math.sqrt(v) + 1e-7)
    assert opt.iterations == 3
    np.testing.assert_allclose(w1, [expect], rtol=1e-12)
    np.testing.assert_array_equal(w1, w2)


def test_optimizer_strings_and_learning_rate_setter():
    model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="SGD")
    assert isinstance(model.optimizer, nn.SGD) and model.optimizer.learning_rate == 0.01
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    assert isinstance(model.optimizer, nn.Adam) and model.optimizer.learning_rate == 0.001
    model.optimizer.learning_rate = 0.5
    assert model.optimizer.learning_rate == 0.5
    with pytest.raises(ValueError, match="rmsprob"):
        model.compile(loss="sparse_categorical_crossentropy", optimizer="rmsprob")


# ------------------------------------------------------------------ training
def test_one_sgd_step_equals_hand_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0, 2])
    model = nn.Sequential([nn.Dense(3, activation="softmax", input_shape=(4,))])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.1),
                  metrics=["accuracy"])
    w0, b0 = [a.astype(np.float64) for a in model.get_weights()]
    p = softmax(x.astype(np.float64) @ w0 + b0)
    loss = -np.log(p[np.arange(6), y]).mean()
    d = p.copy()
    d[np.arange(6), y] -= 1
    d /= 6
    got_loss, _ = model.train_on_batch(x, y)
    assert got_loss == pytest.approx(loss, rel=1e-5)
    w1, b1 = model.get_weights()
    np.testing.assert_allclose(w1, w0 - 0.1 * x.T.astype(np.float64) @ d, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b0 - 0.1 * d.sum(0), rtol=1e-5, atol=1e-6)


def test_fit_history_validation_split_and_quiet(capsys):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = nn.Sequential([nn.Dense(8, activation="relu", input_shape=(5,)),
                           nn.BatchNormalization(), nn.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.1),
                  metrics=["accuracy"])
    h = model.fit(x, y, epochs=3, validation_split=0.25, verbose=0)
    assert capsys.readouterr().out == ""
    assert sorted(h.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 3 for v in h.history.values())
    # Keras holds out the *last* 25%; evaluate on it gives the last val numbers
    loss, acc = model.evaluate(x[150:], y[150:], verbose=0)
    assert loss == pytest.approx(h.history["val_loss"][-1], rel=1e-6)
    assert acc == pytest.approx(h.history["val_accuracy"][-1])
    assert h.history["accuracy"][-1] > 0.8
    model.fit(x, y, epochs=1, verbose=1)
    assert "Epoch 1/1" in capsys.readouterr().out


def test_evaluate_uses_moving_statistics_not_batch_statistics():
    x = (np.random.default_rng(4).standard_normal((64, 3)) + 5).astype(np.float32)
    model = nn.Sequential([nn.BatchNormalization(input_shape=(3,)),
                           nn.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.0))
    out_eval = model.predict(x, verbose=0)
    w, b = [a.astype(np.float64) for a in model.layers[1].get_weights()]
    fresh = x / np.sqrt(1 + 1e-3)                   # moving mean 0, variance 1
    np.testing.assert_allclose(out_eval, softmax(fresh @ w + b), rtol=1e-5)
    out_train = model(x, training=True).numpy()
    xb = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    np.testing.assert_allclose(out_train, softmax(xb @ w + b), rtol=1e-4, atol=1e-6)


def test_same_seed_same_training():
    def run():
        nn.clear_session()
        nn.set_random_seed(7)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((96, 6)).astype(np.float32)
        y = rng.integers(0, 3, 96)
        model = nn.Sequential([nn.Dense(16, activation="elu", input_shape=(6,)),
                               nn.BatchNormalization(), nn.Dropout(0.2),
                               nn.Dense(3, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                      metrics=["accuracy"])
        h = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        return h.history, model.get_weights()
    (h1, w1), (h2, w2) = run(), run()
    assert h1 == h2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_notebook_runs_on_small_fake_data():
    rng = np.random.default_rng(5)
    X_train_full = rng.integers(0, 256, (300, 28, 28)).astype(np.uint8) / 255.0
    y_train_full = rng.integers(0, 10, 300).astype(np.uint8)
    X_valid, X_train = X_train_full[:50], X_train_full[50:]
    y_valid, y_train = y_train_full[:50], y_train_full[50:]
    model = notebook_model()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="SGD",
                  metrics=["accuracy"])
    history = model.fit(X_train, y_train, epochs=2, validation_data=(X_valid, y_valid),
                        verbose=0)
    assert len(history.history["val_accuracy"]) == 2
    loss, acc = model.evaluate(X_valid, y_valid, verbose=0)
    assert np.isfinite(loss) and 0 <= acc <= 1
    assert model.predict(X_valid[:3], verbose=0).shape == (3, 10)


# ------------------------------------------------------------------ weights
def test_save_and_load_weights_round_trip(tmp_path):
    model = notebook_model()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="SGD")
    x = np.random.default_rng(6).random((40, 28, 28)).astype(np.float32)
    model.fit(x, np.arange(40) % 10, epochs=1, verbose=0)     # moving stats move too
    path = tmp_path / "w.npz"
    model.save_weights(path)
    with np.load(path, allow_pickle=False) as f:
        assert "batch_normalization/moving_mean" in f.files
    other = notebook_model()                        # other names: dense_3, ...
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x, verbose=0), other.predict(x, verbose=0))
    small = nn.Sequential([nn.Flatten(input_shape=[28, 28]), nn.Dense(10)])
    with pytest.raises(ValueError, match="different architecture"):
        small.load_weights(path)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: m.fit(x, y[:-1], verbose=0), "samples|labels|length"),
    (lambda m, x, y: m.fit(x[:, :3], y, verbose=0), "shape"),
    (lambda m, x, y: m.fit(x, y + 5, verbose=0), "labels must be in"),
    (lambda m, x, y: m.fit(x, y, batch_size=0, verbose=0), "batch_size"),
    (lambda m, x, y: m.fit(x, y, validation_split=1.5, verbose=0), "validation_split"),
])
def test_fit_bad_input_is_explained(call, match):
    model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(4,))])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    x = np.ones((10, 4), np.float32)
    y = np.zeros(10, np.int64)
    with pytest.raises(ValueError, match=match):
        call(model, x, y)


def test_fit_before_compile_is_explained():
    model = nn.Sequential([nn.Dense(2, input_shape=(4,))])
    with pytest.raises((RuntimeError, ValueError), match="compile"):
        model.fit(np.ones((2, 4)), np.zeros(2), verbose=0)


def test_compile_takes_one_metric_as_a_string():
    """compile(metrics="accuracy") read "unknown metric 'a'"."""
    model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics="accuracy")
    assert model.metrics_names == ["loss", "accuracy"]
    loss, acc = model.evaluate(np.ones((4, 3)), [0, 1, 0, 1], verbose=0)
    assert acc == 0.5


@pytest.mark.parametrize("call,exc,match", [
    (lambda m, x: m.fit(x, np.zeros(8), validation_split="0.2", verbose=0), TypeError,
     "validation_split must be a number"),
    (lambda m, x: m.fit(x, 3, verbose=0), ValueError, "labels y must hold one label per sample"),
    (lambda m, x: m.evaluate(x, 3, verbose=0), ValueError, "one label per sample"),
    (lambda m, x: m(x, training="False"), TypeError, "training must be a bool"),
    (lambda m, x: m.layers[0](x, training="False"), TypeError, "training must be a bool"),
    (lambda m, x: nn.BatchNormalization(momentum="0.9"), TypeError,
     "momentum must be a number.*'0.9'"),
    (lambda m, x: nn.BatchNormalization(momentum=True), TypeError, "momentum must be a number"),
    (lambda m, x: nn.BatchNormalization(epsilon="1e-3"), TypeError, "epsilon must be a number"),
])
def test_argument_types_are_explained(call, exc, match):
    """Each used to be NumPy's or Python's words, or (training="False") trained."""
    model = nn.Sequential([nn.BatchNormalization(input_shape=(3,)),
                           nn.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    moving = model.layers[0].moving_mean.value.copy()
    with pytest.raises(exc, match=match):
        call(model, x)
    np.testing.assert_array_equal(model.layers[0].moving_mean.value, moving)


def test_batch_norm_layer_takes_zero_d_array_arguments():
    bn = nn.BatchNormalization(momentum=np.array(0.5), epsilon=np.float32(0.0))
    assert (bn.momentum, bn.epsilon) == (0.5, 0.0)


def _nan_model(units, activation, loss):
    model = nn.Sequential([nn.Dense(4, input_shape=(3,)), nn.BatchNormalization(),
                           nn.Dense(units, activation=activation)])
    model.compile(loss=loss, optimizer="sgd", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("units,activation,loss", [
    (3, "softmax", "sparse_categorical_crossentropy"),
    (1, "sigmoid", "binary_crossentropy"),
])
def test_nan_outputs_count_as_wrong_with_one_warning(units, activation, loss):
    """argmax of a NaN row is 0 and NaN > 0.5 is False: with every label 0 a NaN
    model read accuracy 1.0. Now 0.0, and one warning per evaluate / fit."""
    model = _nan_model(units, activation, loss)
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    y = np.zeros(40, int)
    model.set_weights([np.full_like(w, np.nan) if i == 0 else w
                       for i, w in enumerate(model.get_weights())])
    with pytest.warns(RuntimeWarning, match="40 prediction.*NaN.*count as wrong") as rec:
        loss_value, acc = model.evaluate(x, y, batch_size=8, verbose=0)
    assert acc == 0.0 and math.isnan(loss_value)
    assert len([w for w in rec if "NaN" in str(w.message)]) == 1


def test_nan_input_in_fit_warns_once_and_accuracy_is_honest():
    model = _nan_model(3, "softmax", "sparse_categorical_crossentropy")
    x = np.random.default_rng(1).standard_normal((64, 3)).astype(np.float32)
    x[5, 1] = np.nan                     # one NaN pixel poisons every weight
    y = np.zeros(64, int)
    with pytest.warns(RuntimeWarning, match="fit\\(\\), epoch 1: .*NaN") as rec:
        h = model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False)
    assert len([w for w in rec if "NaN" in str(w.message)]) == 1
    assert h.history["accuracy"][1:] == [0.0, 0.0]


@pytest.mark.parametrize("call,match", [
    (lambda m, x, y: m.evaluate(x[:0], y[:0], verbose=0), "evaluate.*no samples"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0),
     "validation_data has no samples"),
    (lambda m, x, y: m.fit(x[:3], y[:3], validation_split=1e-17, verbose=0), "holds none out"),
])
def test_empty_evaluation_data_raises(call, match):
    """Each reported a loss and accuracy of 0.0."""
    model = _nan_model(3, "softmax", "sparse_categorical_crossentropy")
    x = np.ones((8, 3), np.float32)
    y = np.zeros(8, int)
    with pytest.raises(ValueError, match=match):
        call(model, x, y)
