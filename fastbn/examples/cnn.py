"""``fastbn-cnn``: the Keras batch-normalization article's CNN, trained with its settings.

The model (:func:`build_model`)::

    Conv2D(32, 3x3, relu) -> BN -> MaxPooling2D(2x2) -> BN
    -> Conv2D(64, 3x3, relu) -> BN -> MaxPooling2D(2x2) -> BN
    -> Flatten -> Dense(256, relu) -> BN -> Dense(10, softmax)

433,034 parameters, as Keras counts them; channels-last, so each batch norm
after a convolution normalises per channel over batch, rows and columns on
the kernels' rows path, reading the convolution's output in place. Trained
as in the article: Adam (Keras' defaults), batch 250, ``validation_split=0.2``
(the last 20 % of the training images), 25 epochs, the sparse categorical
cross-entropy; ``--epochs`` changes the count.

Data (``--dataset``): ``kmnist``, the article's Kuzushiji-MNIST
(:mod:`fastbn.datasets.kmnist`), or ``mnist`` (the default, because KMNIST
cannot be fetched on every machine; same shapes). Pixels are scaled to
[0, 1] and given a channels axis, ``(N, 28, 28, 1)``.

Outputs in ``--out`` (default ``runs/cnn``), each written to a temporary file
and renamed: ``metrics.json`` (settings, per-epoch history with seconds and
samples/s, test loss and accuracy, versions), ``learning_curve.png`` (loss
and accuracy per epoch) and ``weights.npz`` (``model.save_weights``);
``metrics.json`` comes last and records the size and sha256 of the other two.

Checkpoints. After every epoch ``checkpoint.npz`` is replaced atomically: the
weights (batch-norm statistics included), Adam's moments and step count,
the epochs done, the history and the state of the random generator that
shuffles the batches. ``--resume`` continues from it: the run that follows
is the one that was interrupted, number for number (the timings aside), and
``--resume --epochs 30`` extends a finished run. Without ``--resume`` a job
refuses an ``--out`` that holds another run's checkpoint or results, unless
``--overwrite`` is given. The settings that decide the
numbers (dataset, batch size, seed, split, ``--limit``) must be the ones the
checkpoint was made with.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ._job import (CHECKPOINT, OVERWRITE_HELP, Checkpoint, EpochLog, Progress, check_resume,
                   interrupted, plural, resume, seed, set_threads, usable_cpus, versions,
                   write_outputs)

__all__ = ["build_model", "main"]

#: Settings a resumed run must share with its checkpoint.
_SAME_ON_RESUME = ("dataset", "data", "batch_size", "validation_split", "seed", "limit")


def build_model():
    """The article's CNN as an uncompiled ``fastbn.nn.Sequential``, built for 28x28x1.

    Returns
    -------
    fastbn.nn.Sequential

    Examples
    --------
    >>> from fastbn.examples.cnn import build_model
    >>> build_model().count_params()             # Keras: 433,034
    433034
    """
    from fastbn import nn

    return nn.Sequential([
        nn.Conv2D(32, kernel_size=(3, 3), activation="relu", input_shape=(28, 28, 1)),
        nn.BatchNormalization(),
        nn.MaxPooling2D(pool_size=(2, 2)),
        nn.BatchNormalization(),
        nn.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        nn.BatchNormalization(),
        nn.MaxPooling2D(pool_size=(2, 2)),
        nn.BatchNormalization(),
        nn.Flatten(),
        nn.Dense(256, activation="relu"),
        nn.BatchNormalization(),
        nn.Dense(10, activation="softmax"),
    ])


def _parser():
    p = argparse.ArgumentParser(
        prog="fastbn-cnn",
        description="Train the Keras batch-normalization article's CNN with fastbn (Adam, "
                    "batch 250, validation_split 0.2); writes metrics.json, "
                    "learning_curve.png, weights.npz and a per-epoch checkpoint to --out.")
    p.add_argument("--dataset", choices=("mnist", "kmnist"), default="mnist",
                   help="MNIST, or the article's Kuzushiji-MNIST (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None,
                   help="with --dataset mnist: the MNIST file to read (never changed)")
    p.add_argument("--epochs", type=int, default=25,
                   help="passes over the training images (default: %(default)s, the article's)")
    p.add_argument("--batch-size", type=int, default=250,
                   help="images per training step (default: %(default)s)")
    p.add_argument("--validation-split", type=float, default=0.2,
                   help="fraction of the training images (the last ones) held out for "
                        "validation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of the initial weights and the shuffling (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="Numba and BLAS threads (default: as configured)")
    p.add_argument("--out", type=Path, default=Path("runs/cnn"),
                   help="output directory (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help=f"continue from --out/{CHECKPOINT}, written after every epoch")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N training and test images (smoke tests)")
    p.add_argument("--no-plot", action="store_true", help="skip the learning-curve PNG")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar or per-epoch lines; print only the result")
    return p


def _check_args(p, args):
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= args.validation_split < 1.0:
        p.error("--validation-split must be in [0, 1)")
    if args.seed < 0:
        p.error("--seed must be a non-negative integer, e.g. --seed 42")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if args.threads is not None and not 1 <= args.threads <= usable_cpus():
        p.error(f"--threads must be between 1 and the {usable_cpus()} CPUs this "
                f"process may run on")
    if args.data is not None:
        if args.dataset != "mnist":
            p.error("--data names an MNIST file; it goes with --dataset mnist")
        args.data = args.data.expanduser().absolute()
        if args.data.is_dir():
            p.error(f"--data {args.data} is a directory; name the MNIST file (mnist.npz)")
    check_resume(p, args)


def _load(args):
    if args.dataset == "kmnist":
        from fastbn.datasets import kmnist as source
        (x, y), (x_test, y_test) = source.load_data()
    else:
        from fastbn.datasets import mnist as source
        try:
            (x, y), (x_test, y_test) = (source.load_data(args.data) if args.data
                                        else source.load_data())
        except ValueError as e:            # a --data file that is not MNIST
            raise SystemExit(f"fastbn-cnn: error: --data: {e}") from None
    if args.limit:
        x, y, x_test, y_test = x[:args.limit], y[:args.limit], x_test[:args.limit], \
            y_test[:args.limit]
    # the article's scaling, and the channels axis Conv2D expects
    x = (x / 255.0).astype(np.float32)[..., None]
    x_test = (x_test / 255.0).astype(np.float32)[..., None]
    return (x, y), (x_test, y_test)


# ------------------------------------------------------------------------- job
def run(args, progress=None):
    """Train (or resume), evaluate and write the outputs; returns the metrics.

    ``progress`` (a :class:`fastbn.examples._job.Progress`) is told what was
    written, for the line a Ctrl-C ends :func:`main` with."""
    import numba

    numba_threads = numba.get_num_threads()
    threads, limits = set_threads(args.threads)
    try:
        return _run(args, threads, progress or Progress())
    finally:
        numba.set_num_threads(numba_threads)
        if limits is not None:
            limits.restore_original_limits()


def _run(args, threads, progress):
    from fastbn import nn

    (x, y), (x_test, y_test) = _load(args)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    seed(nn, args.seed)
    model = build_model()
    model.compile(loss=nn.losses.sparse_categorical_crossentropy,
                  optimizer=nn.optimizers.Adam(), metrics=["accuracy"])
    out = args.out
    history, rows, start = {}, [], 0
    if args.resume:
        history, rows, start = resume("fastbn-cnn", out / CHECKPOINT, model, settings,
                                      _SAME_ON_RESUME, "--epochs, --threads and output options")
        progress.checkpoint = out / CHECKPOINT
    verbose = 0 if args.quiet else 1
    n_train = int(len(x) * (1.0 - args.validation_split))
    if verbose:
        resumed = f"; resuming after epoch {start}" if start else ""
        print(f"fastbn-cnn: the article's CNN, {model.count_params():,} parameters; Adam, "
              f"batch {args.batch_size}, {plural(args.epochs, 'epoch')}; {args.dataset}: "
              f"{n_train} training / {len(x) - n_train} validation / {len(x_test)} test "
              f"images; seed {args.seed}; threads {threads['numba']}{resumed}")
    log = EpochLog(n_train, args.epochs, verbose)
    log.rows = rows
    checkpoint = Checkpoint(out / CHECKPOINT, log, history, settings, progress)
    if start < args.epochs:
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, initial_epoch=start,
                  verbose=verbose, validation_split=args.validation_split,
                  callbacks=[log, checkpoint])
    test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=args.batch_size,
                                         verbose=0)
    train_seconds = sum(r["seconds"] for r in log.rows)
    metrics = {
        "settings": settings,
        "threads": threads,
        "data": {"train": n_train, "validation": len(x) - n_train, "test": len(x_test)},
        "params": model.count_params(),
        "history": history,
        "epochs": log.rows,
        "test_loss": float(test_loss),
        "test_accuracy": float(test_acc),
        "train_seconds": train_seconds,
        "samples_per_s": n_train * len(log.rows) / train_seconds if train_seconds else None,
        "versions": versions(),
    }
    figure = None if args.no_plot or not history else (
        history, f"fastbn-cnn: the article's CNN on {args.dataset}, Adam, batch "
                 f"{args.batch_size}; test accuracy {test_acc:.2%}")
    write_outputs(out, model, metrics, figure, progress)
    print(f"test accuracy {test_acc:.4f} (loss {test_loss:.4f}) after "
          f"{plural(len(log.rows), 'epoch')}; wrote {out}/")
    return metrics


def main(argv=None):
    """Entry point of ``fastbn-cnn``; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 130 after a Ctrl-C.

    Examples
    --------
    >>> from fastbn.examples.cnn import main
    >>> main(["--help"])  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    p = _parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    t0 = time.perf_counter()
    progress = Progress()
    try:
        run(args, progress)
    except KeyboardInterrupt:            # one line saying what was kept, not a traceback
        return interrupted("fastbn-cnn", args.out, progress)
    if not args.quiet:
        print(f"fastbn-cnn: {time.perf_counter() - t0:.0f} s in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
