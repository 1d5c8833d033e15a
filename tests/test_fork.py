"""Forked children and Python threads get the same results as the parent.

Numba's OpenMP threading layer kills a forked child of the process that started
it as soon as the child enters a parallel region, and a multiprocessing fork
pool then never returns; fastbn runs the serial twins in such a child
(``fastbn._config.FORKED``). Each case runs in a fresh interpreter, so that
whether the parent started the thread pool is the case's choice, not the test
session's, with a timeout, so that a hang fails instead of blocking.
"""
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastbn

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240

COMMON = r"""
import os, pickle, sys
import numpy as np
import fastbn
from fastbn import _bn, _config, kernels as K

def cases():
    rng = np.random.default_rng(0)
    return [((rng.standard_normal((4096, 64)) + 1e3).astype(np.float32), -1),   # parallel
            (rng.standard_normal((16, 24, 20, 20)), 1),                            # planes
            (np.ones((4, 3), np.float32), -1)]                                     # serial

def compute():
    out = []
    for x, axis in cases():
        y, m, s = fastbn.batch_norm_forward(x, None, None, axis=axis)
        dx, dg, db = fastbn.batch_norm_backward(np.cos(x), x, m, s, None, axis=axis)
        out.append([np.asarray(a) for a in (y, m, s, dx, dg, db)])
    from fastbn import autograd as ag       # convolutions: blocks on worker threads
    rng = np.random.default_rng(2)
    for c in (1, 3):                        # window by window; im2col + BLAS
        x = ag.Tensor(rng.standard_normal((40, 12, 12, c)).astype(np.float32), requires_grad=True)
        k = ag.Tensor(rng.standard_normal((3, 3, c, 8)).astype(np.float32), requires_grad=True)
        y = ag.conv2d(x, k, activation="relu")
        y.backward(np.cos(y.data))
        out.append([y.data, x.grad, k.grad])
    return out

def same(a, b):
    return all(np.array_equal(u, v) for p, q in zip(a, b) for u, v in zip(p, q))

def parent_keeps_parallel():
    xk = np.empty((4096, 64), np.float32)
    return (not _config.FORKED and _bn.run(K._moments_rows, xk) is K._moments_rows.parallel
            and K._moments_rows.parallel is not K._moments_rows.serial)
"""

CHILD = COMMON + r"""
first = sys.argv[1]
if first == "tiny":           # a serial call still starts Numba's threading layer
    fastbn.batch_norm_forward(np.ones((4, 3), np.float32), None, None)
elif first == "parallel":
    compute()
parent = compute() if first != "none" else None
started = _config._numba_threads_started()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    try:
        data = pickle.dumps((_config.FORKED, compute()))
        with os.fdopen(w, "wb") as f:
            f.write(data)
    finally:
        os._exit(0)
os.close(w)
with os.fdopen(r, "rb") as f:
    data = f.read()
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
forked, child = pickle.loads(data)
assert forked == started, (forked, started)
parent = parent or compute()
assert same(parent, child)
assert same(parent, compute()) and parent_keeps_parallel()
print("OK", first, started)
"""

POOL = COMMON + r"""
import multiprocessing
from fastbn import nn

def work(i):
    x = cases()[0][0] + i
    y = fastbn.batch_norm_forward(x, None, None)[0]
    return _config.FORKED, y, model.predict(data, verbose=0)

nn.utils.set_random_seed(0)
data = np.random.default_rng(1).standard_normal((256, 20)).astype(np.float32)
labels = np.arange(256) % 3
model = nn.Sequential([nn.Input((20,)), nn.Dense(16), nn.BatchNormalization(),
                       nn.Activation("relu"), nn.Dense(3, activation="softmax")])
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
model.fit(data, labels, epochs=1, batch_size=64, verbose=0)
want = [work(i) for i in range(4)]
with multiprocessing.get_context("fork").Pool(2) as pool:
    got = pool.map_async(work, range(4)).get(timeout=120)
for (f0, y0, p0), (f1, y1, p1) in zip(want, got):
    assert not f0 and f1
    assert np.array_equal(y0, y1) and np.array_equal(p0, p1)
assert parent_keeps_parallel()
print("OK pool")
"""


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    try:
        out = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"timed out after {TIMEOUT} s (a forked child hung): {e.stderr}")
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("first", ["none", "tiny", "parallel"])
def test_forked_child_gets_the_parents_results(first):
    """After nothing, a tiny serial call or parallel calls in the parent, a
    forked child's forward and backward (parallel-sized, planes and tiny inputs)
    equal the parent's bit for bit; the child runs serially only when the
    parent had started Numba's threading layer, and the parent stays parallel."""
    out = _run(CHILD, first)
    assert out.split() == ["OK", first, str(first != "none")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_pool_after_training():
    """A multiprocessing fork pool returns the parent's results after the parent
    trained a model (fit, then predict in each worker)."""
    assert "OK pool" in _run(POOL)


def test_threads_at_once_match_one_at_a_time():
    """Python threads calling the kernels at once (serial and parallel sizes,
    planned and checked paths) get the results of one call at a time."""
    rng = np.random.default_rng(3)
    cases = [(rng.standard_normal((4096, 64)).astype(np.float32), -1),
             (rng.standard_normal((8, 32, 16, 16)), 1),
             (rng.standard_normal((64, 300)).astype(np.float32), -1),
             (rng.standard_normal((5, 7)), 0)]

    def compute(x, axis):
        y, m, s = fastbn.batch_norm_forward(x, None, None, axis=axis)
        dx, dg, db = fastbn.batch_norm_backward(np.sin(x), x, m, s, None, axis=axis)
        return y, m, s, dx, dg, db

    want = [compute(x, a) for x, a in cases]
    errors = []

    def worker(k):
        try:
            for r in range(4):
                i = (k + r) % len(cases)
                got = compute(*cases[i])
                if not all(np.array_equal(u, v) for u, v in zip(got, want[i])):
                    errors.append((k, r, i))
        except Exception as e:              # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
