"""Benchmark page numbers: run the peer comparisons, render their JSON as tables.

``python docs/scripts/bench_results.py run [--threads 2] [--repeat 30] [--rounds 5]``
    runs ``python -m fastbn.bench`` (all cases, with and without
    ``--malloc-reuse``) and ``python -m fastbn.examples.train_speed`` into
    ``docs/results/bench/``. Run it on a quiet machine (check ``uptime``) and
    commit ``docs/results/bench/``: the commands' own JSON and PNG files.

``python docs/scripts/bench_results.py scaling [--threads 1,2,4,8,16] [--rounds 3]``
    the performance issue's scaling run, on a machine with that many CPUs:
    cases C and D, forward and backward, fastbn and PyTorch side by side at
    each thread count, the triad at each, into ``docs/results/bench/scaling/``
    (with ``scaling.png``, GB/s against threads). ``fastbn.bench`` refuses
    more threads than the machine has CPUs. On a machine without internet,
    run it from the source tree: ``PYTHONPATH=$PWD python docs/scripts/...``.

``python docs/scripts/bench_results.py render``
    reads ``docs/results/bench/`` and writes ``docs/_generated/bench.md`` and
    ``docs/_generated/scaling.md``; the Sphinx build runs this step. Missing
    files give a "not yet measured" note, never invented numbers.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.dirname(HERE)
RESULTS = os.path.join(DOCS, "results", "bench")
GENERATED = os.path.join(DOCS, "_generated")

#: case -> {op: (minimum speed-up over PyTorch, minimum % of triad)}, from issue 5
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
#: The scaling run: the issue's cases and operations, the thread counts it names.
SCALING = os.path.join(RESULTS, "scaling")
SCALING_ARGS = ["--cases", "C,D", "--ops", "forward,backward",
                "--peers", "fastbn,fastbn-out,torch"]
#: Target at the largest thread count: % of that machine's triad (issue 5).
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


def _out_cells(o, tor):
    if o is None:
        return " – | – |"
    if "speedup_vs_torch" in o:
        return f" {o['median_ms']:.3f} | {_ratio(o, 'torch')} |"
    ratio = None if tor is None else tor["median_s"] / o["median_s"]
    return f" {o['median_ms']:.3f} | {_fmt(ratio, '.2f')} |"


def bench_table(d):
    """Markdown for one ``bench.json``."""
    m = d["machine"]
    lines = []
    for threads, tri in d["triad"].items():
        rows = [r for r in d["results"] if str(r["threads"]) == str(threads)]
        by = {(r["case"], r["op"], r["peer"]): r for r in rows}
        has_out = any(r["peer"] == "fastbn-out" for r in rows)
        out_head = " fastbn `out=` ms | `out=` × PyTorch |" if has_out else ""
        out_rule = "---:|---:|" if has_out else ""
        fresh = (f" Triad into a freshly allocated output (page faults included, the ceiling "
                 f"for a result that is not reused): {tri['fresh_gbps']:.1f} GB/s."
                 if "fresh_gbps" in tri else "")
        lines += [f"{threads} threads. STREAM triad {tri['gbps']:.1f} GB/s before the peers, "
                  f"{tri.get('gbps_after', float('nan')):.1f} GB/s after them.{fresh} "
                  f"Load average before / after: {m.get('loadavg')} / {m.get('loadavg_after')}.",
                  "",
                  "| case | op | fastbn ms | GB/s | % triad | NumPy ms | × NumPy | PyTorch ms "
                  "| × PyTorch | target | met |" + out_head,
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|" + out_rule]
        for c in d["config"]["cases"]:
            for op in d["config"]["ops"]:
                f = by.get((c["name"], op, "fastbn"))
                if f is None:
                    continue
                npy, tor = by.get((c["name"], op, "numpy")), by.get((c["name"], op, "torch"))
                text, t = _target_text(c["name"], op)
                lines.append(
                    f"| {c['name']} | {op} | {f['median_ms']:.3f} | {f['gbps']:.1f} "
                    f"| {f['pct_triad']:.0f} | {_fmt(npy and npy['median_ms'], '.3f')} "
                    f"| {_fmt(f.get('speedup_vs_numpy'), '.2f')} "
                    f"| {_fmt(tor and tor['median_ms'], '.3f')} "
                    f"| {_ratio(f, 'torch')} | {text} "
                    f"| {_met(f, tor, t)} |" + (_out_cells(by.get((c["name"], op, "fastbn-out")),
                                                           tor) if has_out else ""))
        lines.append("")
    lines += [_machine_line(d), ""]
    return "\n".join(lines)


def _machine_line(d):
    """The machine, versions and command of a ``bench.json``, as one sentence."""
    m = d["machine"]
    v = m.get("versions", {})
    return (f"Machine: {m.get('cpu')}, {m.get('usable_cpus')} usable CPUs, caches "
            f"{m.get('caches')}, {m.get('memory')}; {m.get('date')}. Python "
            f"{m.get('python')}, NumPy {m.get('numpy')}, Numba {m.get('numba')}, fastbn "
            f"{v.get('fastbn')}, PyTorch {v.get('torch', 'not installed')}. Command: "
            f"`{d['command']}`.")


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
    lines += ["", f"{d['samples']:,} synthetic MNIST-shaped samples per epoch, median of "
              f"{d['rounds']} epochs per peer (peers alternating, each in a fresh process), "
              f"{d['threads']} threads; model `{d['model']}`, SGD. {d['date']}, "
              f"{d['machine']['processor'] or d['machine']['platform']}, "
              f"{d['machine']['cpus']} CPUs; fastbn {v.get('fastbn')}, NumPy {v.get('numpy')}, "
              f"Numba {v.get('numba')}, PyTorch {v.get('torch', 'not installed')}. Command: "
              f"`{d['command']}`.", ""]
    return "\n".join(lines)


def render(args):
    os.makedirs(GENERATED, exist_ok=True)
    out = []
    for name, title in (("bench-2t", "Peer comparison, 2 threads"),
                        ("bench-2t-reuse", "The same with `--malloc-reuse`")):
        d = _load(os.path.join(RESULTS, name, "bench.json"))
        out += [f"### {title}", ""]
        if d is None:
            out += [f"Not yet measured: `docs/results/bench/{name}/bench.json` is missing "
                    f"(`python docs/scripts/bench_results.py run`).", ""]
            continue
        out.append(bench_table(d))
        png = os.path.join(RESULTS, name, "bench.png")
        if os.path.exists(png):
            shutil.copy(png, os.path.join(GENERATED, f"{name}.png"))
            out += [f"```{{figure}} _generated/{name}.png", f":alt: {title}", "",
                    "GB/s per case and peer (log scale); dashed: the triad.", "```", ""]
    out += ["### Training throughput (MNIST MLP)", ""]
    d = _load(os.path.join(RESULTS, "train_speed.json"))
    if d is None:
        out += ["Not yet measured: `docs/results/bench/train_speed.json` is missing.", ""]
    else:
        out.append(train_table(d))
    with open(os.path.join(GENERATED, "bench.md"), "w") as f:
        f.write("\n".join(out))
    with open(os.path.join(GENERATED, "scaling.md"), "w") as f:
        f.write(scaling_page())
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
    lines += ["", f"{_machine_line(d)} \"met\": at least {SCALING_TARGET_PCT} % of the "
              f"triad at {top} threads.", ""]
    return "\n".join(lines)


def scaling_plot(d, path):
    """GB/s against threads, one panel per case and op: fastbn, PyTorch, the triad."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = _scaling_rows(d)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    for ax, ((case, op), rs) in zip(axes[0], rows.items()):
        t = [r[0] for r in rs]
        ax.plot(t, [r[1] for r in rs], "k--", label="triad")
        ax.plot(t, [r[2]["gbps"] for r in rs], "o-", label="fastbn")
        for k, style, label in ((3, "^-", "fastbn out="), (4, "s-", "PyTorch")):
            if all(r[k] for r in rs):
                ax.plot(t, [r[k]["gbps"] for r in rs], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(t, [str(v) for v in t])
        ax.set_title(f"{case} {op}")
        ax.set_xlabel("threads")
    axes[0][0].set_ylabel("GB/s (minimal traffic)")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
    sub.add_parser("render", help="write docs/_generated/bench.md and scaling.md")
    args = p.parse_args(argv)
    if args.step == "run":
        run(args)
    elif args.step == "scaling":
        scaling(args)
    render(args)


if __name__ == "__main__":
    main()
