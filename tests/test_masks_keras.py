"""Keras 3 masks on BatchNormalization with any ``axis``: outputs, moving statistics and
gradients against Keras on JAX."""
import numpy as np
import pytest

from fastbn import nn
from fastbn.autograd import Tensor

# (x shape, axis, mask shape): Keras gives a mask one axis less than x a trailing axis and
# broadcasts it to x, so with axis != -1 it selects different positions per feature.
CASES = [
    ((4, 5, 3), 1, (4, 5)),        # (batch, time) mask, features on time
    ((4, 5, 3), 2, (4, 5)),        # the same mask, features last (works today)
    ((4, 5, 3), -1, (4, 5)),
    ((3, 4, 5, 2), 2, (3, 4, 5)),  # features on an inner axis
    ((3, 4, 5, 2), 1, (3, 4, 5)),
    ((1, 2, 3, 4), -1, (1, 2, 1)),  # broadcast over axis 2 and the features
    ((1, 2, 3, 4), 1, (1, 2, 1)),
]


def _data(xshape, mshape, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(xshape) * 2 + 1).astype(np.float32)
    mask = rng.random(mshape) < 0.6
    mask.flat[0] = True  # at least one position kept
    return x, mask


@pytest.mark.parametrize("xshape,axis,mshape", CASES)
def test_mask_with_any_axis_matches_keras(keras, xshape, axis, mshape):
    import jax
    x, mask = _data(xshape, mshape, seed=len(xshape) * 10 + axis)
    kb = keras.layers.BatchNormalization(axis=axis, momentum=0.5)
    kb.build(xshape)
    fb = nn.BatchNormalization(axis=axis, momentum=0.5)
    fb.build(xshape)
    rng = np.random.default_rng(1)
    gamma = rng.standard_normal(fb.gamma.value.shape).astype(np.float32)
    beta = rng.standard_normal(fb.beta.value.shape).astype(np.float32)
    kb.set_weights([gamma, beta, np.zeros_like(gamma), np.ones_like(gamma)])
    fb.set_weights([gamma, beta, np.zeros_like(gamma), np.ones_like(gamma)])
    r = rng.standard_normal(xshape).astype(np.float32)  # loss = sum(r * y)

    def kloss(xv, tv):
        y, _ = kb.stateless_call(tv, [v.value for v in kb.non_trainable_variables], xv,
                                 training=True, mask=mask)
        return (y * r).sum()
    kdx, kdt = jax.grad(kloss, argnums=(0, 1))(x, [v.value for v in kb.trainable_variables])
    ko = np.asarray(kb(x, training=True, mask=mask))

    xt = Tensor(x, requires_grad=True)
    y = fb(xt, training=True, mask=mask)
    (y * Tensor(r)).sum().backward()
    assert y.data.dtype == ko.dtype == np.float32
    np.testing.assert_allclose(y.data, ko, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fb.moving_mean.value, np.asarray(kb.moving_mean.value),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fb.moving_variance.value, np.asarray(kb.moving_variance.value),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xt.grad, np.asarray(kdx), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(fb.gamma.tensor.grad, np.asarray(kdt[0]), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(fb.beta.tensor.grad, np.asarray(kdt[1]), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("xshape,axis,mshape", [((4, 5, 3), 1, (4,)), ((4, 5, 3), 1, (5, 3)),
                                                ((4, 5, 3), 1, (4, 5, 3, 1))])
def test_masks_keras_refuses_stay_refused(keras, xshape, axis, mshape):
    x, mask = _data(xshape, mshape, seed=3)
    with pytest.raises(ValueError):
        keras.layers.BatchNormalization(axis=axis)(x, training=True, mask=mask)
    with pytest.raises(ValueError):
        nn.BatchNormalization(axis=axis)(x, training=True, mask=mask)


def test_per_feature_mask_overflow_is_said():
    # A moving statistic past float32's largest value is held there with a warning, as
    # on the unmasked path.
    x, mask = _data((4, 5, 3), (4, 5), seed=8)
    x[:, :, 0] *= np.float32(1e30)
    x[1, :, 0] = -x[1, :, 0]
    mask[:2] = True
    fb = nn.BatchNormalization(axis=1, momentum=0.0)
    with pytest.warns(RuntimeWarning, match="largest value"):
        fb(x, training=True, mask=mask)
    assert np.isfinite(fb.moving_variance.value).all()
