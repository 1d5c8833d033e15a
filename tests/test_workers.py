"""fastbn's worker threads (:mod:`fastbn._workers`) and the process settings of
:mod:`fastbn._config`: OpenMP's spin count and the memory kept during training."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from fastbn import _config, _workers


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_run_calls_every_block_once(threads):
    seen, lock = [], threading.Lock()

    def block(b):
        with lock:
            seen.append((b, threading.get_ident()))
    _workers.run(50, block, threads)
    assert sorted(b for b, _ in seen) == list(range(50))


def test_run_raises_a_blocks_error_after_the_others_stop():
    done = []

    def block(b):
        if b == 3:
            raise ValueError("block 3")
        done.append(b)
    with pytest.raises(ValueError, match="block 3"):
        _workers.run(200, block, 2)
    assert 3 not in done and len(done) < 199          # the others stopped early
    _workers.run(4, done.append, 2)                   # and the pool still works
    assert done[-4:] and sorted(done[-4:]) == [0, 1, 2, 3]


def test_scratch_is_per_thread_and_reused():
    a = _workers.scratch("t", (4, 5), np.float32)
    b = _workers.scratch("t", (2, 5), np.float32)
    assert a.shape == (4, 5) and b.shape == (2, 5) and np.shares_memory(a, b)
    other = []
    t = threading.Thread(target=lambda: other.append(_workers.scratch("t", (4, 5), np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(a, other[0])
    big = _workers.scratch("t", (_config.KEEP_SCRATCH_BYTES // 4 + 1,), np.float32)
    assert not np.shares_memory(big, _workers.scratch("t", (4, 5), np.float32))


def test_keep_freed_memory_sets_glibc_once_and_restores_at_the_outermost_exit(monkeypatch):
    calls = []
    monkeypatch.setattr(_config, "_LIBC", [(lambda k, v: calls.append((k, v)) or 1,
                                            lambda pad: calls.append(("trim", pad)))])
    with _config.keep_freed_memory():
        with _config.keep_freed_memory():           # evaluate inside fit
            pass
        assert calls == [(_config._M_TRIM, 1 << 30), (_config._M_MMAP, 1 << 25)]
    assert calls[2:] == [(_config._M_MMAP, _config._M_DEFAULT),
                         (_config._M_TRIM, _config._M_DEFAULT), ("trim", 0)]
    assert _config._KEEPING == [0]


SPIN = r"""
import os
from numba.np.ufunc import parallel
launch, seen = parallel._launch_threads, []

def recording():
    seen.append(os.environ.get("GOMP_SPINCOUNT"))
    return launch()
parallel._launch_threads = recording
import numpy as np, fastbn
fastbn.batch_norm_forward(np.ones((8192, 64), np.float32), None, None)
print(seen[0], os.environ.get("GOMP_SPINCOUNT"), parallel._is_initialized)
"""


@pytest.mark.parametrize("env,want", [({}, [_config.SPIN_COUNT, "None"]),
                                      ({"GOMP_SPINCOUNT": "7"}, ["7", "7"]),
                                      ({"OMP_WAIT_POLICY": "passive"}, ["None", "None"])])
def test_openmp_spin_count_is_set_while_numba_loads_it_unless_the_user_chose(env, want):
    """libgomp sees GOMP_SPINCOUNT = SPIN_COUNT when Numba loads it, and the
    variable is gone afterwards (children and later libraries do not see it)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", SPIN], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == want + ["True"]
