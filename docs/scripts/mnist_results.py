"""MNIST tutorial numbers: train every ``--model`` with the main job, render the table.

Two steps, because training needs the MNIST files (a download on a fresh
machine) and minutes of CPU, which a docs build must not:

``python docs/scripts/mnist_results.py run [--epochs 10] [--threads 2]``
    runs ``python -m fastbn.examples.mnist <flags of RUNS> --epochs E --seed 0
    --threads T --quiet --no-plot --out docs/results/mnist/<run>`` for every
    run (``bn-after`` is the job's default), keeping its ``metrics.json``
    and a ``command.json`` (the command line, wall time) and deleting the
    weights. Commit ``docs/results/mnist/``: those are the main job's own
    ``metrics.json`` files, not numbers typed by hand. 2-5 minutes per run
    on 2 cores. (PyTorch beside fastbn: ``docs/scripts/bench_results.py``.)

``python docs/scripts/mnist_results.py render``
    reads ``docs/results/mnist/`` and writes ``docs/_generated/mnist.md``
    (the table) and ``docs/_generated/mnist.png`` (learning curves). The
    Sphinx build runs this step; a model without a result file gets a
    "not yet measured" row, and the page says how to produce it.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.dirname(HERE)
RESULTS = os.path.join(DOCS, "results", "mnist")
GENERATED = os.path.join(DOCS, "_generated")
#: run name -> the job's flags. The first four use the job's defaults (SGD 1.0,
#: cosine); the last two the notebook's SGD 0.01, held constant, for the
#: comparison with Keras (96.98 % for bn-before) and to show plain training
#: at a rate it survives.
RUNS = {
    "bn-after": ["--model", "bn-after"],
    "bn-before": ["--model", "bn-before"],
    "plain": ["--model", "plain"],
    "textbook": ["--model", "textbook"],
    "bn-before-lr0.01": ["--model", "bn-before", "--lr", "0.01"],
    "plain-lr0.01": ["--model", "plain", "--lr", "0.01"],
}
MODELS = tuple(RUNS)


# ----------------------------------------------------------------------- run
def run_job(prog, module, args, out, drop=("weights.npz",)):
    """Run ``python -m module *args --out out --overwrite``, delete the files in ``drop``
    (megabytes the docs do not need) and write ``command.json``: the command
    as ``prog`` and its wall time."""
    cmd = [sys.executable, "-m", module, *args, "--out", out]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd + ["--overwrite"], check=True)      # re-measuring replaces the last run
    for name in drop:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
    with open(os.path.join(out, "command.json"), "w") as f:
        json.dump(dict(argv=[prog] + cmd[3:], wall_seconds=time.perf_counter() - t0),
                  f, indent=1)


def run_models(args):
    for model in MODELS:
        run_job("fastbn-mnist", "fastbn.examples.mnist",
                [*RUNS[model], "--epochs", str(args.epochs), "--seed", str(args.seed),
                 "--threads", str(args.threads), "--quiet", "--no-plot"],
                os.path.join(RESULTS, model))


# -------------------------------------------------------------------- render
# What the main job writes (fastbn/examples/mnist.py, ``metrics.json``):
# {"settings": {...flags...}, "data": {"train": 55000, ...}, "params": ...,
#  "history": {"loss": [...], "accuracy": [...], "val_loss": [...],
#              "val_accuracy": [...]},
#  "epochs": [{"epoch": 1, ..., "seconds": s, "samples_per_s": r}, ...],
#  "test_loss": ..., "test_accuracy": ..., "train_seconds": ...,
#  "samples_per_s": ..., "versions": {...}}
def _seconds_per_epoch(m):
    """Median training time of one epoch, the first (compilation) left out."""
    secs = [e["seconds"] for e in m.get("epochs", []) if "seconds" in e]
    if not secs:
        return None
    rest = sorted(secs[1:] or secs)
    return rest[len(rest) // 2]


def load_results():
    out = {}
    for model in MODELS:
        path = os.path.join(RESULTS, model, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                out[model] = json.load(f)
    return out


def _pct(v):
    return "not yet measured" if v is None else f"{100 * v:.2f} %"


#: Flags every run shares, said once under the table instead of on every row.
SHARED = ("epochs", "seed", "threads", "batch_size", "limit")


def _flags(model, m):
    """The flags of a run that differ from the job's defaults, from the settings
    it recorded (the learning rate and schedule as the job resolved them)."""
    from fastbn.examples import mnist as job
    st = m.get("settings", {})
    opt = st.get("optimizer", "sgd")
    default_lr = job.DEFAULT_LR if opt == "sgd" else job.ADAM_LR
    flags = []
    if st.get("model", model) != job.DEFAULT_MODEL:
        flags.append(f"--model {st.get('model', model)}")
    if opt != "sgd":
        flags.append(f"--optimizer {opt}")
    lr = st.get("lr", default_lr)
    if lr != default_lr:
        flags.append(f"--lr {lr:g}")
    implied = "cosine" if lr == default_lr else "constant"
    if st.get("schedule", implied) != implied:
        flags.append(f"--schedule {st['schedule']}")
    return " ".join(flags)


def _shared(results):
    """``fastbn-mnist --epochs 10 --seed 0 ...``: the flags all runs share."""
    values = {k: {r.get("settings", {}).get(k) for r in results.values()} for k in SHARED}
    flags = [f"--{k.replace('_', '-')} {next(iter(v))}" for k, v in values.items()
             if len(v) == 1 and next(iter(v)) is not None]
    return "fastbn-mnist " + " ".join(flags)


def render_table(results):
    lines = ["| run | flags | test accuracy | last validation accuracy "
             "| s / epoch | samples / s |",
             "|---|---|---:|---:|---:|---:|"]
    for model in MODELS:
        label = f"`{model}`" + (" (default)" if model == "bn-after" else "")
        m = results.get(model)
        if m is None:
            lines.append(f"| {label} | `{' '.join(RUNS[model])}` | not yet measured "
                         f"| not yet measured | – | – |")
            continue
        val = m.get("history", {}).get("val_accuracy") or [None]
        sec = _seconds_per_epoch(m)
        n = m.get("data", {}).get("train")
        sps = n / sec if sec and n else None
        flags = _flags(model, m)
        flags = f"`{flags}`" if flags else "none"
        lines.append(f"| {label} | {flags} | {_pct(m.get('test_accuracy'))} "
                     f"| {_pct(val[-1])} | {'–' if sec is None else f'{sec:.2f}'} "
                     f"| {'–' if sps is None else f'{sps:,.0f}'} |")
    if results:
        lines += ["", f"Every run is `{_shared(results)}` with the flags in its row (the "
                  "others at their defaults)."]
    lines += ["", "s / epoch is the median over the epochs after the first (which "
              "includes compiling the kernels), training steps only; samples / s is the "
              "training-set size over it. These runs follow one another on a shared "
              "machine, so their timings are only indicative; for fastbn beside PyTorch "
              "measured side by side (peers alternating in one run) see the training "
              "throughput table in {doc}`benchmarks`."]
    if results:
        any_m = next(iter(results.values()))
        v = any_m.get("versions", {})
        t = any_m.get("threads", {})
        lines += ["", f"Measured with fastbn {v.get('fastbn', '?')}, NumPy "
                  f"{v.get('numpy', '?')}, Numba {v.get('numba', '?')}, Python "
                  f"{v.get('python', '?')} on {v.get('machine', '?')} with "
                  f"{v.get('cpus', '?')} CPUs, {t.get('numba', '?')} threads."]
    missing = [m for m in MODELS if m not in results]
    if missing:
        lines += ["", ":::{note}", "Rows marked *not yet measured* have no result file in "
                  "this checkout (`docs/results/mnist/<model>/metrics.json`"
                  + "). `python docs/scripts/mnist_results.py run` trains every model "
                  "with the main job and times PyTorch, then the docs build shows the "
                  "numbers.", ":::"]
    return "\n".join(lines) + "\n"


def diverged(m):
    """A run that did not learn: non-finite loss or a last validation accuracy
    below 50 % (10 classes: chance is 10 %)."""
    h = m.get("history", {})
    loss, acc = h.get("loss") or [math.nan], h.get("val_accuracy") or [0.0]
    return not math.isfinite(loss[-1]) or acc[-1] < 0.5


def render_figure(results, path):
    """Loss and accuracy per epoch, one colour per run; runs that diverged are
    left off the axes (which would otherwise span their loss of 1e1-1e6 and
    squash the others) and named in the caption."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastbn import _plotting

    shown = {k: m for k, m in results.items() if not diverged(m)}
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    epochs = 1
    for model, m in shown.items():
        h = m.get("history", {})
        for key, ax, style in (("loss", ax_loss, "-"), ("val_loss", ax_loss, "--"),
                               ("accuracy", ax_acc, "-"), ("val_accuracy", ax_acc, "--")):
            v = h.get(key)
            if isinstance(v, list) and v:
                epochs = max(epochs, len(v))
                ax.plot(range(1, len(v) + 1), v, style, color=_plotting.color(model),
                        label=model if key == "loss" else None)
    for ax, title, key in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        values = [x for m in shown.values() for k in (key, "val_" + key)
                  for x in m.get("history", {}).get(k, [])]
        ax.set_ylim(*_plotting.limits(values, lo=0, hi=1 if key == "accuracy" else None))
        _plotting.epoch_axis(ax, epochs)
        _plotting.style(ax)
        ax.set_title(f"{title} (solid: training, dashed: validation)", fontsize="medium")
    _plotting.legend_outside(ax_acc, handles=ax_loss.get_legend_handles_labels()[0])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def render(args):
    os.makedirs(GENERATED, exist_ok=True)
    results = load_results()
    text = render_table(results)
    fig_path = os.path.join(GENERATED, "mnist.png")
    if results:
        render_figure(results, fig_path)
        off = [f"`{k}` (last training loss {m['history']['loss'][-1]:.3g}, validation "
               f"accuracy {_pct(m['history']['val_accuracy'][-1])})"
               for k, m in results.items() if diverged(m)]
        note = (" Left off the axes because it diverged: " + ", ".join(off) + "."
                if off else "")
        text += ("\n```{figure} _generated/mnist.png\n:alt: learning curves of every model\n\n"
                 "Loss and accuracy per epoch of the runs above, from the same runs' "
                 "`metrics.json`." + note + "\n```\n")
    else:
        if os.path.exists(fig_path):
            os.remove(fig_path)
        text += ("\nThe learning-curve figure is drawn here from the same result files; "
                 "there are none in this checkout yet.\n")
    with open(os.path.join(GENERATED, "mnist.md"), "w") as f:
        f.write(text)
    m = results.get("bn-after")               # the job's default model, for the index page
    headline = ("The default MNIST model is not yet measured in this checkout"
                if m is None else
                f"The default MNIST model reaches {_pct(m.get('test_accuracy'))} test "
                f"accuracy in {m.get('settings', {}).get('epochs', '?')} epochs")
    with open(os.path.join(GENERATED, "mnist_headline.md"), "w") as f:
        f.write(headline + " ({doc}`mnist`); the speeds above are measured in "
                "{doc}`benchmarks`.\n")
    print(f"mnist_results: rendered {len(results)} run(s)", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    r = sub.add_parser("run", help="train every model (slow, needs the MNIST files)")
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--seed", type=int, default=0)
    sub.add_parser("render", help="write docs/_generated/mnist.md, mnist.png and mnist_headline.md")
    args = p.parse_args(argv)
    if args.step == "run":
        run_models(args)
        render(args)
    else:
        render(args)


if __name__ == "__main__":
    main()
