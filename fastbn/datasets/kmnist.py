"""Kuzushiji-MNIST (KMNIST), with the contract of ``keras.datasets.mnist``.

:func:`load_data` returns ``((x_train, y_train), (x_test, y_test))``: uint8
images of shape ``(60000, 28, 28)`` and ``(10000, 28, 28)``, pixels 0..255,
and uint8 labels 0..9 (ten cursive hiragana: o, ki, su, tsu, na, ha, ma, ya,
re, wo). Clanuwat et al., *Deep Learning for Classical Japanese Literature*,
2018 (arXiv:1812.01718); data by ROIS-DS CODH, CC BY-SA 4.0.

Source: the four gzipped IDX files CODH publishes at ``BASE_URL``, the
MNIST format and file names. Each is checked against its SHA-256
(``FILES``, the values torchvision and TensorFlow Datasets check) before
it is used or cached. (CODH's ``kmnist-*.npz`` copies are not used: no
checksum for them is published.) They are kept as published in ``kmnist/`` under
:func:`fastbn.datasets.mnist.data_dir` (``$FASTBN_DATA``, else
``~/.cache/fastbn``); a download is written to a temporary file, verified,
then renamed, so a reader never sees half a file. A file there that fails
verification is kept, with a warning, until a verified copy replaces it.
Offline, put the four files there by hand (the error says which and where).
"""
import gzip
import sys
import warnings
from pathlib import Path

import numpy as np

from fastbn._files import atomic_path

from ._download import Rejected, fetch, sha256_file
from .mnist import TIMEOUT, DatasetUnavailableError, data_dir

__all__ = ["load_data"]

#: Where CODH publishes the files (``BASE_URL + name``).
BASE_URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
#: name -> (sha256, bytes) of the published files.
FILES = {
    "train-images-idx3-ubyte.gz":
        ("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4", 18165135),
    "train-labels-idx1-ubyte.gz":
        ("e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17", 29497),
    "t10k-images-idx3-ubyte.gz":
        ("edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5", 3041136),
    "t10k-labels-idx1-ubyte.gz":
        ("20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c", 5120),
}
_SUBDIR = "kmnist"
#: Images per split, as the IDX headers must say.
_COUNTS = {"train": 60000, "t10k": 10000}


def _decode_idx(path, count, shape):
    """A gzipped IDX file's uint8 array, checked to hold ``count`` items of ``shape``."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = len(shape) + 1
    magic = 0x0800 + ndim
    header = np.frombuffer(data, ">u4", count=1 + ndim) if len(data) >= 4 * (1 + ndim) else ()
    if len(header) != 1 + ndim or header[0] != magic \
            or tuple(header[1:]) != (count,) + shape:
        raise Rejected(f"{path} is not an IDX file of {count} uint8 items of shape {shape}")
    body = np.frombuffer(data, np.uint8, offset=4 * (1 + ndim))
    if body.size != count * int(np.prod(shape)):
        raise Rejected(f"{path} is truncated: {body.size} bytes of data after its header")
    return body.reshape((count,) + shape).copy()


def _fetch(name, path):
    """Download ``name`` to ``path``, verifying its SHA-256 before the rename."""
    url = BASE_URL + name
    sha256 = FILES[name][0]
    print(f"fastbn: downloading KMNIST {url}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fetch(url, tmp, sha256, TIMEOUT)


def _unavailable(folder, tried):
    lines = ["KMNIST is not available: no source could be reached or verified. Tried:"]
    lines += [f"  - {what}: {why}" for what, why in tried]
    lines += [f"To install it by hand, download these files from {BASE_URL} into "
              f"{folder}/ (or point $FASTBN_DATA at a directory whose kmnist/ has them):"]
    lines += [f"  - {BASE_URL}{name}  ({size} bytes, sha256 {sha256})"
              for name, (sha256, size) in FILES.items()]
    return DatasetUnavailableError("\n".join(lines))


def load_data():
    """Load KMNIST: 60000 training and 10000 test images of cursive hiragana.

    The first call downloads and verifies the four files (module docstring);
    later calls read them from the cache, verified again (about 0.5 s).

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of ndarray
        ``x_train`` uint8 ``(60000, 28, 28)``, ``y_train`` uint8 ``(60000,)``,
        ``x_test`` uint8 ``(10000, 28, 28)``, ``y_test`` uint8 ``(10000,)``;
        pixels 0..255 (0 is background), labels 0..9.

    Raises
    ------
    DatasetUnavailableError
        If a file can be neither read from the cache nor downloaded and
        verified; the message names each file's URL, size and SHA-256 and
        the directory to put it in.

    Warns
    -----
    UserWarning
        When a cached file fails verification; it is kept until a verified
        download replaces it.

    Examples
    --------
    >>> from fastbn.datasets import kmnist
    >>> (x_train, y_train), (x_test, y_test) = kmnist.load_data()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_test.max()  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'), 9)
    """
    folder = Path(data_dir()) / _SUBDIR
    tried, paths = [], {}
    for name, (sha256, _) in FILES.items():
        path = folder / name
        if path.exists():
            got = sha256_file(path)
            if got == sha256:
                paths[name] = path
                continue
            warnings.warn(f"fastbn.datasets.kmnist: {path} is truncated or corrupt: its "
                          f"sha256 is {got}, expected {sha256}; fetching a new copy (the "
                          f"file is kept unless a verified one replaces it)", stacklevel=2)
        try:
            _fetch(name, path)
            paths[name] = path
        except (OSError, Rejected) as e:
            tried.append((BASE_URL + name, e))
    if tried:
        raise _unavailable(folder, tried)
    try:
        x_train, y_train, x_test, y_test = (
            _decode_idx(paths[f"{split}-{kind}-idx{len(shape) + 1}-ubyte.gz"], _COUNTS[split],
                        shape)
            for split in ("train", "t10k") for kind, shape in (("images", (28, 28)),
                                                               ("labels", ())))
    except (OSError, EOFError, Rejected) as e:     # only with FILES changed: they hash right
        raise _unavailable(folder, [("decoding", e)]) from None
    return (x_train, y_train), (x_test, y_test)
