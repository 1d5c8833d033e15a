"""Bitwise determinism: the same bytes with 1, 2, 3 or 4 Numba threads, run after run.

Each thread count runs in its own process (``NUMBA_NUM_THREADS`` is read once,
at import). The inputs are large enough for the parallel kernels (above
``SERIAL_BELOW``) and cover rows, planes, grouped rows, fused planes, fused
rows, a copied (interleaved) layout, and outputs large enough for non-temporal
stores (``kernels._chunks._streams``).
"""
import os
import subprocess
import sys

from fastbn import _config

SCRIPT = r"""
import hashlib, sys
import numpy as np
import fastbn
cases = [((4096, 96), -1), ((16, 24, 20, 20), 1), ((64, 12, 9, 9), 1),
         ((256, 28, 28), (1, 2)), ((6, 40, 7, 50), (0, 2)), ((8192, 9), 0),
         ((128, 2000), -1)]
h = hashlib.sha256()
for k, (shape, axis) in enumerate(cases):
    rng = np.random.default_rng(k)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(shape) * 3 + 1e3).astype(dtype)
        if k == 1:
            x = np.asfortranarray(x)
        dy = rng.standard_normal(shape).astype(dtype)
        y, mean, invstd = fastbn.batch_norm_forward(x, None, None, axis=axis)
        dx, dg, db = fastbn.batch_norm_backward(dy, x, mean, invstd, None, axis=axis)
        m, v = fastbn.moments(x, axis=0)
        for a in (y, mean, invstd, dx, dg, db, m, v):
            h.update(np.ascontiguousarray(a).tobytes())
rng = np.random.default_rng(9)                  # NHWC (32, 56, 56, 64) fp32: streamed outputs
x = (rng.standard_normal((32, 56, 56, 64), np.float32) * 3 + 1e3)
dy = rng.standard_normal(x.shape, np.float32)
y, mean, invstd = fastbn.batch_norm_forward(x, None, None)
dx, dg, db = fastbn.batch_norm_backward(dy, x, mean, invstd, None)
for a in (y, mean, invstd, dx, dg, db):
    h.update(a.tobytes())
import numba
print(numba.get_num_threads(), h.hexdigest())
"""


def _run(threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    got_threads, digest = out.stdout.split()
    assert int(got_threads) == threads
    return digest


def test_inputs_take_the_parallel_path():
    assert 4096 * 96 > _config.SERIAL_BELOW and 16 * 24 * 20 * 20 > _config.SERIAL_BELOW
    assert 128 * 2000 >= _config.ROWS_SERIAL_BELOW           # fused rows, in parallel
    assert 4096 * 96 >= _config.ROWS_SERIAL_BELOW


def test_bitwise_identical_for_any_thread_count_and_run():
    digests = {t: _run(t) for t in (1, 2, 3, 4)}
    assert len(set(digests.values())) == 1, digests
    assert _run(2) == digests[2]                    # and run after run


def test_in_process_result_matches_the_subprocesses():
    """The same computation here (whatever this process's thread count) gives the same bytes."""
    ns = {}
    exec(SCRIPT.replace("print(numba.get_num_threads(), h.hexdigest())", "digest = h.hexdigest()"),
         ns)
    assert ns["digest"] == _run(3)
