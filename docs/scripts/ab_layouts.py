"""Awkward layouts, this tree against an older fastbn, side by side in one process.

::

    git worktree add /tmp/fastbn-base 6a7d680      # the commit to compare with
    NUMBA_NUM_THREADS=2 python docs/scripts/ab_layouts.py --base /tmp/fastbn-base
    git worktree remove /tmp/fastbn-base

Both trees are imported under their own names with Numba's cache off, so each
compiles its own kernels. Inputs whose kernel view is not C-contiguous: small
sliced ``x[..., ::2]``-style views, a Fortran-ordered ``dy`` for a C-ordered
``x``, small and large, and a channels-last ``dy`` or ``out=`` for an NCHW
``x``; and F's ``(256, 28, 28)``, axis ``(1, 2)``, with ``out=``; or, with
``--bench-shapes``, plain arrays of the benchmark shapes but D. For each case
and operation, whole calls (forward training, inference and backward) are
timed in rounds that alternate which tree goes first; printed are each tree's
median of round medians, the median speed-up (base time / this tree's time)
and its range over the rounds. Each case first checks that both trees return
the same bits.

``--clock thread`` times the calling thread's CPU time instead of the wall
clock: with ``NUMBA_NUM_THREADS=1`` the kernels run in that thread, and time
it spends waiting for a CPU on a busy machine is left out.
"""
import argparse
import importlib.util
import os
import sys
import time

os.environ["FASTBN_NO_CACHE"] = "1"     # before any fastbn import: each tree compiles its own

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name, root):
    """The ``fastbn`` package under ``root`` imported as ``name``; its functional module."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(root, "fastbn", "__init__.py"),
        submodule_search_locations=[os.path.join(root, "fastbn")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(name + ".functional")


def _strided(a):
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def cases(rng):
    """``{label: (x, dy, axis[, out])}``."""
    out = {}
    for shape, axis in (((64, 300), -1), ((128, 784), -1), ((8, 16, 256), 1)):
        x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        out[f"{shape} float32, sliced x"] = (_strided(x), dy, axis)
        out[f"{shape} float32, Fortran dy"] = (x, np.asfortranarray(dy), axis)
    for shape, dtype in (((1024, 784), np.float32), ((8192, 1024), np.float32),
                         ((4096, 1024), np.float64)):
        x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
        dy = np.asfortranarray(rng.standard_normal(shape).astype(dtype))
        out[f"{shape} {np.dtype(dtype).name}, Fortran dy"] = (x, dy, -1)
    shape = (32, 64, 56, 56)                # benchmark case D, NCHW, with an NHWC-stored dy
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    out[f"{shape} float32, channels-last dy"] = (x, _channels_last(dy), 1)
    out[f"{shape} float32, channels-last out="] = (x, dy, 1, _channels_last(np.empty_like(x)))
    shape = (256, 28, 28)                   # benchmark case F, axis (1, 2): rows of 784
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    out[f"{shape} float32, out="] = (x, dy, (1, 2), np.empty_like(x))
    return out


def bench_cases(rng):
    """``{label: (x, dy, axis)}`` for the benchmark shapes (``fastbn.bench.cases``, this
    tree's) but D (NCHW planes), plain C-ordered arrays, for ``--bench-shapes``."""
    table = importlib.import_module("fastbn_this.bench.cases").CASES    # loaded by main
    out = {}
    for name, (shape, axis, dtype) in table.items():
        if name == "D":
            continue
        x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        out[f"{name} {shape} {np.dtype(dtype).name}"] = (x, dy, axis)
    return out


def _channels_last(a):
    """``a``'s values, NCHW-shaped, stored NHWC."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="root of the other fastbn tree")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20, help="timed calls per round")
    ap.add_argument("--only", default="", help="only the cases whose label contains this")
    ap.add_argument("--bench-shapes", action="store_true",
                    help="the benchmark shapes A, B, C, E, F, G (plain arrays) instead")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall clock, or this thread's CPU time (with NUMBA_NUM_THREADS=1)")
    args = ap.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    trees = {"base": _load("fastbn_base", args.base),
             "this": _load("fastbn_this", os.path.dirname(os.path.dirname(HERE)))}
    fns = {}
    make = bench_cases if args.bench_shapes else cases
    for label, (x, dy, axis, *out) in make(np.random.default_rng(0)).items():
        if args.only not in label:
            continue
        out = out[0] if out else None
        results = {}
        for tag, F in trees.items():
            fwd = (lambda F=F, x=x, axis=axis, out=out:
                   F.batch_norm_forward(x, None, None, axis=axis, out=out))
            _, m, s = fwd()
            bwd = (lambda F=F, x=x, dy=dy, m=m, s=s, axis=axis, out=out:
                   F.batch_norm_backward(dy, x, m, s, None, axis=axis, out=out))
            ones = np.ones_like(m)
            inf = (lambda F=F, x=x, m=m, ones=ones, axis=axis, out=out:
                   F.batch_norm_forward(x, None, None, axis=axis, training=False,
                                        moving_mean=m, moving_variance=ones, out=out))
            if " dy" not in label:
                fns[(label, "forward", tag)] = fwd
                fns[(label, "inference", tag)] = inf
            fns[(label, "backward", tag)] = bwd
            results[tag] = [np.array(a) for a in fwd() + inf() + bwd()]  # copies: out= is shared
        same = all(np.asarray(a).tobytes() == np.asarray(b).tobytes()
                   for a, b in zip(results["base"], results["this"]))
        print(f"{label}: same bits: {same}")
    for f in fns.values():
        f()
    ratios = {}
    for r in range(args.rounds):
        for key in dict.fromkeys(k[:2] for k in fns):
            t = {}
            for tag in (("base", "this") if r % 2 else ("this", "base")):
                f = fns[key + (tag,)]
                ts = []
                for _ in range(args.calls):
                    t0 = clock()
                    f()
                    ts.append(clock() - t0)
                t[tag] = np.median(ts)
            ratios.setdefault(key, []).append((t["base"], t["this"]))
    for (label, op), v in ratios.items():
        v = np.array(v)
        sp = v[:, 0] / v[:, 1]
        print(f"{label:32s} {op:8s} base {1e3 * np.median(v[:, 0]):8.3f} ms  "
              f"this {1e3 * np.median(v[:, 1]):8.3f} ms  {np.median(sp):.2f}x "
              f"({sp.min():.2f}-{sp.max():.2f})")


if __name__ == "__main__":
    main()
