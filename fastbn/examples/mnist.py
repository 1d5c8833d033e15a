"""``fastbn-mnist``: train a batch-norm MLP on MNIST, Keras-style.

Run ``fastbn-mnist`` (or ``python -m fastbn.examples.mnist``) with no flags to
train the default model for 10 epochs with SGD at batch 32, holding out the
first 5000 training images for validation exactly as the Keras notebooks do.
It shows ``fit``'s progress bar, prints loss, accuracy, validation accuracy and
samples/s per epoch and the final test accuracy, and writes to ``--out``
(default ``runs/mnist``; one that holds another run's results is refused
unless ``--overwrite`` is given):

``metrics.json``
    settings, per-epoch history (loss, accuracy, val_loss, val_accuracy,
    seconds, samples/s), test loss and accuracy, library versions.
``learning_curve.png``
    loss and accuracy per epoch, training and validation.
``weights.npz``
    ``model.save_weights`` (load with ``model.load_weights``).

Each file is written to a temporary name and renamed into place, so a run
that fails or is killed leaves the previous run's files whole; ``metrics.json``
comes last and records the size and sha256 of the other two, so a set that a
kill left mixed is told from a complete one. After every epoch
``checkpoint.npz`` is replaced (and removed once the finished run's weights are
written); ``--resume`` continues an interrupted run from it, number for number.

Models (``--model``), all ``Flatten -> ... -> Dense(10, softmax)``; hidden
layers 300 and 100 units, ``--activation`` (ELU) and ``--init``
(``glorot_uniform``, Keras' default) for the first three:

``plain``      Dense -> activation, no batch norm.
``bn-after``   BN on the inputs; Dense -> activation -> BN.
``bn-before``  BN on the inputs; Dense (no bias) -> BN -> activation: the
               placement of the Ioffe & Szegedy paper and of the notebook's
               second model (Keras there: 96.98% at SGD 0.01).
``textbook``   exactly the Keras notebook's model: BN, Dense(300, elu,
               he_normal), BN, Dense(100, elu, he_normal), BN, Dense(10).

Why the defaults (``--model bn-after --lr 1.0 --schedule cosine``): batch
norm re-centres and re-scales every layer's input whatever the scale of the
weights before it, so a large step cannot blow up the activations downstream,
and the learning rate can be 100 times Keras' SGD default of 0.01. Measured
with a PyTorch replica of these models (Keras' batch-norm momentum 0.99 and
epsilon 1e-3, Glorot init, SGD, batch 32, 10 epochs, seeds 0-2): ``plain``
diverges already at 0.5 (loss 2e6, 10% accuracy) while ``bn-after`` reaches
98.24-98.40% test accuracy at 1.0 (98.13% at 0.5). A constant rate ends
at 97.6-98.0% whatever the model (0.1-0.5, with or without dropout), its test
accuracy swinging by up to a point from epoch to epoch: large early steps need
small late ones, so the default anneals the rate by a half cosine per epoch.
A ``--lr`` you give is held constant (Keras' SGD) unless you add ``--schedule
cosine``: ``--model bn-before --lr 0.01`` is the notebook's configuration
(Keras: 96.98%; the replica: 96.78%).

The same ``--seed`` gives the same numbers run after run (the timings aside).

``mpiexec -n 2 fastbn-mnist --distributed`` trains data-parallel
(:class:`fastbn.distributed.DataParallel`): ``--batch-size`` is the global
batch, split across the ranks, and batch norm is synchronized, so the run
follows the single-process one with the same seed (up to rounding); only rank
0 prints and writes ``--out``. Without ``--threads`` each rank takes its share
of the machine's cores. Several ranks started without ``--distributed`` each
train alone; rank 0 warns so.
"""
import argparse
import functools
import math
import os
import sys
from pathlib import Path

import numpy as np

from ._job import RUN_FILES  # noqa: F401 - still fastbn.examples.mnist.RUN_FILES
from ._job import (CHECKPOINT, OVERWRITE_HELP, Checkpoint, EpochLog, Progress, check_resume,
                   interrupted, plural, resume, seed, set_threads, usable_cpus, versions,
                   write_outputs)

__all__ = ["build_model", "epoch_learning_rate", "main"]

MODELS = ("bn-before", "bn-after", "plain", "textbook")
DEFAULT_MODEL = "bn-after"
DEFAULT_LR = 1.0
#: Keras' Adam default; Adam scales its own steps, so no 100x here.
ADAM_LR = 1e-3
#: Validation hold-out: the first 5000 training images, as in the notebook.
N_VALID = 5000
#: Settings a resumed run must share with its checkpoint (and ``epochs`` under the
#: cosine schedule, whose rate each epoch depends on the count).
_SAME_ON_RESUME = ("model", "optimizer", "lr", "schedule", "activation", "init", "batch_size",
                   "seed", "limit", "data")


def build_model(name=DEFAULT_MODEL, activation="elu", kernel_initializer="glorot_uniform",
                synchronized=False):
    """One of the job's MLPs, as an uncompiled ``fastbn.nn.Sequential``.

    Parameters
    ----------
    name : {"bn-before", "bn-after", "plain", "textbook"}
        The architecture (see the module docstring).
    activation : str, default "elu"
        Hidden activation of ``plain``, ``bn-after`` and ``bn-before``.
    kernel_initializer : str, default "glorot_uniform"
        Hidden-layer initializer of ``plain``, ``bn-after`` and ``bn-before``
        (``textbook`` always uses ``he_normal``, as the notebook does).
    synchronized : bool, default False
        Batch norm over the global batch in data-parallel training
        (``BatchNormalization(synchronized=True)``).

    Returns
    -------
    fastbn.nn.Sequential

    Examples
    --------
    >>> from fastbn.examples.mnist import build_model
    >>> build_model("textbook").count_params()   # Keras: 271,346
    271346
    >>> build_model("bn-before").count_params()  # no Dense bias before a BN
    270946
    >>> build_model("plain").count_params()
    266610
    """
    from fastbn import nn

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    bn = functools.partial(nn.BatchNormalization, synchronized=synchronized)
    layers = [nn.Flatten(input_shape=[28, 28])]
    if name == "textbook":
        layers += [bn(),
                   nn.Dense(300, activation="elu", kernel_initializer="he_normal"),
                   bn(),
                   nn.Dense(100, activation="elu", kernel_initializer="he_normal"),
                   bn()]
    else:
        if name != "plain":
            layers.append(bn())
        for units in (300, 100):
            if name == "plain":
                layers.append(nn.Dense(units, activation=activation,
                                       kernel_initializer=kernel_initializer))
            elif name == "bn-after":
                layers += [nn.Dense(units, activation=activation,
                                    kernel_initializer=kernel_initializer),
                           bn()]
            else:  # BN's beta does the bias's job, so the Dense has none
                layers += [nn.Dense(units, use_bias=False,
                                    kernel_initializer=kernel_initializer),
                           bn(), nn.Activation(activation)]
    layers.append(nn.Dense(10, activation="softmax"))
    return nn.Sequential(layers)


# ------------------------------------------------------------------ arguments
def _parser():
    p = argparse.ArgumentParser(
        prog="fastbn-mnist",
        description="Train a batch-norm MLP on MNIST with fastbn (Keras-shaped API); "
                    "writes metrics.json, learning_curve.png and weights.npz to --out.")
    p.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL,
                   help="BN after or before the activation, no BN, or the notebook's "
                        "model (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10,
                   help="passes over the training images (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per training step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default: {DEFAULT_LR} for sgd, annealed -- batch "
                        f"norm allows 100x Keras' 0.01 --, {ADAM_LR} for adam)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default=None,
                   help="per-epoch learning rate: held, as in Keras, or annealed to ~0 "
                        "by a half cosine (default: cosine with the default --lr, "
                        "constant when you give --lr)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="plain SGD (Keras' SGD, no momentum) or Adam (default: %(default)s)")
    p.add_argument("--activation", default="elu",
                   help="hidden activation, not for textbook (default: %(default)s)")
    p.add_argument("--init", default="glorot_uniform",
                   help="hidden kernel initializer, not for textbook (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of the initial weights, the shuffling and dropout: same "
                        "seed, same numbers (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="Numba and BLAS threads (default: as configured)")
    p.add_argument("--out", type=Path, default=Path("runs/mnist"),
                   help="output directory (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help=f"continue the interrupted run from --out/{CHECKPOINT}, written after "
                        f"every epoch and removed when the run completes")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N training, validation and test images "
                        "(smoke tests)")
    p.add_argument("--data", type=Path, default=None,
                   help="MNIST file to read, relative to the working directory; it is "
                        "never changed, and MNIST is fetched into it if it does not exist "
                        "(default: mnist.npz in fastbn's data directory, $FASTBN_DATA)")
    p.add_argument("--no-plot", action="store_true", help="skip the learning-curve PNG")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar or per-epoch lines; print only the result")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the MPI ranks (mpiexec -n N fastbn-mnist "
                        "--distributed): --batch-size is the global batch, batch norm is "
                        "synchronized, rank 0 prints and writes (needs fastbn[mpi])")
    return p


def _check_args(p, args):
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        p.error("--lr must be a positive number")
    # the default recipe is a large rate annealed; a rate the user picks is
    # held constant unless asked otherwise, so `--lr 0.01` trains as Keras does
    if args.schedule is None:
        args.schedule = "cosine" if args.lr is None else "constant"
    if args.lr is None:
        args.lr = DEFAULT_LR if args.optimizer == "sgd" else ADAM_LR
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    usable = usable_cpus()
    if args.threads is not None and args.threads > usable:  # as fastbn.bench refuses them
        p.error(f"--threads {args.threads} asks for more threads than the {usable} CPUs this "
                f"process may run on; give at most {usable}")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if args.seed < 0:
        p.error("--seed must be a non-negative integer, e.g. --seed 42")
    from fastbn.nn import activations, initializers

    for flag, get, value in (("--activation", activations.get, args.activation),
                             ("--init", initializers.get, args.init)):
        try:
            get(value)
        except ValueError as e:
            p.error(f"{flag}: {e}")
    if args.data is not None:
        # a path on the command line is relative to the working directory, as
        # every other tool reads it (load_data would take it as a cache name)
        args.data = Path(os.path.abspath(args.data.expanduser()))
        if args.data.is_dir():
            p.error(f"--data {args.data} is a directory; name the MNIST file (mnist.npz) "
                    f"in it, or leave --data out to use fastbn's cache")
    if args.resume and args.distributed:
        p.error("--resume does not work with --distributed (a distributed run writes no "
                "checkpoint); start the run again with --overwrite")
    check_resume(p, args)


# ---------------------------------------------------------------------- parts
def epoch_learning_rate(lr, epoch, epochs, schedule="cosine"):
    r"""The learning rate of epoch ``epoch`` (0-based) of ``epochs``.

    ``"constant"`` holds ``lr``; ``"cosine"`` anneals it by a half cosine,
    from ``lr`` in the first epoch towards 0 (never reached) in the last:

    .. math:: \eta_e = \frac{\eta}{2}\left(1 + \cos\frac{\pi e}{E}\right)

    Parameters
    ----------
    lr : float
        The initial (or constant) learning rate.
    epoch, epochs : int
        The epoch, counted from 0, and how many there are.
    schedule : {"cosine", "constant"}

    Returns
    -------
    float

    Examples
    --------
    >>> from fastbn.examples.mnist import epoch_learning_rate
    >>> [round(epoch_learning_rate(0.5, e, 4), 4) for e in range(4)]
    [0.5, 0.4268, 0.25, 0.0732]
    >>> epoch_learning_rate(0.01, 3, 4, "constant")
    0.01
    """
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown schedule {schedule!r}; use 'cosine' or 'constant'")


def _load(args):
    from fastbn.datasets import mnist

    try:
        (x_full, y_full), (x_test, y_test) = (mnist.load_data(args.data) if args.data
                                              else mnist.load_data())
    except ValueError as e:  # a --data file that is not MNIST (it is left as it was)
        if args.data is None:
            raise
        raise SystemExit(f"fastbn-mnist: error: --data: {e}") from None
    # the notebook's scaling; float32 is what the layers compute in anyway
    x_full = (x_full / 255.0).astype(np.float32)
    x_test = (x_test / 255.0).astype(np.float32)
    x_valid, x_train = x_full[:N_VALID], x_full[N_VALID:]
    y_valid, y_train = y_full[:N_VALID], y_full[N_VALID:]
    if args.limit:
        n = args.limit
        x_train, y_train, x_valid, y_valid = x_train[:n], y_train[:n], x_valid[:n], y_valid[:n]
        x_test, y_test = x_test[:n], y_test[:n]
    return (x_train, y_train), (x_valid, y_valid), (x_test, y_test)


#: Environment variables in which MPI launchers give the number of processes
#: (MPICH/Hydra, Intel MPI and Slurm's PMI; Open MPI; MVAPICH2).
_MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_MPI_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def _mpi_ranks(environ=None):
    """(rank, size) of this process under an MPI launcher, or (0, 1).

    Read from the launcher's environment, or from mpi4py if something already
    imported it: importing mpi4py just to ask would initialise MPI.
    """
    env = os.environ if environ is None else environ
    for size_var, rank_var in zip(_MPI_SIZE_VARS, _MPI_RANK_VARS):
        try:
            size = int(env[size_var])
        except (KeyError, ValueError):
            continue
        try:
            rank = int(env.get(rank_var, 0))
        except ValueError:
            rank = 0
        return rank, size
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank(), mpi.COMM_WORLD.Get_size()
    return 0, 1


def _warn_undistributed(args):
    """Several ranks without --distributed each train alone and all write --out."""
    if args.distributed:
        return
    rank, size = _mpi_ranks()
    if size > 1 and rank == 0:
        print(f"fastbn-mnist: warning: {size} MPI processes are running without "
              f"--distributed, so each trains its own model on all the data and every "
              f"one writes {args.out}/ (the last to finish wins); add --distributed for "
              f"data-parallel training", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------- job
def run(args, progress=None):
    """Train, evaluate and write the outputs; returns the metrics dictionary.

    ``progress`` (a :class:`fastbn.examples._job.Progress`) is told what was
    written, for the line a Ctrl-C ends :func:`main` with."""
    from fastbn import nn

    dp = None
    if args.distributed:
        from fastbn.distributed import DataParallel
        dp = DataParallel()                 # an uncaught exception now aborts every rank
        if args.threads is None:
            args.threads = dp.threads_per_process()
    import numba

    numba_threads = numba.get_num_threads()
    threads, limits = set_threads(args.threads)
    try:
        return _run(args, nn, threads, dp, progress or Progress())
    finally:                                # leave an in-process caller's threads as they were
        numba.set_num_threads(numba_threads)
        if limits is not None:
            limits.restore_original_limits()


def _run(args, nn, threads, dp=None, progress=None):
    progress = progress or Progress()
    # rank 0 fetches and caches MNIST first; a --data file that exists is only
    # read, so every rank reads it at once (and each exits if it is not MNIST)
    fetch = dp is not None and not (args.data is not None and args.data.is_file())
    if fetch and not dp.is_root:
        dp.comm.Barrier()
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _load(args)
    if fetch and dp.is_root:
        dp.comm.Barrier()
    seed(nn, args.seed)
    model = build_model(args.model, args.activation, args.init, synchronized=dp is not None)
    root = dp is None or dp.is_root
    if dp is not None:
        dp.distribute(model)
    optimizer = (nn.SGD(learning_rate=args.lr) if args.optimizer == "sgd"
                 else nn.Adam(learning_rate=args.lr))
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer,
                  metrics=["accuracy"])
    verbose = 0 if args.quiet or not root else 1
    out = args.out
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    if verbose:
        ranks = f"; {dp.size} ranks" if dp is not None else ""
        print(f"fastbn-mnist: model {args.model}, {model.count_params():,} parameters; "
              f"{args.optimizer} lr {args.lr}, batch {args.batch_size}, "
              f"{plural(args.epochs, 'epoch')}; {len(x_train)} training / "
              f"{len(x_valid)} validation / {len(x_test)} test images; seed {args.seed}; threads {threads['numba']}{ranks}")

    log = EpochLog(len(x_train), args.epochs, verbose, args.batch_size)
    schedule = nn.callbacks.LearningRateScheduler(
        lambda epoch, lr: epoch_learning_rate(args.lr, epoch, args.epochs, args.schedule))
    callbacks = [schedule, log]
    seen = {}                              # the history so far, resumed runs' epochs included
    if dp is None:                         # a distributed run cannot resume, so writes none
        callbacks.append(Checkpoint(out / CHECKPOINT, log, seen, settings, progress))
    start = 0
    if args.resume:
        same = _SAME_ON_RESUME + (("epochs",) if args.schedule == "cosine" else ())
        may = ("" if args.schedule == "cosine" else "--epochs, ") + \
            "--threads and output options"
        seen, log.rows, start = resume("fastbn-mnist", out / CHECKPOINT, model, settings,
                                       same, may)
        callbacks[-1].history = seen
        progress.checkpoint = out / CHECKPOINT
    if start < args.epochs:
        h = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                      validation_data=(x_valid, y_valid), shuffle=True, verbose=verbose,
                      callbacks=callbacks, initial_epoch=start)
    history = {k: [float(v) for v in (seen if dp is None else h.history)[k]]
               for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    epochs = log.rows

    test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=args.batch_size,
                                         verbose=0)
    train_seconds = sum(r["seconds"] for r in epochs)
    metrics = {
        "settings": settings,
        "threads": threads,
        "data": {"train": len(x_train), "validation": len(x_valid), "test": len(x_test)},
        "params": model.count_params(),
        "history": history,
        "epochs": epochs,
        "test_loss": float(test_loss),
        "test_accuracy": float(test_acc),
        "train_seconds": train_seconds,
        # first steps (compilation) left out, as in each epoch's row
        "samples_per_s": len(x_train) * len(epochs) / sum(
            len(x_train) / r["samples_per_s"] for r in epochs),
        "versions": versions(),
        "ranks": 1 if dp is None else dp.size,
    }
    if not root:
        return metrics
    out.mkdir(parents=True, exist_ok=True)
    figure = None if args.no_plot else (
        history, f"fastbn-mnist: {args.model}, {args.optimizer} lr {args.lr:g} "
                 f"({args.schedule}), batch {args.batch_size}; test accuracy {test_acc:.2%}")
    write_outputs(out, model, metrics, figure, progress, drop_checkpoint=dp is None)
    print(f"test accuracy {test_acc:.4f} (loss {test_loss:.4f}); "
          f"{metrics['samples_per_s']:,.0f} samples/s over {plural(len(epochs), 'epoch')}; "
          f"wrote {out}/")
    return metrics


def main(argv=None):
    """Entry point of ``fastbn-mnist``; returns the exit status.

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
    >>> from fastbn.examples.mnist import main
    >>> main(["--help"])  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    p = _parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    _warn_undistributed(args)
    progress = Progress()
    try:
        run(args, progress)
    except KeyboardInterrupt:            # one line saying what was kept, not a traceback
        return interrupted("fastbn-mnist", args.out, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
