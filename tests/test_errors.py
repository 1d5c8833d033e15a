"""Bad input: a clear TypeError/ValueError that says what to do, never a crash or NumPy's words."""
import numpy as np
import pytest

import fastbn

X = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
G = np.ones(3, np.float32)


def fwd(x=X, gamma=None, beta=None, **kw):
    return fastbn.batch_norm_forward(x, gamma, beta, **kw)


def bwd(dy=X, x=X, mean=np.zeros(3), invstd=np.ones(3), gamma=None, **kw):
    return fastbn.batch_norm_backward(dy, x, mean, invstd, gamma, **kw)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fwd(axis=2), ValueError, r"axis 2 is out of range for a 2-d input \(valid axes are -2..1\)"),
    (lambda: fwd(axis=-3), ValueError, "out of range"),
    (lambda: fwd(np.zeros((2, 3, 4)), axis=(1, -2)), ValueError, "repeats an axis"),
    (lambda: fwd(axis=(0, 1)), ValueError, "covers every dimension.*fastbn.moments"),
    (lambda: fwd(axis=()), ValueError, "names no feature axis"),
    (lambda: fwd(axis=1.0), TypeError, "axis must be an int"),
    (lambda: fwd(axis=True), TypeError, "axis must be an int"),
    (lambda: fwd(axis=None), TypeError, "axis=None is not allowed"),
    (lambda: fwd(gamma=np.ones(4)), ValueError, r"gamma has shape \(4,\).*must have shape \(3,\)"),
    (lambda: fwd(beta=np.ones((1, 3))), ValueError, r"beta has shape \(1, 3\).*must have shape \(3,\)"),
    (lambda: fwd(gamma=np.array(["a"] * 3)), TypeError, "gamma has dtype"),
    (lambda: fwd(np.zeros((0, 3), np.float32)), ValueError, "no elements per feature"),
    (lambda: fwd(training=False), ValueError, "pass moving_mean= and moving_variance="),
    (lambda: fwd(moving_mean=np.zeros(3)), ValueError, "both moving_mean and moving_variance"),
    (lambda: fwd(training=False, moving_mean=np.zeros(3), moving_variance=-np.ones(3)),
     ValueError, "negative"),
    (lambda: fwd(moving_mean=np.zeros(2), moving_variance=np.ones(2)), ValueError,
     r"moving_mean has shape \(2,\)"),
    (lambda: fwd(moving_mean=[0.0] * 3, moving_variance=[1.0] * 3), TypeError, "updated in place"),
    (lambda: fwd(moving_mean=np.zeros(3, int), moving_variance=np.ones(3, int)), TypeError,
     "must be a float array"),
    (lambda: fwd(epsilon=-1e-3), ValueError, "epsilon must be a finite number >= 0"),
    (lambda: fwd(epsilon=float("nan")), ValueError, "epsilon"),
    (lambda: fwd(momentum=1.5), ValueError, r"momentum must be a number in \[0, 1\]"),
    (lambda: fwd(momentum=-0.1), ValueError, "momentum"),
    (lambda: fwd(training="False"), TypeError, "training must be a bool"),
    (lambda: fwd(training=0), TypeError, "training must be a bool"),
    (lambda: bwd(training="False"), TypeError, "training must be a bool"),
    (lambda: fwd(momentum=True), TypeError, "momentum must be a number.*got True"),
    (lambda: fwd(momentum="0.9"), TypeError, "momentum must be a number.*got '0.9'"),
    (lambda: fwd(epsilon="1e-3"), TypeError, "epsilon must be a number"),
    (lambda: fwd(epsilon=np.array([1e-3])), TypeError, "epsilon must be a number"),
    (lambda: fwd(X[:1], epsilon=0.0), ValueError, "epsilon=0.*Pass epsilon > 0"),
    (lambda: fwd(np.zeros((4, 3), np.int64)), TypeError, "dtype int64.*astype"),
    (lambda: fwd(np.zeros((4, 3), np.complex64)), TypeError, "dtype complex64"),
    (lambda: fwd(np.zeros((4, 3), bool)), TypeError, "dtype bool"),
    (lambda: fwd(np.array([["a", "b"]])), TypeError, "dtype <U1"),
    (lambda: fwd(np.array([[object()]])), TypeError, "dtype object"),
    (lambda: fwd(np.float32(3.0)), ValueError, "0-d"),
    (lambda: bwd(dy=X[:4]), ValueError, r"dy has shape \(4, 3\) but x has shape \(8, 3\)"),
    (lambda: bwd(dy=X.astype(np.int32)), TypeError, "dy has dtype int32"),
    (lambda: bwd(mean=np.zeros(4)), ValueError, r"mean has shape \(4,\)"),
    (lambda: bwd(invstd=np.zeros((3, 1))), ValueError, "invstd has shape"),
    (lambda: bwd(gamma=np.ones(2)), ValueError, "gamma has shape"),
    (lambda: bwd(axis=5), ValueError, "out of range"),
    (lambda: fastbn.moments(X, axis=2), ValueError, "out of range"),
    (lambda: fastbn.moments(X, axis=(0, 0)), ValueError, "repeats"),
    (lambda: fastbn.moments(np.zeros((0, 3))), ValueError, "no elements"),
    (lambda: fastbn.moments(X, axis=0, ddof=8), ValueError, "degrees of freedom"),
    (lambda: fastbn.moments(X, ddof="1"), TypeError, "ddof"),
    (lambda: fastbn.moments(np.float64(1.0)), ValueError, "0-d"),
    (lambda: fastbn.moments(np.arange(4)), TypeError, "dtype int64"),
])
def test_bad_input_raises_clearly(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def _read_only(a):
    a.flags.writeable = False
    return a


BAD_AFTER_PLAN = [
    (dict(gamma=np.ones(4, np.float32)), ValueError, r"gamma has shape \(4,\)"),
    (dict(beta=np.ones((1, 3))), ValueError, r"beta has shape \(1, 3\)"),
    (dict(gamma=np.array(["a"] * 3)), TypeError, "gamma has dtype"),
    (dict(epsilon=-1e-3), ValueError, "epsilon must be a finite number >= 0"),
    (dict(epsilon=float("nan")), ValueError, "epsilon"),
    (dict(epsilon=float("inf")), ValueError, "epsilon"),
    (dict(momentum=1.5), ValueError, "momentum"),
    (dict(momentum=float("nan")), ValueError, "momentum"),
    (dict(momentum=True), TypeError, "momentum must be a number"),
    (dict(training="False"), TypeError, "training must be a bool"),
    (dict(axis=(True,)), TypeError, "axis must be an int"),
    (dict(axis=True), TypeError, "axis must be an int"),
    (dict(moving_variance=None), ValueError, "both moving_mean and moving_variance"),
    (dict(moving_mean=np.zeros(2), moving_variance=np.ones(2)), ValueError,
     "moving_mean has shape"),
    (dict(moving_mean=np.zeros(3, int), moving_variance=np.ones(3, int)), TypeError,
     "must be a float array"),
    (dict(moving_variance=_read_only(np.ones(3))), ValueError, "moving_variance is read-only"),
]


@pytest.mark.parametrize("axis", [-1, (1,)])
@pytest.mark.parametrize("kw,exc,match", BAD_AFTER_PLAN)
def test_bad_forward_input_fails_the_same_once_a_call_is_planned(kw, exc, match, axis):
    """A checked call leaves a plan for calls like it (fastbn.functional, planned
    training calls); bad arguments to a call on the same x must still fail."""
    from fastbn import _bn
    good = dict(gamma=G, beta=G, axis=axis, moving_mean=np.zeros(3), moving_variance=np.ones(3))
    fwd(**good)
    assert len(_bn.PLANS) == 1
    with pytest.raises(exc, match=match):
        fwd(**{**good, **kw})


@pytest.mark.parametrize("kw,exc,match", [
    (dict(dy=X[:4]), ValueError, r"dy has shape \(4, 3\) but x has shape \(8, 3\)"),
    (dict(dy=X.astype(np.int32)), TypeError, "dy has dtype int32"),
    (dict(dy=X.tolist()), None, None),
    (dict(mean=np.zeros(4)), ValueError, r"mean has shape \(4,\)"),
    (dict(mean=None), TypeError, "mean has dtype object"),
    (dict(invstd=np.zeros((3, 1))), ValueError, "invstd has shape"),
    (dict(gamma=np.ones(2)), ValueError, "gamma has shape"),
    (dict(axis=(True,)), TypeError, "axis must be an int"),
])
def test_bad_backward_input_fails_the_same_once_a_call_is_planned(kw, exc, match):
    from fastbn import _bn
    bwd()
    assert len(_bn.PLANS) == 1
    if exc is None:                     # not an error: a list takes the checked path
        np.testing.assert_array_equal(bwd(**kw)[0], bwd()[0])
        return
    with pytest.raises(exc, match=match):
        bwd(**kw)


def test_read_only_moving_statistics_are_refused_before_anything_changes():
    mm, mv = np.zeros(3), np.ones(3)
    mm.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fwd(moving_mean=mm, moving_variance=mv)
    np.testing.assert_array_equal(mv, 1.0)


def test_failed_call_leaves_moving_statistics_untouched():
    mm, mv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError):
        fwd(gamma=np.ones(5), moving_mean=mm, moving_variance=mv)
    np.testing.assert_array_equal(mm, 0.0)
    np.testing.assert_array_equal(mv, 1.0)


def test_zero_d_arrays_and_numpy_bools_are_numbers_and_bools():
    """np.array(1e-3) is a number, as np.float64(1e-3) is; np.True_ a bool."""
    mm, mv = np.zeros(3), np.ones(3)
    want = fwd(epsilon=1e-3, momentum=0.9, moving_mean=mm.copy(), moving_variance=mv.copy())
    mm2, mv2 = mm.copy(), mv.copy()
    got = fwd(epsilon=np.array(1e-3), momentum=np.array(0.9), training=np.True_,
              moving_mean=mm2, moving_variance=mv2)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    mm3, mv3 = mm.copy(), mv.copy()
    fwd(epsilon=1e-3, momentum=0.9, moving_mean=mm3, moving_variance=mv3)
    np.testing.assert_array_equal(mm2, mm3)


def test_one_value_per_feature_outputs_beta_exactly_and_says_so():
    """With epsilon > 0 (Keras' result); with epsilon = 0 it raises (above)
    instead of warning "equals beta" and returning NaN."""
    beta = np.array([1.5, -2.0, 0.25], np.float32)
    with pytest.warns(RuntimeWarning, match="output equals beta"):
        y, _, _ = fwd(X[:1], gamma=G * 3, beta=beta)
    np.testing.assert_array_equal(y[0], beta)
