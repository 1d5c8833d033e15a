"""fastbn against PyTorch autograd (an independent implementation), where torch is installed.

Shapes, axes and layouts here are drawn at random from a seed and differ from
the sweeps in test_functional.py. PyTorch computes the batch-norm graph from
primitives (mean, biased variance, rsqrt) and differentiates it; for NCHW the
comparison also uses ``torch.nn.functional.batch_norm`` itself, with the
convention differences the docs describe (momentum ``1 - m``, unbiased
running variance).
"""
import numpy as np
import pytest

import fastbn

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def _random_case(rng):
    ndim = int(rng.integers(2, 5))
    shape = tuple(int(s) for s in rng.integers(1, 9, ndim))
    shape = (int(rng.integers(2, 40)),) + shape[1:]
    k = int(rng.integers(1, ndim))
    axes = tuple(int(a) for a in rng.permutation(ndim)[:k])
    axis = axes[0] - ndim if k == 1 and rng.random() < 0.5 else axes
    return shape, axis


def _layout(x, kind):
    if kind == "F":
        return np.asfortranarray(x)
    if kind == "transposed":
        return np.ascontiguousarray(x.T).T
    if kind == "strided":
        big = np.zeros(tuple(2 * s for s in x.shape), x.dtype)
        view = big[tuple(slice(None, None, 2) for _ in x.shape)]
        view[...] = x
        return view
    return x


def _torch_bn(x, dy, gamma, beta, axis, eps):
    feats = sorted(a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis))
    red = tuple(a for a in range(x.ndim) if a not in feats)
    bshape = [x.shape[a] if a in feats else 1 for a in range(x.ndim)]
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    mean = tx.mean(dim=red, keepdim=True)
    var = ((tx - mean) ** 2).mean(dim=red, keepdim=True)
    y = (tx - mean) * torch.rsqrt(var + eps) * tg.reshape(bshape) + tb.reshape(bshape)
    dx, dg, db = torch.autograd.grad(y, (tx, tg, tb), torch.tensor(dy))
    return y.detach().numpy(), dx.numpy(), dg.numpy(), db.numpy()


@pytest.mark.filterwarnings("ignore:.*only one value per feature")
@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_backward_match_torch_autograd(seed, dtype):
    rng = np.random.default_rng(1000 + seed)
    shape, axis = _random_case(rng)
    kind = ["C", "F", "transposed", "strided"][seed % 4]
    offset = [0.0, 10.0, -1e3][seed % 3]
    x64 = rng.standard_normal(shape) * rng.uniform(0.5, 4) + offset
    feats = sorted(a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis))
    fshape = tuple(shape[a] for a in feats)
    gamma = rng.uniform(0.5, 2, fshape)
    beta = rng.standard_normal(fshape)
    dy = rng.standard_normal(shape)
    x = _layout(x64.astype(dtype), kind)
    y, mean, invstd = fastbn.batch_norm_forward(x, gamma.astype(dtype), beta.astype(dtype),
                                                axis=axis, epsilon=1e-3)
    dx, dg, db = fastbn.batch_norm_backward(dy.astype(dtype), x, mean, invstd,
                                            gamma.astype(dtype), axis=axis)
    # torch in float64 on the very same (rounded) input values
    ty, tdx, tdg, tdb = _torch_bn(x.astype(np.float64), dy.astype(dtype).astype(np.float64),
                                  gamma.astype(dtype).astype(np.float64),
                                  beta.astype(dtype).astype(np.float64), axis, 1e-3)
    rtol, atol = (1e-10, 1e-10) if dtype == np.float64 else (1e-5, 1e-5)
    scale = max(1.0, float(np.abs(tdx).max()))
    np.testing.assert_allclose(y, ty, rtol=rtol, atol=atol * 4)
    np.testing.assert_allclose(dx, tdx, rtol=rtol, atol=atol * scale)
    np.testing.assert_allclose(dg, tdg, rtol=rtol, atol=atol * np.abs(tdg).max() + atol)
    np.testing.assert_allclose(db, tdb, rtol=rtol, atol=atol * np.abs(tdb).max() + atol)


def test_nchw_against_torch_batch_norm_and_its_conventions():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 3, 5, 5)) * 2 + 4
    gamma, beta = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    keras_momentum, eps = 0.9, 1e-5
    mm, mv = np.zeros(3), np.ones(3)
    y, mean, invstd = fastbn.batch_norm_forward(x, gamma, beta, axis=1, epsilon=eps,
                                                moving_mean=mm, moving_variance=mv,
                                                momentum=keras_momentum)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ty = torch.nn.functional.batch_norm(torch.tensor(x), rm, rv, torch.tensor(gamma),
                                        torch.tensor(beta), training=True,
                                        momentum=1 - keras_momentum, eps=eps)
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mm, rm.numpy(), rtol=1e-12)       # momentum m <-> 1 - m
    n = x.size // 3
    biased = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(mv, 0.9 + 0.1 * biased, rtol=1e-12)      # Keras: biased
    np.testing.assert_allclose(rv.numpy(), 0.9 + 0.1 * biased * n / (n - 1), rtol=1e-12)
    # inference with the same running statistics agrees
    yi, _, _ = fastbn.batch_norm_forward(x, gamma, beta, axis=1, epsilon=eps, training=False,
                                         moving_mean=rm.numpy(), moving_variance=rv.numpy())
    tyi = torch.nn.functional.batch_norm(torch.tensor(x), rm, rv, torch.tensor(gamma),
                                         torch.tensor(beta), training=False, eps=eps)
    np.testing.assert_allclose(yi, tyi.numpy(), rtol=1e-12, atol=1e-12)


def test_frozen_statistics_gradient_matches_torch_eval_mode():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 4, 3))
    dy = rng.standard_normal(x.shape)
    mm, mv, gamma = rng.standard_normal(4), rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    y, mean, invstd = fastbn.batch_norm_forward(x, gamma, None, axis=1, training=False,
                                                moving_mean=mm, moving_variance=mv)
    dx, dg, db = fastbn.batch_norm_backward(dy, x, mean, invstd, gamma, axis=1, training=False)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, torch.tensor(mm), torch.tensor(mv), tg, None,
                                        training=False, eps=1e-3)
    tdx, tdg = torch.autograd.grad(ty, (tx, tg), torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tdx.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dg, tdg.numpy(), rtol=1e-12, atol=1e-12)
