"""The fastbn-cnn job, in-process, on a small synthetic dataset (no network)."""
import json

import numpy as np
import pytest

from fastbn.datasets import mnist as mnist_data
from fastbn.examples import cnn as job

from synthetic_data import synthetic_mnist


@pytest.fixture(autouse=True)
def fake_data(monkeypatch):
    monkeypatch.setattr(mnist_data, "load_data",
                        lambda path="mnist.npz": synthetic_mnist(n_train=100, n_test=40))


def run_job(out, *extra):
    argv = ["--limit", "100", "--batch-size", "40", "--seed", "3", "--out", str(out),
            "--quiet", *extra]
    assert job.main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _numbers(m):
    return {"history": m["history"], "test_loss": m["test_loss"],
            "test_accuracy": m["test_accuracy"]}


def test_job_writes_metrics_plot_weights_and_checkpoint(tmp_path, capsys):
    m = run_job(tmp_path, "--epochs", "1")
    assert "test accuracy" in capsys.readouterr().out
    assert m["params"] == 433034
    assert m["data"] == {"train": 80, "validation": 20, "test": 40}
    assert sorted(m["history"]) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert len(m["epochs"]) == 1 and m["epochs"][0]["samples_per_s"] > 0
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("weights.npz", job.CHECKPOINT):
        with np.load(tmp_path / name, allow_pickle=False) as f:
            assert f.files


def test_resumed_run_continues_the_same(tmp_path):
    straight = run_job(tmp_path / "a", "--epochs", "2", "--no-plot")
    run_job(tmp_path / "b", "--epochs", "1", "--no-plot")
    resumed = run_job(tmp_path / "b", "--epochs", "2", "--no-plot", "--resume")
    assert _numbers(resumed) == _numbers(straight)
    assert [r["epoch"] for r in resumed["epochs"]] == [1, 2]
    with np.load(tmp_path / "a" / "weights.npz") as wa, \
            np.load(tmp_path / "b" / "weights.npz") as wb:
        assert wa.files == wb.files
        for k in wa.files:
            np.testing.assert_array_equal(wa[k], wb[k])


def test_resume_needs_a_checkpoint_and_the_same_settings(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        job.main(["--out", str(tmp_path), "--resume"])
    assert e.value.code == 2 and "no checkpoint" in capsys.readouterr().err
    run_job(tmp_path, "--epochs", "1", "--no-plot")
    with pytest.raises(SystemExit, match="seed=3"):
        job.main(["--limit", "100", "--batch-size", "40", "--seed", "4", "--out",
                  str(tmp_path), "--quiet", "--resume", "--epochs", "2"])


def test_fit_initial_epoch_trains_the_remaining_epochs_only():
    from fastbn import nn
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    x = np.ones((8, 3), np.float32)
    h = model.fit(x, np.zeros(8, int), epochs=3, initial_epoch=2, verbose=0)
    assert h.epoch == [2] and model.optimizer.iterations == 1
