"""Start-up costs for the docs: ``import fastbn`` and the first call in a new process.

``python docs/scripts/startup_time.py [--runs 7] [--cold]``

Each figure is the median over ``--runs`` fresh interpreters (the asv suite's
``bench_compile.py`` measures the same things; this prints them in one go):

* ``import numpy, numba``: the floor under ``import fastbn``;
* ``import fastbn``;
* the first training forward + backward call after ``import fastbn``, with
  the Numba cache warm (one earlier process filled it), for one rows input
  ``(256, 300)`` and one NCHW input ``(8, 64, 14, 14)``;
* with ``--cold``: the same first call with an empty cache, in a temporary
  ``NUMBA_CACHE_DIR`` (compilation; once, it takes tens of seconds).

The timings are taken inside the child with ``time.perf_counter``, so
interpreter start-up is not in them.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CALLS = {"rows (256, 300)": ((256, 300), -1), "NCHW (8, 64, 14, 14)": ((8, 64, 14, 14), 1)}

_IMPORT = """
import sys, time, json
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
import {module}
print(json.dumps(time.perf_counter() - t0))
"""

_FIRST_CALL = """
import sys, time, json
sys.path.insert(0, {root!r})
import numpy as np
import fastbn
x = np.random.default_rng(0).standard_normal({shape!r}).astype(np.float32)
t0 = time.perf_counter()
y, m, s = fastbn.batch_norm_forward(x, None, None, axis={axis!r})
fastbn.batch_norm_backward(y, x, m, s, None, axis={axis!r})
print(json.dumps(time.perf_counter() - t0))
"""


def _child(code, env=None):
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="fresh interpreters per figure")
    p.add_argument("--cold", action="store_true", help="also time compilation (empty cache)")
    args = p.parse_args(argv)
    rows = []
    for module in ("numpy, numba", "fastbn"):
        code = _IMPORT.format(root=ROOT, module=module)
        _child(code)                                         # page cache warm
        times = [_child(code) for _ in range(args.runs)]
        rows.append((f"import {module}", times))
    for name, (shape, axis) in CALLS.items():
        code = _FIRST_CALL.format(root=ROOT, shape=shape, axis=axis)
        _child(code)                                         # fills the Numba cache
        rows.append((f"first call, warm cache, {name}", [_child(code) for _ in range(args.runs)]))
        if args.cold:
            with tempfile.TemporaryDirectory(prefix="fastbn-cold-") as d:
                env = dict(os.environ, NUMBA_CACHE_DIR=d)
                rows.append((f"first call, empty cache, {name}", [_child(code, env)]))
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  median s   (min-max, {args.runs} fresh interpreters)")
    for name, times in rows:
        print(f"{name:{width}}  {statistics.median(times):8.3f}   "
              f"({min(times):.3f}-{max(times):.3f})")


if __name__ == "__main__":
    main()
