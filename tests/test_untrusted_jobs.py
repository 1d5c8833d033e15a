"""The jobs (fastbn-cnn, fastbn-mnist) against bad checkpoints, Ctrl-C and kills
between their output files; in-process, on small synthetic data (no network)."""
import json

import numpy as np
import pytest

from fastbn.datasets import mnist as mnist_data
from fastbn.examples import cnn

from synthetic_data import synthetic_mnist


@pytest.fixture(autouse=True)
def fake_data(monkeypatch):
    monkeypatch.setattr(mnist_data, "load_data",
                        lambda path="mnist.npz": synthetic_mnist(n_train=100, n_test=40))


def cnn_argv(out, *extra):
    return ["--limit", "100", "--batch-size", "40", "--seed", "3", "--out", str(out),
            "--quiet", "--no-plot", *extra]


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(path, **arrays)


def _model_after_resume_attempt(out, monkeypatch):
    """The variables of the model that a refused --resume built and tried to fill."""
    seen = {}
    real = cnn.build_model

    def spy():
        seen["model"] = real()
        return seen["model"]
    monkeypatch.setattr(cnn, "build_model", spy)
    with pytest.raises(SystemExit) as e:
        cnn.main(cnn_argv(out, "--epochs", "2", "--resume"))
    return str(e.value.code), {v.name: v.numpy().copy() for v in seen["model"].variables}


@pytest.mark.parametrize("defect", ["overflow", "missing", "shape", "int", "state"])
def test_cnn_resume_checks_every_entry_before_assigning_any(tmp_path, monkeypatch, defect):
    assert cnn.main(cnn_argv(tmp_path, "--epochs", "1")) == 0
    ckpt = tmp_path / cnn.CHECKPOINT
    with np.load(ckpt) as f:
        names = [k for k in f.files if k.startswith("var/")]
    victim = names[-1]                 # the last entry: the ones before it would be assigned

    def change(a):
        if defect == "overflow":
            a[victim] = np.full(a[victim].shape, 1e40)
        elif defect == "missing":
            del a[victim]
        elif defect == "shape":
            a[victim] = a[victim][:-1]
        elif defect == "int":
            a[victim] = a[victim].astype(np.int64)
        else:
            a["state"] = np.array("{not json")
    _rewrite(ckpt, change)
    before = json.loads((tmp_path / "metrics.json").read_text())
    code, values = _model_after_resume_attempt(tmp_path, monkeypatch)
    assert code.startswith(f"fastbn-cnn: error: --resume: {ckpt.absolute()}: ")
    assert (repr(victim) if defect != "state" else "'state'") in code
    # model unchanged: what build_model made from the seed, not the checkpoint's weights
    from fastbn import nn
    nn.clear_session()
    nn.set_random_seed(3)
    fresh = cnn.build_model()
    for v in fresh.variables:
        np.testing.assert_array_equal(values[v.name], v.numpy())
    assert json.loads((tmp_path / "metrics.json").read_text()) == before


def test_cnn_resume_refuses_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    assert cnn.main(cnn_argv(tmp_path, "--epochs", "1")) == 0
    (tmp_path / cnn.CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SystemExit, match="--resume: .*checkpoint.npz: not a checkpoint"):
        cnn.main(cnn_argv(tmp_path, "--epochs", "2", "--resume"))
