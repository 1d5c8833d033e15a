import os
import sys

import pytest

# tests import the float64 reference as a plain module
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _no_plans_across_tests():
    """Each test starts without the plans that earlier tests' calls left
    (``fastbn._bn.PLANS``, planned calls), so whether a call is
    planned depends on the test alone."""
    from fastbn import _bn
    _bn.PLANS.clear()
    yield
    _bn.PLANS.clear()


@pytest.fixture(scope="module")
def keras():
    """Keras 3 on JAX, for side-by-side checks; skips where Keras is absent or
    already runs on another backend in this process."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    k = pytest.importorskip("keras")
    if k.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    return k
