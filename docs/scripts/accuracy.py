"""Numerical accuracy on offset data: fastbn vs NumPy float32 vs PyTorch CPU.

``python docs/scripts/accuracy.py run`` measures and writes
``docs/results/accuracy.json`` (the numbers with the versions and machine they
came from; commit it), then renders. ``python docs/scripts/accuracy.py render``
(what the Sphinx build runs) reads that file and writes, into
``docs/_generated``:

* ``accuracy.csv``  one row per (layout, offset, implementation);
* ``accuracy.md``   the same as two Markdown tables, included by ``docs/maths.md``;
* ``accuracy.png``  the figure.

So the Maths page shows the committed measurement, PyTorch column included,
whatever is installed where the docs are built.

Data: float32 ``standard_normal(shape) + offset`` for offsets 1e0 .. 1e5, in an
``(N, C)`` layout (features last, ``axis=-1``) and in NCHW (features on
axis 1). The truth is the textbook two-pass formula in float64 on the *same*
float32 values, so the measured error is the implementation's alone, not the
rounding of the data. For each implementation:

* **variance**: the largest relative error of the per-feature biased
  variance over all features, ``max |var - var64| / var64``;
* **output**: the largest absolute error of the normalized output
  ``y = (x - mean) / sqrt(var + eps)`` (no scale or shift, ``eps = 1e-3``), whose
  values are of order 1, so float32 rounding alone gives about ``2e-7``.

Implementations: ``fastbn`` (``fastbn.moments`` and
``fastbn.batch_norm_forward``); ``numpy`` in float32, as a user would write it
(``x.var(axis)`` and ``(x - x.mean(axis)) / np.sqrt(x.var(axis) + eps)``);
``torch`` (``torch.nn.functional.batch_norm`` in training mode, PyTorch's CPU
kernel, its variance read from the running variance with ``momentum=1`` and
rescaled from unbiased to biased), when PyTorch is importable.

``run`` takes about 20-50 s on two cores, most of it compiling fastbn's
kernels on a cold cache; run it where PyTorch is installed.
"""
import argparse
import csv
import json
import os
import platform
import sys
import time

import numpy as np

OFFSETS = (1e0, 1e1, 1e2, 1e3, 1e4, 1e5)
EPS = 1e-3
LAYOUTS = {
    # name: (shape, feature axis for batch norm)
    "(N, C)": ((32768, 64), 1),
    "NCHW": ((32, 64, 32, 32), 1),
}
#: Errors of exactly zero are drawn at this floor on the log-scale figure.
FLOOR = 1e-16


def _truth(x, feat):
    red = tuple(a for a in range(x.ndim) if a != feat)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=red, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=red, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + EPS)
    return var.reshape(-1), y


def _fastbn(x, feat):
    import fastbn
    red = tuple(a for a in range(x.ndim) if a != feat)
    _, var = fastbn.moments(x, axis=red)
    y, _, _ = fastbn.batch_norm_forward(x, None, None, axis=feat, epsilon=EPS)
    return var.reshape(-1), y


def _numpy(x, feat):
    red = tuple(a for a in range(x.ndim) if a != feat)
    var = x.var(axis=red)                                    # float32 in, float32 out
    y = (x - x.mean(axis=red, keepdims=True)) / np.sqrt(x.var(axis=red, keepdims=True) + EPS)
    return var.reshape(-1), y


def _torch(x, feat):
    import torch
    assert feat == 1, "PyTorch batch norm keeps dim 1"
    xt = torch.from_numpy(x)
    c = x.shape[1]
    n = x.size // c
    rm = torch.zeros(c, dtype=xt.dtype)
    rv = torch.ones(c, dtype=xt.dtype)
    with torch.no_grad():
        y = torch.nn.functional.batch_norm(xt, rm, rv, training=True, momentum=1.0, eps=EPS)
    var = rv.double().numpy() * (n - 1) / n                 # unbiased -> biased
    return var, y.numpy()


def implementations(torch=True):
    """``{name: function}`` for every implementation available here."""
    impls = {"fastbn": _fastbn, "numpy float32": _numpy}
    if not torch:
        return impls
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        impls["PyTorch CPU"] = _torch
    return impls


def measure(seed=0, torch=True):
    rng = np.random.default_rng(seed)
    impls = implementations(torch)
    rows = []
    for layout, (shape, feat) in LAYOUTS.items():
        noise = rng.standard_normal(shape)
        for offset in OFFSETS:
            x = (noise + offset).astype(np.float32)
            var64, y64 = _truth(x, feat)
            for name, fn in impls.items():
                var, y = fn(x, feat)
                var = np.asarray(var, dtype=np.float64)
                rows.append(dict(
                    layout=layout, shape="x".join(map(str, shape)), offset=offset,
                    implementation=name,
                    var_rel_err=float(np.max(np.abs(var - var64) / var64)),
                    var_min=float(var.min()),
                    y_abs_err=float(np.max(np.abs(np.asarray(y, np.float64) - y64))),
                ))
    return rows


def environment():
    import numba
    import fastbn
    env = dict(python=platform.python_version(), machine=platform.machine(),
               processor=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               numpy=np.__version__, numba=numba.__version__, fastbn=fastbn.__version__,
               numba_threads=numba.get_num_threads())
    try:
        import torch
    except ImportError:
        env["torch"] = None
    else:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    return env


def _fmt(v):
    return "0" if v == 0 else f"{v:.1e}"


def _offset(v):
    return f"1e{int(round(np.log10(v)))}"


def markdown(rows, env):
    impls = list(dict.fromkeys(r["implementation"] for r in rows))
    layouts = list(dict.fromkeys(r["layout"] for r in rows))
    shapes = {r["layout"]: r["shape"] for r in rows}
    out = []
    for key, title in (("var_rel_err", "Largest relative error of the per-feature variance"),
                       ("y_abs_err", "Largest absolute error of the normalized output")):
        out.append(f"**{title}** (float32 input, float64 truth)\n")
        out.append("| layout | offset | " + " | ".join(impls) + " |")
        out.append("|---|---:|" + "---:|" * len(impls))
        for layout in layouts:
            for offset in OFFSETS:
                cells = [_fmt(r[key]) for name in impls for r in rows
                         if r["layout"] == layout and r["offset"] == offset
                         and r["implementation"] == name]
                out.append(f"| `{layout}` {shapes[layout]} | {_offset(offset)} | "
                           + " | ".join(cells) + " |")
        out.append("")
    torch_note = (f"PyTorch {env['torch']}" if env.get("torch")
                  else "no PyTorch column (PyTorch not importable, or --no-torch)")
    out.append(f"Measured by `docs/scripts/accuracy.py` with fastbn {env['fastbn']}, "
               f"NumPy {env['numpy']}, Numba {env['numba']}, {torch_note}; "
               f"Python {env['python']} on {env['machine']}.")
    return "\n".join(out) + "\n"


def figure(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = list(dict.fromkeys(r["implementation"] for r in rows))
    layouts = list(dict.fromkeys(r["layout"] for r in rows))
    from fastbn import _plotting

    style = {name: dict(marker=m, color=_plotting.color(name))
             for name, m in (("fastbn", "o"), ("numpy float32", "s"), ("PyTorch CPU", "^"))}
    fig, axes = plt.subplots(2, len(layouts), figsize=(4.2 * len(layouts), 6.4),
                             sharex=True, sharey="row", constrained_layout=True)
    for col, layout in enumerate(layouts):
        for row, (key, label) in enumerate((("var_rel_err", "variance: max relative error"),
                                            ("y_abs_err", "output: max absolute error"))):
            ax = axes[row, col]
            for name in impls:
                pts = [(r["offset"], max(r[key], FLOOR)) for r in rows
                       if r["layout"] == layout and r["implementation"] == name]
                ax.loglog(*zip(*pts), label=name, **style.get(name, {}))
            if key == "var_rel_err":           # the floor of any float32 result
                ax.axhline(2.0 ** -24, color="0.5", ls=":", lw=1,
                           label="float32 rounding, $2^{-24}$" if col == 0 else None)
            _plotting.style(ax)
            if row == 0:
                ax.set_title(f"{layout}, float32")
            else:
                ax.set_xlabel("offset added to N(0, 1) data")
            if col == 0:
                ax.set_ylabel(label)
    _plotting.legend_outside(axes[0, -1], handles=axes[0, 0].get_legend_handles_labels()[0])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    docs = os.path.join(here, os.pardir)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("run", "render"),
                   help="run: measure into --results, then render; render: only render")
    p.add_argument("--results", default=os.path.join(docs, "results", "accuracy.json"),
                   help="the measurement (default: docs/results/accuracy.json)")
    p.add_argument("--out", default=os.path.join(docs, "_generated"),
                   help="output folder (default: docs/_generated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.step == "run":
        rows = measure(args.seed, torch=not args.no_torch)
        env = environment()
        if args.no_torch:
            env["torch"] = None
        with open(args.results, "w") as f:
            json.dump(dict(environment=env, eps=EPS, seed=args.seed, rows=rows), f, indent=1)
    with open(args.results) as f:
        d = json.load(f)
    rows, env = d["rows"], d["environment"]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "accuracy.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(args.out, "accuracy.md"), "w") as f:
        f.write(markdown(rows, env))
    try:
        figure(rows, os.path.join(args.out, "accuracy.png"))
    except ImportError:
        pass
    print(f"accuracy: {args.step} wrote {os.path.normpath(args.out)} in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
