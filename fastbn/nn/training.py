"""Training: ``fit``, ``evaluate``, ``predict`` and ``train_on_batch`` of a model.

:class:`Trainer` holds the loop; :class:`~fastbn.nn.Sequential` inherits it
(Keras 3's ``Trainer``). The training step is the hot path: at batch 32 the
MNIST MLP's arithmetic is ~0.4 ms and every microsecond of Python shows.
``fit`` therefore converts and validates the data once, not per batch; the
step calls the layers' ``call`` directly (shapes were checked once); a final
softmax is fused with Keras' cross-entropy into one stable op (same value,
gradient ``softmax - onehot``); and the optimizer updates the weights in place.

Distribution strategies
-----------------------
``model.distribution`` is None (one process) or a strategy object, such as
:class:`fastbn.distributed.DataParallel`, which training consults through
these hooks (and only these):

``is_root``
    True on the process that prints progress and writes files; ``fit`` and
    ``evaluate`` are silent on the others.
``begin_fit(model, **arguments)``
    Called once at the start of ``fit``, on every process, with the values
    that must agree across them (``samples``, ``batch_size``, ``epochs``,
    ``initial_epoch``, ``shuffle``, ``validation_samples``): check them,
    synchronize the weights, and return ``step``'s function.
``step(model)``
    The function ``step(xb, yb) -> (loss, correct)`` that trains on one
    global batch: how it is split across the processes and how the
    gradients are reduced. It builds on the model's :meth:`Trainer.step_plan`
    (forward and backward on a part of the batch, correct predictions).
``broadcast(array)``
    Overwrite ``array`` with the root's (the shuffling order), in place.
``evaluate(model, x, y, batch_size, bar)``
    Validation inside ``fit``: ``[loss, accuracy]`` of all of ``(x, y)``,
    e.g. each process a part (:meth:`StepPlan.evaluate`), the sums combined.

Batch-normalization statistics are synchronized by the layers themselves:
a strategy gives each ``BatchNormalization(synchronized=True)`` layer its
communicator (``layer.comm``).
"""
import math
import time
import warnings

import numpy as np

from .. import autograd as ag
from .. import _bn
from . import callbacks as callbacks_mod, layers as L, losses as losses_mod, utils
from ._progress import Progbar, mark_warm

__all__ = ["Trainer", "StepPlan", "History"]


class History:
    """What ``fit`` returns: ``history`` (metric name -> one value per epoch) and ``epoch``.

    Examples
    --------
    >>> from fastbn.nn import History
    >>> h = History(); h.history
    {}
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.params = {}
        self.model = None

    def _append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"<History epochs={len(self.epoch)} keys={list(self.history)}>"



def _mask_passing(layers, calls, cell):
    """``calls`` that hand each layer the mask of its input (Keras' propagation):
    layers whose ``call`` takes one get it; ``compute_mask`` gives the next, and
    ``cell[0]`` holds the output's mask after the last call."""

    def wrap(i, layer, call):
        def masked(x, training):
            mask = None if i == 0 else cell[0]
            out = (layer.call(x, training, mask=mask) if mask is not None and layer._takes_mask()
                   else call(x, training))
            cell[0] = layer.compute_mask(x, mask)
            return out
        return masked
    return [wrap(i, layer, call) for i, (layer, call) in enumerate(zip(layers, calls))]


def _recording(layer, call):
    """``call`` that also records the layer's activity penalty of its output."""
    def recorded(x, training):
        out = call(x, training)
        layer._activity_penalty(out)
        return out
    return recorded


def _batch_hooks(callbacks):
    """The bound batch hooks that do something: ``(begin, end)`` lists.

    ``fit`` calls only these per batch, so callbacks without batch hooks cost
    nothing there. A :class:`Callback` counts when its class overrides the
    hook (or ``on_batch_end``); any other object when it has the method.
    """
    begin, end = [], []
    base = callbacks_mod.Callback
    for cb in callbacks:
        if isinstance(cb, callbacks_mod.Callback):
            t = type(cb)
            if t.on_train_batch_begin is not base.on_train_batch_begin:
                begin.append(cb.on_train_batch_begin)
            if (t.on_train_batch_end is not base.on_train_batch_end
                    or t.on_batch_end is not base.on_batch_end):
                end.append(cb.on_train_batch_end)
            continue
        if callable(getattr(cb, "on_train_batch_begin", None)):
            begin.append(cb.on_train_batch_begin)
        fn = getattr(cb, "on_train_batch_end", None) or getattr(cb, "on_batch_end", None)
        if callable(fn):
            end.append(fn)
    return begin, end


def _call(callbacks, name, *args):
    """Call the hook ``name`` of every callback that has it."""
    for cb in callbacks:
        fn = getattr(cb, name, None)
        if fn is not None:
            fn(*args)


class StepPlan:
    """One compiled model's training step, in the pieces a distribution strategy drives.

    :meth:`Trainer.step_plan` makes it; ``compile`` and a change of layers
    make a new one.

    Parameters
    ----------
    calls : list of callable
        ``call(x, training) -> Tensor``, one per layer, in order (a final
        softmax fused into ``loss_fn`` is left out).
    loss_fn : callable
        ``loss_fn(y, output) -> Tensor``: the scalar loss that is minimised
        (regularization penalties included).
    variables : list of Variable
        The trainable variables.
    correct : callable
        ``correct(output, y) -> int``, the model's count of right predictions.

    Attributes
    ----------
    variables : list of Variable
        The trainable variables, in order (what the optimizer updates).
    tensors : list of Tensor
        Their tensors, in the same order; :meth:`backprop` leaves the
        gradients in their ``grad`` (None for a variable the loss does not
        reach).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    >>> plan = model.step_plan()
    >>> loss, out = plan.backprop(np.ones((4, 3), np.float32), np.array([0, 1, 0, 1]))
    >>> [t.grad.shape for t in plan.tensors]
    [(3, 2), (2,)]
    """

    def __init__(self, calls, loss_fn, variables, correct):
        self.calls, self.loss_fn, self._correct = calls, loss_fn, correct
        self.variables = variables
        self.tensors = [v.tensor for v in variables]

    def backprop(self, x, y, scale=None):
        """Forward in training mode, the loss, and its gradients in :attr:`tensors`' ``grad``.

        Parameters
        ----------
        x, y : ndarray
            A batch, as ``fit`` prepared it (float32 inputs, labels).
        scale : float, optional
            The gradients are those of ``loss * scale`` (a process's share of
            a global batch's mean loss).

        Returns
        -------
        loss, output : Tensor
        """
        h = ag.Tensor(x)
        for call in self.calls:
            h = call(h, True)
        loss = self.loss_fn(y, h)
        for t in self.tensors:
            t.grad = None
        loss.backward(None if scale is None else np.asarray(scale, loss.data.dtype))
        return loss, h

    def correct(self, output, y):
        """Correct predictions in a batch (0 without ``metrics=["accuracy"]``).

        Parameters
        ----------
        output : ndarray
            The model's outputs for the batch.
        y : ndarray
            Its labels.

        Returns
        -------
        int
        """
        return self._correct(output, y)

    def evaluate(self, x, y, batch_size, bar=None):
        """``[loss, accuracy]`` on ``(x, y)`` with the moving statistics, this process alone.

        Parameters
        ----------
        x, y : ndarray
            Prepared as ``fit`` prepares them.
        batch_size : int
        bar : progress bar or None
            Advanced by one per batch.

        Returns
        -------
        list of float
            Means over the samples (0 for none).
        """
        calls, loss_fn = self.calls, self.loss_fn
        n = len(x)
        loss_sum, correct = 0.0, 0
        with ag.no_grad():
            for lo in range(0, n, batch_size):
                xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
                h = ag.Tensor(xb)
                for call in calls:
                    h = call(h, False)
                loss_sum += float(loss_fn(yb, h).data) * len(xb)
                correct += self._correct(h.data, yb)
                if bar is not None:
                    bar.update(1)
        return [loss_sum / max(n, 1), correct / max(n, 1)]


class Trainer:
    """``fit``, ``evaluate``, ``predict`` and ``train_on_batch``: the half of
    :class:`~fastbn.nn.Sequential` that trains (Keras 3's ``Trainer``).

    A subclass provides ``layers``, ``compile`` (setting ``optimizer``,
    ``loss``, ``metrics_names``, ``compiled`` and ``_plan = None``), ``built``,
    ``output_shape``, ``trainable_variables``, ``distribution`` and the input
    checks ``_as_input`` and ``_check_input_shape``.

    Examples
    --------
    >>> from fastbn import nn
    >>> issubclass(nn.Sequential, nn.training.Trainer)
    True
    """

    def step_plan(self):
        """The compiled step's :class:`StepPlan` (made on first use after ``compile``).

        Returns
        -------
        StepPlan

        Examples
        --------
        >>> from fastbn import nn
        >>> nn.clear_session()
        >>> model = nn.Sequential([nn.Dense(2, input_shape=(3,))])
        >>> model.compile(loss="mse", optimizer="sgd")
        >>> [v.name for v in model.step_plan().variables]
        ['dense/kernel', 'dense/bias']
        """
        if self._plan is None:
            self._make_plan()
        return self._plan

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"You must call compile() before {what}(), e.g. "
                               f"model.compile(loss='sparse_categorical_crossentropy', "
                               f"optimizer='sgd', metrics=['accuracy'])")

    def _make_plan(self):
        """The per-step callables, with the softmax fused into the loss when it is Keras'."""
        layers = self._layers
        calls = [layer.call for layer in layers]
        loss = self.loss
        fused = False
        masking = any(type(layer).compute_mask is not L.Layer.compute_mask for layer in layers)
        if (isinstance(loss, losses_mod.SparseCategoricalCrossentropy) and not loss.from_logits
                and layers and layers[-1].activity_regularizer is None and not masking):
            last = layers[-1]
            if isinstance(last, L.Dense) and last.activation is ag.softmax:
                calls[-1] = lambda x, training: last.call_linear(x)
                fused = True
            elif isinstance(last, L.Activation) and last.activation is ag.softmax:
                calls.pop()
                fused = True
        if fused:
            def loss_fn(y, out):
                return ag.ops.losses.SoftmaxSparseCategoricalCrossentropy.apply(out, y)
        else:
            def loss_fn(y, out):
                return loss(y, out)
        if masking:
            cell = [None]
            calls = _mask_passing(layers, calls, cell)
            per_sample = losses_mod.per_sample_function(loss)
            if per_sample is not None:
                unmasked_loss = loss_fn

                def loss_fn(y, out):
                    # Keras: the output's mask weights the per-sample losses, whose
                    # mean is then over the unmasked entries
                    m = cell[0]
                    if m is None:
                        return unmasked_loss(y, out)
                    per = per_sample(y, out)
                    if not isinstance(per, ag.Tensor) or per.shape != m.shape:
                        return unmasked_loss(y, out)
                    w = m.astype(per.dtype) * np.asarray(m.size / (np.count_nonzero(m) + 1e-7),
                                                         per.dtype)
                    return (per * w).mean()
        trainable = self.trainable_variables
        # regularization penalties join the loss that is minimised and logged (Keras)
        regularized = [v for v in trainable if v.regularizer is not None]
        active = [i for i, layer in enumerate(layers) if layer.activity_regularizer is not None]
        for i in active:
            calls[i] = _recording(layers[i], calls[i])
        if regularized or active:
            data_loss = loss_fn
            act_layers = [layers[i] for i in active]

            def loss_fn(y, out):
                total = data_loss(y, out)
                for v in regularized:
                    total = total + v.regularizer(v.tensor)
                for layer in act_layers:
                    total = total + layer._activity_losses[0]
                return total
        self._plan = StepPlan(calls, loss_fn, trainable, self._correct)


    def _prepare(self, x, y, what="x"):
        x = self._as_input(x, what)
        self._check_input_shape(x.shape, what)
        if y is None:
            raise ValueError(f"{what}: labels y are required")
        y = np.asarray(y)
        if y.ndim == 0:
            raise ValueError(f"{what}: labels y must hold one label per sample, got the "
                             f"scalar {y.item()!r}; pass an array of {len(x)} labels")
        if len(y) != len(x):
            raise ValueError(f"{what} has {len(x)} samples but its labels have {len(y)}; "
                             f"pass one label per sample")
        if isinstance(self.loss, losses_mod.SparseCategoricalCrossentropy):
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1:
                raise ValueError(f"sparse_categorical_crossentropy takes one integer class "
                                 f"index per sample, but the labels have shape {y.shape}")
            if y.dtype.kind == "f" and np.all(y == np.round(y)):
                y = y.astype(np.intp)
            if y.dtype.kind not in "iu":
                raise TypeError(f"labels must be integer class indices, got dtype {y.dtype}")
            k = self.output_shape[-1]
            if y.size and (y.min() < 0 or y.max() >= k):
                raise ValueError(f"labels must be in [0, {k}) for the model's {k} outputs, "
                                 f"got values from {y.min()} to {y.max()}")
            y = y.astype(np.intp, copy=False)
        elif y.dtype.kind in "fiub":
            y = np.ascontiguousarray(y, dtype=np.float32)    # once per call, not per batch
        return x, y

    @staticmethod
    def _batch_size(batch_size):
        if batch_size is None:
            return 32
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        return int(batch_size)

    # ------------------------------------------------------------ training
    def _train_step(self, xb, yb):
        plan = self._plan
        loss, h = plan.backprop(xb, yb)
        self.optimizer.apply([t.grad for t in plan.tensors], plan.variables)
        return float(loss.data), h.data

    def _fit_step(self, xb, yb):
        """One step of ``fit``: the batch's mean loss and number of correct predictions."""
        loss, out = self._train_step(xb, yb)
        return loss, self._correct(out, yb)

    def train_on_batch(self, x, y):
        """One optimizer step on one batch; returns ``[loss, accuracy]`` (or the loss).

        Parameters
        ----------
        x : array_like
            One batch of inputs.
        y : array_like
            Its labels.

        Returns
        -------
        list or float
            ``[loss, accuracy]`` when compiled with ``metrics=["accuracy"]``,
            else the loss; computed before the step, with the batch statistics.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn import nn
        >>> nn.set_random_seed(0)
        >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
        >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
        >>> loss = model.train_on_batch(np.ones((4, 3)), [0, 1, 0, 1])
        >>> bool(np.isfinite(loss))
        True
        """
        self._require_compiled("train_on_batch")
        x, y = self._prepare(x, y)
        if self._plan is None:
            self._make_plan()
        with utils.training_threads(len(x)):
            if self.distribution is not None:       # (x, y) is the global batch
                loss, right = self.distribution.step(self)(x, y)
                return self._result(loss, right / len(x))
            loss, out = self._train_step(x, y)
        return self._result(loss, self._correct(out, y) / len(x))

    def _correct(self, out, y):
        """Correct predictions in the batch, by Keras' choice of "accuracy".

        A prediction with a NaN output is wrong (``argmax`` would read it as
        class 0, and ``NaN > 0.5`` as class 0 of a binary output); such
        predictions are also counted in ``_nan_outputs`` for
        :meth:`_warn_nan_outputs`.
        """
        nan = np.isnan(out).any(axis=-1)        # (batch, classes): a cheap pass
        bad = int(np.count_nonzero(nan))
        if bad:
            self._nan_outputs = getattr(self, "_nan_outputs", 0) + bad
        if len(self.metrics_names) < 2:
            return 0
        if out.shape[-1] == 1:                              # binary accuracy
            right = (out[..., 0] > 0.5) == (y.reshape(nan.shape) > 0.5)
        elif y.ndim < out.ndim or y.shape[-1] == 1:         # sparse categorical
            right = out.argmax(axis=-1) == y.reshape(out.shape[:-1])
        else:
            right = out.argmax(axis=-1) == y.argmax(axis=-1)
        if bad:
            right &= ~nan
        return int(np.count_nonzero(right))

    def _warn_nan_outputs(self, what):
        """Warn (once per ``fit`` or ``evaluate``) when predictions were NaN."""
        bad = getattr(self, "_nan_outputs", 0)
        if bad and not self._nan_warned:
            self._nan_warned = True
            warnings.warn(
                f"{what}: {bad} prediction(s) were NaN and count as wrong. Once one "
                f"weight or moving statistic is NaN, every output is: check the inputs "
                f"with np.isfinite(x).all(), and lower the learning rate if the loss "
                f"grew before it became NaN; callbacks=[nn.callbacks.TerminateOnNaN()] "
                f"stops training at the first NaN loss", RuntimeWarning, stacklevel=3)

    def _reset_nan_outputs(self):
        self._nan_outputs, self._nan_warned = 0, False

    def _result(self, loss, acc):
        return [loss, acc] if len(self.metrics_names) > 1 else loss

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        """Train for ``epochs`` passes over ``(x, y)``; returns a :class:`History`.

        Batch normalization uses batch statistics (and updates its moving
        statistics); validation uses the moving statistics, as in Keras.

        Parameters
        ----------
        x : array_like
            ``(samples, ...)`` matching the model's input shape.
        y : array_like
            One label per sample (integer class indices for the sparse
            cross-entropy).
        batch_size : int, default 32
        epochs : int, default 1
        verbose : {"auto", 0, 1, 2}, default "auto" (= 1)
            1: a live progress line per epoch, then (as Keras) one line with
            every metric, time and ms/step (the first step, which compiles
            the kernels, is kept out of the rate and ETA); 2: one line per
            epoch; 0: silent.
        validation_split : float, default 0.0
            Hold out this fraction of the **last** samples (before
            shuffling), as Keras does.
        validation_data : tuple (x_val, y_val), optional
            Evaluated at the end of each epoch (``val_loss``, ``val_accuracy``).
        shuffle : bool, default True
            Reshuffle the samples every epoch (from the seeded generator).
        callbacks : list, optional
            Objects with Keras' hooks (see :mod:`fastbn.nn.callbacks`), e.g.
            :class:`~fastbn.nn.callbacks.EarlyStopping`. One that sets
            ``model.stop_training = True`` ends training after the current
            batch.
        initial_epoch : int, default 0
            The epoch to start from (to resume an earlier run); ``epochs`` is
            the index of the last epoch plus one, as in Keras.

        Returns
        -------
        History
            ``history.history`` has ``loss`` (and ``accuracy``, ``val_loss``,
            ``val_accuracy`` when applicable), one value per epoch: the mean
            over the epoch's batches weighted by batch size, as Keras logs.
        """
        self._require_compiled("fit")
        callbacks = list(callbacks or [])
        verbose = 1 if verbose == "auto" else verbose
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit(): verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit(): epochs must be a non-negative integer, got {epochs!r}")
        batch_size = self._batch_size(batch_size)
        x, y, validation_data = self._fit_data(x, y, validation_split, validation_data)
        n = len(x)
        self._make_plan()
        steps = -(-n // batch_size)
        history = History()
        history.params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        history.model = self
        rng = utils.get_rng()
        step = self._fit_step
        dist = self.distribution
        if dist is not None:                # weights broadcast; each process steps on a shard
            step = dist.begin_fit(self, samples=n, batch_size=batch_size, epochs=epochs,
                                  initial_epoch=initial_epoch, shuffle=bool(shuffle),
                                  validation_samples=None if validation_data is None
                                  else len(validation_data[0]))
            verbose = verbose if dist.is_root else 0
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) \
                or initial_epoch < 0:
            raise ValueError(f"fit(): initial_epoch must be a non-negative integer, got "
                             f"{initial_epoch!r}")
        batch_hooks = _batch_hooks(callbacks)
        self._reset_nan_outputs()
        self.stop_training = False
        self._initial_epoch = None
        _call(callbacks, "set_model", self)
        _call(callbacks, "on_train_begin", {})
        if self._initial_epoch is not None:         # BackupAndRestore restored a run
            initial_epoch = self._initial_epoch
        with utils.training_threads(batch_size):
            for epoch in range(initial_epoch, epochs):
                _call(callbacks, "on_epoch_begin", epoch, {})
                order = rng.permutation(n) if shuffle else None
                if dist is not None and order is not None:
                    order = dist.broadcast(order)       # one order, whatever each rng drew
                bar = self._progress(verbose, steps, f"Epoch {epoch + 1}/{epochs}",
                                     compiling=True)
                t0 = time.perf_counter()
                loss_sum, correct, seen = self._fit_epoch(x, y, order, batch_size, step,
                                                          batch_hooks, bar)
                logs = self._epoch_logs(loss_sum, correct, seen, validation_data, batch_size,
                                        callbacks)
                if bar is not None:
                    bar.finish(logs)
                elif verbose == 2:
                    text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                    print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - t0:.0f}s - "
                          + text, flush=True)
                history._append(epoch, logs)
                self._warn_nan_outputs(f"fit(), epoch {epoch + 1}")
                _call(callbacks, "on_epoch_end", epoch, dict(logs))
                if self.stop_training:
                    break
        _call(callbacks, "on_train_end", dict(history.history))
        self.history = history
        return history

    def _fit_data(self, x, y, validation_split, validation_data):
        """``fit``'s training and validation data, checked and prepared once."""
        x, y = self._prepare(x, y)
        if _bn.number(validation_split) is None:
            raise TypeError(f"fit(): validation_split must be a number in [0, 1) (the "
                            f"fraction held out, e.g. 0.2), got {validation_split!r} of type "
                            f"{type(validation_split).__name__}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit(): validation_split must be in [0, 1), got "
                             f"{validation_split!r}")
        if validation_data is not None and validation_split:
            raise ValueError("fit(): pass validation_data or validation_split, not both")
        if validation_split:
            split = int(math.floor(len(x) * (1.0 - validation_split)))
            validation_data = (x[split:], y[split:])
            x, y = x[:split], y[:split]
        if validation_data is not None:
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise ValueError("fit(): validation_data must be a tuple (x_val, y_val)")
            validation_data = self._prepare(*validation_data, what="validation_data x")
            if len(validation_data[0]) == 0:
                where = (f"validation_split={validation_split!r} of {len(x)} samples "
                         f"holds none out" if validation_split
                         else "validation_data has no samples")
                raise ValueError(f"fit(): {where}; pass data to validate on, or none")
        if len(x) == 0:
            raise ValueError("fit(): no training samples")
        return x, y, validation_data

    def _fit_epoch(self, x, y, order, batch_size, step, batch_hooks, bar):
        """One pass over ``(x, y)`` in ``order`` (None: as given); returns the summed
        loss (weighted by batch size), correct predictions and samples seen."""
        batch_begin, batch_end = batch_hooks
        n = len(x)
        loss_sum = 0.0
        correct = 0
        seen = 0
        for i in range(-(-n // batch_size)):
            lo, hi = i * batch_size, min(n, (i + 1) * batch_size)
            if order is None:
                xb, yb = x[lo:hi], y[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = x[idx], y[idx]
            for fn in batch_begin:
                fn(i, {})
            loss, right = step(xb, yb)
            m = hi - lo
            loss_sum += loss * m
            seen += m
            correct += right
            if i == 0:
                mark_warm()
            if bar is not None:
                bar.update(1, self._running_logs(loss_sum / seen, correct / seen))
            if batch_end:
                for fn in batch_end:
                    fn(i, self._running_logs(loss_sum / seen, correct / seen))
                if self.stop_training:
                    break
        return loss_sum, correct, seen

    def _epoch_logs(self, loss_sum, correct, seen, validation_data, batch_size, callbacks):
        """The epoch's logs: mean loss (and accuracy), then the validation's."""
        with_acc = len(self.metrics_names) > 1
        logs = {"loss": loss_sum / seen}
        if with_acc:
            logs["accuracy"] = correct / seen
        if validation_data is not None:
            _call(callbacks, "on_test_begin", {})
            vals = self._evaluate(*validation_data, batch_size=batch_size)
            logs["val_loss"] = vals[0]
            if with_acc:
                logs["val_accuracy"] = vals[1]
        return logs

    def _running_logs(self, loss, acc):
        if len(self.metrics_names) > 1:
            return {"loss": loss, "accuracy": acc}
        return {"loss": loss}

    @staticmethod
    def _progress(verbose, steps, title, compiling=False):
        if verbose != 1:
            return None
        if title:
            print(title, flush=True)
        return Progbar(steps, compiling=compiling)

    # ---------------------------------------------------------- inference
    def _evaluate(self, x, y, batch_size, bar=None):
        if self.distribution is not None:   # each process a shard, the sums combined
            return self.distribution.evaluate(self, x, y, batch_size, bar)
        return self._evaluate_local(x, y, batch_size, bar)

    def _evaluate_local(self, x, y, batch_size, bar=None):
        return self.step_plan().evaluate(x, y, batch_size, bar)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto"):
        """Loss (and accuracy) on ``(x, y)`` with the moving statistics.

        Parameters
        ----------
        x : array_like
            ``(samples, ...)`` matching the model's input shape.
        y : array_like
            One label per sample.
        batch_size : int, default 32
        verbose : {"auto", 0, 1}, default "auto" (= 1)
            1: a progress bar; 0: silent.

        Returns
        -------
        list or float
            ``[loss, accuracy]`` when compiled with ``metrics=["accuracy"]``,
            else the loss; means over samples.
        """
        self._require_compiled("evaluate")
        verbose = 1 if verbose == "auto" else verbose
        if self.distribution is not None and not self.distribution.is_root:
            verbose = 0
        batch_size = self._batch_size(batch_size)
        x, y = self._prepare(x, y)
        if len(x) == 0:
            raise ValueError(f"evaluate(): x of shape {x.shape} has no samples; there is "
                             f"nothing to average the loss over")
        bar = self._progress(verbose, -(-len(x) // batch_size), None, compiling="evaluate")
        self._reset_nan_outputs()
        with utils.training_threads(batch_size):
            # each rank alone, even in data-parallel training (no collective: one rank
            # may evaluate while the others do not; the weights are the same everywhere)
            loss, acc = self._evaluate_local(x, y, batch_size, bar)
        if bar is not None:
            bar.finish(self._running_logs(loss, acc))
        self._warn_nan_outputs("evaluate()")
        return [loss, acc] if len(self.metrics_names) > 1 else loss

    def predict(self, x, batch_size=None, verbose="auto"):
        """The model's outputs for ``x`` (moving statistics, no dropout), as an ndarray.

        Parameters
        ----------
        x : array_like
            ``(samples, ...)`` matching the model's input shape.
        batch_size : int, default 32
        verbose : {"auto", 0, 1}, default "auto" (= 1)
            1: a progress bar; 0: silent.

        Returns
        -------
        ndarray
            float32, ``(samples,) + output_shape[1:]``.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn import nn
        >>> model = nn.Sequential([nn.Dense(3, activation="softmax", input_shape=(2,))])
        >>> p = model.predict(np.ones((5, 2)), verbose=0)
        >>> p.shape, bool(np.allclose(p.sum(axis=1), 1))
        ((5, 3), True)
        """
        verbose = 1 if verbose == "auto" else verbose
        batch_size = self._batch_size(batch_size)
        x = self._as_input(x, "x")
        self._check_input_shape(x.shape, "x")
        bar = self._progress(verbose, -(-len(x) // batch_size), None, compiling="predict")
        outs = []
        with ag.no_grad(), utils.training_threads(batch_size):
            for lo in range(0, len(x), batch_size):
                h = ag.Tensor(x[lo:lo + batch_size])
                for layer in self._layers:
                    h = layer.call(h, training=False)
                outs.append(h.data)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.finish()
        if not outs:
            return np.zeros((0,) + tuple(self.output_shape[1:]), np.float32)
        return np.concatenate(outs)

