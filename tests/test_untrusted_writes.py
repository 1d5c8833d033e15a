"""Atomic writes against planted symlinks in sticky directories and stale ``.part`` files."""
import errno
import os

import pytest

from fastbn import _files
from fastbn._files import atomic_write

OTHER_UID = 65534  # nobody: neither the euid nor the directory's owner (tests run as root)



def _planted(tmp_path, link_uid, dir_mode=0o1777):
    """A victim file, and a link to it owned by ``link_uid`` in a ``dir_mode`` directory."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, dir_mode)
    victim = tmp_path / "victim.txt"
    victim.write_text("secret")
    link = shared / "weights.bin"
    os.symlink(victim, link)
    os.lchown(link, link_uid, -1)
    return victim, link


def _kernel_follows(link):
    """Whether the real kernel lets ``open(link, "r+")`` follow ``link`` (nothing written)."""
    try:
        with open(link, "r+b"):
            return True
    except PermissionError:
        return False


def _write(link):
    try:
        with atomic_write(link) as f:
            f.write(b"new")
    except PermissionError as e:
        assert e.errno == errno.EACCES and "protected_symlinks" in str(e)
        return False
    return True


@pytest.mark.parametrize("owner", ["euid", "dir_owner", "other"])
@pytest.mark.parametrize("dir_mode", [0o1777, 0o0777, 0o1755])
def test_symlink_followed_exactly_when_the_kernel_follows_it(tmp_path, owner, dir_mode):
    # The kernel's own open(), under this machine's fs.protected_symlinks, is the truth.
    uid = {"euid": os.geteuid(), "dir_owner": OTHER_UID, "other": OTHER_UID}[owner]
    victim, link = _planted(tmp_path, uid, dir_mode)
    if owner == "dir_owner":
        os.chown(link.parent, OTHER_UID, -1)
    follows = _kernel_follows(link)
    assert _write(link) == follows
    assert victim.read_text() == ("new" if follows else "secret")
    assert os.path.islink(link)  # the link itself is never replaced


@pytest.mark.parametrize("owner,follows", [("euid", True), ("dir_owner", True),
                                           ("other", False)])
def test_protected_symlinks_rule_when_on(tmp_path, monkeypatch, owner, follows):
    # fs.protected_symlinks=1 (most distributions' default): a link of another user in a
    # sticky world-writable directory is refused, even for root; the victim keeps its bytes.
    monkeypatch.setattr(_files, "_protected_symlinks", lambda: 1, raising=False)
    uid = os.geteuid() if owner == "euid" else OTHER_UID
    victim, link = _planted(tmp_path, uid)
    if owner == "dir_owner":
        os.chown(link.parent, OTHER_UID, -1)
    assert _write(link) == follows
    assert victim.read_text() == ("new" if follows else "secret")
    assert sorted(os.listdir(link.parent)) == ["weights.bin"]  # no temporary left


def test_protected_symlinks_checks_every_link_of_a_chain(tmp_path, monkeypatch):
    # own link -> planted link -> victim: the planted one in the chain is refused too.
    monkeypatch.setattr(_files, "_protected_symlinks", lambda: 1, raising=False)
    victim, planted = _planted(tmp_path, OTHER_UID)
    mine = tmp_path / "mine.bin"
    os.symlink(planted, mine)
    assert not _write(mine)
    assert victim.read_text() == "secret"


def _lock(fd):
    """A live writer's lock, the one atomic_path takes (an open-file-description lock)."""
    import fcntl
    import struct
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))


def test_a_killed_save_leaves_no_part_behind_the_next_save(tmp_path):
    # A SIGKILLed writer's temporary (no lock: the kernel dropped it with the process) goes
    # at the next save of the same file; a live writer's (locked), another file's, and a
    # look-alike of another name stay.
    dest = tmp_path / "model.weights.h5"
    dest.write_bytes(b"old")
    killed = tmp_path / ".model.weights.h5.k1ll3d_x.part"
    killed.write_bytes(b"x" * 4096)
    live = tmp_path / ".model.weights.h5.l1ve_wrt.part"
    live.write_bytes(b"half")
    other = tmp_path / ".model.weights.h5.bak.k1ll3d_x.part"  # model.weights.h5.bak's
    other.write_bytes(b"y")
    fd = os.open(live, os.O_RDWR)
    try:
        _lock(fd)
        with atomic_write(dest) as f:
            f.write(b"new")
        assert dest.read_bytes() == b"new"
        assert not killed.exists()
        assert live.read_bytes() == b"half"
        assert other.exists()
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == sorted([dest.name, live.name, other.name])


def test_a_running_save_keeps_its_part_while_another_save_cleans(tmp_path):
    # Two saves of one file at once (nested here): the inner one's clean-up must not take
    # the outer one's temporary, which the outer then renames into place whole.
    import h5py
    dest = tmp_path / "w.h5"
    with _files.atomic_path(dest) as outer:
        with h5py.File(outer, "w") as f:  # HDF5 takes its own flock: it must still work
            f["x"] = [1.0, 2.0]
            with atomic_write(dest) as g:
                g.write(b"inner")
            assert os.path.exists(outer)
    with h5py.File(dest, "r") as f:
        assert list(f["x"][()]) == [1.0, 2.0]
    assert os.listdir(tmp_path) == ["w.h5"]


def test_sigkilled_writer_process_part_removed_live_one_kept(tmp_path):
    # Real processes: one writer SIGKILLed mid-save, one still writing; then a save here.
    import signal
    import subprocess
    import sys
    import time
    dest = tmp_path / "cnn.npz"
    code = ("import sys, time; from fastbn._files import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n"
            "    f.write(b'z' * 65536); f.flush(); print(f.name, flush=True); time.sleep(60)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(dest)], stdout=subprocess.PIPE)
             for _ in range(2)]
    try:
        dead, live = (os.path.basename(p.stdout.readline().decode().strip()) for p in procs)
        assert {n for n in os.listdir(tmp_path) if n.endswith(".part")} == {dead, live}
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)
        with atomic_write(dest) as f:
            f.write(b"mine")
        assert {n for n in os.listdir(tmp_path) if n.endswith(".part")} == {live}
        assert dest.read_bytes() == b"mine"
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
            p.stdout.close()
