"""fastbn._files: atomic writes keep the old file on any failure and never
leave a temporary behind; racing writers never produce a mixed file."""
import contextlib
import os
import stat
import threading

import numpy as np
import pytest

from fastbn._files import atomic_path, atomic_write

OLD = b"old checkpoint " * 1000


def _write_in_chunks(f, data, fail_after=None, exc=OSError("File too large")):
    for i in range(0, len(data), 4096):
        if fail_after is not None and i >= fail_after:
            raise exc
        f.write(data[i:i + 4096])


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(OLD)
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["w.bin"]
    with atomic_write(tmp_path / "t.json", "w") as f:
        f.write("{}\n")
    assert (tmp_path / "t.json").read_text() == "{}\n"


@pytest.mark.parametrize("exc", [OSError("File too large"), KeyboardInterrupt(),
                                 ValueError("bad array")], ids=type)
def test_failing_writer_keeps_old_file_and_leaves_no_temporary(tmp_path, exc):
    target = tmp_path / "weights.npz"
    target.write_bytes(OLD)
    with pytest.raises(type(exc)):
        with atomic_write(target) as f:
            _write_in_chunks(f, b"x" * 100_000, fail_after=50_000, exc=exc)
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["weights.npz"]


def test_failing_rename_keeps_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "weights.npz"
    target.write_bytes(OLD)

    def refuse(src, dst):
        raise PermissionError("rename refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        with atomic_write(target) as f:
            f.write(b"new")
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["weights.npz"]


def test_new_file_when_none_existed_and_failure_leaves_nothing(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("{")
            raise RuntimeError("writer bug")
    assert os.listdir(tmp_path) == []


def test_atomic_path_for_writers_that_open_by_name(tmp_path):
    target = tmp_path / "m.h5"
    target.write_bytes(OLD)
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise OSError("No space left on device")
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["m.h5"]
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"whole")
    assert target.read_bytes() == b"whole"


def test_modes_new_file_follows_umask_replaced_file_keeps_its_mode(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new") as f:
            f.write(b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640
    kept = tmp_path / "kept"
    kept.write_bytes(b"0")
    kept.chmod(0o604)
    with atomic_write(kept) as f:
        f.write(b"1")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_concurrent_writers_never_produce_a_mixed_file(tmp_path):
    """Two writers racing into one path (two ranks sharing --out): every read
    and the final file are one writer's complete bytes. A fixed temporary name
    shared by both writers fails this."""
    target = tmp_path / "metrics.json"
    payloads = [bytes([65 + k]) * 300_000 for k in range(2)]
    target.write_bytes(payloads[0])
    stop = threading.Event()
    errors, seen = [], []

    def writer(k):
        try:
            for _ in range(40):
                with atomic_write(target) as f:
                    _write_in_chunks(f, payloads[k])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def reader():
        while not stop.is_set():
            data = target.read_bytes()
            seen.append(data in payloads)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert not errors
    assert all(seen) and seen
    assert target.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["metrics.json"]


# ----------------------------------------------------------- Sequential files
def _model(seed, units=64):
    from fastbn import nn

    nn.set_random_seed(seed)
    model = nn.Sequential([nn.Dense(units, input_shape=(32,)), nn.BatchNormalization(),
                           nn.Dense(4)])
    return model


@pytest.fixture
def file_size_limit():
    """``limit(n)``: writes past n bytes fail with OSError "File too large", as
    on a full disk (RLIMIT_FSIZE, with SIGXFSZ ignored so the write returns
    EFBIG instead of killing the process). Restored after the test."""
    import resource
    import signal

    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limits = resource.getrlimit(resource.RLIMIT_FSIZE)

    @contextlib.contextmanager
    def limit(n):
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, old_limits[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limits)

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limits)
    signal.signal(signal.SIGXFSZ, old_handler)


def test_save_weights_that_fails_keeps_the_previous_file(tmp_path, file_size_limit):
    import numpy as np

    path = tmp_path / "model.weights.npz"
    first = _model(0)
    first.save_weights(path)
    size = path.stat().st_size
    second = _model(1)
    with file_size_limit(size // 2):
        with pytest.raises(OSError, match="File too large"):
            second.save_weights(path)
    assert os.listdir(tmp_path) == [path.name]
    loaded = _model(2)
    loaded.load_weights(path)               # a truncated file: BadZipFile
    for a, b in zip(first.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- load_weights
def _entries(model):
    return {v.name: v.value.copy() for v in model.variables}


def _assert_unchanged(model, before):
    for v in model.variables:
        np.testing.assert_array_equal(v.value, before[v.name])


def test_load_weights_checks_every_entry_before_assigning_any(tmp_path):
    """A bad fourth entry (after three good ones) leaves the model as it was."""
    saved = _entries(_model(0))
    bad = dict(saved)
    last = list(bad)[3]
    bad[last] = np.full(bad[last].shape, "x")             # a str array of the right shape
    path = tmp_path / "w.npz"
    np.savez(path, **bad)
    model = _model(1)
    before = _entries(model)
    with pytest.raises(ValueError) as e:
        model.load_weights(path)
    _assert_unchanged(model, before)
    assert "not a save_weights file" in str(e.value) and "real floating" in str(e.value)


@pytest.mark.parametrize("value, match", [
    (1e40, "holds 1e\\+40, beyond the range.*float32"),
    (-np.finfo(np.float64).max, "beyond the range"),
    (1 + 2j, "complex128; weights are real floating point"),
    (3, "int64; weights are real floating point"),
    (True, "bool; weights are real floating point"),
])
def test_load_weights_refuses_values_it_would_change(tmp_path, value, match):
    entries = _entries(_model(0))
    name = list(entries)[-1]                                # assigned last
    entries[name] = np.full(entries[name].shape, value)
    path = tmp_path / "w.npz"
    np.savez(path, **entries)
    model = _model(1)
    before = _entries(model)
    with pytest.raises(ValueError, match=match):
        model.load_weights(path)
    _assert_unchanged(model, before)


def test_load_weights_casts_float64_and_keeps_stored_nan_and_inf(tmp_path):
    entries = {k: v.astype(np.float64) for k, v in _entries(_model(0)).items()}
    name = list(entries)[0]
    entries[name].flat[:3] = [np.nan, np.inf, 3.4028235e38]   # the last rounds to float32 max
    path = tmp_path / "w.npz"
    np.savez(path, **entries)
    model = _model(1)
    model.load_weights(path)
    for v, a in zip(model.variables, entries.values()):       # matched by order
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v.value, a.astype(np.float32))


def _blob(path):
    path.write_bytes(np.random.default_rng(0).bytes(3000))


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _other_npz(path):
    np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8))


def _text(path):
    path.write_text("dense/kernel: 1 2 3\n")


def _truncated(path):
    _model(0).save_weights(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("make", [_blob, _npy, _other_npz, _text, _truncated, _empty])
def test_load_weights_of_a_foreign_file_is_one_short_error(tmp_path, make):
    path = tmp_path / "w.npz"
    make(path)
    model = _model(1)
    before = _entries(model)
    with pytest.raises(ValueError, match="^load_weights: not a save_weights file: ") as e:
        model.load_weights(path)
    assert len(str(e.value)) < 300
    _assert_unchanged(model, before)


def test_load_weights_of_a_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        _model(0).load_weights(tmp_path / "nothing.npz")


def test_a_symlink_is_followed_and_kept(tmp_path):
    real = tmp_path / "disk" / "w.npz"
    real.parent.mkdir()
    real.write_bytes(OLD)
    link = tmp_path / "w.npz"
    link.symlink_to(real)
    with atomic_write(link) as f:
        f.write(b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    assert os.listdir(real.parent) == ["w.npz"]
