"""Atomic writes meet files another user planted: symlinks in sticky directories, stale ``.part``."""
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
