"""Keras 3 parity of fastbn.nn: optimizers, losses, initializers, activations, layer arguments.

Each behaviour is checked against a float64 NumPy reference written from
Keras' documented formula (always run) and, where Keras 3 with JAX is
installed, against Keras itself.
"""
import math

import numpy as np
import pytest

from fastbn import autograd as ag
from fastbn import nn
from fastbn.autograd import Tensor

from test_autograd import check_vjp


# ---------------------------------------------------------------- RMSprop
def rmsprop_reference(w, grads, lr=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                      centered=False):
    """Keras 3's RMSprop.update_step (keras/src/optimizers/rmsprop.py) in float64."""
    w = np.array(w, np.float64)
    v, a, m = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        v = rho * v + (1 - rho) * g * g
        if centered:
            a = rho * a + (1 - rho) * g
            den = v - a * a + epsilon
        else:
            den = v + epsilon
        inc = lr * g / np.sqrt(den)
        if momentum > 0:
            m = momentum * m + inc
            w = w - m
        else:
            w = w - inc
    return w


RMS_CASES = [{}, {"momentum": 0.9}, {"centered": True}, {"momentum": 0.5, "centered": True,
                                                          "rho": 0.8, "epsilon": 1e-3}]


def _grads(shape, n=4, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(n)]


@pytest.mark.parametrize("kw", RMS_CASES)
def test_rmsprop_matches_keras_rule(kw):
    w0 = np.random.default_rng(0).standard_normal((3, 4))
    grads = _grads(w0.shape)
    w = w0.copy()
    opt = nn.RMSprop(learning_rate=0.01, **kw)
    for g in grads:
        opt.apply([g], [w])
    np.testing.assert_allclose(w, rmsprop_reference(w0, grads, lr=0.01, **kw), rtol=1e-12)
    assert opt.iterations == len(grads)


def test_rmsprop_defaults_are_keras():
    opt = nn.optimizers.get("rmsprop")
    assert isinstance(opt, nn.RMSprop)
    assert (opt.learning_rate, opt.rho, opt.momentum, opt.epsilon, opt.centered) == (
        0.001, 0.9, 0.0, 1e-7, False)
    with pytest.raises(ValueError, match="rho"):
        nn.RMSprop(rho=1.0)


@pytest.mark.parametrize("kw", RMS_CASES)
def test_rmsprop_matches_keras(keras, kw):
    w0 = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    grads = [g.astype(np.float32) for g in _grads(w0.shape)]
    kv = keras.Variable(w0)
    kopt = keras.optimizers.RMSprop(learning_rate=0.01, **kw)
    w = w0.copy()
    opt = nn.RMSprop(learning_rate=0.01, **kw)
    for g in grads:
        kopt.apply_gradients([(keras.ops.convert_to_tensor(g), kv)])
        opt.apply([g], [w])
    np.testing.assert_allclose(w, np.asarray(kv.value), rtol=2e-6, atol=1e-7)


def test_compile_defaults_to_rmsprop():
    model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(loss="sparse_categorical_crossentropy")
    assert isinstance(model.optimizer, nn.RMSprop)
    model.fit(np.ones((4, 3)), [0, 1, 0, 1], verbose=0)
    assert model.optimizer.iterations == 1


# ----------------------------------------------------------------- losses
def _probs(rng, shape):
    e = np.exp(rng.standard_normal(shape))
    return e / e.sum(-1, keepdims=True)


def cce_reference(t, p, from_logits=False, eps=1e-7):
    if from_logits:
        z = p - p.max(-1, keepdims=True)
        logq = z - np.log(np.exp(z).sum(-1, keepdims=True))
    else:
        logq = np.log(np.clip(p / p.sum(-1, keepdims=True), eps, 1 - eps))
    return -(t * logq).sum(-1)


def bce_reference(t, p, from_logits=False, eps=1e-7):
    if from_logits:
        p = 1 / (1 + np.exp(-p))
    else:
        p = np.clip(p, eps, 1 - eps)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(-1)


def _loss_data(seed=0):
    rng = np.random.default_rng(seed)
    onehot = np.eye(4)[rng.integers(0, 4, 6)]
    probs = _probs(rng, (6, 4))
    logits = 3 * rng.standard_normal((6, 4))
    binary = rng.integers(0, 2, (6, 3)).astype(float)
    sig = rng.uniform(0.05, 0.95, (6, 3))
    reg_t, reg_p = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    return onehot, probs, logits, binary, sig, reg_t, reg_p


LOSSES = {
    # name -> (fastbn function, reference, data picker, kwargs)
    "categorical_crossentropy": (nn.losses.categorical_crossentropy, cce_reference,
                                 lambda d: (d[0], d[1]), {}),
    "categorical_crossentropy_logits": (nn.losses.categorical_crossentropy, cce_reference,
                                        lambda d: (d[0], d[2]), {"from_logits": True}),
    "binary_crossentropy": (nn.losses.binary_crossentropy, bce_reference,
                            lambda d: (d[3], d[4]), {}),
    "binary_crossentropy_logits": (nn.losses.binary_crossentropy, bce_reference,
                                   lambda d: (d[3], 3 * d[6]), {"from_logits": True}),
    "mean_squared_error": (nn.losses.mean_squared_error,
                           lambda t, p: ((p - t) ** 2).mean(-1), lambda d: (d[5], d[6]), {}),
    "mean_absolute_error": (nn.losses.mean_absolute_error,
                            lambda t, p: np.abs(p - t).mean(-1), lambda d: (d[5], d[6]), {}),
}


@pytest.mark.parametrize("name", LOSSES)
def test_loss_values_and_gradients(name):
    fn, ref, pick, kw = LOSSES[name]
    t, p = pick(_loss_data())
    per_sample = fn(t, Tensor(p), **kw)
    assert per_sample.shape == (6,)
    np.testing.assert_allclose(per_sample.data, ref(t, p, **kw), rtol=1e-12)
    check_vjp(lambda x: fn(t, x, **kw), p)


def test_loss_strings_classes_and_functions_agree():
    onehot, probs, logits, binary, sig, reg_t, reg_p = _loss_data()
    cases = [("categorical_crossentropy", nn.losses.CategoricalCrossentropy(), onehot, probs),
             ("binary_crossentropy", nn.losses.BinaryCrossentropy(), binary, sig),
             ("mse", nn.losses.MeanSquaredError(), reg_t, reg_p),
             ("mean_squared_error", nn.losses.MeanSquaredError(), reg_t, reg_p),
             ("mae", nn.losses.MeanAbsoluteError(), reg_t, reg_p),
             ("mean_absolute_error", nn.losses.MeanAbsoluteError(), reg_t, reg_p)]
    for name, obj, t, p in cases:
        by_name = nn.losses.get(name)
        assert type(by_name) is type(obj)
        fn = {"categorical_crossentropy": nn.losses.categorical_crossentropy,
              "binary_crossentropy": nn.losses.binary_crossentropy}.get(
            name, nn.losses.mean_squared_error if "sq" in name or name == "mse"
            else nn.losses.mean_absolute_error)
        assert type(nn.losses.get(fn)) is type(obj)
        expect = fn(t, p).data.mean()
        assert float(by_name(t, p).data) == pytest.approx(expect, rel=1e-12)
    # a user's function: its per-sample values are averaged, as Keras reduces them
    loss = nn.losses.get(lambda t, p: (p - np.asarray(t)) * 2.0)
    assert float(loss(reg_t, Tensor(reg_p)).data) == pytest.approx(2 * (reg_p - reg_t).mean())


def test_label_smoothing_and_clip():
    t = np.array([[0.0, 1.0]])
    p = np.array([[0.3, 0.7]])
    ls = nn.losses.CategoricalCrossentropy(label_smoothing=0.2)(t, p)
    assert float(ls.data) == pytest.approx(cce_reference(t * 0.8 + 0.1, p)[0])
    lb = nn.losses.BinaryCrossentropy(label_smoothing=0.2)(t, p)
    assert float(lb.data) == pytest.approx(bce_reference(t * 0.8 + 0.1, p)[0])
    # probability 0 and 1 are clipped at 1e-7: finite loss, zero gradient there
    x = Tensor(np.array([[0.0, 1.0]]), requires_grad=True)
    loss = nn.losses.BinaryCrossentropy()([[1.0, 1.0]], x)
    loss.backward()
    assert float(loss.data) == pytest.approx(-np.log(1e-7) / 2, rel=1e-6)
    assert np.array_equal(x.grad, [[0.0, 0.0]])


def test_sparse_function_form_is_per_sample():
    p = np.array([[0.5, 0.5], [0.25, 0.75]])
    out = nn.losses.sparse_categorical_crossentropy([0, 1], p)
    np.testing.assert_allclose(out.data, [np.log(2), -np.log(0.75)])
    assert float(nn.losses.get(nn.losses.sparse_categorical_crossentropy)([0, 1], p).data) \
        == pytest.approx(out.data.mean())


def test_loss_shape_errors():
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        nn.losses.categorical_crossentropy([0, 1], np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="unknown loss"):
        nn.losses.get("mean_sqared_error")
    # a missing trailing axis of 1 is added, as Keras does
    a = nn.losses.mean_squared_error([1.0, 2.0], np.array([[1.0], [0.0]]))
    np.testing.assert_allclose(a.data, [0.0, 4.0])


@pytest.mark.parametrize("name", LOSSES)
def test_losses_match_keras(keras, name):
    fn, _, pick, kw = LOSSES[name]
    t, p = pick(_loss_data())
    kname = name.replace("_logits", "")
    k = getattr(keras.losses, kname)(t.astype(np.float32), p.astype(np.float32), **kw)
    ours = fn(t.astype(np.float32), Tensor(p.astype(np.float32)), **kw)
    np.testing.assert_allclose(ours.data, np.asarray(k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss,y", [("categorical_crossentropy", "onehot"),
                                    ("binary_crossentropy", "binary"),
                                    ("mse", "onehot"), ("mae", "onehot")])
def test_fit_with_each_loss_lowers_it(loss, y):
    nn.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 5)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(int)
    units, act = (2, "softmax") if y == "onehot" else (1, "sigmoid")
    target = np.eye(2)[labels] if y == "onehot" else labels.astype(float)
    model = nn.Sequential([nn.Dense(units, activation=act, input_shape=(5,))])
    model.compile(optimizer=nn.Adam(0.05), loss=loss, metrics=["accuracy"])
    h = model.fit(x, target, epochs=10, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["accuracy"][-1] > 0.8
    loss_value, acc = model.evaluate(x, target, verbose=0)
    assert acc > 0.8


# ------------------------------------------------------------ activations
SELU_A, SELU_S = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
ACTIVATIONS = {
    "selu": lambda x: SELU_S * np.where(x > 0, x, SELU_A * np.expm1(np.minimum(x, 0))),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activation_values_and_gradients(name, dtype):
    x = np.linspace(-6, 6, 49)
    fn = nn.activations.get(name)
    y = fn(Tensor(x.astype(dtype)))
    assert y.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(y.data, ACTIVATIONS[name](x), rtol=tol, atol=tol)
    if dtype == np.float64:
        check_vjp(fn, x + 0.01)     # off the kinks at 0


def test_gelu_approximate_and_extremes():
    x = np.linspace(-4, 4, 17)
    c = math.sqrt(2 / math.pi)
    ref = 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(ag.gelu(Tensor(x), approximate=True).data, ref, rtol=1e-12)
    check_vjp(lambda t: ag.gelu(t, approximate=True), x + 0.01)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        big = np.array([-1000.0, 1000.0])
        assert np.array_equal(ag.softplus(Tensor(big)).data, [0.0, 1000.0])
        assert np.array_equal(ag.silu(Tensor(big)).data, [-0.0, 1000.0])
        assert np.isfinite(ag.selu(Tensor(big)).data).all()


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_keras(keras, name):
    x = np.linspace(-6, 6, 49).astype(np.float32)
    k = np.asarray(keras.activations.get(name)(x))
    np.testing.assert_allclose(nn.activations.get(name)(Tensor(x)).data, k,
                               rtol=2e-6, atol=2e-6)


# ----------------------------------------------------------- initializers
# name -> (class, expected stddev of the draws for a (400, 200) kernel, bound or None)
FAN_IN, FAN_OUT = 400, 200
INITS = {
    "he_uniform": (nn.initializers.HeUniform, math.sqrt(2 / FAN_IN),
                   math.sqrt(6 / FAN_IN)),
    "he_normal": (nn.initializers.HeNormal, math.sqrt(2 / FAN_IN), None),
    "glorot_normal": (nn.initializers.GlorotNormal, math.sqrt(2 / (FAN_IN + FAN_OUT)), None),
    "glorot_uniform": (nn.initializers.GlorotUniform, math.sqrt(2 / (FAN_IN + FAN_OUT)),
                       math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "lecun_normal": (nn.initializers.LecunNormal, math.sqrt(1 / FAN_IN), None),
    "lecun_uniform": (nn.initializers.LecunUniform, math.sqrt(1 / FAN_IN),
                      math.sqrt(3 / FAN_IN)),
    "random_normal": (nn.initializers.RandomNormal, 0.05, None),
    "normal": (nn.initializers.RandomNormal, 0.05, None),
    "random_uniform": (nn.initializers.RandomUniform, 0.05 / math.sqrt(3), 0.05),
    "uniform": (nn.initializers.RandomUniform, 0.05 / math.sqrt(3), 0.05),
    # Keras' TruncatedNormal: stddev 0.05 before truncation at 2 stddevs
    "truncated_normal": (nn.initializers.TruncatedNormal, 0.05 * 0.87962566103423978, 0.1),
}


@pytest.mark.parametrize("name", INITS)
def test_initializer_names_and_statistics(name):
    cls, std, bound = INITS[name]
    init = nn.initializers.get(name)
    assert type(init) is cls
    w = cls(seed=0)((FAN_IN, FAN_OUT))
    assert w.dtype == np.float32 and w.shape == (FAN_IN, FAN_OUT)
    assert abs(float(w.mean())) < 4 * std / math.sqrt(w.size)
    assert float(w.std()) == pytest.approx(std, rel=0.02)      # 80k draws: ~0.5 % noise
    if bound is not None:
        assert float(np.abs(w).max()) <= bound
    if "normal" in name and name not in ("random_normal", "normal"):   # truncated at 2 sigma
        sigma = std / 0.87962566103423978
        assert float(np.abs(w).max()) <= 2 * sigma + 1e-7
    np.testing.assert_array_equal(w, cls(seed=0)((FAN_IN, FAN_OUT)))     # seeded


def test_constant_and_config_round_trip():
    layer = nn.Dense(3, kernel_initializer=nn.initializers.Constant(4.0),
                     bias_initializer="constant")
    layer(np.ones((1, 2)))
    assert np.array_equal(layer.kernel.value, np.full((2, 3), 4.0, np.float32))
    assert np.array_equal(layer.bias.value, np.zeros(3, np.float32))
    for init in (nn.initializers.Constant(4.0), nn.initializers.RandomUniform(-1.0, 2.0, 3),
                 nn.initializers.VarianceScaling(2.0, "fan_out", "uniform"),
                 nn.initializers.HeUniform(seed=5)):
        back = nn.initializers.get(nn.initializers.serialize(init))
        assert type(back) is type(init) and back.get_config() == init.get_config()
    with pytest.raises(ValueError, match="mode"):
        nn.initializers.VarianceScaling(mode="fan")


@pytest.mark.parametrize("name", ["he_uniform", "glorot_normal", "lecun_normal",
                                  "lecun_uniform", "random_normal", "random_uniform",
                                  "truncated_normal", "uniform", "normal"])
def test_initializer_names_are_keras_classes(keras, name):
    assert type(nn.initializers.get(name)).__name__ == type(keras.initializers.get(name)).__name__
    k, ours = keras.initializers.get(name), nn.initializers.get(name)
    if hasattr(k, "get_config"):
        kc = {key: v for key, v in k.get_config().items() if key not in ("seed", "input_axes",
                                                                         "output_axes")}
        oc = {key: v for key, v in ours.get_config().items() if key != "seed"}
        assert oc == {key: v for key, v in kc.items() if key in oc}


# ------------------------------------------------ Keras 3 layer arguments
def test_input_dim_and_the_qa_model():
    nn.set_random_seed(0)
    model = nn.Sequential([
        nn.Dense(64, input_dim=14, kernel_initializer="uniform"),
        nn.BatchNormalization(epsilon=1e-06, momentum=0.9),
        nn.Activation("tanh"),
        nn.Dropout(0.5),
        nn.Dense(1, activation="sigmoid"),
    ])
    assert model.input_shape == (None, 14)
    assert model.count_params() == 14 * 64 + 64 + 4 * 64 + 65
    assert float(np.abs(model.layers[0].kernel.value).max()) <= 0.05
    model.compile(loss="binary_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).standard_normal((256, 14)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    h = model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    with pytest.raises(TypeError, match="not both"):
        nn.Dense(2, input_dim=3, input_shape=(3,))


@pytest.mark.parametrize("layer,kw,modern", [
    (nn.Dense, {"init": "uniform"}, "kernel_initializer="),
    (nn.BatchNormalization, {"mode": 0}, "no equivalent"),
    (nn.BatchNormalization, {"weights": None}, "set_weights"),
    (nn.Dense, {"W_regularizer": None}, "kernel_regularizer="),
])
def test_keras1_names_raise_naming_the_modern_spelling(layer, kw, modern):
    args = (3,) if layer is nn.Dense else ()
    with pytest.raises(TypeError, match=modern):
        layer(*args, **kw)
