"""What a run reports: the machine, one row per (case, op, peer, threads), the
table, and the PNG chart (``bench.json`` is :func:`fastbn.bench.run`'s dict).

Bandwidth uses the minimal-traffic model of :data:`fastbn.bench.cases.OPS`;
fastbn's speed-up over a peer is the peer's time over fastbn's.

Examples
--------
>>> from fastbn.bench import _report as report
>>> rows = [dict(case="A", op="forward", peer=p, threads=1, shape=[128, 784], axis=-1,
...              dtype="float32", median_s=s, min_s=s, max_s=s, samples=5,
...              output_sample=[0.0, 1.0]) for p, s in (("fastbn", 1e-5), ("numpy", 4e-5))]
>>> rows = report.summarise(rows, {1: 10.0})
>>> round(rows[0]["speedup_vs_numpy"], 6), round(rows[0]["gbps"], 1)
(4.0, 120.4)
"""
import datetime
import os
import platform

import numpy as np

from ._timing import NOISE_RATIO
from .cases import OPS, traffic_bytes



def machine_info():
    """CPU, cores, caches, memory, load, versions: enough to reproduce a table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    caches = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in sorted(os.listdir(base)):
            if not d.startswith("index"):
                continue
            def rd(k, d=d):
                with open(os.path.join(base, d, k)) as f:
                    return f.read().strip()
            kind = "" if rd("type") == "Unified" else rd("type")[0].lower()   # L1d, L1i, L2
            caches[f"L{rd('level')}{kind}"] = rd("size")
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) // (1 << 20)} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import numba
    info = dict(cpu=cpu, logical_cpus=os.cpu_count(),
                usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count(),
                caches=caches, memory=mem, platform=platform.platform(),
                python=platform.python_version(), numpy=np.__version__,
                numba=numba.__version__,
                loadavg=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return info


# ------------------------------------------------------------------- report
def _fmt_shape(shape):
    return "x".join(str(s) for s in shape)


def combine_rounds(results):
    """One row per (case, op, peer, threads) from rows that carry a ``round``.

    ``median_s`` becomes the median of the rounds' medians (``round_median_s``
    keeps them); ``min_s``/``max_s``/``samples`` cover every round.
    """
    rows, order = {}, []
    for r in results:
        key = (r["case"], r["op"], r["peer"], r["threads"])
        if key not in rows:
            order.append(key)
            rows[key] = []
        rows[key].append(r)
    out = []
    for key in order:
        group = rows[key]
        timed = [r for r in group if "median_s" in r]
        if not timed:
            out.append(group[0])
            continue
        row = {k: v for k, v in timed[0].items() if k != "round"}
        meds = [r["median_s"] for r in timed]
        row.update(median_s=float(np.median(meds)), min_s=min(r["min_s"] for r in timed),
                   max_s=max(r["max_s"] for r in timed),
                   samples=sum(r["samples"] for r in timed), rounds=len(timed),
                   round_median_s=meds, round_ids=[r.get("round", 0) for r in timed],
                   noisy_rounds=sum(bool(r.get("noisy")) for r in timed))
        # the median of the rounds is noise when half of them or more were
        row["noisy"] = 2 * row["noisy_rounds"] >= len(timed)
        out.append(row)
    return out


def summarise(results, triad_gbps):
    """Add GB/s, % of triad and fastbn's speed-up over each peer to every row.

    With several rounds the speed-up is the median of the per-round ratios
    (``speedup_vs_<peer>_range`` holds their lowest and highest): each
    round's peers ran back to back, so each ratio compares like with like.
    """
    by_key = {}
    for r in results:
        if "median_s" in r:
            by_key[(r["case"], r["op"], r["peer"], r["threads"])] = r
    for r in results:
        if "median_s" not in r:
            continue
        gb = traffic_bytes(r["op"], r["shape"], r["dtype"]) / 1e9
        r["median_ms"] = r["median_s"] * 1e3
        r["gbps"] = gb / r["median_s"]
        r["pct_triad"] = 100 * r["gbps"] / triad_gbps[r["threads"]] if triad_gbps.get(
            r["threads"]) else None
        ref = by_key.get((r["case"], r["op"], "numpy", r["threads"]))
        if ref is not None and ref is not r:
            a, b = np.asarray(r["output_sample"]), np.asarray(ref["output_sample"])
            r["max_rel_diff_vs_numpy"] = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)),
                                                                              1e-30))
        if r["peer"] in ("fastbn", "fastbn-out"):
            for other in ("numpy", "torch"):
                o = by_key.get((r["case"], r["op"], other, r["threads"]))
                if o is None:
                    continue
                mine = dict(zip(r.get("round_ids", [0]), r.get("round_median_s",
                                                               [r["median_s"]])))
                theirs = dict(zip(o.get("round_ids", [0]), o.get("round_median_s",
                                                                 [o["median_s"]])))
                ratios = [theirs[k] / mine[k] for k in mine if k in theirs]
                if ratios:
                    r[f"speedup_vs_{other}"] = float(np.median(ratios))
                    r[f"speedup_vs_{other}_range"] = [min(ratios), max(ratios)]
    return results


def table(results, triad_info, peers, threads):
    """The text table of one thread count: a row per case and operation, each peer's
    time, GB/s, % of the triad and speed-up, then notes on noisy rows and disagreements."""
    rows = [r for r in results if r["threads"] == threads and "median_s" in r]
    t = triad_info.get(threads, {})
    lines = [f"threads={threads}   STREAM triad: {t.get('gbps', float('nan')):.1f} GB/s "
             f"(median; best {t.get('best_gbps', float('nan')):.1f}; "
             f"{t.get('array_mib', '?')} MiB arrays; into a fresh array "
             f"{t.get('fresh_gbps', float('nan')):.1f})"
             + (f", after the run {t['gbps_after']:.1f} GB/s" if "gbps_after" in t else "")]
    head = f"{'case':<5}{'shape':<15}{'axis':<7}{'dtype':<8}{'op':<10}"
    # the fastbn-out column's speed-up is its own, over the last peer (torch when run)
    out_vs = next((p for p in reversed(peers) if p in ("torch", "numpy")), None)
    for p in peers:
        head += f"{p + ' ms':>{_name_width(p)}}{'GB/s':>7}{'%triad':>7}"
        if p == "fastbn-out":
            head += f"{'vs ' + out_vs:>9}" if out_vs else f"{'':>9}"
        elif p != "fastbn":
            head += f"{'speedup':>8}"
    lines += [head, "-" * len(head)]
    keys = []
    for r in rows:
        k = (r["case"], r["op"])
        if k not in keys:
            keys.append(k)
    bad = []
    noisy_rows = []
    for case, op in keys:
        cell = {r["peer"]: r for r in rows if r["case"] == case and r["op"] == op}
        any_r = next(iter(cell.values()))
        axis = any_r["axis"]
        axis = str(tuple(axis)) if isinstance(axis, list) else str(axis)
        line = (f"{case:<5}{_fmt_shape(any_r['shape']):<15}{axis.replace(' ', ''):<7}"
                f"{any_r['dtype']:<8}{op:<10}")
        for p in peers:
            r = cell.get(p)
            width = {"fastbn": 0, "fastbn-out": 9}.get(p, 8)
            nw = _name_width(p)
            if r is None:
                line += f"{'-':>{nw}}{'':>7}{'':>7}" + " " * width
                continue
            pct = f"{r['pct_triad']:.0f}%" if r.get("pct_triad") is not None else "?"
            noisy = bool(r.get("noisy"))
            if noisy:
                noisy_rows.append(r)
            line += (f"{r['median_ms']:>{nw - 1}.3f}{'!' if noisy else ' '}{r['gbps']:>7.1f}"
                     f"{pct:>7}")
            if p != "fastbn":
                s = (r.get(f"speedup_vs_{out_vs}") if p == "fastbn-out"
                     else cell.get("fastbn", {}).get(f"speedup_vs_{p}"))
                line += f"{s:>{width - 1}.2f}x" if s else " " * width
            tol = 1e-3 if r["dtype"] == "float32" else 1e-9
            if r.get("max_rel_diff_vs_numpy", 0) > tol:
                bad.append(f"{p} {case} {op}: max rel diff vs numpy "
                           f"{r['max_rel_diff_vs_numpy']:.2e}")
        lines.append(line)
    lines.append("speedup = peer time / fastbn time; GB/s under the minimal-traffic model "
                 "(forward 3, inference 2, backward 5 x itemsize per element)")
    if "fastbn-out" in peers and out_vs:
        lines.append(f"vs {out_vs} = {out_vs} time / fastbn-out time (fastbn writing into a "
                     f"reused out= array)")
    rounds = max((r.get("rounds", 1) for r in rows), default=1)
    if rounds > 1:
        lines.append(f"times: median of {rounds} rounds' medians; speedup: median of the "
                     f"{rounds} per-round ratios (their range is in bench.json)")
    lines += [_noisy_note(r) for r in noisy_rows]
    lines += [f"WARNING: outputs disagree: {b}" for b in bad]
    return "\n".join(lines)


def _noisy_note(r):
    """One table line saying, in words, which time is unreliable and why."""
    rounds = r.get("rounds", 1)
    where = (f"in {r['noisy_rounds']} of {rounds} rounds" if rounds > 1
             else f"after {r.get('samplings', 1)} samplings")
    return (f"! NOISY: {r['peer']} {r['case']} {r['op']}: median {r['median_s'] / r['min_s']:.1f}x "
            f"the fastest sample {where} (other work on the cores); this time and its "
            f"speed-ups are unreliable, re-run on a quiet machine")


def _name_width(peer):
    """Width of a peer's time column: its header, ``<peer> ms``, and a space."""
    return max(11, len(peer) + 4)


def plot(results, triad_info, peers, threads, path):
    """Write the chart of one thread count (``bench.png``) to ``path``."""
    import matplotlib.pyplot as plt
    fig = chart(results, triad_info, peers, threads)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def chart(results, triad_info, peers, threads):
    """GB/s per case and peer, one panel per operation, the triad dashed; a
    noisy time is hatched and labelled "noisy" on its bar."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .. import _plotting
    rows = [r for r in results if r["threads"] == threads and "median_s" in r]
    ops = [op for op in OPS if any(r["op"] == op for r in rows)]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(1, len(ops), figsize=(4.2 * len(ops), 3.6), squeeze=False,
                             sharey=True)
    width = 0.8 / max(1, len(peers))
    any_noisy = False
    for ax, op in zip(axes[0], ops):
        for k, p in enumerate(peers):
            for j, c in enumerate(cases):
                r = next((r for r in rows if r["case"] == c and r["op"] == op
                          and r["peer"] == p), None)
                if r is None:
                    continue
                x = j + (k - (len(peers) - 1) / 2) * width
                noisy = bool(r.get("noisy"))
                any_noisy = any_noisy or noisy
                ax.bar(x, r["gbps"], width, color=_plotting.color(p),
                       hatch="///" if noisy else None, edgecolor="white" if noisy else None)
                if noisy:
                    ax.annotate("noisy", (x, r["gbps"]), xytext=(0, 2),
                                textcoords="offset points", rotation=90, ha="center",
                                va="bottom", fontsize=7, color="#B00000")
        g = triad_info.get(threads, {}).get("gbps")
        if g:
            ax.axhline(g, color=_plotting.color("triad"), ls="--", lw=1)
        ax.set_xticks(np.arange(len(cases)), cases)
        _plotting.log_axis(ax)
        _plotting.style(ax)
        ax.set_title(f"{op} ({threads} thread{'s' if threads > 1 else ''})")
        ax.set_xlabel("case")
    axes[0][0].set_ylabel("GB/s (minimal-traffic model)")
    handles = [Patch(color=_plotting.color(p), label=p) for p in peers]
    g = triad_info.get(threads, {}).get("gbps")
    if g:
        handles.append(plt.Line2D([], [], color=_plotting.color("triad"), ls="--",
                                  label=f"STREAM triad {g:.0f} GB/s"))
    if any_noisy:
        handles.append(Patch(facecolor="0.7", hatch="///", edgecolor="white",
                             label=f"noisy: median > {NOISE_RATIO}x fastest sample"))
    fig.tight_layout()
    _plotting.legend_outside(fig, "below", handles=handles, ncol=len(handles),
                             bbox_to_anchor=(0.5, 0.0))
    return fig
