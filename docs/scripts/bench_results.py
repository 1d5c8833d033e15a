"""Benchmark page numbers: run the peer comparisons, render their JSON as tables.

``python docs/scripts/bench_results.py run [--threads 2] [--repeat 30] [--rounds 5]``
    runs ``python -m fastbn.bench`` (all cases, with and without
    ``--malloc-reuse``) and ``python -m fastbn.examples.train_speed`` into
    ``docs/results/bench/``. Run it on a quiet machine (check ``uptime``) and
    commit ``docs/results/bench/``: the commands' own JSON and PNG files.

``python docs/scripts/bench_results.py scaling [--threads 1,2,4,8,16] [--rounds 3]``
    a scaling run, on a machine with that many CPUs (not on the pages until
    one is committed):
    cases C and D, forward and backward, fastbn and PyTorch side by side at
    each thread count, the triad at each, into ``docs/results/bench/scaling/``
    (with ``scaling.png``, GB/s against threads). ``fastbn.bench`` refuses
    more threads than the machine has CPUs. On a machine without internet,
    run it from the source tree: ``PYTHONPATH=$PWD python docs/scripts/...``.

``python docs/scripts/bench_results.py render``
    reads ``docs/results/bench/`` and writes into ``docs/_generated/`` the
    Benchmarks page's summary (``bench_summary.md``), its chart
    (``bench_summary.png``: x PyTorch, x NumPy, % of the triad per shape), its
    tables (``bench.md``, ``bench_train.md``) and the notes page's
    (``bench_notes.md``, with each run's ``fastbn-bench`` chart redrawn from
    its JSON); the Sphinx build runs this step. Missing files give a "not yet
    measured" note, never invented numbers.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.dirname(HERE)
RESULTS = os.path.join(DOCS, "results", "bench")
GENERATED = os.path.join(DOCS, "_generated")

#: case -> {op: (minimum speed-up over PyTorch, minimum % of triad)}: the goals
#: the kernels were written to (fresh_ceiling.py compares with them)
TARGETS = {
    "A": {"forward": (1, None), "backward": (1, None)},
    "B": {"forward": (1, None), "backward": (1, None)},
    "C": {"forward": (3, 75), "inference": (None, 80), "backward": (2, 75)},
    "D": {"forward": (2, None), "backward": (0.8, None)},
    "E": {"forward": (1, None), "backward": (1, None)},
    "F": {"forward": (1, None), "backward": (1, None)},
    "G": {"forward": (3, 75), "inference": (None, 80), "backward": (2, 75)},
}
RUNS = {"bench-2t": ["--peers", "fastbn,fastbn-out,numpy,torch"],
        "bench-2t-reuse": ["--malloc-reuse"]}
#: The scaling run: the large cases, forward and backward, threads 1-16.
SCALING = os.path.join(RESULTS, "scaling")
SCALING_ARGS = ["--cases", "C,D", "--ops", "forward,backward",
                "--peers", "fastbn,fastbn-out,torch"]
#: Goal at the largest thread count: % of that machine's triad.
SCALING_TARGET_PCT = 75


def run(args):
    os.makedirs(RESULTS, exist_ok=True)
    for name, extra in RUNS.items():
        if args.only and name not in args.only.split(","):
            continue
        cmd = [sys.executable, "-m", "fastbn.bench", "--threads", str(args.threads),
               "--repeat", str(args.repeat), "--rounds", str(args.rounds),
               "--out", os.path.join(RESULTS, name), *extra]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    if args.only and "train_speed" not in args.only.split(","):
        return
    cmd = [sys.executable, "-m", "fastbn.examples.train_speed", "--threads", str(args.threads),
           "--out", RESULTS]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _fmt(v, spec, empty="–"):
    return empty if v is None else format(v, spec)


def _target_text(case, op):
    t = TARGETS.get(case, {}).get(op)
    if t is None:
        return "", None
    x, pct = t
    parts = ([f"≥ {x:g}× PyTorch"] if x else []) + ([f"≥ {pct} % triad"] if pct else [])
    return ", ".join(parts), t


def _met(row, torch_row, t):
    if t is None:
        return ""
    x, pct = t
    ok = True
    if x is not None:
        if torch_row is None:
            return "no PyTorch"
        ok &= row["speedup_vs_torch"] >= x
    if pct is not None:
        ok &= row["pct_triad"] >= pct
    return "yes" if ok else "**no**"


def _ratio(row, peer):
    """fastbn's speed-up over ``peer``, with the range over rounds when there were several."""
    v = row.get(f"speedup_vs_{peer}")
    rng = row.get(f"speedup_vs_{peer}_range")
    if v is None or not rng or row.get("rounds", 1) < 2:
        return _fmt(v, ".2f")
    return f"{v:.2f} ({rng[0]:.2f}–{rng[1]:.2f})"


def case_label(name):
    """A case in plain words, e.g. ``"MLP input batch (128, 784)"`` for A."""
    from fastbn.bench import CASE_NAMES
    text = CASE_NAMES.get(name)
    if text is None:
        return name
    return re.match(r"[^(]*\([^)]*\)", text).group(0)


def _clean_command(cmd):
    """The command as a reader would type it: no absolute paths of the machine
    it ran on, no interpreter path."""
    cmd = re.sub(r"\S*/python\S* -m fastbn\.bench", "fastbn-bench", cmd)
    cmd = re.sub(r"python -m fastbn\.bench", "fastbn-bench", cmd)
    return re.sub(r"(?<!\S)/\S*?/(docs/results/\S*)", r"\1", cmd)


def _rows(d):
    """``{(case, op, peer): row}`` of the first thread count, and that count."""
    threads = next(iter(d["triad"]))
    rows = {(r["case"], r["op"], r["peer"]): r for r in d["results"]
            if str(r["threads"]) == str(threads) and "median_s" in r}
    return rows, threads


def _cases_ops(d):
    return [c["name"] for c in d["config"]["cases"]], d["config"]["ops"]


def results_table(d, out=False):
    """Markdown: one row per case and operation; fastbn's time, its speed-up over
    PyTorch (range over the rounds) and NumPy, and % of the triad. ``out=True``
    gives fastbn writing into reused ``out=`` arrays instead."""
    rows, _ = _rows(d)
    peer = "fastbn-out" if out else "fastbn"
    head = ("| shape | operation | fastbn ms | × PyTorch (range over rounds) | × NumPy "
            "| % of triad |")
    lines = [head, "|---|---|---:|---:|---:|---:|"]
    cases, ops = _cases_ops(d)
    for c in cases:
        first = True
        for op in ops:
            f = rows.get((c, op, peer))
            if f is None:
                continue
            npy, tor = rows.get((c, op, "numpy")), rows.get((c, op, "torch"))
            x_np = f.get("speedup_vs_numpy")
            if x_np is None and npy is not None:
                x_np = npy["median_s"] / f["median_s"]
            x_pt = _ratio(f, "torch") if "speedup_vs_torch" in f else _fmt(
                tor and tor["median_s"] / f["median_s"], ".2f")
            label = f"{c}: {case_label(c)}" if first else ""
            first = False
            lines.append(f"| {label} | {op} | {f['median_ms']:.3f} | {x_pt} "
                         f"| {_fmt(x_np, '.1f')} | {_fmt(f.get('pct_triad'), '.0f')} |")
    return "\n".join(lines) + "\n"


def _loadavg(v):
    return "?" if not v else " / ".join(f"{x:.2f}" for x in v)


def machine_line(d):
    """The machine, versions and command of a ``bench.json``, as one sentence."""
    m = d["machine"]
    v = m.get("versions", {})
    caches = m.get("caches") or {}
    caches = ", ".join(f"{k} {val}" for k, val in caches.items()) if isinstance(
        caches, dict) else str(caches)
    tri = next(iter(d["triad"].values()))
    return (f"{m.get('cpu')}, {m.get('usable_cpus')} usable CPUs (caches {caches}; "
            f"{m.get('memory')}), {str(m.get('date'))[:10]}; STREAM triad "
            f"{tri['gbps']:.1f} GB/s before the peers, {tri.get('gbps_after', float('nan')):.1f} "
            f"after; load average {_loadavg(m.get('loadavg'))} before, "
            f"{_loadavg(m.get('loadavg_after'))} after. Python {m.get('python')}, "
            f"NumPy {m.get('numpy')}, Numba {m.get('numba')}, fastbn {v.get('fastbn')}, "
            f"PyTorch {v.get('torch', 'not installed')}. Command: "
            f"`{_clean_command(d['command'])}`.")


def train_table(d):
    lines = ["| batch size | fastbn samples/s | ms / step | PyTorch samples/s | ms / step "
             "| fastbn / PyTorch |", "|---:|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        t = r.get("torch")
        lines.append(f"| {r['batch_size']} | {r['fastbn']['samples_per_s']:,.0f} "
                     f"| {r['fastbn']['ms_per_step']:.3f} "
                     f"| {'–' if t is None else format(t['samples_per_s'], ',.0f')} "
                     f"| {'–' if t is None else format(t['ms_per_step'], '.3f')} "
                     f"| {_fmt(r.get('speedup_vs_torch'), '.2f')}× |")
    v = d["versions"]
    cmd = re.sub(r"(?<!\S)/\S*?/(docs/results/\S*)", r"\1", d["command"])
    lines += ["", f"{d['samples']:,} synthetic MNIST-shaped samples per epoch, median of "
              f"{d['rounds']} epochs per peer (peers alternating, each in a fresh process), "
              f"{d['threads']} threads; model `{d['model']}`, SGD. {d['date'][:10]}, "
              f"{d['machine']['cpus']} CPUs; fastbn {v.get('fastbn')}, NumPy {v.get('numpy')}, "
              f"Numba {v.get('numba')}, PyTorch {v.get('torch', 'not installed')}. Command: "
              f"`{cmd}`.", ""]
    return "\n".join(lines)


def _span(values, spec):
    values = [v for v in values if v is not None]
    return f"{format(min(values), spec)}-{format(max(values), spec)}"


def summary(d, train=None):
    """The page's opening lines, computed from the JSON."""
    rows, threads = _rows(d)
    cases, ops = _cases_ops(d)
    f = [rows[(c, op, "fastbn")] for c in cases for op in ops if (c, op, "fastbn") in rows]
    big = [r for r in f if r["case"] in ("C", "G")]
    small = [r for r in f if r["case"] in ("A", "B", "F")]
    m = d["machine"]
    text = (f"On a {m.get('usable_cpus')}-core {m.get('cpu')} virtual machine "
            f"({threads} threads, {str(m.get('date'))[:10]}), fastbn's batch norm ran "
            f"{_span([r.get('speedup_vs_torch') for r in f], '.2f')}× as fast as PyTorch's "
            f"CPU kernel and {_span([r.get('speedup_vs_numpy') for r in f], '.1f')}× as fast "
            f"as plain NumPy, at {_span([r.get('pct_triad') for r in f], '.0f')} % of the "
            f"memory bandwidth a STREAM triad reaches. The large arrays gain most "
            f"({_span([r.get('speedup_vs_torch') for r in big], '.2f')}× PyTorch); "
            f"small ones that fit in cache "
            f"{_span([r.get('speedup_vs_torch') for r in small], '.2f')}×.")
    if train is not None:
        ratios = [r.get("speedup_vs_torch") for r in train["rows"]]
        text += (f" Training the MNIST MLP runs at {_span(ratios, '.2f')}× PyTorch's speed: "
                 f"its step is mostly matrix products, which both leave to BLAS.")
    return text + "\n"


def summary_chart(d, path):
    """x PyTorch, x NumPy and % of the triad per case (plain words), one bar per op."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from fastbn import _plotting
    rows, threads = _rows(d)
    cases, ops = _cases_ops(d)
    labels = [case_label(c) for c in cases]
    panels = (("× PyTorch (median of rounds)", "speedup_vs_torch", 1.0, False),
              ("× plain NumPy", "speedup_vs_numpy", 1.0, True),
              ("% of STREAM triad", "pct_triad", 100.0, False))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), sharey=True)
    h = 0.8 / len(ops)
    y = np.arange(len(cases))[::-1]
    for ax, (title, key, ref, log) in zip(axes, panels):
        for k, op in enumerate(ops):
            vals = [rows.get((c, op, "fastbn"), {}).get(key) for c in cases]
            pos = y + (len(ops) - 1) / 2 * h - k * h
            # log axes: bars from 1 (x1, as fast); linear ones from 0
            base = ref if log else 0.0
            widths = [(v - base) if v is not None else 0.0 for v in vals]
            ax.barh(pos, widths, h, left=base, color=_plotting.color(op), label=op)
            if key == "speedup_vs_torch":
                lo = [rows.get((c, op, "fastbn"), {}).get(key + "_range") for c in cases]
                for p, v, r in zip(pos, vals, lo):
                    if v is not None and r:
                        ax.plot(r, [p, p], color="0.25", lw=0.8)
        ax.axvline(ref, color="0.2", lw=1, ls="--")
        if log:
            _plotting.log_axis(ax, "x")
        _plotting.style(ax)
        ax.set_title(title, fontsize="medium")
    axes[0].set_yticks(y, labels)
    axes[2].set_xlim(0, max(160, axes[2].get_xlim()[1]))
    handles = [Patch(color=_plotting.color(op), label=op) for op in ops]
    handles.append(plt.Line2D([], [], color="0.25", lw=0.8, label="range over rounds"))
    fig.tight_layout()
    _plotting.legend_outside(fig, "below", handles=handles, ncol=len(handles),
                             bbox_to_anchor=(0.5, 0.0))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _bench_chart(d, path):
    """Redraw a run's fastbn-bench chart from its JSON, in today's style."""
    from fastbn import bench
    from fastbn.bench._report import plot
    results = [dict(r, threads=int(r["threads"])) for r in d["results"]]
    triad = {int(k): v for k, v in d["triad"].items()}
    peers = [p for p in bench.PEERS if any(r["peer"] == p for r in results)]
    plot(results, triad, peers, next(iter(triad)), path)


def render(args):
    os.makedirs(GENERATED, exist_ok=True)
    main = _load(os.path.join(RESULTS, "bench-2t", "bench.json"))
    reuse = _load(os.path.join(RESULTS, "bench-2t-reuse", "bench.json"))
    train = _load(os.path.join(RESULTS, "train_speed.json"))
    missing = ("Not yet measured: `docs/results/bench/{}` is missing "
               "(`python docs/scripts/bench_results.py run`).\n")
    files = {}
    if main is None:
        files["bench_summary.md"] = missing.format("bench-2t/bench.json")
        files["bench.md"] = missing.format("bench-2t/bench.json")
    else:
        files["bench_summary.md"] = summary(main, train)
        files["bench.md"] = results_table(main) + "\n" + machine_line(main) + "\n"
        try:
            summary_chart(main, os.path.join(GENERATED, "bench_summary.png"))
        except ImportError:
            pass
    files["bench_train.md"] = (missing.format("train_speed.json") if train is None
                               else train_table(train))
    notes = []
    if main is not None:
        notes += ["### fastbn writing into `out=` arrays", "",
                  "The same run, fastbn writing into outputs allocated once "
                  "(`--peers fastbn,fastbn-out,...`):", "", results_table(main, out=True)]
    if reuse is not None:
        notes += ["### The `--malloc-reuse` run", "", results_table(reuse), "",
                  machine_line(reuse), ""]
    for name, d in (("bench-2t", main), ("bench-2t-reuse", reuse)):
        if d is None:
            continue
        png = os.path.join(GENERATED, f"{name}.png")
        try:
            _bench_chart(d, png)
        except ImportError:
            continue
        what = "fresh outputs" if name == "bench-2t" else "`--malloc-reuse`"
        notes += [f"```{{figure}} _generated/{name}.png", f":alt: fastbn-bench chart, {what}",
                  "", f"`fastbn-bench`'s own chart of the run with {what}: GB/s per case and "
                  "peer (log scale); dashed: the triad.", "```", ""]
    files["bench_notes.md"] = "\n".join(notes) if notes else missing.format("bench-2t")
    for name, text in files.items():
        with open(os.path.join(GENERATED, name), "w") as f:
            f.write(text)
    print("bench_results: rendered", file=sys.stderr)


def scaling(args):
    """Run the scaling comparison into ``SCALING`` (unless ``--replot``) and draw
    ``scaling.png`` from its ``bench.json`` (where matplotlib is installed)."""
    if not args.replot:
        cmd = [sys.executable, "-m", "fastbn.bench", "--threads", args.threads,
               "--repeat", str(args.repeat), "--rounds", str(args.rounds), "--no-plot",
               "--out", SCALING, *SCALING_ARGS]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    d = _load(os.path.join(SCALING, "bench.json"))
    if d is None:
        raise SystemExit(f"bench_results: no {SCALING}/bench.json to plot; run the "
                         f"scaling step without --replot first")
    try:
        scaling_plot(d, os.path.join(SCALING, "scaling.png"))
    except ImportError:
        print("bench_results: matplotlib is not installed here, so no scaling.png; "
              "install it and run `bench_results.py scaling --replot`", file=sys.stderr)


def _scaling_rows(d):
    """``{(case, op): [(threads, triad GB/s, fastbn, fastbn-out, torch), ...]}``, each
    peer's row or None."""
    rows = {}
    for threads, tri in sorted(d["triad"].items(), key=lambda kv: int(kv[0])):
        by = {(r["case"], r["op"], r["peer"]): r for r in d["results"]
              if str(r["threads"]) == str(threads)}
        for c in d["config"]["cases"]:
            for op in d["config"]["ops"]:
                f = by.get((c["name"], op, "fastbn"))
                if f is not None:
                    rows.setdefault((c["name"], op), []).append(
                        (int(threads), tri.get("gbps"), f,
                         by.get((c["name"], op, "fastbn-out")), by.get((c["name"], op, "torch"))))
    return rows


def scaling_table(d):
    """Markdown for the scaling run's ``bench.json``: a row per case, op and thread
    count; "met" (at least ``SCALING_TARGET_PCT`` % of the triad) on the largest,
    for fastbn's fresh outputs and for ``out=``."""
    top = max(int(t) for t in d["triad"])
    lines = ["| case | op | threads | triad GB/s | fastbn ms | % triad | `out=` ms "
             "| `out=` % triad | PyTorch ms | % triad | × PyTorch | met (fresh / `out=`) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    def met(row):
        if row is None:
            return "–"
        return "yes" if (row["pct_triad"] or 0) >= SCALING_TARGET_PCT else "**no**"

    for (case, op), rows in _scaling_rows(d).items():
        for threads, tri, f, o, tor in rows:
            lines.append(
                f"| {case} | {op} | {threads} | {_fmt(tri, '.1f')} | {f['median_ms']:.3f} "
                f"| {_fmt(f['pct_triad'], '.0f')} | {_fmt(o and o['median_ms'], '.3f')} "
                f"| {_fmt(o and o['pct_triad'], '.0f')} | {_fmt(tor and tor['median_ms'], '.3f')} "
                f"| {_fmt(tor and tor['pct_triad'], '.0f')} | {_ratio(f, 'torch')} "
                f"| {met(f) + ' / ' + met(o) if threads == top else ''} |")
    lines += ["", f"{machine_line(d)} \"met\": at least {SCALING_TARGET_PCT} % of the "
              f"triad at {top} threads.", ""]
    return "\n".join(lines)


def scaling_plot(d, path):
    """GB/s against threads, one panel per case and op: fastbn, PyTorch, the triad."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fastbn import _plotting
    rows = _scaling_rows(d)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    for ax, ((case, op), rs) in zip(axes[0], rows.items()):
        t = [r[0] for r in rs]
        ax.plot(t, [r[1] for r in rs], "--", color=_plotting.color("triad"), label="triad")
        ax.plot(t, [r[2]["gbps"] for r in rs], "o-", color=_plotting.color("fastbn"),
                label="fastbn")
        for k, style, peer in ((3, "^-", "fastbn-out"), (4, "s-", "torch")):
            if all(r[k] for r in rs):
                ax.plot(t, [r[k]["gbps"] for r in rs], style, color=_plotting.color(peer),
                        label=peer)
        ax.set_xscale("log", base=2)
        ax.set_xticks(t, [str(v) for v in t])
        _plotting.style(ax)
        ax.set_title(f"{case} {op}")
        ax.set_xlabel("threads")
    axes[0][0].set_ylabel("GB/s (minimal traffic)")
    fig.tight_layout()
    _plotting.legend_outside(axes[0][-1])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def scaling_page():
    d = _load(os.path.join(SCALING, "bench.json"))
    if d is None:
        return ("Not yet measured: `docs/results/bench/scaling/bench.json` is missing "
                "(`python docs/scripts/bench_results.py scaling` on a 16-core machine).\n")
    out = [scaling_table(d)]
    png = os.path.join(SCALING, "scaling.png")
    if os.path.exists(png):
        shutil.copy(png, os.path.join(GENERATED, "scaling.png"))
        out += ["```{figure} _generated/scaling.png", ":alt: Scaling with threads", "",
                "GB/s under the minimal-traffic model against threads; dashed: the triad.",
                "```", ""]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    r = sub.add_parser("run", help="run the comparisons (minutes; needs a quiet machine)")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--repeat", type=int, default=30)
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--only", help="comma-separated subset of: " + ", ".join(RUNS)
                   + ", train_speed")
    sc = sub.add_parser("scaling", help="the scaling run on C and D (a 16-core machine)")
    sc.add_argument("--threads", default="1,2,4,8,16")
    sc.add_argument("--repeat", type=int, default=20)
    sc.add_argument("--rounds", type=int, default=3)
    sc.add_argument("--replot", action="store_true",
                    help="only draw scaling.png from the bench.json already there")
    sub.add_parser("render", help="write the pages' tables and charts into docs/_generated/")
    args = p.parse_args(argv)
    if args.step == "run":
        run(args)
    elif args.step == "scaling":
        scaling(args)
    render(args)


if __name__ == "__main__":
    main()
