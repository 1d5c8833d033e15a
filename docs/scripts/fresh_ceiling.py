"""How fast can a call that returns a fresh array be? The ceiling fresh pages put on C and G.

::

    NUMBA_NUM_THREADS=2 OMP_NUM_THREADS=2 python docs/scripts/fresh_ceiling.py \\
        --out docs/results/fresh_ceiling.json

A call that returns a new array writes into memory the process has never
touched: the kernel page-faults and zeroes every page of it before the
first store. The minimal-traffic model of :mod:`fastbn.bench` does not count
that, so with a fresh output the goals for C and G (``3x``
PyTorch forward, ``2x`` backward, ``75 %`` / ``80 %`` of the triad) meet a
ceiling no kernel can pass. This script measures it, in one process and in
alternating rounds (2 threads):

- ``triad``: the STREAM triad of :mod:`fastbn.bench` on 64 MiB arrays;
- fastbn with a fresh output and with ``out=``, and PyTorch's ATen kernel
  (fresh output, when PyTorch is installed), exactly as ``fastbn.bench``
  calls them;
- the ``fresh cost`` of each operation: fastbn's time with a fresh output
  less its time with ``out=`` in the same round (the same kernel and the
  same stores: the difference is the page faults and the zeroing);
- as a check, the fresh cost of the triad kernel itself, writing a new
  array of the output's size against a reused one.

The ceiling of an operation is a kernel moving its minimal traffic at 100 %
of the triad into a fresh output: ``traffic / triad + fresh cost``. From it,
the best speed-up over PyTorch's measured time that any kernel could show,
and the best ``% of triad``. Medians over ``--rounds``; the fresh cost of new
memory varies a lot from call to call (the kernel sometimes compacts memory
to find huge pages), hence several rounds.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from bench_results import TARGETS       # the kernels' goals

from fastbn import bench
from fastbn.bench._timing import triad_kernels

OPS = ("forward", "inference", "backward")


def _median_time(fn, calls):
    """Median seconds per call of ``calls`` single timed calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fresh_cost(nbytes, calls):
    """Seconds the page faults of a fresh ``nbytes`` output cost the triad kernel:
    its median time writing a new array less its median writing a reused one."""
    _, kernel = triad_kernels()
    n = nbytes // 4
    b = np.ones(n, np.float32)
    c = np.full(n, 2.0, np.float32)
    a = np.zeros(n, np.float32)
    s = np.float32(3.0)
    reused = _median_time(lambda: kernel(a, b, c, s), calls)
    fresh = _median_time(lambda: kernel(np.empty(n, np.float32), b, c, s), calls)
    return fresh - reused


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="C,G")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=7, help="timed calls per operation per round")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    import numba
    torch_missing = bench.TorchPeer.available()
    if torch_missing is None:
        import torch
        torch.set_num_threads(numba.get_num_threads())
    names = args.cases.split(",")
    prepared = {}
    for name in names:
        shape, axis, dtype = bench.CASES[name]
        inputs = bench.make_inputs(shape, axis, dtype)
        peers = {"fastbn": bench.FastbnPeer(inputs, axis),
                 "fastbn-out": bench.FastbnOutPeer(inputs, axis)}
        if torch_missing is None:
            peers["torch"] = bench.TorchPeer(inputs, axis)
        prepared[name] = (shape, dtype, math.prod(shape) * np.dtype(dtype).itemsize, peers)
    samples = {}
    triads = []
    for rnd in range(args.rounds):
        triads.append(bench.triad(repeat=5)["gbps"])
        for name in (names if rnd % 2 == 0 else names[::-1]):
            _, _, out_bytes, peers = prepared[name]
            cost = fresh_cost(out_bytes, args.calls)
            samples.setdefault((name, "triad_fresh_cost"), []).append(cost)
            order = list(peers) if rnd % 2 == 0 else list(peers)[::-1]
            for peer in order:
                for op in OPS:
                    t = _median_time(getattr(peers[peer], op), args.calls)
                    samples.setdefault((name, peer, op), []).append(t)
            for op in OPS:
                samples.setdefault((name, "fresh_cost", op), []).append(
                    samples[(name, "fastbn", op)][-1] - samples[(name, "fastbn-out", op)][-1])
    tri = float(np.median(triads))
    rows = []
    print(f"triad {tri:.1f} GB/s (median of {len(triads)}, {min(triads):.1f}-{max(triads):.1f}); "
          f"{numba.get_num_threads()} threads")
    head = (f"{'case':<4} {'op':<9} {'fresh cost':>10} {'ceiling':>9} {'fastbn':>8} "
            f"{'out=':>8} {'torch':>8} | {'best x':>6} {'fastbn x':>8} {'target':>6} | "
            f"{'best %':>6} {'fastbn %':>8} {'out= %':>6} {'target':>6}")
    print(head)
    for name in names:
        shape, dtype, out_bytes, peers = prepared[name]
        triad_cost = float(np.median(samples[(name, "triad_fresh_cost")]))
        print(f"{name}: a fresh {out_bytes / 2**20:.0f} MiB "
              f"output costs the triad kernel {triad_cost * 1e3:.2f} ms (median; rounds "
              + ", ".join(f"{t * 1e3:.1f}" for t in samples[(name, "triad_fresh_cost")])
              + " ms)")
        for op in OPS:
            cost = float(np.median(samples[(name, "fresh_cost", op)]))
            med = {peer: float(np.median(samples[(name, peer, op)])) for peer in peers}
            minimal = bench.traffic_bytes(op, shape, dtype) / (tri * 1e9)
            ceiling = minimal + cost
            torch_t = med.get("torch")
            target_x, target_pct = TARGETS.get(name, {}).get(op, (None, None))
            row = dict(case=name, op=op, shape=list(shape), dtype=dtype,
                       fresh_cost_ms=cost * 1e3, triad_fresh_cost_ms=triad_cost * 1e3,
                       minimal_ms=minimal * 1e3,
                       ceiling_ms=ceiling * 1e3,
                       fastbn_ms=med["fastbn"] * 1e3, fastbn_out_ms=med["fastbn-out"] * 1e3,
                       torch_ms=None if torch_t is None else torch_t * 1e3,
                       best_speedup_vs_torch=None if torch_t is None else torch_t / ceiling,
                       fastbn_speedup_vs_torch=None if torch_t is None else torch_t / med["fastbn"],
                       target_speedup=target_x,
                       best_pct_triad=100 * minimal / ceiling,
                       fastbn_pct_triad=100 * minimal / med["fastbn"],
                       fastbn_out_pct_triad=100 * minimal / med["fastbn-out"],
                       target_pct_triad=target_pct)
            rows.append(row)

            def fmt(v, spec):
                return format(v, spec) if v is not None else "-"
            print(f"{name:<4} {op:<9} {row['fresh_cost_ms']:8.2f}ms {row['ceiling_ms']:6.2f}ms "
                  f"{row['fastbn_ms']:6.2f}ms {row['fastbn_out_ms']:6.2f}ms "
                  f"{fmt(row['torch_ms'], '6.2f')}ms | "
                  f"{fmt(row['best_speedup_vs_torch'], '5.2f')}x "
                  f"{fmt(row['fastbn_speedup_vs_torch'], '7.2f')}x {fmt(target_x, '5.1f')}x | "
                  f"{row['best_pct_triad']:5.0f}% {row['fastbn_pct_triad']:7.0f}% "
                  f"{row['fastbn_out_pct_triad']:5.0f}% {fmt(target_pct, '5.0f')}%")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(dict(machine=bench.machine_info(), command=" ".join(sys.argv),
                           threads=numba.get_num_threads(), triad_gbps=tri,
                           triad_samples=triads, rounds=args.rounds, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
