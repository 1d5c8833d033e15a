"""What the main jobs (``fastbn-mnist``, ``fastbn-cnn``) share.

The output directory's checks, atomic JSON, the per-epoch log callback, thread
and seed setup, the learning-curve plot, the versions recorded in
``metrics.json``, the checkpoint, the output set and the Ctrl-C line.
"""
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import zipfile

import numpy as np


def usable_cpus():
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS and Windows
        return os.cpu_count() or 1


#: The files a job leaves in ``--out``: finding one there means another run's results.
RUN_FILES = ("metrics.json", "weights.npz", "learning_curve.png", "checkpoint.npz")
#: ``--overwrite``'s help, the same in every job.
OVERWRITE_HELP = ("replace another run's results in --out; without it the job refuses to "
                  "start there")


def check_out(p, out, overwrite, resume=None):
    """Create ``--out`` and make sure a file can be written there, before any training.

    A directory holding another run's results (:data:`RUN_FILES`) is refused
    unless ``overwrite`` (or ``resume``, the flag that continues that run) is
    set: a smoke run into the default ``--out`` would otherwise replace a real
    run's results. ``resume`` is None for a job that cannot resume.
    """
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} is a file; name a directory (it is created if needed)")
    found = [n for n in RUN_FILES if (out / n).exists()] if out.is_dir() else []
    if found and not (overwrite or resume):
        cont = "--resume to continue it, " if resume is not None and "checkpoint.npz" in found \
            else ""
        p.error(f"--out {out} holds another run's results ({', '.join(found)}); give "
                f"{cont}--overwrite to replace them, or name another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        p.error(f"--out {out} cannot be written: {e.strerror or e}")


def set_threads(n):
    """Numba's and BLAS' thread counts; returns what was set, for metrics.json.

    One count for both: Dense is a BLAS matmul and batch norm a Numba kernel,
    and they run one after the other, so each may use every thread it is given
    without the two pools fighting over cores.
    """
    import numba

    limits = None
    if n is None:
        return {"numba": numba.get_num_threads(), "blas": None}, limits
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    blas = None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("fastbn-mnist: threadpoolctl is not installed, so --threads sets Numba's "
              "threads only (set OPENBLAS_NUM_THREADS/OMP_NUM_THREADS for BLAS)",
              file=sys.stderr)
    else:
        limits = threadpool_limits(limits=n, user_api="blas")
        blas = n
    return {"numba": numba.get_num_threads(), "blas": blas}, limits


def plural(n, word):
    """``"1 epoch"``, ``"2 epochs"``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def seed(nn, seed):
    """Seed everything the model draws from (initializers, shuffling, dropout) and
    restart layer names, so one seed gives the same model and the same file keys."""
    nn.clear_session()
    nn.set_random_seed(seed)


class EpochLog:
    """A Keras-style callback: per-epoch rows for metrics.json, the training steps
    timed apart from validation (so samples/s compares with the peers' step
    times), printed when verbose. samples/s leaves each epoch's first step out:
    in the first epoch it compiles the kernels (15-45 s on 2 cores), which
    would otherwise make epoch 1 read as 14 samples/s instead of ~10,000."""

    def __init__(self, n_train, n_epochs, verbose, batch_size=None):
        self.n_train, self.n_epochs, self.verbose = n_train, n_epochs, verbose
        self.batch_size = batch_size
        self.rows = []

    def set_model(self, model):
        self.model = model

    def on_epoch_begin(self, epoch, logs=None):
        self.lr = self.model.optimizer.learning_rate
        self.t0 = time.perf_counter()
        self.t_first = None

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.t_first = time.perf_counter()

    def on_test_begin(self, logs=None):
        now = time.perf_counter()
        self.seconds = now - self.t0
        first = self.batch_size or 0
        if self.t_first is not None and now > self.t_first and self.n_train > first > 0:
            self.rate = (self.n_train - first) / (now - self.t_first)
        else:
            self.rate = self.n_train / self.seconds

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
               "learning_rate": self.lr, "seconds": self.seconds,
               "samples_per_s": self.rate}
        self.rows.append(row)
        if self.verbose:        # fit's own line above has the metrics; add what it lacks
            print(f"epoch {epoch + 1}/{self.n_epochs}: learning rate {self.lr:.4g}, "
                  f"{row['samples_per_s']:,.0f} samples/s in the training steps "
                  f"({self.seconds:.1f} s)", flush=True)


def versions():
    import numba

    import fastbn
    return {"fastbn": fastbn.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "machine": platform.machine(), "cpus": os.cpu_count()}


def plot(history, path, title):
    """Loss and accuracy per epoch, training and validation, as a PNG."""
    import matplotlib.pyplot as plt

    from fastbn._files import atomic_write

    fig = curve(history, title)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def curve(history, title):
    import matplotlib
    matplotlib.use("Agg")  # no display needed, and no GUI toolkit imported
    import matplotlib.pyplot as plt

    from fastbn import _plotting

    n = len(history["loss"])
    epochs = range(1, n + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for split, prefix, marker in (("training", "", "o-"), ("validation", "val_", "s-")):
            ax.plot(epochs, history[prefix + key], marker, label=split,
                    color=_plotting.color(split))
        _plotting.style(ax)
        _plotting.epoch_axis(ax, n)
        ax.set_ylabel(key)
        values = history[key] + history["val_" + key]
        ax.set_ylim(*_plotting.limits(values, lo=0, hi=1 if key == "accuracy" else None))
    _plotting.legend_outside(axes[1])
    fig.suptitle(title)
    return fig


def atomic_json(obj, path):
    from fastbn._files import atomic_write

    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------- checkpoints
#: The checkpoint's file name in ``--out``.
CHECKPOINT = "checkpoint.npz"
#: What a checkpoint's ``state`` entry must hold.
_STATE_KEYS = ("epochs_done", "history", "rows", "settings", "optimizer_iterations", "rng")


def save_checkpoint(path, model, epochs_done, history, rows, settings):
    """Weights, optimizer state, epochs done, history and the shuffling generator's
    state, in one ``.npz`` replaced atomically."""
    from fastbn._files import atomic_write
    from fastbn.nn import utils

    opt = model.optimizer
    arrays = {f"var/{v.name}": v.value for v in model.variables}
    for i, v in enumerate(model.trainable_variables):
        entry = opt._state.get(id(v))
        for k, slot in enumerate(entry[1] if entry is not None and entry[0] is v else ()):
            arrays[f"slot/{i}/{k}"] = slot
    state = {"epochs_done": epochs_done, "history": history, "rows": rows,
             "settings": settings, "optimizer_iterations": opt.iterations,
             "rng": utils.get_rng().bit_generator.state}
    arrays["state"] = np.array(json.dumps(state))
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _checked(f, key, like):
    """Entry ``key`` of the open ``.npz`` ``f`` cast to ``like``'s dtype, after the
    checks ``Sequential.load_weights`` makes: present, real floating point, same
    shape, no finite value that the cast turns into inf."""
    if key not in f.files:
        raise ValueError(f"entry {key!r} is missing")
    a = f[key]
    if a.dtype.kind != "f":
        raise ValueError(f"entry {key!r} has dtype {a.dtype}, not real floating point")
    if a.shape != tuple(like.shape):
        raise ValueError(f"entry {key!r} has shape {a.shape}, the model's has "
                         f"{tuple(like.shape)}; the checkpoint comes from another model")
    with np.errstate(over="ignore"):
        cast = a.astype(like.dtype)
    overflow = np.isfinite(a) & ~np.isfinite(cast)
    if overflow.any():
        raise ValueError(f"entry {key!r} holds {a[overflow].flat[0]:.6g}, beyond the range "
                         f"of dtype {like.dtype} (largest {np.finfo(like.dtype).max:.6g}); "
                         f"it would load as inf")
    return cast


def read_checkpoint(path, model):
    """Read and check a :func:`save_checkpoint` file against the compiled ``model``.

    Returns ``(state, restore)``: the checkpoint's state dictionary and a
    function that puts the weights, the optimizer's slots and step count and
    the generator's state into ``model``. Nothing is changed before every entry
    has passed; a failed check raises ValueError naming the entry.
    """
    from fastbn.nn import utils

    opt = model.optimizer
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"not a checkpoint ({type(e).__name__}: {e})") from None
    with f:
        if not hasattr(f, "files"):
            raise ValueError("not a checkpoint (a single array, not an .npz)")
        if "state" not in f.files:
            raise ValueError("entry 'state' is missing")
        try:
            state = json.loads(str(f["state"]))
        except ValueError as e:
            raise ValueError(f"entry 'state' is not the checkpoint's JSON ({e})") from None
        missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(f"entry 'state' lacks {', '.join(missing)}")
        values = [(v, _checked(f, f"var/{v.name}", v.value)) for v in model.variables]
        extra = [k for k in f.files if k.startswith("var/")
                 and k[4:] not in {v.name for v in model.variables}]
        if extra:
            raise ValueError(f"entry {extra[0]!r} is not a variable of the model; the "
                             f"checkpoint comes from another model")
        slots = {}
        for i, v in enumerate(model.trainable_variables):
            got = []
            while f"slot/{i}/{len(got)}" in f.files:
                got.append(_checked(f, f"slot/{i}/{len(got)}", v.value).copy())
            if got:
                slots[i] = (v, got)
    if not isinstance(state["settings"], dict):
        raise ValueError("entry 'state' has settings that are not a mapping")
    it = state["optimizer_iterations"]
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise ValueError(f"entry 'state' has optimizer_iterations {it!r}, not a count")
    bg = utils.get_rng().bit_generator
    try:
        type(bg)().state = state["rng"]
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"entry 'state' has an rng state that {type(bg).__name__} "
                         f"refuses ({e})") from None

    def restore():
        for v, value in values:
            v.assign(value)
        for v, got in slots.values():
            opt._state[id(v)] = (v, got)
        opt.iterations = it
        bg.state = state["rng"]

    return state, restore


def check_resume(p, args):
    """``--resume``'s usage errors: with ``--overwrite``, or with no checkpoint in ``--out``."""
    if args.resume and args.overwrite:
        p.error("--resume continues the run in --out and --overwrite replaces it; give one")
    check_out(p, args.out, args.overwrite, args.resume)
    if args.resume and not (args.out / CHECKPOINT).is_file():
        p.error(f"--resume: there is no checkpoint {args.out / CHECKPOINT}; run without "
                f"--resume to start, or give the --out of the run to continue")


def resume(prog, path, model, settings, same, may_change):
    """Restore the compiled ``model`` from the checkpoint ``path`` made with the same
    ``same`` settings; returns its ``(history, rows, epochs_done)``.

    A checkpoint that fails a check, or was made with other settings, exits
    with ``<prog>: error: --resume: ...`` and leaves the model as it was.
    """
    model._make_plan()                     # the optimizer's variables, as fit sees them
    try:                                   # every entry checked before any is assigned
        state, restore = read_checkpoint(path, model)
    except ValueError as e:
        raise SystemExit(f"{prog}: error: --resume: {path.absolute()}: {e}") from None
    old = state["settings"]
    changed = [k for k in same if old.get(k) != settings.get(k)]
    if changed:
        raise SystemExit(f"{prog}: error: --resume: the checkpoint was made with "
                         + ", ".join(f"{k}={old.get(k)!r}" for k in changed)
                         + f"; give the same settings (only {may_change} may change)")
    restore()
    return state["history"], state["rows"], state["epochs_done"]


class Checkpoint:
    """A Keras-style callback: a checkpoint after every epoch, with the history so far."""

    def __init__(self, path, log, history, settings, progress):
        self.path, self.log, self.history, self.settings = path, log, history, settings
        self.progress = progress

    def set_model(self, model):
        self.model = model

    def on_epoch_end(self, epoch, logs=None):
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        save_checkpoint(self.path, self.model, epoch + 1, self.history, self.log.rows,
                        self.settings)
        self.progress.checkpoint = self.path


# ------------------------------------------------------------ outputs, Ctrl-C
class Progress:
    """What a job has written so far, for the line Ctrl-C ends it with."""

    def __init__(self):
        self.checkpoint = None     # the checkpoint this run can resume from, once there is one
        self.written = []          # the output files written, in order


def interrupted(prog, out, progress):
    """Print the one line a Ctrl-C'd job ends with; returns 130, a shell's status for it."""
    if progress.checkpoint is not None:
        line = (f"interrupted; last checkpoint: {progress.checkpoint.absolute()} "
                f"(resume with --resume)")
    elif progress.written:
        line = (f"interrupted while writing {out.absolute()}; kept {', '.join(progress.written)}"
                f" without metrics.json, so that set is incomplete")
    else:
        line = f"interrupted; nothing was written to {out.absolute()}"
    print(f"{prog}: {line}", file=sys.stderr, flush=True)
    return 130


#: ``metrics.json``'s key listing the files of its set, each with its size and sha256.
FILES_KEY = "files"


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def write_outputs(out, model, metrics, figure=None, progress=None, drop_checkpoint=False):
    """``weights.npz``, the plot (``figure``: ``(history, title)``, or None) and, last,
    ``metrics.json`` as the set's manifest: it records the size and sha256 of the
    other two, so a reader can tell a complete set (:func:`run_is_complete`) from
    one a kill left mixed with another run's files. Each file is written atomically.

    ``drop_checkpoint`` removes ``checkpoint.npz`` once ``weights.npz`` holds the
    trained weights, as Keras' BackupAndRestore removes its backup when training
    ends: a later run into ``out`` is then refused for its results, not offered
    ``--resume``."""
    progress = progress or Progress()
    files = {}
    model.save_weights(str(out / "weights.npz"))
    progress.written.append("weights.npz")
    files["weights.npz"] = _digest(out / "weights.npz")
    if drop_checkpoint:
        (out / CHECKPOINT).unlink(missing_ok=True)
        progress.checkpoint = None
    if figure is not None:
        plot(figure[0], out / "learning_curve.png", figure[1])
        progress.written.append("learning_curve.png")
        files["learning_curve.png"] = _digest(out / "learning_curve.png")
    metrics[FILES_KEY] = files
    atomic_json(metrics, out / "metrics.json")
    progress.written.append("metrics.json")


def run_is_complete(out):
    """Whether ``out`` holds one job's whole set of outputs: a ``metrics.json`` whose
    ``files`` each exist with the size and sha256 it records.

    A run killed between its files leaves the previous run's ``metrics.json``
    beside its own ``weights.npz``; the digests then differ and this is False.
    """
    from pathlib import Path

    out = Path(out)
    try:
        files = json.loads((out / "metrics.json").read_text())[FILES_KEY]
        return (bool(files) and set(files) <= set(RUN_FILES)   # names, never paths
                and all(_digest(out / n) == d for n, d in files.items()))
    except (OSError, ValueError, KeyError, TypeError):
        return False
