"""The jobs (fastbn-cnn, fastbn-mnist) against bad checkpoints, Ctrl-C and kills
between their output files; in-process, on small synthetic data (no network)."""
import json

import numpy as np
import pytest

from fastbn.datasets import mnist as mnist_data
from fastbn.examples import _job, cnn

from synthetic_data import synthetic_mnist


@pytest.fixture(autouse=True)
def fake_data(monkeypatch):
    monkeypatch.setattr(mnist_data, "load_data",
                        lambda path="mnist.npz": synthetic_mnist())  # --limit picks


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


def mnist_argv(out, *extra):
    return ["--limit", "64", "--batch-size", "32", "--epochs", "2", "--seed", "1",
            "--out", str(out), "--quiet", *extra]


def interrupted_main(main, argv):
    """``main(argv)``, with a KeyboardInterrupt escaping it a failure (pytest would
    otherwise stop the whole session)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main(): a traceback, not one line")


def _interrupt_at_epoch(monkeypatch, module, epoch):
    """Make the job's EpochLog callback raise KeyboardInterrupt (a Ctrl-C) after
    ``epoch`` epochs (0: in the first training step); returns the undo."""
    real = _job.EpochLog

    class Interrupting(real):
        def on_train_batch_end(self, batch, logs=None):
            if len(self.rows) >= epoch:
                raise KeyboardInterrupt
            super().on_train_batch_end(batch, logs)
    monkeypatch.setattr(module, "EpochLog", Interrupting)
    return lambda: monkeypatch.setattr(module, "EpochLog", real)


def test_cnn_ctrl_c_says_the_last_checkpoint_and_exits_130(tmp_path, monkeypatch, capsys):
    undo = _interrupt_at_epoch(monkeypatch, cnn, 1)
    assert interrupted_main(cnn.main, cnn_argv(tmp_path, "--epochs", "3")) == 130
    err = capsys.readouterr().err.strip().splitlines()
    ckpt = (tmp_path / cnn.CHECKPOINT).absolute()
    assert err == [f"fastbn-cnn: interrupted; last checkpoint: {ckpt} (resume with --resume)"]
    undo()
    assert cnn.main(cnn_argv(tmp_path, "--epochs", "2", "--resume")) == 0


def test_ctrl_c_before_any_checkpoint_says_nothing_was_written(tmp_path, monkeypatch,
                                                              capsys):
    from fastbn.examples import mnist
    for module, argv in ((cnn, cnn_argv(tmp_path / "cnn", "--epochs", "2")),
                         (mnist, mnist_argv(tmp_path / "mnist"))):
        _interrupt_at_epoch(monkeypatch, module, 0)
        assert interrupted_main(module.main, argv) == 130
        out = (tmp_path / module.__name__.rsplit(".", 1)[1]).absolute()
        assert capsys.readouterr().err.strip().splitlines() == [
            f"{module._parser().prog}: interrupted; nothing was written to {out}"]
        assert list(out.iterdir()) == []


@pytest.mark.parametrize("killed_before", ["learning_curve.png", "metrics.json"])
def test_a_kill_between_the_output_files_is_told_from_a_complete_set(tmp_path, monkeypatch,
                                                                     killed_before):
    from fastbn.examples import mnist
    out = tmp_path / "run"
    assert mnist.main(mnist_argv(out)) == 0
    assert _job.run_is_complete(out)
    files = json.loads((out / "metrics.json").read_text())["files"]
    assert sorted(files) == ["learning_curve.png", "weights.npz"]
    target = _job.plot if killed_before == "learning_curve.png" else _job.atomic_json

    def killed(*a, **k):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(_job, target.__name__, killed)
        assert interrupted_main(mnist.main, mnist_argv(out, "--seed", "2", "--overwrite")) == 130
    # weights.npz is the second run's, metrics.json still the first's: not one set
    assert not _job.run_is_complete(out)
    assert mnist.main(mnist_argv(out, "--seed", "2", "--overwrite")) == 0
    assert _job.run_is_complete(out)
    (out / "metrics.json").write_text(json.dumps(
        {"files": {"../metrics.json": files["weights.npz"]}}))   # names only, never paths
    assert not _job.run_is_complete(out)


def _numbers(m):
    return {"history": m["history"], "test_loss": m["test_loss"],
            "test_accuracy": m["test_accuracy"]}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mnist_checkpoints_and_resumes_the_same_run(tmp_path, monkeypatch, capsys, optimizer):
    from fastbn.examples import mnist
    opt = ["--optimizer", optimizer, "--no-plot"]
    assert mnist.main(mnist_argv(tmp_path / "a", *opt)) == 0
    straight = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert not (tmp_path / "a" / _job.CHECKPOINT).exists()   # a finished run keeps none
    b = tmp_path / "b"
    undo = _interrupt_at_epoch(monkeypatch, mnist, 1)
    assert interrupted_main(mnist.main, mnist_argv(b, *opt)) == 130
    undo()
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fastbn-mnist: interrupted; last checkpoint: {(b / _job.CHECKPOINT).absolute()} "
        f"(resume with --resume)"]
    with pytest.raises(SystemExit) as e:              # another run's checkpoint: refused
        mnist.main(mnist_argv(b, *opt))
    assert e.value.code == 2 and "--resume to continue it" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"fastbn-mnist: error: --resume: .*seed=1"):
        mnist.main(mnist_argv(b, *opt, "--seed", "5", "--resume"))
    with pytest.raises(SystemExit, match=r"fastbn-mnist: error: --resume: .*epochs=2"):
        mnist.main(mnist_argv(b, *opt, "--epochs", "3", "--resume"))   # cosine: same count
    assert mnist.main(mnist_argv(b, *opt, "--resume")) == 0
    resumed = json.loads((b / "metrics.json").read_text())
    assert _numbers(resumed) == _numbers(straight)
    assert [r["epoch"] for r in resumed["epochs"]] == [1, 2]
    with np.load(tmp_path / "a" / "weights.npz") as wa, np.load(b / "weights.npz") as wb:
        assert wa.files == wb.files
        for k in wa.files:
            np.testing.assert_array_equal(wa[k], wb[k])
    assert not (b / _job.CHECKPOINT).exists() and _job.run_is_complete(b)


def test_mnist_resume_checks_the_checkpoint_and_refuses_distributed(tmp_path, monkeypatch,
                                                                    capsys):
    from fastbn.examples import mnist
    undo = _interrupt_at_epoch(monkeypatch, mnist, 1)
    assert interrupted_main(mnist.main, mnist_argv(tmp_path, "--no-plot")) == 130
    undo()
    ckpt = tmp_path / _job.CHECKPOINT
    with np.load(ckpt) as f:
        victim = [k for k in f.files if k.startswith("var/")][-1]
    _rewrite(ckpt, lambda a: a.__setitem__(victim, np.full(a[victim].shape, 1e40)))
    with pytest.raises(SystemExit) as e:
        mnist.main(mnist_argv(tmp_path, "--no-plot", "--resume"))
    assert str(e.value.code).startswith(f"fastbn-mnist: error: --resume: {ckpt.absolute()}: "
                                        f"entry {victim!r} holds 1e+40")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        mnist.main(mnist_argv(tmp_path, "--resume", "--distributed"))
    assert e.value.code == 2
    assert "--resume does not work with --distributed" in capsys.readouterr().err
