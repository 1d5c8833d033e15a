"""Keras 3's callbacks on fastbn.nn's fit, and .weights.h5 files; Keras side by side
where installed."""
import csv
import os
import sys

import numpy as np
import pytest

from fastbn import nn


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int)


def _model(lr=0.05, optimizer=None):
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Dense(8, activation="relu", input_shape=(4,)),
                           nn.BatchNormalization(), nn.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=optimizer or nn.SGD(lr), metrics=["accuracy"])
    return model


class Feed(nn.callbacks.Callback):
    """Replace the logs' monitored value with a scripted sequence (for exact rules)."""

    def __init__(self, values, key="val_loss"):
        self.values, self.key = values, key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class RecordRates(nn.callbacks.Callback):
    """Records the optimizer's learning rate at the end of each epoch."""

    def __init__(self):
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(self.model.optimizer.learning_rate)


class Scripted(nn.callbacks.Callback):
    """Calls ``inner``'s on_epoch_end with a scripted value (callbacks get copies of logs)."""

    def __init__(self, inner, values, key="val_loss"):
        self.inner, self.values, self.key = inner, values, key

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs)
        logs[self.key] = self.values[epoch]
        self.inner.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)


# ---------------------------------------------------------- EarlyStopping
@pytest.mark.parametrize("values,kw,stopped", [
    ([1.0, 0.9, 0.95, 0.96, 0.8, 0.7], {"patience": 2}, 3),
    ([1.0, 0.9, 0.95, 0.96, 0.8, 0.7], {"patience": 3}, None),
    ([1.0, 0.99, 0.98, 0.97, 0.96, 0.95], {"patience": 1, "min_delta": 0.05}, 1),
    ([0.5, 0.6, 0.7, 0.6, 0.5, 0.4], {"patience": 1, "monitor": "val_accuracy"}, 3),
    ([1.0, 0.9, 0.9, 0.9, 0.6, 0.5], {"patience": 2, "baseline": 0.55}, 2),
    ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], {"patience": 2, "baseline": 0.55}, None),
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], {"patience": 0, "start_from_epoch": 3}, 4),
])
def test_early_stopping_follows_keras_rule(values, kw, stopped):
    key = kw.get("monitor", "val_loss")
    stop = nn.callbacks.EarlyStopping(**kw)
    x, y = _data()
    h = _model().fit(x, y, epochs=6, verbose=0, validation_data=(x, y),
                     callbacks=[Scripted(stop, values, key)])
    if stopped is None:
        assert len(h.epoch) == 6 and stop.stopped_epoch == 0
    else:
        assert h.epoch[-1] == stopped and stop.stopped_epoch == stopped


def test_early_stopping_restores_best_weights():
    x, y = _data()
    model = _model()
    snapshots = []

    class Snap(nn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(model.get_weights())

    stop = nn.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    model.fit(x, y, epochs=6, verbose=0, validation_data=(x, y),
              callbacks=[Snap(), Scripted(stop, [1.0, 0.5, 0.7, 0.8, 0.1, 0.1])])
    assert stop.best_epoch == 1
    for a, b in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("values,kw", [
    ([1.0, 0.9, 0.95, 0.96, 0.8, 0.7, 0.75, 0.76], {"patience": 2}),
    ([1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93], {"patience": 1, "min_delta": 0.05}),
    ([0.5, 0.6, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], {"patience": 1, "mode": "max"}),
    ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], {"patience": 2, "baseline": 0.55}),
])
def test_early_stopping_matches_keras(keras, values, kw):
    """Keras' own EarlyStopping fed the same values stops at the same epoch."""
    class KModel:
        stop_training = False

        def get_weights(self):
            return []
    kcb = keras.callbacks.EarlyStopping(**kw)
    kcb.set_model(KModel())
    kcb.on_train_begin()
    kstop = None
    for epoch, v in enumerate(values):
        kcb.on_epoch_end(epoch, {"val_loss": v})
        if kcb.model.stop_training:
            kstop = epoch
            break
    ours = nn.callbacks.EarlyStopping(**kw)
    x, y = _data()
    h = _model().fit(x, y, epochs=len(values), verbose=0, validation_data=(x, y),
                     callbacks=[Scripted(ours, values)])
    if kstop is None:                           # Keras ran every epoch: so must fastbn
        assert len(h.epoch) == len(values)
    else:
        assert h.epoch[-1] == kstop


def test_monitor_auto_mode_needs_a_known_metric():
    x, y = _data()
    with pytest.raises(ValueError, match="mode='max'"):
        _model().fit(x, y, epochs=1, verbose=0,
                     callbacks=[Scripted(nn.callbacks.EarlyStopping(monitor="f1"), [0.5], "f1")])
    with pytest.warns(UserWarning, match="not available"):
        _model().fit(x, y, epochs=1, verbose=0, callbacks=[nn.callbacks.EarlyStopping()])


# ----------------------------------------------------- ReduceLROnPlateau
def test_reduce_lr_on_plateau_follows_keras_rule():
    cb = nn.callbacks.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.01)
    model = _model(lr=0.1)
    rec = RecordRates()
    x, y = _data()
    values = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    model.fit(x, y, epochs=len(values), verbose=0, callbacks=[Scripted(cb, values), rec])
    # epoch 0 best; 1, 2: wait 1, 2 -> reduce at 2; 3: the cooldown ends and counts (wait 1,
    # as in Keras); 4: reduce; ... 8: 0.0125 * 0.5 floored at min_lr
    assert rec.rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125, 0.01])
    with pytest.raises(ValueError, match="factor"):
        nn.callbacks.ReduceLROnPlateau(factor=1.0)


def test_reduce_lr_on_plateau_matches_keras(keras):
    values = [1.0, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.85, 0.7, 0.7, 0.7, 0.7]
    kw = {"factor": 0.5, "patience": 2, "cooldown": 1, "min_lr": 0.001, "min_delta": 0.01}

    class KModel:
        optimizer = keras.optimizers.SGD(0.1)
    kcb = keras.callbacks.ReduceLROnPlateau(**kw)
    kcb.set_model(KModel())
    kcb.on_train_begin()
    krates = []
    for epoch, v in enumerate(values):
        kcb.on_epoch_end(epoch, {"val_loss": v})
        krates.append(float(KModel.optimizer.learning_rate))
    model = _model(lr=0.1)
    rec = RecordRates()
    x, y = _data()
    model.fit(x, y, epochs=len(values), verbose=0,
              callbacks=[Scripted(nn.callbacks.ReduceLROnPlateau(**kw), values), rec])
    assert rec.rates == pytest.approx(krates, rel=1e-6)


# ----------------------------------------------------------- TerminateOnNaN
def test_terminate_on_nan_stops_after_the_batch(capsys):
    x, y = _data(8)
    x[5] = np.nan
    model = _model()
    seen = []

    class Count(nn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)
    h = model.fit(x, y, epochs=3, batch_size=2, shuffle=False, verbose=0,
                  callbacks=[Count(), nn.callbacks.TerminateOnNaN()])
    assert h.epoch == [0] and seen == [0, 1, 2]
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        _model().fit(x, y, epochs=1, batch_size=2, shuffle=False, verbose=0,
                     callbacks=[nn.callbacks.TerminateOnNaN(raise_error=True)])


# ------------------------------------------------------------- CSVLogger
def test_csv_logger_columns_and_append(tmp_path):
    x, y = _data()
    path = tmp_path / "log.csv"
    model = _model()
    h = model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y),
                  callbacks=[nn.callbacks.CSVLogger(path)])
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [int(r[0]) for r in rows[1:]] == [0, 1]
    assert float(rows[2][2]) == pytest.approx(h.history["loss"][1])
    model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y),
              callbacks=[nn.callbacks.CSVLogger(path, separator=";", append=True)])
    lines = open(path).read().splitlines()
    assert len(lines) == 4 and lines[3].count(";") == 4       # no second header


# -------------------------------------------------------- ModelCheckpoint
def test_model_checkpoint_epoch_names_and_best_only(tmp_path):
    x, y = _data()
    model = _model()
    saved = []
    orig = model.save_weights
    model.save_weights = lambda p: (saved.append(os.path.basename(p)), orig(p))
    ckpt = nn.callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch:02d}-{loss:.3f}.weights.npz"),
                                        save_weights_only=True, save_best_only=True)
    model.fit(x, y, epochs=4, verbose=0, validation_data=(x, y),
              callbacks=[Scripted(ckpt, [1.0, 0.8, 0.9, 0.7])])
    assert [s.split("-")[1] for s in saved] == ["01", "02", "04"]
    assert sorted(os.listdir(tmp_path)) == sorted(saved)       # no temporary files left
    other = _model()
    other.load_weights(tmp_path / saved[-1])
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=".weights.h5"):
        nn.callbacks.ModelCheckpoint(str(tmp_path / "w.npz"), save_weights_only=True)
    with pytest.raises(ValueError, match=".keras"):
        nn.callbacks.ModelCheckpoint(str(tmp_path / "m.h5"))
    with pytest.raises(KeyError, match="val_f1"):
        _model().fit(x, y, epochs=1, verbose=0, callbacks=[nn.callbacks.ModelCheckpoint(
            str(tmp_path / "{val_f1}.weights.npz"), save_weights_only=True)])


def test_model_checkpoint_save_freq_in_batches(tmp_path):
    x, y = _data(64)
    ckpt = nn.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}.weights.npz"),
                                        save_weights_only=True, save_freq=3)
    _model().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[ckpt])
    assert sorted(os.listdir(tmp_path)) == ["e1-b3.weights.npz", "e2-b2.weights.npz"]


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "batch"])
def test_save_freq_must_be_epoch_or_positive_int(tmp_path, bad):
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        nn.callbacks.ModelCheckpoint(str(tmp_path / "w.weights.npz"), save_weights_only=True,
                                     save_freq=bad)
    with pytest.raises(ValueError, match="save_freq must be 'epoch' or a positive integer"):
        nn.callbacks.BackupAndRestore(tmp_path / "backup", save_freq=bad)


def test_backup_and_restore_save_freq_in_batches(tmp_path):
    """64 samples in batches of 16, two epochs, save_freq=3: saves after batches 3 and 6
    (the second epoch's second batch), each naming the unfinished epoch to redo."""
    x, y = _data(64)
    backup = nn.callbacks.BackupAndRestore(tmp_path / "backup", save_freq=3,
                                           delete_checkpoint=False)
    saved = []
    orig = backup._save
    backup._save = lambda next_epoch: (saved.append(next_epoch), orig(next_epoch))
    _model().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[backup])
    assert saved == [0, 1]
    assert os.listdir(tmp_path / "backup") == ["latest.state.npz"]


# ------------------------------------------------------- BackupAndRestore
class Interrupt(nn.callbacks.Callback):
    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("opt", ["adam", "rmsprop", "sgd_momentum"])
def test_backup_and_restore_resumes_bit_for_bit(tmp_path, opt):
    make = {"adam": lambda: nn.Adam(0.01), "rmsprop": lambda: nn.RMSprop(0.01),
            "sgd_momentum": lambda: nn.SGD(0.05, momentum=0.9)}[opt]
    x, y = _data()
    nn.set_random_seed(1)
    straight = _model(optimizer=make())
    nn.set_random_seed(1)
    h_straight = straight.fit(x, y, epochs=4, verbose=0, shuffle=False)

    backup = nn.callbacks.BackupAndRestore(tmp_path / "backup")
    model = _model(optimizer=make())
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=4, verbose=0, shuffle=False, callbacks=[backup, Interrupt(1)])
    assert os.listdir(tmp_path / "backup") == ["latest.state.npz"]
    fresh = _model(optimizer=make())                 # a new process: fresh model, same code
    h = fresh.fit(x, y, epochs=4, verbose=0, shuffle=False, callbacks=[backup])
    assert h.epoch == [2, 3]
    assert h.history["loss"] == pytest.approx(h_straight.history["loss"][2:], rel=1e-6)
    for a, b in zip(fresh.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert fresh.optimizer.iterations == straight.optimizer.iterations
    assert not (tmp_path / "backup").exists()        # deleted after a finished run


# ------------------------------------------------------------ .weights.h5
def test_weights_h5_round_trip(tmp_path):
    pytest.importorskip("h5py")
    nn.clear_session()
    model = _model()
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89HDF\r\n\x1a\n"
    nn.clear_session()
    other = _model()                                  # same names after clear_session
    assert [v.name for v in other.variables] == [v.name for v in model.variables]
    renamed = nn.Sequential([nn.Dense(8, activation="relu", input_shape=(4,), name="a"),
                             nn.BatchNormalization(name="b"),
                             nn.Dense(2, activation="softmax", name="c")])
    for target in (other, renamed):
        target.load_weights(path)
        for a, b in zip(target.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
    wrong = nn.Sequential([nn.Dense(3, input_shape=(4,))])
    with pytest.raises(ValueError):
        wrong.load_weights(path)


def test_weights_h5_without_h5py_refuses(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    path = tmp_path / "model.weights.h5"
    with pytest.raises(ImportError, match=r"fastbn\[h5\]"):
        _model().save_weights(path)
    assert not path.exists() and not os.listdir(tmp_path)


def test_weights_h5_is_keras_layout(keras, tmp_path):
    pytest.importorskip("h5py")
    model = _model()
    path = tmp_path / "fastbn.weights.h5"
    model.save_weights(path)
    km = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                           keras.layers.BatchNormalization(),
                           keras.layers.Dense(2, activation="softmax")])
    km.load_weights(path)
    for a, b in zip(km.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _data(8)[0]
    np.testing.assert_allclose(km.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    kpath = tmp_path / "keras.weights.h5"
    km.save_weights(kpath)
    other = _model()
    other.load_weights(kpath)
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_initial_epoch():
    x, y = _data()
    h = _model().fit(x, y, epochs=4, initial_epoch=2, verbose=0)
    assert h.epoch == [2, 3]
    with pytest.raises(ValueError, match="initial_epoch"):
        _model().fit(x, y, epochs=2, initial_epoch=-1, verbose=0)
