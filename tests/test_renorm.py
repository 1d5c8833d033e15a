"""Batch renormalization (BatchNormalization(renorm=True)) as Keras 3 does it.

One training step is checked against a float64 computation written from Keras'
rule (keras/src/layers/normalization/batch_normalization.py): the output, the
gradients with r and d held constant, and every moving variable; Keras itself
side by side where installed.
"""

import numpy as np
import pytest

from fastbn import nn
from fastbn.autograd import Tensor

import reference as R

EPS, M, RM = 1e-3, 0.8, 0.9
CLIP = {"rmax": 1.5, "rmin": 0.5, "dmax": 0.3}


def _x(shape=(16, 4), seed=0):
    rng = np.random.default_rng(seed)
    return (3 + 2 * rng.standard_normal(shape)).astype(np.float32)


def _layer(clip=CLIP, **kw):
    bn = nn.BatchNormalization(renorm=True, renorm_clipping=clip, renorm_momentum=RM,
                               momentum=M, epsilon=EPS, **kw)
    bn.build((None, 4))
    return bn


def _set(bn, rng):
    """Non-trivial starting values for every variable."""
    bn.gamma.assign(rng.uniform(0.5, 1.5, 4))
    bn.beta.assign(rng.uniform(-0.5, 0.5, 4))
    bn.moving_mean.assign(rng.uniform(2, 4, 4))
    bn.moving_stddev.assign(rng.uniform(1, 3, 4))
    bn.moving_variance.assign(bn.moving_stddev.value.astype(np.float64) ** 2 - EPS)
    bn.renorm_mean.assign([3.0, 2.0, 4.0, 3.2])       # d clipped on some features
    bn.renorm_stddev.assign([2.0, 1.0, 5.0, 1.9])     # r clipped at rmax / rmin on some
    return {v.name.split("/")[1]: v.value.astype(np.float64).copy() for v in bn.weights}


def reference_step(x, v, clip=CLIP):
    """Keras 3's renorm training step in float64: (y, r, d, mean, invstd, new variables)."""
    x = x.astype(np.float64)
    mean, var = x.mean(0), x.var(0)
    std = np.sqrt(var + EPS)
    rs = np.maximum(v["renorm_stddev"], np.sqrt(EPS))
    r = np.clip(std / rs, clip["rmin"], clip["rmax"])
    d = np.clip((mean - v["renorm_mean"]) / rs, -clip["dmax"], clip["dmax"])
    xhat = (x - mean) / std
    y = (xhat * r + d) * v["gamma"] + v["beta"]
    ms = v["moving_stddev"] * M + std * (1 - M)
    new = {"renorm_mean": v["renorm_mean"] * RM + mean * (1 - RM),
           "renorm_stddev": v["renorm_stddev"] * RM + std * (1 - RM),
           "moving_mean": v["moving_mean"] * M + mean * (1 - M),
           "moving_stddev": ms, "moving_variance": np.maximum(ms ** 2 - EPS, 0),
           "gamma": v["gamma"], "beta": v["beta"]}
    return y, r, d, mean, 1 / std, new


def test_one_step_output_and_every_variable():
    rng = np.random.default_rng(1)
    bn = _layer()
    v0 = _set(bn, rng)
    x = _x()
    y = bn(x, training=True)
    ref_y, r, d, _, _, new = reference_step(x, v0)
    assert (r == CLIP["rmax"]).any() and (r == CLIP["rmin"]).any() and (np.abs(d) == 0.3).any()
    np.testing.assert_allclose(y.data, ref_y, rtol=1e-5, atol=1e-5)
    for v in bn.weights:
        np.testing.assert_allclose(v.value, new[v.name.split("/")[1]], rtol=1e-6, atol=1e-6,
                                   err_msg=v.name)


def test_backward_holds_r_and_d_constant():
    rng = np.random.default_rng(2)
    bn = _layer()
    v0 = _set(bn, rng)
    x = _x()
    dy = rng.standard_normal(x.shape)
    xt = Tensor(x, requires_grad=True)
    y = bn(xt, training=True)
    (y * dy.astype(np.float32)).sum().backward()
    _, r, d, mean, invstd, _ = reference_step(x, v0)
    # y = xhat * (gamma r) + (gamma d + beta): BN's backward with gamma r, r and d constants
    dx, dgh, dbeta = R.batch_norm_backward(dy, x, mean, invstd, v0["gamma"] * r)
    xhat = (x - mean) * invstd
    dgamma = (dy * xhat).sum(0) * r + dy.sum(0) * d
    np.testing.assert_allclose(xt.grad, dx, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(bn.gamma.tensor.grad, dgamma, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.beta.tensor.grad, dbeta, rtol=1e-5, atol=1e-5)


def test_inference_is_the_plain_layer():
    rng = np.random.default_rng(3)
    bn = _layer()
    _set(bn, rng)
    plain = nn.BatchNormalization(epsilon=EPS)
    plain.build((None, 4))
    plain.set_weights(bn.get_weights()[:4])
    x = _x(seed=4)
    np.testing.assert_array_equal(bn(x).data, plain(x).data)
    bn.trainable = False                          # frozen: inference even with training=True
    before = bn.get_weights()
    np.testing.assert_array_equal(bn(x, training=True).data, plain(x).data)
    for a, b in zip(bn.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_variables_initial_values_and_checks():
    bn = nn.BatchNormalization(renorm=True,
                               moving_variance_initializer=nn.initializers.Constant(4.0))
    bn.build((None, 3))
    assert [v.name.split("/")[1] for v in bn.weights] == [
        "gamma", "beta", "moving_mean", "moving_variance", "moving_stddev", "renorm_mean",
        "renorm_stddev"]
    assert [v.trainable for v in bn.weights] == [True, True] + [False] * 5
    np.testing.assert_array_equal(bn.moving_stddev.value, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(bn.renorm_stddev.value, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(bn.renorm_mean.value, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="invalid keys"):
        nn.BatchNormalization(renorm=True, renorm_clipping={"rmax": 2, "r_min": 0})
    with pytest.raises(ValueError, match="rmax should be greater than rmin"):
        nn.BatchNormalization(renorm=True, renorm_clipping={"rmax": 1, "rmin": 2})
    with pytest.raises(ValueError, match="dmax should be non-negative"):
        nn.BatchNormalization(renorm=True, renorm_clipping={"dmax": -1})
    nn.BatchNormalization(renorm_clipping={"bad": 1})     # unchecked without renorm (Keras)
    config = nn.BatchNormalization(renorm=True, renorm_clipping={"rmax": 3.0},
                                   renorm_momentum=0.5).get_config()
    assert (config["renorm"], config["renorm_clipping"], config["renorm_momentum"]) == (
        True, {"rmax": 3.0}, 0.5)
    assert nn.BatchNormalization.from_config(config).get_config() == config


def test_renorm_model_trains():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Input((4,)), nn.Dense(8, activation="relu"),
                           nn.BatchNormalization(renorm=True), nn.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                  metrics=["accuracy"])
    h = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_two_steps_match_keras(keras):
    kw = dict(renorm=True, renorm_clipping=CLIP, renorm_momentum=RM, momentum=M, epsilon=EPS)
    kb = keras.layers.BatchNormalization(
        moving_variance_initializer=keras.initializers.Constant(4.0),
        gamma_initializer=keras.initializers.Constant(1.3),
        beta_initializer=keras.initializers.Constant(-0.2), **kw)
    fb = nn.BatchNormalization(moving_variance_initializer=nn.initializers.Constant(4.0),
                               gamma_initializer=nn.initializers.Constant(1.3),
                               beta_initializer=nn.initializers.Constant(-0.2), **kw)
    for seed in (0, 1):
        x = _x(seed=seed)
        np.testing.assert_allclose(fb(x, training=True).data,
                                   np.asarray(kb(x, training=True)), rtol=1e-5, atol=1e-5)
    assert [v.name for v in kb.weights] == [v.name.split("/")[1] for v in fb.weights]
    for kv, fv in zip(kb.weights, fb.weights):
        np.testing.assert_allclose(fv.value, np.asarray(kv.value), rtol=1e-5, atol=1e-6,
                                   err_msg=fv.name)
    x = _x(seed=2)
    np.testing.assert_allclose(fb(x).data, np.asarray(kb(x, training=False)), rtol=1e-5,
                               atol=1e-5)
