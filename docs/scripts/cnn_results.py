"""CNN tutorial numbers: train the article's CNN with ``fastbn-cnn``, render its results.

``python docs/scripts/cnn_results.py run [--epochs 10] [--threads 2]``
    runs ``python -m fastbn.examples.cnn --epochs E --seed 0 --threads T
    --out docs/results/cnn/mnist`` (MNIST: KMNIST cannot be fetched on the
    machines these docs are built on), keeping the job's own ``metrics.json``
    and ``learning_curve.png`` and a ``command.json`` (the command line, wall
    time); the weights and checkpoint are deleted. Commit ``docs/results/cnn/``.

The speed section renders ``docs/results/cnn/train_speed_cnn.json``, the
output of ``python -m fastbn.examples.train_speed --model cnn --profile --out
docs/results/cnn`` (copy it there and commit it).

``python docs/scripts/cnn_results.py render``
    reads ``docs/results/cnn/`` and writes ``docs/_generated/cnn.md`` (the
    numbers, from ``metrics.json``) and ``docs/_generated/cnn.png`` (the job's
    curves). The Sphinx build runs this step; without a result file the page
    says how to produce one.
"""
import argparse
import json
import os
import re
import shutil

from mnist_results import _seconds_per_epoch, run_job

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.dirname(HERE)
RESULTS = os.path.join(DOCS, "results", "cnn", "mnist")
GENERATED = os.path.join(DOCS, "_generated")


def run(args):
    run_job("fastbn-cnn", "fastbn.examples.cnn",
            ["--epochs", str(args.epochs), "--seed", str(args.seed),
             "--threads", str(args.threads)],
            RESULTS, drop=("weights.npz", "checkpoint.npz"))


def render(_args=None):
    os.makedirs(GENERATED, exist_ok=True)
    path = os.path.join(RESULTS, "metrics.json")
    md = os.path.join(GENERATED, "cnn.md")
    if not os.path.exists(path):
        with open(md, "w") as f:
            f.write(":::{note}\nNo result file in this checkout "
                    "(`docs/results/cnn/mnist/metrics.json`): run `python "
                    "docs/scripts/cnn_results.py run`, then build the docs.\n:::\n")
        return
    with open(path) as f:
        m = json.load(f)
    h, st, v = m["history"], m["settings"], m["versions"]
    n = len(h["loss"])
    rows = ["| epoch | loss | accuracy | val_loss | val_accuracy | seconds |",
            "|---:|---:|---:|---:|---:|---:|"]
    for i, e in enumerate(m["epochs"]):
        rows.append(f"| {i + 1} | {h['loss'][i]:.4f} | {h['accuracy'][i]:.4f} "
                    f"| {h['val_loss'][i]:.4f} | {h['val_accuracy'][i]:.4f} "
                    f"| {e['seconds']:.1f} |")
    text = [
        f"After {n} epochs the test accuracy is **{100 * m['test_accuracy']:.2f} %** "
        f"(test loss {m['test_loss']:.4f}); the last validation accuracy "
        f"{100 * h['val_accuracy'][-1]:.2f} %. Training images {m['data']['train']:,}, "
        f"validation {m['data']['validation']:,}, test {m['data']['test']:,}; "
        f"{m['params']:,} parameters.",
        "",
        *rows,
        "",
        f"`fastbn-cnn --epochs {st['epochs']} --seed {st['seed']} --threads {st['threads']}` "
        f"on {st['dataset'].upper()}, fastbn {v['fastbn']}, NumPy {v['numpy']}, Numba "
        f"{v['numba']}, Python {v['python']}, {v['cpus']} CPUs (a machine shared with "
        f"other work: the seconds, training steps only, are indicative; the median "
        f"epoch after the first took {_seconds_per_epoch(m):.1f} s).",
    ]
    png = os.path.join(RESULTS, "learning_curve.png")
    if os.path.exists(png):
        shutil.copyfile(png, os.path.join(GENERATED, "cnn.png"))
        text += ["", "![Loss and accuracy per epoch, training and validation, from the "
                 "job's learning_curve.png](_generated/cnn.png)"]
    with open(md, "w") as f:
        f.write("\n".join(text) + "\n")
    print(f"cnn_results: rendered {n} epochs")


def render_speed():
    path = os.path.join(os.path.dirname(RESULTS), "train_speed_cnn.json")
    md = os.path.join(GENERATED, "cnn_speed.md")
    if not os.path.exists(path):
        with open(md, "w") as f:
            f.write(":::{note}\nNo speed result in this checkout "
                    "(`docs/results/cnn/train_speed_cnn.json`).\n:::\n")
        return
    with open(path) as f:
        r = json.load(f)
    lines = ["| peer | seconds per epoch | samples / s | time ÷ fastbn's |",
             "|---|---:|---:|---:|"]
    for row in r["rows"]:
        peers = [k for k, v in row.items() if isinstance(v, dict) and "median_s" in v]
        base = row["fastbn"]["median_s"]
        for p in peers:
            lines.append(f"| {p} | {row[p]['median_s']:.1f} | {row[p]['samples_per_s']:,.0f} "
                         f"| {row[p]['median_s'] / base:.2f}x |")
        prof = row.get("profile")
        if prof:
            lines += ["", "fastbn's epoch in the profile run (its own process, after the "
                      "others): " + ", ".join(f"{k} {v:.1f} s ({v / prof['epoch']:.0%})"
                                               for k, v in prof.items() if k != "epoch")
                      + f", of {prof['epoch']:.1f} s."]
        torch = min((row[p]["median_s"], p) for p in peers if p.startswith("torch"))
        others = [f"{base / torch[0]:.2f}x the time of PyTorch's faster layout ({torch[1]})"]
        if "keras (jax)" in row:
            others.append(f"{base / row['keras (jax)']['median_s']:.2f}x that of Keras on JAX")
        lines += ["", "fastbn's epoch takes " + " and ".join(others) + "."]
    v = r["versions"]
    command = re.sub(r" --out \S+", "", r["command"])     # where it was written first
    lines += ["", f"`{command}`: batch {r['rows'][0]['batch_size']}, {r['samples']:,} "
              f"samples, {r['threads']} threads, median of {r['rounds']} round(s), {r['date']}; "
              f"fastbn {v['fastbn']}, PyTorch {v.get('torch', '-')}, {r['machine']['cpus']} "
              f"CPUs; each peer in its own process, one after another."]
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    r = sub.add_parser("run")
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    sub.add_parser("render")
    args = p.parse_args(argv)
    if args.step == "run":
        run(args)
    else:
        render(args)
        render_speed()


if __name__ == "__main__":
    main()
