"""Keras-style callbacks for :meth:`fastbn.nn.Sequential.fit`.

A callback is any object with some of the methods of :class:`Callback`;
``fit`` calls those it has, with Keras' arguments, at these points:
``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_begin`` and
``on_train_batch_end`` (whose default calls ``on_batch_end``; the logs hold
the epoch's running ``loss``), ``on_test_begin`` (before the validation pass
of an epoch), ``on_epoch_end`` (with the epoch's logs, validation included)
and ``on_train_end``. A callback stops training by setting
``self.model.stop_training = True``.
"""

import contextlib
import csv
import math
import os
import shutil
import warnings

import numpy as np

from .._files import atomic_write

__all__ = ["Callback", "LearningRateScheduler", "EarlyStopping", "ModelCheckpoint",
           "BackupAndRestore", "TerminateOnNaN", "ReduceLROnPlateau", "CSVLogger"]


class Callback:
    """Base class: every hook does nothing; ``self.model`` is set by ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> class Count(nn.callbacks.Callback):
    ...     epochs = 0
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         self.epochs += 1
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    >>> c = Count()
    >>> _ = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=3, verbose=0, callbacks=[c])
    >>> c.epochs
    3
    """

    model = None

    def set_model(self, model):
        """Called by ``fit`` before training with the model being trained.

        Parameters
        ----------
        model : Sequential
        """
        self.model = model

    def on_train_begin(self, logs=None):
        """Before the first epoch.

        Parameters
        ----------
        logs : dict, optional
            Keras' ``logs`` argument.
        """

    def on_epoch_begin(self, epoch, logs=None):
        """Before epoch ``epoch`` (counted from 0).

        Parameters
        ----------
        epoch : int
        logs : dict, optional
            Keras' ``logs`` argument.
        """

    def on_train_batch_begin(self, batch, logs=None):
        """Before training batch ``batch`` of the epoch (counted from 0).

        Parameters
        ----------
        batch : int
        logs : dict, optional
        """

    def on_train_batch_end(self, batch, logs=None):
        """After training batch ``batch``; by default calls :meth:`on_batch_end`.

        Parameters
        ----------
        batch : int
        logs : dict, optional
            ``loss`` (and ``accuracy``): the epoch's running means so far.
        """
        self.on_batch_end(batch, logs)

    def on_batch_end(self, batch, logs=None):
        """Keras' older name for :meth:`on_train_batch_end`.

        Parameters
        ----------
        batch : int
        logs : dict, optional
        """

    def on_test_begin(self, logs=None):
        """Before the validation pass at the end of an epoch.

        Parameters
        ----------
        logs : dict, optional
            Keras' ``logs`` argument.
        """

    def on_epoch_end(self, epoch, logs=None):
        """After epoch ``epoch``; ``logs`` holds its loss, metrics and validation results.

        Parameters
        ----------
        epoch : int
            Counted from 0.
        logs : dict, optional
            ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` as they apply.
        """

    def on_train_end(self, logs=None):
        """After the last epoch.

        Parameters
        ----------
        logs : dict, optional
            Keras' ``logs`` argument.
        """


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate before each epoch, as Keras' callback does.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new lr``, epoch counted from 0.
    verbose : int, default 0
        1 prints the new rate at each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(1.0))
    >>> halve = nn.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2)
    >>> _ = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=3, verbose=0, callbacks=[halve])
    >>> model.optimizer.learning_rate
    0.125
    """

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable "
                            f"(epoch, lr) -> lr, got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = float(self.schedule(epoch, opt.learning_rate))
        opt.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:.6g}.")


class _MonitorCallback(Callback):
    """Keras' ``MonitorCallback``: which way ``monitor`` improves, by at least ``min_delta``."""

    def __init__(self, monitor="val_loss", mode="auto", baseline=None, min_delta=0):
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode {mode!r} is unknown, fallback to "
                          f"auto mode.", stacklevel=3)
            mode = "auto"
        self.monitor, self.mode, self.best = monitor, mode, baseline
        self.min_delta = abs(min_delta)
        self._sign = None                    # +1: larger is better, -1: smaller is better

    def _set_direction(self):
        if self.mode != "auto":
            self._sign = 1 if self.mode == "max" else -1
            return
        name = self.monitor.removeprefix("val_")
        if name == "loss":
            self._sign = -1
        elif name in ("accuracy", "acc", "sparse_categorical_accuracy",
                      "categorical_accuracy", "binary_accuracy"):
            self._sign = 1
        else:
            raise ValueError(f"{type(self).__name__} callback received monitor={self.monitor}, "
                             f"but cannot tell whether it should be maximized or minimized; "
                             f"pass mode='max' or mode='min'")

    def _is_improvement(self, value, reference):
        if self._sign is None:
            self._set_direction()
        if reference is None:
            return True
        if self._sign > 0:
            return value - self.min_delta > reference
        return value + self.min_delta < reference

    def _value(self, logs, what):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"{what} conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}", stacklevel=3)
        return value


class EarlyStopping(_MonitorCallback):
    """Stop training when ``monitor`` has stopped improving, Keras' rule and defaults.

    After each epoch (from ``start_from_epoch`` on) the monitored value is
    compared with the best so far; ``patience`` epochs in a row without an
    improvement of more than ``min_delta`` stop training
    (``model.stop_training``; never after the first epoch).

    Parameters
    ----------
    monitor : str, default "val_loss"
    min_delta : float, default 0
    patience : int, default 0
    verbose : int, default 0
        1 prints the epoch at which training stopped.
    mode : {"auto", "min", "max"}, default "auto"
        ``"auto"``: minimise losses, maximise accuracies.
    baseline : float, optional
        Training stops unless the value becomes better than this within
        ``patience`` epochs.
    restore_best_weights : bool, default False
        At the end of training, restore the weights of the best epoch.
    start_from_epoch : int, default 0
        Epochs to wait before monitoring.

    Attributes
    ----------
    stopped_epoch : int
        The epoch (from 0) at which training stopped; 0 if it did not.
    best, best_epoch

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.0))
    >>> stop = nn.callbacks.EarlyStopping(monitor="loss", patience=2)
    >>> h = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=10, verbose=0, callbacks=[stop])
    >>> len(h.epoch), stop.stopped_epoch                # no improvement with lr 0
    (3, 2)
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta=min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best = self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        current = self._value(logs, "Early stopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


def _valid_save_freq(save_freq):
    """``save_freq`` is "epoch" or a positive integer (a count of batches)."""
    return save_freq == "epoch" or (not isinstance(save_freq, bool)
                                    and isinstance(save_freq, int) and save_freq >= 1)


def _save_due(callback):
    """Count one training batch of ``callback`` (its ``save_freq`` and ``_batches``):
    True on every ``save_freq``-th, never when it saves by epoch."""
    if callback.save_freq == "epoch":
        return False
    callback._batches += 1
    if callback._batches >= callback.save_freq:
        callback._batches = 0
        return True
    return False


class ModelCheckpoint(_MonitorCallback):
    """Save the model (or its weights) after each epoch, Keras' arguments and defaults.

    ``filepath`` may hold ``{epoch}`` (counted from 1) and any log name,
    formatted as Python does (``"ckpt-{epoch:02d}-{val_loss:.2f}.keras"``).
    Every file is written atomically (a temporary file, then a rename), so
    an interrupted save never leaves a damaged checkpoint.

    Parameters
    ----------
    filepath : str or path-like
        Ends in ``.keras`` (the whole model, :meth:`~fastbn.nn.Sequential.save`),
        or, with ``save_weights_only=True``, in ``.weights.h5`` (HDF5, Keras'
        layout; needs h5py) or ``.weights.npz`` (:meth:`~fastbn.nn.Sequential.save_weights`).
    monitor : str, default "val_loss"
    verbose : int, default 0
    save_best_only : bool, default False
        Save only when ``monitor`` improved on the best so far.
    save_weights_only : bool, default False
    mode : {"auto", "min", "max"}, default "auto"
    save_freq : "epoch" or int, default "epoch"
        An int saves every that many batches.
    initial_value_threshold : float, optional
        The best value to beat at first (with ``save_best_only``).

    Raises
    ------
    ValueError
        For a ``filepath`` with the wrong ending or a bad ``save_freq``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    >>> d = tempfile.mkdtemp()
    >>> ckpt = nn.callbacks.ModelCheckpoint(os.path.join(d, "w-{epoch:02d}.weights.npz"),
    ...                                     monitor="loss", save_weights_only=True)
    >>> _ = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=2, verbose=0, callbacks=[ckpt])
    >>> sorted(os.listdir(d))
    ['w-01.weights.npz', 'w-02.weights.npz']
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        super().__init__(monitor, mode, initial_value_threshold)
        self.filepath = os.fspath(filepath)
        self.verbose, self.save_best_only = verbose, save_best_only
        self.save_weights_only, self.save_freq = save_weights_only, save_freq
        if not _valid_save_freq(save_freq):
            raise ValueError(f"Unrecognized save_freq: {save_freq!r}. Expected save_freq "
                             f"are 'epoch' or a positive integer")
        if save_weights_only:
            if not self.filepath.endswith((".weights.h5", ".weights.npz")):
                raise ValueError(f"ModelCheckpoint: with save_weights_only=True the filepath "
                                 f"must end in .weights.h5 (Keras' weights format) or "
                                 f".weights.npz; got filepath={self.filepath}")
        elif not self.filepath.endswith(".keras"):
            raise ValueError(f"ModelCheckpoint: the filepath must end in .keras (the whole "
                             f"model), or pass save_weights_only=True; got "
                             f"filepath={self.filepath}")
        self._batches = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if _save_due(self):
            self._save(self._epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _path(self, epoch, batch, logs):
        try:
            if batch is None or "batch" in logs:
                return self.filepath.format(epoch=epoch + 1, **logs)
            return self.filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)
        except KeyError as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". '
                           f'Reason: {e}; the logs hold {", ".join(logs)}') from None

    def _save(self, epoch, batch, logs):
        logs = dict(logs or {})
        path = self._path(epoch, batch, logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"Can save best model only with {self.monitor} available.",
                              stacklevel=3)
            else:
                best = "None" if self.best is None else f"{self.best:.5f}"
                if not self._is_improvement(current, self.best):
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from "
                              f"{best}")
                    return
                if self.verbose > 0:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to "
                          f"{current:.5f}, saving model to {path}")
                self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(f"ModelCheckpoint: the filepath {path} is an existing "
                                    f"directory; name a file")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class BackupAndRestore(Callback):
    """Back up the training state each epoch; a rerun of ``fit`` resumes from it (Keras').

    At the end of each epoch (or every ``save_freq`` batches) the weights,
    the optimizer's state and the epoch count are written, atomically, to
    one file in ``backup_dir``. When ``fit`` starts with that file present
    (the previous run was interrupted), the state is restored and training
    continues with the next epoch. When training ends normally the backup is
    deleted (``delete_checkpoint``).

    Parameters
    ----------
    backup_dir : str or path-like
    save_freq : "epoch" or int, default "epoch"
    double_checkpoint : bool, default False
        Keep the previous backup too (``.bkp``), used if the latest cannot be read.
    delete_checkpoint : bool, default True

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fastbn import nn
    >>> class Interrupt(nn.callbacks.Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         if epoch == 1:
    ...             raise KeyboardInterrupt
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    >>> backup = nn.callbacks.BackupAndRestore(tempfile.mkdtemp())
    >>> x, y = np.ones((4, 3)), [0, 1, 0, 1]
    >>> try:
    ...     model.fit(x, y, epochs=4, verbose=0, callbacks=[backup, Interrupt()])
    ... except KeyboardInterrupt:
    ...     pass
    >>> h = model.fit(x, y, epochs=4, verbose=0, callbacks=[backup])
    >>> h.epoch                                       # epochs 0 and 1 were done
    [2, 3]
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False,
                 delete_checkpoint=True):
        if not backup_dir:
            raise ValueError("BackupAndRestore: empty backup_dir argument passed")
        if not _valid_save_freq(save_freq):
            raise ValueError(f"BackupAndRestore: save_freq must be 'epoch' or a positive "
                             f"integer, got {save_freq!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq, self.double_checkpoint = save_freq, double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._path = os.path.join(self.backup_dir, "latest.state.npz")
        self._prev = self._path + ".bkp"
        self._epoch = 0
        self._batches = 0

    def on_train_begin(self, logs=None):
        if not os.path.exists(self._path):
            if os.path.exists(self._prev):
                self.model._initial_epoch = self.model._load_training_state(self._prev)
            return
        try:
            self.model._initial_epoch = self.model._load_training_state(self._path)
            return
        except (OSError, ValueError) as e:  # a truncated or corrupt file is a ValueError
            if not os.path.exists(self._prev):
                raise
            latest_error = e
        try:
            epoch = self.model._load_training_state(self._prev)
        except (OSError, ValueError) as e:
            raise ValueError(f"BackupAndRestore: neither backup can be read: {self._path} "
                             f"({latest_error}) nor {self._prev} ({e}); delete both files "
                             f"to train from the start") from None
        warnings.warn(f"BackupAndRestore: the latest backup {self._path} cannot be read "
                      f"({latest_error}); restored the previous one, {self._prev}",
                      RuntimeWarning, stacklevel=2)
        # Keras copies the .bkp over the unreadable latest, so the next save's rotation
        # keeps a readable .bkp instead of copying the broken file over it.
        with atomic_write(self._path) as dst, open(self._prev, "rb") as src:
            shutil.copyfileobj(src, dst)
        self.model._initial_epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if _save_due(self):
            self._save(self._epoch)         # this epoch is not finished: redo it

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch + 1)

    def _save(self, next_epoch):
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self._path):
            shutil.copyfile(self._path, self._prev)
        self.model._save_training_state(self._path, next_epoch)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            for path in (self._path, self._prev):
                if os.path.exists(path):
                    os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(self.backup_dir)


class TerminateOnNaN(Callback):
    """Stop training when a batch's loss is NaN or infinite (Keras').

    Parameters
    ----------
    raise_error : bool, default False
        Raise ``RuntimeError`` instead of stopping quietly.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Dense(1, input_shape=(1,))])
    >>> model.compile(loss="mse", optimizer="sgd")
    >>> x = np.array([[1.0], [np.nan]])
    >>> import warnings
    >>> with warnings.catch_warnings():              # fit also warns about the NaN
    ...     warnings.simplefilter("ignore", RuntimeWarning)
    ...     h = model.fit(x, [0.0, 0.0], epochs=3, batch_size=1, shuffle=False, verbose=0,
    ...                   callbacks=[nn.callbacks.TerminateOnNaN()])
    Batch 1: Invalid loss, terminating training
    >>> h.epoch
    [0]
    """

    def __init__(self, raise_error=False):
        self.raise_error = raise_error

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss "
                                   f"value: {loss}. Terminating training immediately.")
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class ReduceLROnPlateau(_MonitorCallback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras').

    Parameters
    ----------
    monitor : str, default "val_loss"
    factor : float, default 0.1
        Below 1.
    patience : int, default 10
        Epochs without improvement before a reduction.
    verbose : int, default 0
    mode : {"auto", "min", "max"}, default "auto"
    min_delta : float, default 1e-4
    cooldown : int, default 0
        Epochs to wait after a reduction before counting again.
    min_lr : float, default 0.0

    Raises
    ------
    ValueError
        If ``factor >= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.0))
    >>> cb = nn.callbacks.ReduceLROnPlateau(monitor="loss", patience=1, min_lr=1e-9)
    >>> _ = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=3, verbose=0, callbacks=[cb])
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta=min_delta)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0; got "
                             f"factor={factor}")
        self.factor, self.min_lr, self.patience = factor, min_lr, patience
        self.verbose, self.cooldown = verbose, cooldown
        self.cooldown_counter = self.wait = 0

    def on_train_begin(self, logs=None):
        self.best = None
        self.cooldown_counter = self.wait = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._value(logs, "Learning rate reduction")
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                opt = self.model.optimizer
                old = float(opt.learning_rate)
                if old > np.float32(self.min_lr):
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning "
                              f"rate to {new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    """Write each epoch's logs to a CSV file (Keras' columns: ``epoch`` then sorted names).

    Parameters
    ----------
    filename : str or path-like
    separator : str, default ","
    append : bool, default False
        Append to an existing file (no second header) instead of overwriting it.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> _ = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=2, verbose=0,
    ...               callbacks=[nn.callbacks.CSVLogger(path)])
    >>> open(path).read().splitlines()[0]
    'epoch,loss,val_loss'
    """

    def __init__(self, filename, separator=",", append=False):
        self.sep, self.filename, self.append = separator, os.fspath(filename), append
        self.keys = self.csv_file = self.writer = None
        self.append_header = True

    def on_train_begin(self, logs=None):
        if self.append and os.path.exists(self.filename):
            with open(self.filename) as f:
                self.append_header = not f.readline()
        else:
            self.append_header = True
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.csv_file = open(self.filename, "a" if self.append else "w", newline="")
        self.keys = self.writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
        if self.writer is None:
            sep = self.sep

            class Dialect(csv.excel):
                delimiter = sep
            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys,
                                         dialect=Dialect)
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((k, logs.get(k, "NA")) for k in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None
