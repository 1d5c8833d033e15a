"""fastbn.distributed: synchronized batch norm and data-parallel training over MPI.

The MPI tests launch ``mpiexec -n 2`` and ``-n 3`` on the scripts in
``tests/mpi_scripts/`` (subprocesses with a timeout, their process group
killed on expiry) and compare what the ranks wrote with the single-process
computation on the concatenated batch: float64 within 1e-12 relative, float32
within the kernels' accuracy, and bitwise-identical statistics and weights on
every rank. They skip, saying why, where mpi4py or mpiexec is missing; the
rest run everywhere.
"""
import json
import os
import signal
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

import fastbn
from fastbn import distributed, functional as F

SCRIPTS = Path(__file__).parent / "mpi_scripts"
sys.path.insert(0, str(SCRIPTS))
import mnist_job  # noqa: E402
import sync_checks  # noqa: E402
import train_checks  # noqa: E402

#: rows per rank: uneven on 2 ranks; on 3, the middle rank has none
SIZES = {2: (8, 5), 3: (9, 0, 6)}
TIMEOUT = 120       # seconds per launch; a cold Numba cache compiles in every rank


def _mpiexec():
    """``[mpiexec, flags...]``, or the reason MPI tests cannot run here."""
    if find_spec("mpi4py") is None:
        return None, 'mpi4py is not installed (pip install ".[mpi]")'
    here = Path(sys.executable).parent / "mpiexec"
    exe = str(here) if here.exists() else None
    if exe is None:
        from shutil import which
        exe = which("mpiexec")
    if exe is None:
        return None, 'no mpiexec next to Python or on PATH (pip install ".[mpi]" brings one)'
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    flags = ["--oversubscribe"] if "Open MPI" in version else []   # 3 ranks on 2 cores
    return [exe] + flags, None


MPIEXEC, WHY = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason=f"MPI tests skipped: {WHY}")


def launch(n, script, *args, check=True):
    """Run ``mpiexec -n n python script args`` with one thread per rank."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", MPIEXEC_TIMEOUT=str(TIMEOUT),
               PYTHONPATH=os.pathsep.join(
                   [str(Path(fastbn.__file__).parent.parent)]
                   + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    cmd = MPIEXEC + ["-n", str(n), sys.executable, str(SCRIPTS / script), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} hung for {TIMEOUT} s\n{out}\n{err}")
    if check and proc.returncode:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{out}\n{err}")
    return proc.returncode, out, err


# ------------------------------------------------------------- single process
def references(n):
    """Single-process results of every case on ``n`` rows (this also warms Numba's cache)."""
    out = {}
    for name in sync_checks.CASES:
        x, gamma, beta, dy, axis = sync_checks.case_data(name, n)
        mm, mv = np.zeros(gamma.shape), np.ones(gamma.shape)
        y, mean, invstd = F.batch_norm_forward(x, gamma, beta, axis=axis, moving_mean=mm,
                                               moving_variance=mv,
                                               momentum=sync_checks.MOMENTUM)
        dx, dgamma, dbeta = F.batch_norm_backward(dy, x, mean, invstd, gamma, axis=axis)
        m_mean, m_var = F.moments(x, sync_checks.reduced_axes(x, axis), ddof=1)
        out[name] = dict(y=y, mean=mean, invstd=invstd, dx=dx, dgamma=dgamma, dbeta=dbeta,
                         moving_mean=mm, moving_variance=mv, m_mean=m_mean, m_var=m_var)
    return out


def test_without_a_communicator_it_is_the_functional_api():
    x = np.random.default_rng(0).standard_normal((6, 3, 4))
    g, b = np.full(3, 2.0), np.full(3, 0.5)
    got = distributed.batch_norm_forward(x, g, b, comm=None, axis=1)
    want = F.batch_norm_forward(x, g, b, axis=1)
    for a, w in zip(got, want):
        np.testing.assert_array_equal(a, w)
    dy = np.ones_like(x)
    for a, w in zip(distributed.batch_norm_backward(dy, x, *got[1:], g, comm=None, axis=1),
                    F.batch_norm_backward(dy, x, *want[1:], g, axis=1)):
        np.testing.assert_array_equal(a, w)
    for a, w in zip(distributed.moments(x, (0, 2), comm=None), F.moments(x, (0, 2))):
        np.testing.assert_array_equal(a, w)


def test_synchronized_layer_alone_is_the_plain_layer():
    from fastbn import nn
    x = np.random.default_rng(1).standard_normal((8, 5)).astype(np.float32)
    outs = []
    for sync in (False, True):
        nn.clear_session()
        bn = nn.BatchNormalization(synchronized=sync)
        y = bn(x, training=True)
        y.sum().backward()
        outs.append((y.data, bn.moving_variance.numpy(), bn.gamma.tensor.grad))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_fastbn_works_without_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # import mpi4py now fails
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(ImportError, match=r"fastbn\[mpi\]"):
        distributed.world()
    for k in distributed._LAUNCHER_SIZE:
        monkeypatch.delenv(k, raising=False)
    dp = distributed.DataParallel()                       # outside mpiexec: one process
    assert (dp.rank, dp.size, dp.is_root) == (0, 1, True)
    assert dp.shard(7) == slice(0, 7)
    monkeypatch.setenv("PMI_SIZE", "2")                   # under mpiexec -n 2: refuse
    with pytest.raises(ImportError, match=r"fastbn\[mpi\]"):
        distributed.DataParallel()


def test_shards_cover_the_batch_in_order():
    class Comm(distributed._Solo):
        def __init__(self, rank, size):
            self.r, self.s = rank, size

        def Get_rank(self):
            return self.r

        def Get_size(self):
            return self.s
    for size in (1, 2, 3, 5):
        for n in (0, 1, 2, 7, 32):
            parts = [distributed.DataParallel(Comm(r, size), abort_on_error=False).shard(n)
                     for r in range(size)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            lens = [p.stop - p.start for p in parts]
            assert max(lens) - min(lens) <= 1 and lens == sorted(lens, reverse=True)


# -------------------------------------------------------------------- MPI runs
@pytest.fixture(scope="module", params=sorted(SIZES), ids=lambda n: f"{n}-ranks")
def sync_run(request, tmp_path_factory):
    n = request.param
    if MPIEXEC is None:
        pytest.skip(f"MPI tests skipped: {WHY}")
    ref = references(sum(SIZES[n]))             # first: the ranks find Numba's cache warm
    out = tmp_path_factory.mktemp(f"sync{n}")
    launch(n, "sync_checks.py", out, ",".join(map(str, SIZES[n])))
    ranks = [dict(np.load(out / f"sync{r}.npz")) for r in range(n)]
    errors = [json.loads((out / f"errors{r}.json").read_text()) for r in range(n)]
    return n, ref, ranks, errors


@needs_mpi
@pytest.mark.parametrize("case", list(sync_checks.CASES))
def test_synchronized_batch_norm_equals_single_process(sync_run, case):
    n, ref, ranks, _ = sync_run
    want = ref[case]
    f64 = sync_checks.CASES[case][2] == np.float64
    tol = 1e-12 if f64 else 1e-5          # float32: y, dx, dgamma in float32

    def close(got, w, rtol):
        np.testing.assert_allclose(got, w, rtol=rtol, atol=rtol * max(np.abs(w).max(), 1e-300))

    for key in ("mean", "invstd", "moving_mean", "moving_variance", "m_mean", "m_var"):
        first = ranks[0][f"{case}/{key}"]
        for r in range(1, n):                      # bitwise the same on every rank
            np.testing.assert_array_equal(ranks[r][f"{case}/{key}"], first, err_msg=key)
        # statistics are float64 whatever x is; m_* come back in x's dtype
        close(first, want[key], 1e-12 if f64 or not key.startswith("m_") else 1e-6)
    for key in ("y", "dx"):
        got = np.concatenate([ranks[r][f"{case}/{key}"] for r in range(n)])
        assert got.dtype == want[key].dtype and got.shape == want[key].shape
        close(got, want[key], tol)
    for key in ("dgamma", "dbeta"):                # each rank's share; they add up
        close(sum(ranks[r][f"{case}/{key}"].astype(np.float64) for r in range(n)),
              want[key], tol)
    empty = [r for r in range(n) if SIZES[n][r] == 0]
    for r in empty:
        assert ranks[r][f"{case}/y"].shape[0] == 0 and ranks[r][f"{case}/dx"].shape[0] == 0


@needs_mpi
def test_mismatches_raise_on_every_rank(sync_run):
    n, _, _, errors = sync_run
    for r, seen in enumerate(errors):
        for name in ("feature-shape", "dtype", "moments-kept-shape", "axis", "moments-axis"):
            kind, msg = seen[name]
            assert kind == "ValueError" and "disagree on the feature shape, axes or dtype" in msg
        assert "rank 1: float64 x, features (5,)" in seen["feature-shape"][1]
        # axis=-1 on rank 0, axis=0 elsewhere: both (4,) features; passed the check before
        assert ("rank 0: float64 x, features (4,) on axes (1,)" in seen["axis"][1]
                and "rank 1: float64 x, features (4,) on axes (0,)" in seen["axis"][1])
        assert "rank 1: float32 x" in seen["dtype"][1]
        kind, msg = seen["bad-gamma-on-rank-0"]
        if r == 0:
            assert kind == "ValueError" and "gamma has shape (5,)" in msg
        else:
            assert kind == "RuntimeError" and "rank(s) 0 of" in msg and "gamma" in msg
        assert seen["all-empty"][0] == "ValueError" and "no rank has" in seen["all-empty"][1]
        kind, msg = seen["backward-bad-dy-on-rank-1"]
        assert kind == ("ValueError" if r == 1 else "RuntimeError") and "dy has shape" in msg
        assert seen["after"] == [(n - 1) / 2] * 2         # still in step afterwards


@needs_mpi
@pytest.mark.parametrize("n", sorted(SIZES))
def test_data_parallel_training_equals_single_process(n, tmp_path):
    want = train_checks.train(train_checks.build(False))
    launch(n, "train_checks.py", tmp_path)
    ranks = [dict(np.load(tmp_path / f"train{r}.npz")) for r in range(n)]
    for key, w in want.items():
        for r in range(1, n):                  # identical weights and logs everywhere
            np.testing.assert_array_equal(ranks[r][key], ranks[0][key], err_msg=key)
        # float32 training, 7 steps at SGD 0.1 + momentum: rounding only
        np.testing.assert_allclose(ranks[0][key], w, rtol=2e-5,
                                   atol=2e-5 * max(1.0, np.abs(w).max()), err_msg=key)


@needs_mpi
def test_fit_with_different_sample_counts_raises_on_every_rank(tmp_path):
    """They aborted with "Message truncated" (shuffle) or hung; evaluate() on rank 0
    alone hung in its allgather. Now a ValueError at fit's start on every rank, and
    evaluate() is each rank's own (the same numbers, called alone or by all)."""
    launch(2, "fit_checks.py", tmp_path, "counts")
    seen = [json.loads((tmp_path / f"fit{r}.json").read_text()) for r in range(2)]
    for r in range(2):
        kind, msg = seen[r]["counts"]
        assert kind == "ValueError" and "the ranks disagree" in msg
        assert "rank 0: fit() " in msg and "samples=40" in msg and "samples=38" in msg
        assert seen[r]["every-rank"] == seen[0]["every-rank"]
    assert seen[0]["root-only"] == seen[0]["every-rank"]


@needs_mpi
def test_fit_on_one_rank_raises_instead_of_waiting_forever():
    """MPI has no collective with a timeout: fit() on rank 0 alone waited in its
    first Bcast for ever. Now it raises after DataParallel(timeout=) seconds."""
    rc, out, err = launch(2, "fit_checks.py", "-", "root-only", 2, check=False)
    assert rc != 0 and "finished fit alone" not in out
    assert "RuntimeError: fit(): rank 0 of 2 waited 2 s" in err, err


@needs_mpi
def test_a_failing_rank_aborts_the_job():
    rc, out, err = launch(2, "abort_checks.py", check=False)
    assert rc != 0
    assert "Boom: boom on rank 1 at step 2" in err and "aborting the job" in err
    assert "finished" not in out


@needs_mpi
def test_mnist_job_distributed_equals_single_process(tmp_path, monkeypatch, capsys):
    from fastbn.datasets import mnist as mnist_data
    argv = ["--epochs", "1", "--limit", "192", "--batch-size", "32", "--seed", "7",
            "--no-plot", "--quiet", "--threads", "1"]
    monkeypatch.setattr(mnist_data, "load_data", lambda path=None: mnist_job.synthetic_mnist())
    from fastbn.examples import mnist as job
    assert job.main(argv + ["--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    _, out, _ = launch(2, "mnist_job.py", *argv, "--distributed", "--out", tmp_path / "two")
    assert out.count("test accuracy") == 1                 # only rank 0 prints
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["ranks"] == 2 and two["settings"]["distributed"] is True
    assert two["test_accuracy"] == one["test_accuracy"]
    for key, values in one["history"].items():
        np.testing.assert_allclose(two["history"][key], values, rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(two["test_loss"], one["test_loss"], rtol=1e-4)

