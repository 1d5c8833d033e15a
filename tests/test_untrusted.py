"""Files and crashes are not trusted: a weights file is data, never a pointer to
other files; a lock left by a killed build does not hang; a job never replaces
another run's outputs."""
import os
import sys

import numpy as np
import pytest

from fastbn import nn


def _model():
    nn.clear_session()
    return nn.Sequential([nn.Dense(3, input_shape=(2,)), nn.BatchNormalization(),
                          nn.Dense(1)])


def _h5_file(h5py, path, dense_kernel):
    """A ``.weights.h5`` for :func:`_model` whose first kernel is written by
    ``dense_kernel(vars_group)``; every other variable is ordinary."""
    model = _model()
    with h5py.File(path, "w") as f:
        layers = f.create_group("layers")
        for key, layer in zip(["dense", "batch_normalization", "dense_1"], model.layers):
            vg = layers.create_group(key).create_group("vars")
            for i, v in enumerate(layer.weights):
                if key == "dense" and i == 0:
                    dense_kernel(vg)
                else:
                    vg.create_dataset(str(i), data=v.value)
        f.create_group("vars")
    return model


SECRET = b"\x00\x00\x80?" * 6          # the bytes of six float32 ones: a (2, 3) kernel


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "id_rsa"
    path.write_bytes(SECRET)
    return path


def _refused(model, path, match):
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match):
        model.load_weights(path)
    for a, b in zip(model.get_weights(), before):     # nothing was assigned
        np.testing.assert_array_equal(a, b)


def test_h5_external_storage_is_refused(tmp_path, secret):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "evil.weights.h5"
    model = _h5_file(h5py, path, lambda vg: vg.create_dataset(
        "0", shape=(2, 3), dtype="<f4", external=[(os.fspath(secret), 0, len(SECRET))]))
    with h5py.File(path, "r") as f:                    # the attack works on plain h5py
        assert f["layers/dense/vars/0"][()].tobytes() == SECRET
    _refused(model, path, "keeps its data in other files .external storage")


def test_h5_fifo_as_external_file_does_not_hang(tmp_path):
    h5py = pytest.importorskip("h5py")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = tmp_path / "evil.weights.h5"
    model = _h5_file(h5py, path, lambda vg: vg.create_dataset(
        "0", shape=(2, 3), dtype="<f4", external=[(os.fspath(fifo), 0, 24)]))
    _refused(model, path, "external storage")         # refused from metadata: never opened


def test_h5_virtual_dataset_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("secret", data=np.ones((2, 3), np.float32))

    def virtual(vg):
        layout = h5py.VirtualLayout(shape=(2, 3), dtype="<f4")
        layout[:] = h5py.VirtualSource(os.fspath(other), "secret", shape=(2, 3))
        vg.create_virtual_dataset("0", layout)
    path = tmp_path / "evil.weights.h5"
    model = _h5_file(h5py, path, virtual)
    _refused(model, path, "virtual dataset")


@pytest.mark.parametrize("link", ["external", "soft"])
def test_h5_links_are_refused(tmp_path, link):
    h5py = pytest.importorskip("h5py")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("secret", data=np.ones((2, 3), np.float32))

    def linked(vg):
        if link == "external":
            vg["0"] = h5py.ExternalLink(os.fspath(other), "/secret")
        else:
            vg.file.create_dataset("elsewhere", data=np.ones((2, 3), np.float32))
            vg["0"] = h5py.SoftLink("/elsewhere")
    path = tmp_path / "evil.weights.h5"
    model = _h5_file(h5py, path, linked)
    _refused(model, path, f"layers/dense/vars/0 is a {link.capitalize()}Link")


def test_h5_linked_group_of_an_unknown_layer_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_group("vars").create_dataset("0", data=np.ones(3, np.float32))
    path = tmp_path / "evil.weights.h5"
    model = _h5_file(h5py, path, lambda vg: vg.create_dataset("0", data=np.ones((2, 3), "f4")))
    with h5py.File(path, "a") as f:
        f["layers"]["dense_9"] = h5py.ExternalLink(os.fspath(other), "/")
    _refused(model, path, "layers/dense_9 is a ExternalLink")


def test_h5_shape_is_checked_before_reading(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bomb.weights.h5"
    # 2**40 x 4 float32 (16 TiB) in a few KB: gzip of chunks never written reads as zeros
    model = _h5_file(h5py, path, lambda vg: vg.create_dataset(
        "0", shape=(2 ** 40, 4), dtype="<f4", chunks=(1024, 4), compression="gzip"))
    assert os.path.getsize(path) < 64 * 1024
    read = []
    monkeypatch.setattr(h5py.Dataset, "__getitem__",
                        lambda self, key: read.append(self.name) or np.zeros(self.shape))
    with pytest.raises(ValueError, match=r"has shape \(1099511627776, 4\), but variable "
                                         r"'dense/kernel' has shape \(2, 3\)"):
        model.load_weights(path)
    assert read == []


def test_h5_plain_file_still_loads(tmp_path):
    pytest.importorskip("h5py")
    model = _model()
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    other = _model()
    other.load_weights(path)
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------- fastbn.torch's first-use C++ build
@pytest.fixture
def fbt():
    pytest.importorskip("torch")
    import fastbn.torch as fbt
    assert fbt.build_native(), "fastbn.torch could not build its C++ training path"
    return fbt


@pytest.fixture
def fbt_native(fbt):
    import fastbn.torch._native as fbt_native
    return fbt_native


def _build_dir():
    from torch.utils import cpp_extension
    return cpp_extension._get_build_directory("fastbn_torch_native", False)


def test_lock_of_a_killed_build_does_not_hang(fbt):
    """A build killed part-way leaves torch's lock file; the next process used to
    wait on it forever. It now removes it (no fastbn build holds the lock) and loads."""
    import subprocess
    lock = os.path.join(_build_dir(), "lock")
    open(lock, "w").close()
    try:
        out = subprocess.run([sys.executable, "-c",
                              "import fastbn.torch as fbt; print(fbt.build_native())"],
                             capture_output=True, text=True, timeout=120)
    finally:
        if os.path.exists(lock):
            os.unlink(lock)
            pytest.fail("the stale lock was left in place")
    assert out.returncode == 0 and out.stdout.split() == ["True"], out.stderr[-2000:]
    assert "left by a build that was killed" in out.stderr


def test_a_build_that_holds_the_lock_too_long_means_the_python_path(fbt, fbt_native,
                                                                   monkeypatch):
    import fcntl
    import torch
    monkeypatch.setattr(fbt_native, "NATIVE_WAIT_S", 1)
    monkeypatch.setattr(fbt_native, "_native_module", None)
    monkeypatch.setattr(fbt_native, "_NATIVE_PLANS", {})
    fd = os.open(os.path.join(_build_dir(), "fastbn-build.lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)           # another builder, alive and busy
        with pytest.warns(RuntimeWarning, match="another process has been building it .* "
                                                "for over 1 s.*runs the Python path"):
            assert not fbt.build_native()
    finally:
        os.close(fd)
    bn, ref = fbt.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    x = torch.randn(8, 3)
    torch.testing.assert_close(bn(x), ref(x))


def test_the_build_limits_are_set_through_the_package(fbt, monkeypatch):
    import fastbn.torch._native as native
    for name, value in (("NATIVE_WAIT_S", 7), ("NATIVE_BUILD_TIMEOUT_S", 8),
                        ("NATIVE_MAX_BYTES", 9)):
        monkeypatch.setattr(fbt, name, value)
        assert getattr(native, name) == value == getattr(fbt, name)


def test_a_build_past_its_time_limit_means_the_python_path(fbt, fbt_native, monkeypatch,
                                                           tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", os.fspath(tmp_path))   # nothing built here
    monkeypatch.setattr(fbt_native, "NATIVE_BUILD_TIMEOUT_S", 0.2)
    monkeypatch.setattr(fbt_native, "_native_module", None)
    with pytest.warns(RuntimeWarning, match="the build ran past 0.2 s and was stopped"):
        assert not fbt.build_native()


# ------------------------------------------------ a run never replaces another
@pytest.fixture
def small_mnist(monkeypatch):
    from synthetic_data import synthetic_mnist
    from fastbn.datasets import mnist as mnist_data
    monkeypatch.setattr(mnist_data, "load_data", lambda path="mnist.npz": synthetic_mnist())


def _files(out):
    return {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.parametrize("job_name", ["cnn", "mnist"])
def test_a_second_run_into_the_same_out_is_refused(small_mnist, tmp_path, capsys, job_name):
    import importlib
    job = importlib.import_module(f"fastbn.examples.{job_name}")
    out = tmp_path / "run"
    argv = ["--limit", "192", "--batch-size", "32", "--epochs", "1", "--quiet", "--no-plot",
            "--out", str(out)]
    assert job.main(argv) == 0
    before = _files(out)
    assert "metrics.json" in before
    with pytest.raises(SystemExit) as e:                # a smoke run into the real run's --out
        job.main(argv + ["--seed", "9"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {out} holds another run's results" in err
    assert "--overwrite" in err and ("--resume to continue it" in err) == (job_name == "cnn")
    assert _files(out) == before                        # nothing was replaced
    assert job.main(argv + ["--seed", "9", "--overwrite"]) == 0
    assert _files(out)["metrics.json"] != before["metrics.json"]


def test_cnn_resume_and_overwrite_are_one_or_the_other(small_mnist, tmp_path, capsys):
    from fastbn.examples import cnn
    with pytest.raises(SystemExit) as e:
        cnn.main(["--out", str(tmp_path), "--resume", "--overwrite"])
    assert e.value.code == 2 and "give one" in capsys.readouterr().err
