"""Atomic file writes: a reader, or a crash, never sees half a file.

Every file fastbn writes for the user (weights, metrics, plots, the dataset
cache) goes through :func:`atomic_write` or :func:`atomic_path`: the bytes go
to a temporary file with a unique name in the destination's directory, are
flushed and ``fsync``-ed, and ``os.replace`` renames it over the destination
in one step (POSIX ``rename``: atomic within a file system). If anything fails
before the rename -- a full disk, an exception in the writer, Ctrl-C -- the
temporary file is removed and the destination keeps its old bytes. Writers
racing into one path each rename a complete file of their own; the last
rename wins.
"""
import contextlib
import errno
import os
import re
import stat
import struct
import tempfile

try:
    import fcntl
except ImportError:  # Windows: no locks, no clean-up of stale temporaries
    fcntl = None
from pathlib import Path

__all__ = ["atomic_write", "atomic_path"]


def _new_file_mode():
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask.

    mkstemp makes 0o600 files; a shared cache or a run directory must stay
    readable as an ordinary write would leave it.
    """
    try:  # Linux >= 4.7 reports the umask without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and restore at once
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(directory):
    """Make the rename itself durable (best effort: not every OS or FS allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _protected_symlinks():
    """Linux's ``fs.protected_symlinks`` (1: on); on, where it cannot be read."""
    try:
        with open("/proc/sys/fs/protected_symlinks", encoding="ascii") as f:
            return int(f.read().strip() or 1)
    except (OSError, ValueError):
        return 1


def _check_follow(link, st, directory):
    """Refuse ``link`` where the kernel's ``may_follow_link`` would refuse ``open``.

    The rule: in a sticky world-writable directory a symlink is followed only
    if it belongs to the follower's euid or to the directory's owner; renaming
    over ``realpath`` would otherwise skip it.
    """
    euid = os.geteuid()
    if st.st_uid == euid or not _protected_symlinks():
        return
    dst = os.stat(directory)
    sticky_ww = stat.S_ISVTX | stat.S_IWOTH
    if dst.st_mode & sticky_ww != sticky_ww or dst.st_uid == st.st_uid:
        return
    raise PermissionError(
        errno.EACCES,
        f"Permission denied: {link} is a symbolic link owned by uid {st.st_uid} in the "
        f"sticky world-writable directory {directory} (owner uid {dst.st_uid}); "
        f"fs.protected_symlinks forbids following it, as open(path, 'w') would. "
        f"Remove the link or write to another path", str(link))


def _resolve(path):
    """``os.path.realpath(path)``, checking each symlink it follows as the kernel does."""
    todo = os.path.abspath(path).split("/")[::-1]
    resolved, links = "/", 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, name)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:  # nothing below a missing name can be a link
            return os.path.join(candidate, *todo[::-1])
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        links += 1
        if links > 40:  # the kernel's MAXSYMLINKS
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
        _check_follow(candidate, st, resolved)
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = "/"
        todo.extend(target.split("/")[::-1])
    return resolved


_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)


def _try_lock(fd):
    """Take a write lock on the whole file ``fd`` opens, without waiting; False if held.

    An open-file-description lock (Linux >= 3.15), not ``flock``: HDF5 takes
    ``flock(LOCK_EX)`` on the file it writes, and our own ``flock`` on the
    temporary made every h5py save fail with errno 11; the two kinds do not
    meet on a local file system. Unlike ``lockf`` it is not dropped when the
    writer closes its own descriptor of the file.
    """
    try:
        fcntl.fcntl(fd, _OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _new_part(path):
    """A new, empty temporary beside ``path``: ``(fd, name)``, the fd holding its lock.

    A clean-up by another save may remove the file between its creation and
    the lock; a temporary found unlinked once locked is made anew.
    """
    while True:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        if _OFD_SETLK is None:
            return fd, tmp
        try:
            if _try_lock(fd) and os.fstat(fd).st_nlink:
                return fd, tmp
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)


def _remove_stale_parts(path, mine):
    """Remove the ``.NAME.*.part`` of ``path`` that no live writer holds (a killed save's).

    A writer holds its temporary's lock until the rename, and the kernel drops
    it when the writer dies, so a temporary whose lock can be taken has no
    writer: a SIGKILLed CNN save leaves 7 MB behind, and they piled up.
    """
    if _OFD_SETLK is None:
        return
    # mkstemp's names: 8 characters of [a-z0-9_], so ".a.b.*.part" (a.b's) is not a's
    own = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.part")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        part = os.path.join(path.parent, name)
        if part == mine or not own.fullmatch(name):
            continue
        with contextlib.suppress(OSError):
            fd = os.open(part, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode) and _try_lock(fd):
                    os.unlink(part)
            finally:
                os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    For writers that want a file name rather than a file object (h5py, a
    library that opens the file itself). The caller writes the whole file at
    the yielded name; when the ``with`` block ends without an exception the
    file is ``fsync``-ed and renamed onto ``path``. On any exception,
    ``KeyboardInterrupt`` included, the temporary file is removed, ``path`` is
    left as it was, and the exception propagates. A temporary a killed save
    of the same ``path`` left behind (one no live process holds locked) is
    removed when the next save begins.

    Parameters
    ----------
    path : str or path-like
        The destination. Its directory must exist. A symbolic link is
        followed: the file it points to is replaced, the link kept; one
        that ``open(path, "w")`` may not follow (Linux's
        ``fs.protected_symlinks``: a link of another user in a sticky
        world-writable directory such as ``/tmp``) raises ``PermissionError``.

    Yields
    ------
    str
        The temporary file's path (created empty, in ``path``'s directory).

    Examples
    --------
    >>> import os, tempfile
    >>> from fastbn._files import atomic_path
    >>> target = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with atomic_path(target) as tmp:
    ...     with open(tmp, "w") as f:
    ...         _ = f.write("kept")
    >>> open(target).read()
    'kept'
    """
    path = Path(path)
    if path.is_symlink():  # write where the link points, as open(path, "w") would
        path = Path(_resolve(path) if hasattr(os, "geteuid") else os.path.realpath(path))
    directory = path.parent
    fd, tmp = _new_part(path)  # fd holds the lock that marks tmp as being written
    try:
        _remove_stale_parts(path, tmp)
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may not have synced what it wrote
            os.fsync(f.fileno())
        try:
            mode = os.stat(path).st_mode & 0o7777  # a replaced file keeps its mode
        except FileNotFoundError:
            mode = _new_file_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    _fsync_dir(directory)


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """Open a temporary file beside ``path`` for writing; on success rename it onto ``path``.

    The file object is flushed and ``fsync``-ed before the rename, so after
    the ``with`` block ``path`` holds either its old bytes or all of the new
    ones, whatever happens (an exception, ``KeyboardInterrupt``, a killed
    process, a second writer). On an exception the temporary file is removed
    and the exception propagates; a killed process can leave a hidden
    ``.NAME.*.part`` file beside ``path`` (the next save of ``path`` removes
    it), never a damaged ``path``.

    Parameters
    ----------
    path : str or path-like
        The destination. Its directory must exist.
    mode : {"wb", "w"}, default "wb"
        Binary or text.
    encoding : str, optional
        For text mode (default UTF-8).

    Yields
    ------
    file object

    Examples
    --------
    >>> import os, tempfile
    >>> from fastbn._files import atomic_write
    >>> target = os.path.join(tempfile.mkdtemp(), "metrics.json")
    >>> with atomic_write(target, "w") as f:
    ...     _ = f.write('{"accuracy": 0.98}')
    >>> try:
    ...     with atomic_write(target, "w") as f:
    ...         _ = f.write('{"accur')
    ...         raise OSError("disk full")
    ... except OSError:
    ...     pass
    >>> open(target).read()                      # the old file, untouched
    '{"accuracy": 0.98}'
    >>> os.listdir(os.path.dirname(target))      # and no temporary left
    ['metrics.json']
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', not {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
