"""Masks, Keras' semantics: fastbn.moments(where=), batch_norm_forward/backward(mask=),
BatchNormalization(x, training, mask), nn.Masking and Sequential's mask propagation."""

import numba
import numpy as np
import pytest

import fastbn
from fastbn import nn

import reference as R


def _padded(seed=0, n=6, t=7, c=3, offset=0.0, dtype=np.float32):
    """(n, t, c) with each sequence's tail padded with zeros, and its (n, t) mask."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, n)
    mask = np.arange(t)[None, :] < lengths[:, None]
    x = (offset + rng.standard_normal((n, t, c))) * mask[..., None]
    return x.astype(dtype), mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0.0, 1e5])
def test_masked_moments_are_those_of_the_selected_values(dtype, offset):
    x, mask = _padded(offset=offset, dtype=dtype, n=40, t=50)
    mean, var = fastbn.moments(x, axis=(0, 1), where=mask[..., None])
    sel = x[mask]
    ref_mean, ref_var = R.moments(sel, axis=0)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(var, ref_var, rtol=1e-5 if dtype == np.float32 else 1e-9)
    _, m2, _ = fastbn.batch_norm_forward(x, None, None, mask=mask)   # float64 statistics
    assert np.array_equal(mean, m2.astype(dtype))         # the same kernel: the same bits
    m3, v3 = fastbn.moments(x, axis=(0, 1), where=mask, keepdims=True)   # Keras' (N, T) mask
    assert m3.shape == (1, 1, 3) and np.array_equal(m3.ravel(), mean)


def test_masked_statistics_are_bitwise_the_same_for_any_thread_count():
    x, mask = _padded(n=300, t=64, c=96, offset=3.0)
    results = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            mm, mv = np.zeros(96), np.ones(96)
            y, mean, invstd = fastbn.batch_norm_forward(x, None, None, mask=mask,
                                                        moving_mean=mm, moving_variance=mv)
            dx, dg, db = fastbn.batch_norm_backward(np.cos(x), x, mean, invstd, None, mask=mask)
            results.append((y, mean, invstd, mm, mv, dx, dg, db))
        finally:
            numba.set_num_threads(old)
    for a, b in zip(results[0], results[-1]):
        assert np.array_equal(a, b)
    sel = x[mask].astype(np.float64)
    np.testing.assert_allclose(results[0][1], sel.mean(0), rtol=1e-12)
    np.testing.assert_allclose(1 / results[0][2] ** 2 - 1e-3, sel.var(0), rtol=1e-10)


def test_masked_statistics_read_the_selected_rows_in_place(monkeypatch):
    """C-contiguous input with the features last takes the in-place kernel, in
    parallel for a large one (the determinism test above covers it), serially
    for a small one; other layouts gather the selected positions."""
    from fastbn import kernels
    used = []

    class Spy:
        def __init__(self, name):
            self.name, self.real = name, getattr(kernels, name)

        @property
        def serial(self):
            used.append((self.name, "serial"))
            return self.real.serial

        @property
        def parallel(self):
            used.append((self.name, "parallel"))
            return self.real.parallel
    for name in ("_moments_rows_at", "_masked_grad_rows"):
        monkeypatch.setattr(kernels, name, Spy(name))
    x, mask = _padded(n=300, t=64, c=96, offset=3.0)
    _, mean, invstd = fastbn.batch_norm_forward(x, None, None, mask=mask)
    fastbn.moments(x[:4].copy(), axis=(0, 1), where=mask[:4])
    dx = fastbn.batch_norm_backward(np.cos(x), x, mean, invstd, None, mask=mask)[0]
    expect = [("_moments_rows_at", "parallel"), ("_moments_rows_at", "serial"),
              ("_masked_grad_rows", "parallel")]
    assert used == expect
    xf = np.asfortranarray(x)
    fastbn.batch_norm_forward(xf, None, None, mask=mask)
    dxf = fastbn.batch_norm_backward(np.cos(xf), xf, mean, invstd, None, mask=mask)[0]
    assert used == expect
    np.testing.assert_allclose(dx, dxf, rtol=1e-5, atol=1e-6)     # float32 output


def test_where_errors():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="varies along the feature axes"):
        fastbn.moments(x, axis=0, where=np.eye(4, 3, dtype=bool))
    with pytest.raises(ValueError, match="selects no elements"):
        fastbn.moments(x, axis=0, where=np.zeros((4, 1), bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        fastbn.moments(x, axis=0, where=np.ones(5, bool))


def test_masked_forward_uses_unmasked_statistics_everywhere():
    x, mask = _padded(seed=1)
    rng = np.random.default_rng(1)
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    mm, mv = np.full(3, 0.5), np.full(3, 2.0)
    y, mean, invstd = fastbn.batch_norm_forward(x, gamma, beta, mask=mask, moving_mean=mm,
                                                moving_variance=mv, momentum=0.9)
    sel = x[mask].astype(np.float64)
    mu, var = sel.mean(0), sel.var(0)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-3) * gamma + beta, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(mm, 0.9 * 0.5 + 0.1 * mu, rtol=1e-12)
    np.testing.assert_allclose(mv, 0.9 * 2.0 + 0.1 * var, rtol=1e-12)
    # inference: a mask changes nothing
    a = fastbn.batch_norm_forward(x, gamma, beta, training=False, moving_mean=mm,
                                  moving_variance=mv, mask=mask)[0]
    b = fastbn.batch_norm_forward(x, gamma, beta, training=False, moving_mean=mm,
                                  moving_variance=mv)[0]
    assert np.array_equal(a, b)
    # a fully masked batch: zeros, moving statistics untouched
    before = mm.copy(), mv.copy()
    y0, _, _ = fastbn.batch_norm_forward(x, gamma, beta, mask=np.zeros_like(mask),
                                         moving_mean=mm, moving_variance=mv)
    assert not y0.any() and np.array_equal(mm, before[0]) and np.array_equal(mv, before[1])


def test_masked_backward_against_finite_differences():
    x, mask = _padded(seed=2, dtype=np.float64)
    rng = np.random.default_rng(2)
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    dy = rng.standard_normal(x.shape)

    def f(xx, gg):
        sel = xx[mask]
        return (xx - sel.mean(0)) / np.sqrt(sel.var(0) + 1e-3) * gg + beta
    y, mean, invstd = fastbn.batch_norm_forward(x, gamma, beta, mask=mask)
    dx, dgamma, dbeta = fastbn.batch_norm_backward(dy, x, mean, invstd, gamma, mask=mask)
    h = 1e-6
    vx, vg = rng.standard_normal(x.shape), rng.standard_normal(3)
    num_x = ((f(x + h * vx, gamma) - f(x - h * vx, gamma)) * dy).sum() / (2 * h)
    num_g = ((f(x, gamma + h * vg) - f(x, gamma - h * vg)) * dy).sum() / (2 * h)
    assert (dx * vx).sum() == pytest.approx(num_x, rel=1e-6)
    assert (dgamma * vg).sum() == pytest.approx(num_g, rel=1e-6)
    np.testing.assert_allclose(dbeta, dy.sum((0, 1)), rtol=1e-12)
    # masked positions get no statistic's gradient: dx = gamma invstd dy there
    np.testing.assert_allclose(dx[~mask], (gamma * invstd * dy)[~mask], rtol=1e-12)


def test_layer_mask_and_padded_batch_moving_statistics():
    x, mask = _padded(seed=3)
    bn = nn.BatchNormalization(momentum=0.0)          # moving = this batch's statistics
    bn(x, training=True, mask=mask)
    sel = x[mask].astype(np.float64)
    np.testing.assert_allclose(bn.moving_mean.value, sel.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn.moving_variance.value, sel.var(0), rtol=1e-5)


def test_sequential_passes_the_masking_layers_mask():
    x, mask = _padded(seed=4)
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Input((None, 3)), nn.Masking(), nn.Dense(4),
                           nn.BatchNormalization(momentum=0.0), nn.Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    k, b = (v.astype(np.float64) for v in model.layers[1].get_weights())   # before the step
    model.train_on_batch(x, np.zeros((6, 7, 1), np.float32))
    h = x[mask].astype(np.float64) @ k + b
    bn = model.layers[2]
    np.testing.assert_allclose(bn.moving_mean.value, h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.value, h.var(0), rtol=1e-4, atol=1e-6)
    assert nn.Masking(mask_value=-1.0).get_config()["mask_value"] == -1.0


def test_masked_batch_norm_matches_keras(keras):
    x, mask = _padded(seed=5)
    kb = keras.layers.BatchNormalization(momentum=0.5)
    fb = nn.BatchNormalization(momentum=0.5)
    ko = np.asarray(kb(x, training=True, mask=mask))
    fo = fb(x, training=True, mask=mask).data
    np.testing.assert_allclose(fo, ko, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fb.moving_mean.value, np.asarray(kb.moving_mean.value),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fb.moving_variance.value, np.asarray(kb.moving_variance.value),
                               rtol=1e-5, atol=1e-6)


def _masked_regression(seed=6):
    x, mask = _padded(seed=seed)
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((6, 7, 2)).astype(np.float32)
    y[~mask] = 1e3                                   # padded targets: must not count
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Input((None, 3)), nn.Masking(), nn.Dense(2)])
    model.compile(loss="mse", optimizer=nn.SGD(0.1))
    return model, x, mask, y


def test_the_output_mask_weights_the_loss():
    model, x, mask, y = _masked_regression()
    k, b = (w.astype(np.float64) for w in model.get_weights())
    pred = x.astype(np.float64) @ k + b
    per = ((pred - y) ** 2).mean(-1)
    expect = per[mask].mean()                        # Keras: the mean over unmasked steps
    assert model.evaluate(x, y, verbose=0) == pytest.approx(expect, rel=1e-5)
    assert model.train_on_batch(x, y) == pytest.approx(expect, rel=1e-5)
    # the gradient ignores the padded steps too: one SGD step by hand
    d = np.zeros_like(pred)
    d[mask] = 2 * (pred - y)[mask] / 2 / mask.sum()
    gk = np.einsum("ntc,ntu->cu", x.astype(np.float64), d)
    np.testing.assert_allclose(model.layers[1].kernel.value, k - 0.1 * gk, rtol=1e-4, atol=1e-6)


def test_masked_loss_matches_keras(keras):
    model, x, mask, y = _masked_regression(seed=7)
    km = keras.Sequential([keras.Input((None, 3)), keras.layers.Masking(),
                           keras.layers.Dense(2)])
    km.set_weights(model.get_weights())
    km.compile(loss="mse", optimizer="sgd")
    assert model.evaluate(x, y, verbose=0) == pytest.approx(
        float(km.evaluate(x, y, verbose=0)), rel=1e-5)


@pytest.mark.parametrize("shape,axis,mshape", [((4, 3, 5, 6), 1, (4, 5, 6)),
                                               ((8, 4, 3), (1, 2), (8,))])
def test_masks_with_other_feature_axes(shape, axis, mshape):
    rng = np.random.default_rng(8)
    x = 100 + rng.standard_normal(shape)
    mask = rng.random(mshape) > 0.4
    feats = (axis,) if isinstance(axis, int) else axis
    rest = [a for a in range(x.ndim) if a not in feats]
    sel = np.transpose(x, rest + list(feats))[mask]
    y, mean, invstd = fastbn.batch_norm_forward(x, None, None, axis=axis, mask=mask)
    np.testing.assert_allclose(mean, sel.mean(0), rtol=1e-13)
    np.testing.assert_allclose(1 / invstd ** 2 - 1e-3, sel.var(0), rtol=1e-9)
    dy = rng.standard_normal(shape)
    dx, _, _ = fastbn.batch_norm_backward(dy, x, mean, invstd, None, axis=axis, mask=mask)
    full = np.broadcast_to(np.expand_dims(mask, tuple(feats)), shape)
    inv = np.expand_dims(invstd, tuple(rest))
    np.testing.assert_allclose(dx[~full], (inv * dy)[~full], rtol=1e-12)
