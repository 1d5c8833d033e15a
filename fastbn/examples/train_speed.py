"""Training throughput of the MNIST MLP: fastbn beside PyTorch, side by side in one run.

``python -m fastbn.examples.train_speed`` trains the main job's ``bn-before``
model (BN on the inputs; Dense(300, no bias) -> BN -> ELU; Dense(100, no bias)
-> BN -> ELU; Dense(10) softmax; SGD) on synthetic MNIST-shaped data, at each
batch size, with fastbn's ``Sequential.fit`` and with the same model written
in plain PyTorch (``torch.nn``, Keras' BN momentum and epsilon, a standard
training loop). Each peer runs in its own fresh process with the same thread
count (``--threads``, default 2) for Numba, BLAS and PyTorch, and the peers
alternate ``--rounds`` times so that a noisy neighbour hurts both alike. A
round is one epoch of ``--samples`` samples after a warm-up of a few batches; the table
gives the median samples/s and ms per step over the rounds, and the ratio.

``--model cnn`` times the Keras batch-normalization article's CNN instead
(:func:`fastbn.examples.cnn.build_model`: two 3x3 convolutions, max pooling,
five batch norms, Adam) at batch 250 on 48,000 samples (the article's epoch:
60,000 less ``validation_split=0.2``), beside PyTorch eager in NCHW and in
``channels_last`` memory format and, when keras and jax are installed, Keras
3 on JAX, each in its own process. ``--profile`` then also splits fastbn's
epoch between convolutions, pooling, batch norm and the rest
(:func:`cnn_profile`).

Results go to ``--out``/train_speed.json (with versions and the machine), for
docs/scripts to render.

Examples
--------
>>> from fastbn.examples.train_speed import steps_per_epoch
>>> steps_per_epoch(50_000, 32)
1563
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["steps_per_epoch", "fastbn_model", "torch_model", "run_fastbn", "run_torch",
           "torch_cnn_model", "run_fastbn_cnn", "run_torch_cnn", "run_keras_cnn", "cnn_profile",
           "main"]


def steps_per_epoch(samples, batch_size):
    """Number of ``fit`` steps in one epoch (the last batch may be short).

    Parameters
    ----------
    samples, batch_size : int

    Returns
    -------
    int

    Examples
    --------
    >>> from fastbn.examples.train_speed import steps_per_epoch
    >>> steps_per_epoch(55_000, 32)
    1719
    """
    return -(-samples // batch_size)


def _data(samples, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((samples, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, samples)
    return x, y


def fastbn_model():
    """The bn-before MLP in fastbn, compiled for SGD 0.01 (seed 0).

    Returns
    -------
    fastbn.nn.Sequential

    Examples
    --------
    >>> from fastbn.examples.train_speed import fastbn_model
    >>> fastbn_model().count_params()
    270946
    """
    from fastbn import nn
    from fastbn.examples.mnist import build_model

    nn.set_random_seed(0)
    model = build_model("bn-before")
    model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.01),
                  metrics=["accuracy"])
    return model


def torch_model():
    """The same MLP in plain PyTorch (seed 0): ``(model, optimizer, loss_fn)``.

    Returns
    -------
    tuple
        ``torch.nn.Sequential``, ``torch.optim.SGD`` (lr 0.01) and
        ``CrossEntropyLoss`` (the softmax fused into the loss, as fastbn does).

    Examples
    --------
    >>> import pytest
    >>> _ = pytest.importorskip("torch")
    >>> from fastbn.examples.train_speed import torch_model
    >>> model, opt, loss_fn = torch_model()
    >>> sum(p.numel() for p in model.parameters())       # trainable: 270,946 - 2 * 1,184
    268578
    """
    import torch
    from torch import nn as tnn

    torch.manual_seed(0)

    def bn(n):                          # Keras: momentum 0.99 -> PyTorch 0.01, eps 1e-3
        return tnn.BatchNorm1d(n, eps=1e-3, momentum=0.01)

    model = tnn.Sequential(tnn.Flatten(), bn(784),
                           tnn.Linear(784, 300, bias=False), bn(300), tnn.ELU(),
                           tnn.Linear(300, 100, bias=False), bn(100), tnn.ELU(),
                           tnn.Linear(100, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01), tnn.CrossEntropyLoss()


def _fit_seconds(model, x, y, batch_size, epochs, warmup_batches):
    """Seconds per epoch of ``model.fit`` (fastbn or Keras), after a warm-up fit on
    ``warmup_batches`` batches."""
    n = batch_size * warmup_batches
    model.fit(x[:n], y[:n], batch_size=batch_size, verbose=0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        times.append(time.perf_counter() - t0)
    return times


def _torch_seconds(model_opt_loss, xt, yt, samples, batch_size, epochs, warmup_batches,
                   channels_last=False):
    """Seconds per epoch of a standard PyTorch eager loop (shuffled batches, the loss
    and accuracy summed as ``fit``'s logs are), after a warm-up of
    ``warmup_batches`` batches."""
    import torch

    model, opt, loss_fn = model_opt_loss

    def epoch(n):
        model.train()
        perm = torch.randperm(n)
        total, correct = 0.0, 0
        for lo in range(0, n, batch_size):
            idx = perm[lo:lo + batch_size]
            xb, yb = xt[idx], yt[idx]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)           # what fit's logs cost fastbn too
            correct += int((out.argmax(1) == yb).sum())
        return total, correct

    epoch(min(samples, batch_size * warmup_batches))
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        epoch(samples)
        times.append(time.perf_counter() - t0)
    return times


def run_fastbn(samples, batch_size, epochs):
    """Seconds per epoch of fastbn's ``fit`` on the bn-before model (after 20 warm-up batches).

    Parameters
    ----------
    samples, batch_size, epochs : int

    Returns
    -------
    list of float

    Examples
    --------
    >>> from fastbn.examples.train_speed import run_fastbn
    >>> seconds = run_fastbn(samples=256, batch_size=32, epochs=2)
    >>> len(seconds), all(t > 0 for t in seconds)
    (2, True)
    """
    x, y = _data(samples)
    return _fit_seconds(fastbn_model(), x, y, batch_size, epochs, warmup_batches=20)


def run_torch(samples, batch_size, epochs):
    """The same model and loop in plain PyTorch; seconds per epoch.

    Parameters
    ----------
    samples, batch_size, epochs : int

    Returns
    -------
    list of float

    Examples
    --------
    >>> import pytest
    >>> _ = pytest.importorskip("torch")
    >>> from fastbn.examples.train_speed import run_torch
    >>> len(run_torch(samples=640, batch_size=32, epochs=2))
    2
    """
    import torch

    x, y = _data(samples)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return _torch_seconds(torch_model(), xt, yt, samples, batch_size, epochs, warmup_batches=20)

# ------------------------------------------------------------------ the CNN
def _images(samples, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((samples, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, samples)


def _fastbn_cnn():
    from fastbn import nn
    from fastbn.examples.cnn import build_model

    nn.clear_session()
    nn.set_random_seed(0)
    model = build_model()
    model.compile(loss=nn.losses.sparse_categorical_crossentropy,
                  optimizer=nn.optimizers.Adam(), metrics=["accuracy"])
    return model


def run_fastbn_cnn(samples, batch_size, epochs):
    """Seconds per epoch of fastbn's ``fit`` on the article's CNN (after a warm-up).

    Parameters
    ----------
    samples, batch_size, epochs : int

    Returns
    -------
    list of float

    Examples
    --------
    >>> from fastbn.examples.train_speed import run_fastbn_cnn
    >>> len(run_fastbn_cnn(samples=64, batch_size=32, epochs=1))
    1
    """
    x, y = _images(samples)
    return _fit_seconds(_fastbn_cnn(), x, y, batch_size, epochs, warmup_batches=2)


def torch_cnn_model(channels_last=False):
    """The article's CNN in plain PyTorch (seed 0): ``(model, optimizer, loss_fn)``.

    Keras' batch-norm momentum 0.99 and epsilon 1e-3, Adam with Keras'
    epsilon 1e-7; ``channels_last`` puts the model in that memory format.

    Parameters
    ----------
    channels_last : bool, default False

    Returns
    -------
    tuple

    Examples
    --------
    >>> import pytest
    >>> _ = pytest.importorskip("torch")
    >>> from fastbn.examples.train_speed import torch_cnn_model
    >>> model, opt, loss_fn = torch_cnn_model()
    >>> sum(p.numel() for p in model.parameters())       # 433,034 - 2 * 448 moving stats
    432138
    """
    import torch
    from torch import nn as tnn

    torch.manual_seed(0)

    def bn2(n):
        return tnn.BatchNorm2d(n, eps=1e-3, momentum=0.01)

    model = tnn.Sequential(
        tnn.Conv2d(1, 32, 3), tnn.ReLU(), bn2(32), tnn.MaxPool2d(2), bn2(32),
        tnn.Conv2d(32, 64, 3), tnn.ReLU(), bn2(64), tnn.MaxPool2d(2), bn2(64),
        tnn.Flatten(), tnn.Linear(1600, 256), tnn.ReLU(),
        tnn.BatchNorm1d(256, eps=1e-3, momentum=0.01), tnn.Linear(256, 10))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    return model, opt, tnn.CrossEntropyLoss()


def run_torch_cnn(samples, batch_size, epochs, channels_last=False):
    """The article's CNN in PyTorch eager, a standard loop; seconds per epoch.

    Parameters
    ----------
    samples, batch_size, epochs : int
    channels_last : bool, default False

    Returns
    -------
    list of float

    Examples
    --------
    >>> import pytest
    >>> _ = pytest.importorskip("torch")
    >>> from fastbn.examples.train_speed import run_torch_cnn
    >>> len(run_torch_cnn(samples=64, batch_size=32, epochs=1, channels_last=True))
    1
    """
    import torch

    x, y = _images(samples)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y)
    return _torch_seconds(torch_cnn_model(channels_last), xt, yt, samples, batch_size,
                          epochs, warmup_batches=2, channels_last=channels_last)


def run_keras_cnn(samples, batch_size, epochs):
    """The article's program in Keras 3 (the backend of ``$KERAS_BACKEND``, jax
    here); seconds per epoch of ``fit``, after a warm-up fit that compiles.

    Parameters
    ----------
    samples, batch_size, epochs : int

    Returns
    -------
    list of float

    Examples
    --------
    >>> from fastbn.examples.train_speed import run_keras_cnn
    >>> len(run_keras_cnn(samples=64, batch_size=32, epochs=1))  # doctest: +SKIP
    1
    """
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        L.Conv2D(32, kernel_size=(3, 3), activation="relu"), L.BatchNormalization(),
        L.MaxPooling2D(pool_size=(2, 2)), L.BatchNormalization(),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu"), L.BatchNormalization(),
        L.MaxPooling2D(pool_size=(2, 2)), L.BatchNormalization(),
        L.Flatten(), L.Dense(256, activation="relu"), L.BatchNormalization(),
        L.Dense(10, activation="softmax")])
    model.compile(loss=keras.losses.sparse_categorical_crossentropy,
                  optimizer=keras.optimizers.Adam(), metrics=["accuracy"])
    x, y = _images(samples)
    return _fit_seconds(model, x, y, batch_size, epochs, warmup_batches=2)


#: Which op classes each part of :func:`cnn_profile`'s split times.
_PARTS = {"convolution": ("conv.Conv2D",), "pooling": ("conv.MaxPool2D",),
          "batch norm": ("normalization.BatchNorm",)}


def cnn_profile(samples, batch_size):
    """Where one epoch of fastbn's ``fit`` on the article's CNN goes: seconds in the
    convolutions, pooling and batch norm (forward and backward of their ops) and
    in the rest (ReLU, Dense, the loss, Adam, batching), after a warm-up.

    Parameters
    ----------
    samples, batch_size : int

    Returns
    -------
    dict
        ``{"epoch": s, "convolution": s, "pooling": s, "batch norm": s, "rest": s}``.

    Examples
    --------
    >>> from fastbn.examples.train_speed import cnn_profile
    >>> split = cnn_profile(samples=64, batch_size=32)
    >>> sorted(split)
    ['batch norm', 'convolution', 'epoch', 'pooling', 'rest']
    """
    from fastbn import autograd as ag

    spent = dict.fromkeys(_PARTS, 0.0)
    saved = []

    def timed(fn, part):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - t0
        return staticmethod(run)

    for part, names in _PARTS.items():
        for name in names:
            family, op = name.split(".")
            cls = getattr(getattr(ag.ops, family), op)
            saved.append((cls, cls.__dict__.get("forward"), cls.__dict__.get("backward")))
            cls.forward = timed(cls.forward, part)
            cls.backward = timed(cls.backward, part)
    try:
        x, y = _images(samples)
        model = _fastbn_cnn()
        model.fit(x[:batch_size * 2], y[:batch_size * 2], batch_size=batch_size, verbose=0)
        for part in spent:
            spent[part] = 0.0
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        epoch = time.perf_counter() - t0
    finally:
        for cls, fwd, bwd in saved:
            cls.forward, cls.backward = fwd, bwd
    return {"epoch": epoch, **spent, "rest": epoch - sum(spent.values())}


def _worker(peer, samples, batch_size, epochs, threads):
    if peer.startswith("torch"):
        import torch
        torch.set_num_threads(threads)
        if peer == "torch":
            return run_torch(samples, batch_size, epochs)
        return run_torch_cnn(samples, batch_size, epochs, channels_last=peer == "torch-cnn-cl")
    if peer == "keras-cnn":
        return run_keras_cnn(samples, batch_size, epochs)
    if peer == "profile-cnn":
        return cnn_profile(samples, batch_size)
    if peer == "fastbn-cnn":
        return run_fastbn_cnn(samples, batch_size, epochs)
    return run_fastbn(samples, batch_size, epochs)


def _spawn(peer, samples, batch_size, epochs, threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    cmd = [sys.executable, "-m", "fastbn.examples.train_speed", "--_worker", peer,
           "--samples", str(samples), "--batch-sizes", str(batch_size),
           "--rounds", str(epochs), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{peer} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _have_torch():
    return _have("torch")


def _have(*modules):
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _parser():
    p = argparse.ArgumentParser(prog="python -m fastbn.examples.train_speed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="the main job's MLP or the article's CNN (default %(default)s)")
    p.add_argument("--samples", type=int, default=None, help="samples per epoch "
                   "(default 50000, the notebook's epoch; 48000 for the CNN)")
    p.add_argument("--batch-sizes", default=None, help="default 32,128; 250 for the CNN")
    p.add_argument("--profile", action="store_true",
                   help="with --model cnn: also split fastbn's epoch by op kind")
    p.add_argument("--no-keras", action="store_true")
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per peer, "
                   "alternating peers (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="default %(default)s")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default="runs/train_speed")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    """Run the comparison and print the table; returns the results dict.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict

    Examples
    --------
    Each peer runs in a fresh process, so even a small run takes a while:

    >>> from fastbn.examples import train_speed
    >>> train_speed.main(["--batch-sizes", "32", "--samples", "2048",
    ...                   "--rounds", "1", "--out", "/tmp/ts"])  # doctest: +SKIP
    """
    args = _parser().parse_args(argv)
    cnn = args.model == "cnn"
    if args.samples is None:
        args.samples = 48_000 if cnn else 50_000
    batch_sizes = [int(b) for b in (args.batch_sizes or ("250" if cnn else "32,128")).split(",")]
    if args._worker:
        times = _worker(args._worker, args.samples, batch_sizes[0], args.rounds, args.threads)
        print(json.dumps(times))
        return times
    if cnn:
        return _main_cnn(args, batch_sizes, argv)
    peers = ["fastbn"] + ([] if args.no_torch or not _have_torch() else ["torch"])
    rows = []
    for bs in batch_sizes:
        times = {p: [] for p in peers}
        for _ in range(args.rounds):                 # alternate: noise hits both
            for p in peers:
                times[p] += _spawn(p, args.samples, bs, 1, args.threads)
        row = {"batch_size": bs, "steps": steps_per_epoch(args.samples, bs)}
        for p in peers:
            med = statistics.median(times[p])
            row[p] = {"seconds": times[p], "samples_per_s": args.samples / med,
                      "ms_per_step": 1e3 * med / row["steps"]}
        if "torch" in row:
            row["speedup_vs_torch"] = row["fastbn"]["samples_per_s"] / \
                row["torch"]["samples_per_s"]
        rows.append(row)
        line = f"batch {bs:4d}: fastbn {row['fastbn']['samples_per_s']:9,.0f} samples/s " \
               f"({row['fastbn']['ms_per_step']:.3f} ms/step)"
        if "torch" in row:
            line += f"   torch {row['torch']['samples_per_s']:9,.0f} samples/s " \
                    f"({row['torch']['ms_per_step']:.3f} ms/step)   " \
                    f"fastbn/torch {row['speedup_vs_torch']:.2f}x"
        print(line, flush=True)
    import numba

    versions = {"numpy": np.__version__, "numba": numba.__version__,
                "python": platform.python_version()}
    if "torch" in peers:
        import torch
        versions["torch"] = torch.__version__
    import fastbn
    versions["fastbn"] = fastbn.__version__
    result = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "threads": args.threads,
              "samples": args.samples, "rounds": args.rounds, "model": "bn-before",
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count()},
              "versions": versions, "rows": rows,
              "command": "python -m fastbn.examples.train_speed " + " ".join(argv or sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'train_speed.json'}")
    return result


def _main_cnn(args, batch_sizes, argv):
    peers = {"fastbn": "fastbn-cnn"}
    if not args.no_torch and _have_torch():
        peers.update({"torch NCHW": "torch-cnn", "torch channels_last": "torch-cnn-cl"})
    if not args.no_keras and _have("keras", "jax"):
        peers["keras (jax)"] = "keras-cnn"
    rows = []
    for bs in batch_sizes:
        times = {p: [] for p in peers}
        for _ in range(args.rounds):                 # alternate: noise hits every peer
            for p, worker in peers.items():
                times[p] += _spawn(worker, args.samples, bs, 1, args.threads)
        row = {"batch_size": bs, "steps": steps_per_epoch(args.samples, bs)}
        for p in peers:
            med = statistics.median(times[p])
            row[p] = {"seconds": times[p], "median_s": med,
                      "samples_per_s": args.samples / med}
        line = f"batch {bs}, {args.samples} samples, epoch seconds (median of " \
               f"{args.rounds}): " + "   ".join(f"{p} {row[p]['median_s']:.2f}" for p in peers)
        for p in peers:
            if p != "fastbn":
                row[f"fastbn_vs_{p}"] = row[p]["median_s"] / row["fastbn"]["median_s"]
        if args.profile:
            row["profile"] = _spawn("profile-cnn", args.samples, bs, 1, args.threads)
            prof = row["profile"]
            line += "\nfastbn epoch split: " + ", ".join(
                f"{k} {v:.2f} s ({v / prof['epoch']:.0%})" for k, v in prof.items()
                if k != "epoch") + f" of {prof['epoch']:.2f} s"
        rows.append(row)
        print(line, flush=True)
    import numba

    import fastbn
    versions = {"numpy": np.__version__, "numba": numba.__version__,
                "python": platform.python_version(), "fastbn": fastbn.__version__}
    if "torch NCHW" in peers:
        import torch
        versions["torch"] = torch.__version__
    result = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "threads": args.threads,
              "samples": args.samples, "rounds": args.rounds, "model": "article-cnn",
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count()},
              "versions": versions, "rows": rows,
              "command": "python -m fastbn.examples.train_speed " + " ".join(argv or sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed_cnn.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'train_speed_cnn.json'}")
    return result


if __name__ == "__main__":
    main()
