"""Weights, model and backup files that were crafted or damaged: refused before
anything they describe is allocated, and BackupAndRestore's fallback to its .bkp."""
import io
import json
import os
import time
import zipfile

import numpy as np
import pytest

from fastbn import nn


def _npy_bomb(shape=(2 ** 40, 4)):
    """An .npy whose header declares ``shape`` float32 but holds no data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _zip(path_or_buf, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path_or_buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)


@pytest.fixture
def no_array_reads(monkeypatch):
    """Record every array numpy would read (and allocate) from an .npy."""
    calls = []
    real = np.lib.format.read_array

    def spy(fp, *a, **k):
        calls.append(fp)
        return real(fp, *a, **k)
    monkeypatch.setattr(np.lib.format, "read_array", spy)
    return calls


def _model():
    nn.clear_session()
    return nn.Sequential([nn.Dense(2, input_shape=(3,), name="d")])


def test_load_weights_npz_bomb_refused_from_its_header(tmp_path, no_array_reads):
    path = tmp_path / "bomb.weights.npz"
    _zip(path, {"d/kernel.npy": _npy_bomb(), "d/bias.npy": _npy_bomb((2,))})
    assert os.path.getsize(path) < 600
    model = _model()
    before = [v.numpy() for v in model.variables]
    t = time.perf_counter()
    with pytest.raises(ValueError, match="not a save_weights file"):
        model.load_weights(path)
    assert time.perf_counter() - t < 0.5
    assert no_array_reads == []
    assert all(np.array_equal(a, v.value) for a, v in zip(before, model.variables))


def test_load_weights_huge_but_consistent_entry_refused_before_reading(tmp_path,
                                                                       no_array_reads):
    # the member's declared size matches its header, so only the shape check stops it
    path = tmp_path / "big.weights.npz"
    model = _model()
    np.savez(path, **{"d/kernel": np.zeros((3000, 2), np.float32),
                      "d/bias": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match=r"weight 'd/kernel' .* has shape \(3000, 2\), but "
                                         r"variable 'd/kernel' has shape \(3, 2\)"):
        model.load_weights(path)
    assert no_array_reads == []


def test_load_weights_still_reads_its_own_files(tmp_path):
    model = _model()
    path = tmp_path / "w.weights.npz"
    model.save_weights(path)
    other = _model()
    other.load_weights(path)
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.value, b.value)


def _saved_keras(tmp_path, compiled=True):
    model = _model()
    if compiled:
        model.compile(optimizer="adam", loss="mse")
        model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        return path, {n: z.read(n) for n in z.namelist()}


def _rewrite(path, files, **changes):
    files = dict(files, **changes)
    _zip(path, files, zipfile.ZIP_DEFLATED)


def test_load_model_units_bomb_refused_before_building(tmp_path, monkeypatch):
    path, files = _saved_keras(tmp_path)
    config = json.loads(files["config.json"])
    config["config"]["layers"][0]["config"]["units"] = 10 ** 13
    _rewrite(path, files, **{"config.json": json.dumps(config)})
    sizes = []
    real = nn.layers.Layer.add_weight

    def spy(self, name, shape, *a, **k):
        sizes.append(int(np.prod(shape)))
        return real(self, name, shape, *a, **k)
    monkeypatch.setattr(nn.layers.Layer, "add_weight", spy)
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"not a fastbn \.keras file: layer 'd' would build "
                                         r"weight 'd/kernel' of shape \(3, 10000000000000\)"):
        nn.models.load_model(path)
    assert time.perf_counter() - t < 0.5
    assert all(s <= 10 for s in sizes)      # nothing of the 10**13 units was allocated


def test_load_model_weights_bomb_refused(tmp_path, no_array_reads):
    path, files = _saved_keras(tmp_path)
    bomb = io.BytesIO()
    _zip(bomb, {"0.npy": _npy_bomb(), "1.npy": _npy_bomb((2,))})
    _rewrite(path, files, **{"model.weights.npz": bomb.getvalue()})
    with pytest.raises(ValueError, match=r"not a fastbn \.keras file"):
        nn.models.load_model(path)
    assert no_array_reads == []


def test_load_model_optimizer_state_bomb_refused(tmp_path, no_array_reads):
    path, files = _saved_keras(tmp_path)
    state = io.BytesIO()
    big = io.BytesIO()
    np.save(big, np.zeros((5000, 2), np.float32))
    it = io.BytesIO()
    np.save(it, np.asarray(1, np.int64))
    _zip(state, {"iterations.npy": it.getvalue(), "0/0.npy": big.getvalue()})
    _rewrite(path, files, **{"optimizer.npz": state.getvalue()})
    with pytest.raises(ValueError, match=r"optimizer entry '0/0' has shape \(5000, 2\)"):
        nn.models.load_model(path)
    assert len(no_array_reads) == 2        # the model's kernel and bias, not the (5000, 2)


@pytest.mark.parametrize("cc", [[], {"optimizer": "adam"}, {"loss": "mse"},
                                {"optimizer": {"class_name": "Adam"}, "loss": "mse",
                                 "metrics": None},
                                {"optimizer": {"class_name": "Adam", "config": {}},
                                 "loss": "mse", "metrics": 3},
                                {"optimizer": {"class_name": "Adam", "config": {"nope": 1}},
                                 "loss": "mse", "metrics": None}])
def test_load_model_malformed_compile_config(tmp_path, cc):
    path, files = _saved_keras(tmp_path)
    config = json.loads(files["config.json"])
    config["compile_config"] = cc
    _rewrite(path, files, **{"config.json": json.dumps(config)})
    with pytest.raises(ValueError, match=r"not a fastbn \.keras file"):
        nn.models.load_model(path)


@pytest.mark.parametrize("edit", [
    lambda c: c.update(config=[]),
    lambda c: c["config"].update(layers={}),
    lambda c: c["config"]["layers"].append(3),
    lambda c: c["config"]["layers"][0].pop("config"),
    lambda c: c["config"]["layers"][0].update(class_name=7),
    lambda c: c["config"].update(input_shape="3"),
    lambda c: c["config"]["layers"][0]["config"].update(units="two"),
])
def test_load_model_malformed_config(tmp_path, edit):
    path, files = _saved_keras(tmp_path, compiled=False)
    config = json.loads(files["config.json"])
    edit(config)
    _rewrite(path, files, **{"config.json": json.dumps(config)})
    with pytest.raises(ValueError, match=r"not a fastbn \.keras file"):
        nn.models.load_model(path)


def test_load_model_round_trip_still_works(tmp_path):
    path, _ = _saved_keras(tmp_path)
    model = nn.models.load_model(path)
    assert model.optimizer.iterations == 1


# ------------------------------------------------------------- BackupAndRestore
class _Interrupt(nn.callbacks.Callback):
    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def _interrupted_run(backup_dir):
    model = _model()
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((4, 3)), np.ones((4, 2))
    backup = nn.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[backup, _Interrupt(2)])
    return model, backup, x, y


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_backup_falls_back_to_bkp(tmp_path):
    d = tmp_path / "backup"
    model, backup, x, y = _interrupted_run(d)
    latest = d / "latest.state.npz"
    prev = d / "latest.state.npz.bkp"
    _truncate(latest)
    saved = prev.read_bytes()
    with pytest.warns(RuntimeWarning, match=r"latest backup .*latest\.state\.npz cannot be "
                                            r"read.*restored the previous one, .*\.bkp"):
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, epochs=5, verbose=0, callbacks=[backup, _Interrupt(2)])
    # the .bkp was written after epoch 0 and says resume at epoch 1; it replaced the broken
    # latest before epoch 1 began, so the rotation at epoch 1's end kept a readable .bkp
    assert prev.read_bytes() == saved
    h = model.fit(x, y, epochs=5, verbose=0, callbacks=[backup])
    assert h.epoch == [3, 4]


def test_backup_both_unreadable_is_one_error(tmp_path):
    d = tmp_path / "backup"
    model, backup, x, y = _interrupted_run(d)
    _truncate(d / "latest.state.npz")
    _truncate(d / "latest.state.npz.bkp")
    with pytest.raises(ValueError, match=r"neither backup can be read: .*latest\.state\.npz "
                                         r".* nor .*latest\.state\.npz\.bkp"):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[backup])
