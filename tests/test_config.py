"""The Numba cache guard of :mod:`fastbn._config`."""
import os
import types

from fastbn import _config


def _fake_kernel(cache_dir):
    """An object shaped like a :class:`fastbn._config.Kernel` whose cache is ``cache_dir``."""
    cache = types.SimpleNamespace(cache_path=str(cache_dir))
    return types.SimpleNamespace(parallel=types.SimpleNamespace(_cache=cache))


def test_stale_kernel_cache_is_dropped(tmp_path, monkeypatch):
    """Numba would keep a kernel compiled against an old helper from another file; the
    guard empties the cache when the fingerprint of the kernel sources changes, and
    only then."""
    monkeypatch.setattr(_config, "CACHE", True)
    kern = _fake_kernel(tmp_path)
    cached = [tmp_path / "backward._grad_sums_rows-15.py311.nbi",
              tmp_path / "backward._grad_sums_rows-15.py311.1.nbc"]
    for p in cached:
        p.write_text("old machine code")
    other = tmp_path / "notes.txt"
    other.write_text("not a Numba cache file")

    _config.drop_stale_cache(kern)              # no fingerprint yet: stale
    assert not any(p.exists() for p in cached) and other.exists()
    mark = tmp_path / "fastbn-sources.stamp"
    assert "_chunks.py" in mark.read_text()

    for p in cached:                            # recompiled; sources unchanged
        p.write_text("new machine code")
    _config.drop_stale_cache(kern)
    assert all(p.exists() for p in cached)

    mark.write_text(mark.read_text().replace("_chunks.py", "_chunks.py (edited)"))
    _config.drop_stale_cache(kern)              # a source changed since
    assert not any(p.exists() for p in cached)


def test_no_cache_leaves_files_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(_config, "CACHE", False)
    p = tmp_path / "x.nbi"
    p.write_text("")
    _config.drop_stale_cache(_fake_kernel(tmp_path))
    assert p.exists() and not os.path.exists(tmp_path / "fastbn-sources.stamp")
