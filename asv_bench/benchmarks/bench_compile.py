"""Start-up costs, each sample in a fresh interpreter (asv ``timeraw_*``):
``import fastbn``, and the first forward + backward call with an empty Numba
cache (compilation) and with a warm one (loading the cached machine code).

The goals: ``import fastbn`` under 0.5 s, the first call in a new
process under 0.5 s once the cache is warm. Compile time is kept here, apart
from the kernel timings, which never include it (numba-benchmark's
``bench_compiling.py`` does the same).
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

#: layout label -> (shape, feature axis): one input per kernel layout
LAYOUTS = {
    "rows 256x300 ax-1": ((256, 300), -1),
    "planes 8x64x14x14 ax1": ((8, 64, 14, 14), 1),
}
DTYPES = ["float32"]


def _path_setup():
    """Code that puts the fastbn this runner imports on a child's ``sys.path``.

    asv drops ``PYTHONPATH`` from the environment (``ASV_PYTHONPATH`` only
    reaches the runner), so a child interpreter would not find a fastbn that
    is not installed.
    """
    spec = importlib.util.find_spec("fastbn")
    root = os.path.dirname(os.path.dirname(spec.origin))
    return f"import sys; sys.path.insert(0, {root!r}); "


def _first_call(layout, dtype):
    """(stmt, setup): the first training forward + backward, and its inputs."""
    shape, axis = LAYOUTS[layout]
    setup = (_path_setup() + "import numpy as np; import fastbn; "
             f"x = np.random.default_rng(0).standard_normal({shape!r}).astype('{dtype}')")
    stmt = (f"y, m, s = fastbn.batch_norm_forward(x, None, None, axis={axis!r}); "
            f"fastbn.batch_norm_backward(y, x, m, s, None, axis={axis!r})")
    return stmt, setup


class Import:
    number = 1
    repeat = (3, 10, 30.0)

    def timeraw_import_fastbn(self):
        return "import fastbn", _path_setup()

    def timeraw_import_numba(self):
        """The floor under ``import fastbn``: NumPy and Numba alone."""
        return "import numpy, numba"


class FirstCallColdCache:
    """First call with an empty Numba cache: compilation of every kernel it needs."""

    params = [list(LAYOUTS), DTYPES]
    param_names = ["layout", "dtype"]
    number = 1
    repeat = (1, 3, 120.0)
    rounds = 1
    timeout = 600

    def setup(self, layout, dtype):
        self.dirs = []

    def teardown(self, layout, dtype):
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def timeraw_first_call(self, layout, dtype):
        stmt, setup = _first_call(layout, dtype)
        # a fresh cache folder for every sample, removed when the child exits
        pre = ("import os, atexit, shutil, tempfile; d = tempfile.mkdtemp(prefix='fastbn-cold-'); "
               "atexit.register(shutil.rmtree, d, True); os.environ['NUMBA_CACHE_DIR'] = d; ")
        return stmt, pre + setup


class FirstCallWarmCache:
    """First call in a new process once the Numba cache holds the kernels."""

    params = [list(LAYOUTS), DTYPES]
    param_names = ["layout", "dtype"]
    number = 1
    repeat = (3, 10, 60.0)
    timeout = 600

    def setup(self, layout, dtype):
        self.cache = tempfile.mkdtemp(prefix="fastbn-warm-")
        stmt, setup = _first_call(layout, dtype)
        env = dict(os.environ, NUMBA_CACHE_DIR=self.cache)
        subprocess.run([sys.executable, "-c", f"{setup}; {stmt}"], env=env, check=True)

    def teardown(self, layout, dtype):
        shutil.rmtree(self.cache, ignore_errors=True)

    def timeraw_first_call(self, layout, dtype):
        stmt, setup = _first_call(layout, dtype)
        return stmt, f"import os; os.environ['NUMBA_CACHE_DIR'] = {self.cache!r}; " + setup
