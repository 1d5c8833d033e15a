"""The ``fastbn-bench`` command: its argument parser, :func:`run` and :func:`main`.

Examples
--------
>>> from fastbn.bench import _cli as cli
>>> cli.parse_axis("1,2"), cli.parse_axis("-1")
((1, 2), -1)
"""
import argparse
import json
import os
import sys
import tempfile

from ._peers import PEERS, run_worker, worker
from ._report import combine_rounds, machine_info, plot, summarise, table
from ._timing import NOISE_RATIO, RESAMPLE
from .cases import CASE_NAMES, CASES, EPSILON, MOMENTUM, OPS



def parse_axis(text):
    """``"-1"`` -> ``-1``, ``"1,2"`` -> ``(1, 2)``."""
    parts = [int(p) for p in str(text).replace("(", "").replace(")", "").split(",") if p.strip()]
    if not parts:
        raise ValueError(f"no axis in {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)



def parser():
    p = argparse.ArgumentParser(
        prog="fastbn-bench",
        description="Benchmark fastbn batch norm against NumPy and PyTorch and a STREAM "
                    "triad; prints a table and writes JSON and a PNG chart.")
    p.add_argument("--cases", default=",".join(CASES),
                   help="which of the seven shapes to run, e.g. A,C,G (default: all). "
                        + "; ".join(f"{k}: {v}" for k, v in CASE_NAMES.items())
                        + ". All float32 but G; features normalized over the other axes")
    p.add_argument("--shape", help="your own shape instead, e.g. 8192,1024")
    p.add_argument("--axis", default="-1", help="feature axis or axes for --shape, e.g. -1 "
                   "or 1,2 (default -1)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="dtype for --shape (default float32)")
    p.add_argument("--ops", default=",".join(OPS),
                   help="operations to time: forward (training: batch statistics, "
                        "normalize, update the moving statistics), inference (moving "
                        "statistics), backward (dx, dgamma, dbeta) (default: %(default)s)")
    p.add_argument("--peers", default="fastbn,numpy,torch",
                   help="implementations to compare: fastbn, fastbn-out (fastbn writing "
                        "into out= arrays allocated once), numpy (plain NumPy, what a user "
                        "would write), torch (PyTorch's CPU kernel, if installed) "
                        "(default: %(default)s)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--repeat", type=int, default=20, help="timed samples per operation "
                   "(median reported; default 20)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of every peer on every case, in alternating order; times "
                        "and speed-ups are medians over the rounds (default 3)")
    p.add_argument("--min-time", type=float, default=2e-3,
                   help="seconds per sample; short calls are repeated (default 0.002)")
    p.add_argument("--max-time", type=float, default=5.0,
                   help="stop sampling one operation after this many seconds (default 5)")
    p.add_argument("--threads", default=None,
                   help="thread count, or a list for a scaling run, e.g. 1,2,4,8,16 "
                        "(default: all usable CPUs)")
    p.add_argument("--triad-mib", type=int, default=None,
                   help="MiB per triad array (default: 4x last-level cache, >= 64)")
    p.add_argument("--malloc-reuse", action="store_true",
                   help="let glibc keep freed memory (MALLOC_MMAP_THRESHOLD_ etc.) so that "
                        "outputs allocated per call are not page-faulted each time; applies "
                        "to every peer")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random inputs (default: %(default)s)")
    p.add_argument("--out", default="runs/bench", help="output folder (default %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    return p


def _thread_counts(text, usable):
    """The thread counts of ``--threads`` (``usable``, the CPUs this process may
    run on, when None), refusing counts this machine cannot run side by side.

    >>> _thread_counts("1,2", 4), _thread_counts(None, 4)
    ([1, 2], [4])
    """
    if text is None:
        return [usable]
    try:
        counts = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit(f"fastbn.bench: --threads takes a thread count or a comma-separated "
                         f"list of them, each at least 1, e.g. --threads 1,2,4; got {text!r}")
    if max(counts) > usable:
        fit = ",".join(str(1 << k) for k in range(usable.bit_length())
                       if 1 << k <= usable)
        raise SystemExit(f"fastbn.bench: --threads {text} asks for {max(counts)} threads, but "
                         f"this process may run on {usable} CPUs; with more threads than CPUs "
                         f"the timings measure the scheduler, not the kernels. Give counts "
                         f"up to {usable} (a scaling run here: --threads {fit}).")
    return counts


def run(args):
    """Run the comparison described by parsed ``args``; return the report dict.

    Prints the table, writes ``bench.json`` (and ``bench.png``) to ``args.out``.
    :func:`main` parses the command line and calls this.

    Parameters
    ----------
    args : argparse.Namespace
        The options of ``python -m fastbn.bench`` (see ``--help``).

    Returns
    -------
    dict
        What ``bench.json`` holds: ``machine``, ``command``, ``triad``,
        ``results`` per peer, case and operation, ``table`` and ``errors``.

    Examples
    --------
    Every peer runs in a fresh process, so even a tiny run takes seconds:

    >>> from fastbn import bench
    >>> bench.main(["--shape", "64,8", "--ops", "forward", "--no-torch",
    ...             "--repeat", "3", "--triad-mib", "1", "--out", "/tmp/b"])  # doctest: +SKIP
    0
    """
    if args.shape:
        shape = tuple(int(s) for s in args.shape.replace("x", ",").split(",") if s.strip())
        axis = parse_axis(args.axis)
        cases = [dict(name="user", shape=list(shape),
                      axis=axis if isinstance(axis, int) else list(axis), dtype=args.dtype)]
    else:
        names = [c.strip().upper() for c in args.cases.split(",") if c.strip()]
        unknown = [n for n in names if n not in CASES]
        if unknown:
            raise SystemExit(f"fastbn.bench: unknown case(s) {unknown}; choose from "
                             f"{', '.join(CASES)} or give --shape")
        cases = [dict(name=n, shape=list(CASES[n][0]),
                      axis=CASES[n][1] if isinstance(CASES[n][1], int) else list(CASES[n][1]),
                      dtype=CASES[n][2]) for n in names]
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if set(ops) - set(OPS):
        raise SystemExit(f"fastbn.bench: unknown op(s) {sorted(set(ops) - set(OPS))}; "
                         f"choose from {', '.join(OPS)}")
    asked = {p.strip() for p in args.peers.split(",") if p.strip()}
    if asked - set(PEERS):
        raise SystemExit(f"fastbn.bench: unknown peer(s) {sorted(asked - set(PEERS))}")
    peers = [p for p in PEERS if p in asked]             # fastbn first, then the peers
    if args.no_torch and "torch" in peers:
        peers.remove("torch")
    skipped = {}
    for p in list(peers):
        why = PEERS[p].available()
        if why:
            skipped[p] = why
            peers.remove(p)
    info = machine_info()
    threads = _thread_counts(args.threads, info["usable_cpus"])
    report = dict(machine=info, command=" ".join(["python -m fastbn.bench"] + sys.argv[1:]),
                  config=dict(cases=cases, ops=ops, peers=peers, threads=threads,
                              repeat=args.repeat, min_time=args.min_time,
                              max_time=args.max_time, seed=args.seed, rounds=args.rounds,
                              malloc_reuse=args.malloc_reuse,
                              epsilon=EPSILON, momentum=MOMENTUM,
                              bytes_per_element=OPS),
                  skipped_peers=skipped, triad={}, workers=[], results=[])
    os.makedirs(args.out, exist_ok=True)
    base = dict(cases=cases, ops=ops, repeat=args.repeat, min_time=args.min_time,
                max_time=args.max_time, seed=args.seed, triad_mib=args.triad_mib,
                malloc_reuse=args.malloc_reuse)
    errors = []
    with tempfile.TemporaryDirectory(prefix="fastbn-bench-") as work:
        for t in threads:
            first = run_worker(dict(base, peer="triad", threads=t), work)
            outs = []
            for rnd in range(args.rounds):
                for k, case in enumerate(cases):
                    # one case at a time, peers back to back, their order alternating:
                    # a slow spell of a shared machine then hits every peer alike
                    order = peers if (rnd + k) % 2 == 0 else peers[::-1]
                    for p in order:
                        o = run_worker(dict(base, cases=[case], peer=p, threads=t,
                                             round=rnd), work)
                        for r in o.get("results", []):
                            r["round"] = rnd
                        outs.append(o)
            # triad again: a drift between the two says the machine was busy
            last = run_worker(dict(base, peer="triad", threads=t), work)
            tri = dict(first.get("triad", {}))
            if "triad" in last:
                tri["gbps_after"] = last["triad"]["gbps"]
            tri["threading_layer"] = first.get("threading_layer")
            report["triad"][t] = tri
            for o in [first] + outs + [last]:
                if "error" in o:
                    errors.append(f"{o['peer']} (threads={t}): {o['error']}")
                report["results"] += [dict(r, threads=t) for r in o.pop("results", [])]
                report["workers"].append(o)
    for w in report["workers"]:
        info.setdefault("versions", {}).update(w.get("versions", {}))
    report["results"] = combine_rounds(report["results"])
    summarise(report["results"], {t: v.get("gbps") for t, v in report["triad"].items()})
    info["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    texts = [table(report["results"], report["triad"], peers, t) for t in threads]
    report["table"] = texts
    print(f"fastbn.bench  {info['date']}  {info['cpu']}  {info['usable_cpus']} usable CPUs  "
          f"python {info['python']} numpy {info['numpy']} numba {info['numba']}"
          + "".join(f" {k} {v}" for k, v in info.get("versions", {}).items())
          + ("  [--malloc-reuse]" if args.malloc_reuse else ""))
    for p, why in skipped.items():
        print(f"skipped {p}: {why}")
    for text in texts:
        print(text)
        print()
    noisy = [r for r in report["results"] if r.get("noisy")]
    if noisy:
        warn = (f"WARNING: {len(noisy)} of {len(report['results'])} timings stayed noisy "
                f"(median over {NOISE_RATIO}x the fastest sample, after {RESAMPLE} "
                f"resamplings): marked '! NOISY' in the table and hatched on the chart. "
                f"Other work was running on the cores; re-run on a quiet machine.")
        bar = "!" * min(len(warn), 78)
        print(f"{bar}\n{warn}\n{bar}")
        print(warn, file=sys.stderr)
    for t, tri in report["triad"].items():
        if tri.get("gbps") and tri.get("gbps_after") and \
                abs(tri["gbps_after"] / tri["gbps"] - 1) > 0.1:
            print(f"NOTE: the triad moved {tri['gbps']:.1f} -> {tri['gbps_after']:.1f} GB/s "
                  f"during the {t}-thread run: the machine was busy; re-run when it is quiet.")
    stem = os.path.join(args.out, "bench")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    written = [stem + ".json"]
    if not args.no_plot and report["results"]:
        for t in threads:
            png = stem + (".png" if len(threads) == 1 else f"-{t}threads.png")
            plot(report["results"], report["triad"], peers, t, png)
            written.append(png)
    print("wrote " + ", ".join(written))
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    report["errors"] = errors
    return report


def main(argv=None):
    """Console entry point (``fastbn-bench``, ``python -m fastbn.bench``).

    Parameters
    ----------
    argv : list of str, optional
        The command-line arguments; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        0, or 1 when a peer failed (the report lists the errors).

    Examples
    --------
    >>> import contextlib, io
    >>> from fastbn import bench
    >>> out = io.StringIO()
    >>> with contextlib.redirect_stdout(out):
    ...     try:
    ...         bench.main(["--help"])
    ...     except SystemExit:
    ...         pass
    >>> out.getvalue().startswith("usage: fastbn-bench")
    True
    """
    args = parser().parse_args(argv)
    if args._worker:
        with open(args._worker + ".spec.json") as f:
            spec = json.load(f)
        out = worker(spec)
        with open(args._worker + ".out.json", "w") as f:
            json.dump(out, f)
        return 0
    report = run(args)
    return 1 if report["errors"] else 0

