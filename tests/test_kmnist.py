"""fastbn.datasets.kmnist on files the test writes (no machine here reaches CODH)."""
import functools
import gzip
import hashlib
import io
import urllib.request

import numpy as np
import pytest

from fastbn.datasets import kmnist, mnist


def _idx(array):
    header = np.array([0x0800 + array.ndim, *array.shape], ">u4").tobytes()
    return gzip.compress(header + array.tobytes(), compresslevel=1)


@functools.lru_cache(maxsize=1)
def _published():
    """KMNIST-shaped arrays (labels random, images a cheap-to-gzip pattern) and their files."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (600, 28, 28), np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 600).astype(np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (100, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 100).astype(np.uint8)}
    return arrays, {name: _idx(a) for name, a in arrays.items()}


@pytest.fixture
def served(monkeypatch, tmp_path):
    """A fake CODH: KMNIST-shaped files, FILES pointed at their hashes, urlopen
    serving them (and counting requests); the cache in tmp_path."""
    arrays, blobs = _published()
    monkeypatch.setattr(kmnist, "_COUNTS", {"train": 600, "t10k": 100})   # not 47 MB
    monkeypatch.setattr(kmnist, "FILES", {name: (hashlib.sha256(b).hexdigest(), len(b))
                                          for name, b in blobs.items()})
    monkeypatch.setenv("FASTBN_DATA", str(tmp_path))
    requests = []

    def urlopen(url, timeout=None):
        requests.append(url)
        name = url[len(kmnist.BASE_URL):]
        if served.offline:
            raise OSError("Temporary failure in name resolution")
        return io.BytesIO(served.corrupt(blobs[name]))
    served.offline, served.corrupt = False, lambda b: b
    served.arrays, served.blobs, served.requests = arrays, blobs, requests
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return served


def test_downloads_verifies_caches_and_matches_keras_contract(served, tmp_path):
    (x, y), (xt, yt) = kmnist.load_data()
    assert x.shape == (600, 28, 28) and xt.shape == (100, 28, 28)
    assert x.dtype == y.dtype == xt.dtype == yt.dtype == np.uint8
    np.testing.assert_array_equal(x, served.arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(yt, served.arrays["t10k-labels-idx1-ubyte.gz"])
    assert len(served.requests) == 4
    assert sorted(p.name for p in (tmp_path / "kmnist").iterdir()) == sorted(kmnist.FILES)
    kmnist.load_data()                                   # from the cache
    assert len(served.requests) == 4


def test_offline_error_says_what_to_download_and_where(served, tmp_path):
    served.offline = True
    with pytest.raises(mnist.DatasetUnavailableError) as e:
        kmnist.load_data()
    text = str(e.value)
    assert "name resolution" in text and str(tmp_path / "kmnist") in text
    for name, (sha256, size) in kmnist.FILES.items():
        assert f"{kmnist.BASE_URL}{name}  ({size} bytes, sha256 {sha256})" in text


def test_a_corrupt_download_is_refused_and_never_cached(served, tmp_path):
    served.corrupt = lambda b: b[:-10]
    with pytest.raises(mnist.DatasetUnavailableError, match="served a file with sha256"):
        kmnist.load_data()
    assert not (tmp_path / "kmnist").exists() or not any((tmp_path / "kmnist").iterdir())


def test_a_corrupt_cache_file_is_kept_until_a_verified_copy_replaces_it(served, tmp_path):
    kmnist.load_data()
    bad = tmp_path / "kmnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"not gzip")
    served.offline = True
    with pytest.warns(UserWarning, match="truncated or corrupt"), \
            pytest.raises(mnist.DatasetUnavailableError):
        kmnist.load_data()
    assert bad.read_bytes() == b"not gzip"               # offline: nothing deleted
    served.offline = False
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        (_, _), (_, yt) = kmnist.load_data()
    np.testing.assert_array_equal(yt, served.arrays["t10k-labels-idx1-ubyte.gz"])
    assert bad.read_bytes() == served.blobs["t10k-labels-idx1-ubyte.gz"]


def test_a_file_of_the_wrong_shape_is_refused(served):
    kmnist._COUNTS["t10k"] = 99
    with pytest.raises(mnist.DatasetUnavailableError, match="not an IDX file of 99"):
        kmnist.load_data()


def test_the_published_hashes_are_sha256_hex():
    for name, (sha256, size) in kmnist.FILES.items():
        assert len(sha256) == 64 and int(sha256, 16) >= 0 and size > 0
