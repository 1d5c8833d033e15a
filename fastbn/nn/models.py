"""``Sequential``: Keras' model API (summary, compile, fit, evaluate, predict, weights).

The training step is the hot path: at batch 32 the MNIST MLP's arithmetic is
~0.4 ms and every microsecond of Python shows. ``fit`` therefore converts
and validates the data once, not per batch; the step calls the layers'
``call`` directly (shapes were checked once); a final softmax is fused with
Keras' cross-entropy into one stable op (same value, gradient
``softmax - onehot``); and the optimizer updates the weights in place.
"""
import math
import time
import warnings
import zipfile

import numpy as np

from .. import _bn
from .. import autograd as ag
from .._files import atomic_write
from . import callbacks as callbacks_mod, layers as L, losses as losses_mod, optimizers, \
    saving, utils
from ._progress import Progbar, mark_warm

__all__ = ["Sequential", "History", "load_model"]


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


def _readable_size(nbytes):
    """Keras' ``readable_memory_size``: 1024-based, two decimals."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes / 1024 < 1:
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} PB"


def _wrap(text, width):
    """Split ``text`` into lines of at most ``width`` characters, at spaces where possible."""
    import textwrap
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _read_weights_file(filepath):
    """The arrays of a :meth:`Sequential.save_weights` file, in file order.

    Anything else (another array file, a truncated or foreign file) is one
    ``ValueError`` starting "not a save_weights file"; a missing file stays an
    ``OSError``.
    """
    def reject(why):
        return ValueError(f"load_weights: not a save_weights file: {filepath}: {why}")

    with open(filepath, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise reject("it is not an .npz (zip) archive")
        fh.seek(0)
        try:
            with np.load(fh, allow_pickle=False) as f:
                stored = {k: f[k] for k in f.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise reject(f"it cannot be read as an .npz ({e})") from None
    for k, a in stored.items():
        if "/" not in k:
            raise reject(f"entry {k!r} is not named '<layer>/<weight>'")
        if a.dtype.kind != "f":
            raise reject(f"entry {k!r} is {a.dtype}; weights are real floating point")
    return stored


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


class Sequential:
    """A linear stack of layers, with Keras' model API.

    Parameters
    ----------
    layers : list of Layer, optional
        May start with :class:`~fastbn.nn.Input`; or give the first layer
        ``input_shape=`` (Keras), and the model is built at once.
    name : str, optional
        Default ``sequential``, ``sequential_1``, ...

    Examples
    --------
    >>> from fastbn import nn
    >>> nn.clear_session()
    >>> model = nn.Sequential([nn.Flatten(input_shape=[28, 28]),
    ...                        nn.BatchNormalization(),
    ...                        nn.Dense(300, activation="elu", kernel_initializer="he_normal"),
    ...                        nn.BatchNormalization(),
    ...                        nn.Dense(100, activation="elu", kernel_initializer="he_normal"),
    ...                        nn.BatchNormalization(),
    ...                        nn.Dense(10, activation="softmax")])
    >>> model.count_params()
    271346
    >>> [(v.name, v.trainable) for v in model.layers[1].variables]  # doctest: +NORMALIZE_WHITESPACE
    [('batch_normalization/gamma', True), ('batch_normalization/beta', True),
     ('batch_normalization/moving_mean', False), ('batch_normalization/moving_variance', False)]
    """

    def __init__(self, layers=None, name=None):
        self.name = name if name is not None else utils.unique_name("sequential")
        self._layers = []
        self._input_shape = None
        self.built = False
        self.compiled = False
        self.optimizer = self.loss = None
        self.metrics_names = []
        self.history = None
        self.stop_training = False
        #: data-parallel training over MPI, set by fastbn.distributed.DataParallel.distribute
        self.distribution = None
        for layer in layers or []:
            self.add(layer)

    # ---------------------------------------------------------- structure
    def add(self, layer):
        """Append a layer (or, first, an :class:`~fastbn.nn.Input`).

        The model is built as soon as its input shape is known (from an
        ``Input`` or the first layer's ``input_shape``).

        Parameters
        ----------
        layer : Layer or Input

        Raises
        ------
        TypeError
            If ``layer`` is not a fastbn.nn layer.
        ValueError
            If the layer is already in the model, or an ``Input`` comes after a layer.
        """
        if isinstance(layer, L.Input):
            if self._layers or self._input_shape is not None:
                raise ValueError("Sequential.add: an Input can only come first")
            self._input_shape = layer.shape
            return
        if not isinstance(layer, L.Layer):
            raise TypeError(f"Sequential.add: expected a fastbn.nn layer, got "
                            f"{type(layer).__name__}")
        if any(layer is other for other in self._layers):
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        if not self._layers and self._input_shape is None and layer.input_shape_arg is not None:
            self._input_shape = (None,) + layer.input_shape_arg
        self._layers.append(layer)
        self.built = False
        self._plan = None
        if self._input_shape is not None:
            self.build(self._input_shape)

    @property
    def layers(self):
        """The layers, in order (an Input is not one)."""
        return list(self._layers)

    def build(self, input_shape=None):
        """Create every layer's variables for inputs of ``input_shape`` (batch axis first).

        Parameters
        ----------
        input_shape : tuple, optional
            E.g. ``(None, 28, 28)``; defaults to the shape the model was
            given (``input_shape=`` or ``Input``).
        """
        if input_shape is None:
            input_shape = self._input_shape
        if input_shape is None:
            raise ValueError(f"model {self.name!r}: no input shape to build from; give the "
                             f"first layer input_shape=..., or call the model on data")
        shape = tuple(input_shape)
        self._input_shape = shape
        for layer in self._layers:
            shape = layer._build_once(shape)
        self.built = True

    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"model {self.name!r} has not been built yet, so {what} is not "
                             f"known; give the first layer input_shape=[...], call "
                             f"model.build((None, ...)), or call the model on a batch of data")

    @property
    def input_shape(self):
        return self._input_shape

    @property
    def output_shape(self):
        self._require_built("its output shape")
        return self._layers[-1].output_shape if self._layers else self._input_shape

    @property
    def variables(self):
        """Every layer's variables, in order (Keras' ``model.variables`` / ``weights``)."""
        return [v for layer in self._layers for v in layer.variables]

    weights = variables

    @property
    def trainable_variables(self):
        return [v for layer in self._layers for v in layer.trainable_variables]

    trainable_weights = trainable_variables

    @property
    def non_trainable_variables(self):
        return [v for layer in self._layers for v in layer.non_trainable_variables]

    non_trainable_weights = non_trainable_variables

    @property
    def losses(self):
        """Every layer's regularization penalties (scalar Tensors; Keras' ``model.losses``)."""
        return [loss for layer in self._layers for loss in layer.losses]

    def count_params(self):
        """Total number of scalars in the variables (trainable or not).

        Returns
        -------
        int
        """
        self._require_built("its parameter count")
        return int(sum(v.value.size for v in self.variables))

    def get_weights(self):
        """Copies of all variables' values, in order.

        Returns
        -------
        list of ndarray
        """
        return [v.numpy() for v in self.variables]

    def set_weights(self, weights):
        """Assign all variables' values, in order.

        Parameters
        ----------
        weights : list of array_like
            One value per variable, as :meth:`get_weights` returns them.

        Raises
        ------
        ValueError
            If the number of values or a shape differs.
        """
        vs = self.variables
        if len(weights) != len(vs):
            raise ValueError(f"model {self.name!r} has {len(vs)} weights, got {len(weights)}")
        for v, w in zip(vs, weights):
            v.assign(w)

    # ------------------------------------------------------------ summary
    def summary(self, print_fn=None):
        """Print Keras 3's summary table: layers, output shapes, parameter counts.

        Parameters
        ----------
        print_fn : callable, optional
            Called with each line (default :func:`print`).

        Examples
        --------
        >>> from fastbn import nn
        >>> nn.clear_session()
        >>> nn.Sequential([nn.Dense(3, input_shape=(4,)), nn.BatchNormalization()]).summary()
        Model: "sequential"
        ┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
        ┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
        ┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
        │ dense (Dense)                   │ (None, 3)              │            15 │
        ├─────────────────────────────────┼────────────────────────┼───────────────┤
        │ batch_normalization             │ (None, 3)              │            12 │
        │ (BatchNormalization)            │                        │               │
        └─────────────────────────────────┴────────────────────────┴───────────────┘
         Total params: 27 (108.00 B)
         Trainable params: 21 (84.00 B)
         Non-trainable params: 6 (24.00 B)
        """
        self._require_built("its summary")
        out = print_fn or print
        widths = (31, 22, 13)               # Keras 3's columns at its default 76 characters

        def rule(left, mid, right, fill):
            return left + mid.join(fill * (w + 2) for w in widths) + right

        def row(cells, sep):
            cols = [_wrap(c, w) for c, w in zip(cells[:2], widths[:2])] + [[cells[2]]]
            lines = []
            for i in range(max(len(c) for c in cols)):
                parts = [(c[i] if i < len(c) else "") for c in cols]
                lines.append(sep + " " + parts[0].ljust(widths[0]) + " " + sep + " "
                             + parts[1].ljust(widths[1]) + " " + sep + " "
                             + parts[2].rjust(widths[2]) + " " + sep)
            return lines

        out(f'Model: "{self.name}"')
        out(rule("┏", "┳", "┓", "━"))
        out(row(("Layer (type)", "Output Shape", "Param #"), "┃")[0])
        out(rule("┡", "╇", "┩", "━"))
        for i, layer in enumerate(self._layers):
            if i:
                out(rule("├", "┼", "┤", "─"))
            shape = "(" + ", ".join(str(s) for s in layer.output_shape) + ")"
            for line in row((f"{layer.name} ({type(layer).__name__})", shape,
                             f"{layer.count_params():,}"), "│"):
                out(line)
        out(rule("└", "┴", "┘", "─"))
        total = self.count_params()
        trainable = int(sum(v.value.size for v in self.trainable_variables))
        for label, n in (("Total", total), ("Trainable", trainable),
                         ("Non-trainable", total - trainable)):
            out(f" {label} params: {n:,} ({_readable_size(4 * n)})")

    # ------------------------------------------------------------ calling
    def __call__(self, x, training=False):
        """Run the layers on ``x`` (building the model on first use); returns a Tensor."""
        if training is not None:
            _bn.check_training(training, f"model {self.name!r}")
        if not isinstance(x, ag.Tensor):
            x = ag.Tensor(self._as_input(x, "x"))
        self._check_input_shape(x.shape, "x")
        mask = None
        for layer in self._layers:
            out = (layer.call(x, training=training, mask=mask)
                   if mask is not None and layer._takes_mask()
                   else layer.call(x, training=training))
            mask = layer.compute_mask(x, mask)
            x = out
            if layer.activity_regularizer is not None:
                layer._activity_penalty(x)
        return x

    # ----------------------------------------------------------- compiling
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Choose the optimizer, loss and metrics (Keras' names or objects).

        Parameters
        ----------
        optimizer : str or Optimizer, default "rmsprop"
            ``"rmsprop"``, ``"sgd"``/``"SGD"``, ``"adam"``, or an instance.
        loss : str or callable
            A name (``"sparse_categorical_crossentropy"``,
            ``"categorical_crossentropy"``, ``"binary_crossentropy"``,
            ``"mse"``, ``"mae"``, ...; see :func:`fastbn.nn.losses.get`), a
            loss object, or a function ``(y_true, y_pred)`` whose per-sample
            values are averaged.
        metrics : list of str, optional
            ``["accuracy"]`` or nothing. As in Keras, "accuracy" is binary
            accuracy (threshold 0.5) for one output, sparse categorical
            accuracy for integer labels, categorical accuracy for one-hot
            labels.
        """
        if loss is None:
            raise ValueError("compile(): pass a loss, e.g. "
                             "loss='sparse_categorical_crossentropy'")
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses_mod.get(loss)
        names = []
        if isinstance(metrics, str):        # one metric (tf.keras took it; Keras 3 raises)
            metrics = [metrics]
        for m in metrics or []:
            if m in ("accuracy", "acc", "sparse_categorical_accuracy"):
                names.append("accuracy" if m in ("accuracy", "acc") else m)
            else:
                raise ValueError(f"compile(): unknown metric {m!r}; fastbn.nn supports "
                                 f"metrics=['accuracy']")
        self.metrics_names = ["loss"] + names
        self.compiled = True
        self._plan = None

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
                return ag.SoftmaxSparseCategoricalCrossentropy.apply(out, y)
        else:
            def loss_fn(y, out):
                return loss(y, out)
        if masking:
            cell = [None]
            calls = _mask_passing(layers, calls, cell)
            per_sample = losses_mod._per_sample(loss)
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
        self._plan = (calls, loss_fn, trainable, [v.tensor for v in trainable])

    # ------------------------------------------------------------- data
    def _as_input(self, x, what):
        a = np.asarray(x)
        if a.dtype.kind not in "fiub":
            raise TypeError(f"{what} must hold numbers, got dtype {a.dtype}")
        if a.ndim == 0:
            raise ValueError(f"{what} must have a batch axis, got a scalar")
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=np.float32)    # once per call, not per batch
        return a

    def _check_input_shape(self, shape, what):
        if not self.built:
            self.build((None,) + tuple(shape[1:]))
            self._plan = None
            return
        want = self._input_shape
        if len(shape) != len(want) or any(w is not None and w != s
                                          for w, s in zip(want[1:], shape[1:])):
            raise ValueError(f"model {self.name!r} expects inputs of shape "
                             f"{L._fmt(want)}, but {what} has shape {L._fmt(tuple(shape))} "
                             f"(samples, ...); reshape the data or rebuild the model with "
                             f"input_shape={list(shape[1:])}")

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
    def _backprop(self, xb, yb, scale=None):
        """Forward in training mode, the loss, and its gradients in the trainable
        tensors' ``grad`` (``d loss * scale``); returns ``(loss, output)`` tensors."""
        calls, loss_fn, _, tensors = self._plan
        h = ag.Tensor(xb)
        for call in calls:
            h = call(h, True)
        loss = loss_fn(yb, h)
        for t in tensors:
            t.grad = None
        loss.backward(None if scale is None else np.asarray(scale, loss.data.dtype))
        return loss, h

    def _train_step(self, xb, yb):
        _, _, variables, tensors = self._plan
        loss, h = self._backprop(xb, yb)
        self.optimizer.apply([t.grad for t in tensors], variables)
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
        n = len(x)
        if n == 0:
            raise ValueError("fit(): no training samples")
        self._make_plan()
        steps = -(-n // batch_size)
        history = History()
        history.params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        history.model = self
        with_acc = len(self.metrics_names) > 1
        rng = utils.get_rng()
        step = self._fit_step
        dist = self.distribution
        if dist is not None:                # weights broadcast; each process steps on a shard
            step = dist.begin_fit(self, samples=n, batch_size=batch_size, epochs=epochs,
                                  initial_epoch=initial_epoch, shuffle=bool(shuffle),
                                  validation_samples=None if validation_data is None
                                  else len(validation_data[0]))
            verbose = verbose if dist.is_root else 0

        def hook(name, *args):
            for cb in callbacks:
                fn = getattr(cb, name, None)
                if fn is not None:
                    fn(*args)

        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) \
                or initial_epoch < 0:
            raise ValueError(f"fit(): initial_epoch must be a non-negative integer, got "
                             f"{initial_epoch!r}")
        batch_begin, batch_end = callbacks_mod._batch_hooks(callbacks)
        self._reset_nan_outputs()
        self.stop_training = False
        self._initial_epoch = None
        hook("set_model", self)
        hook("on_train_begin", {})
        if self._initial_epoch is not None:         # BackupAndRestore restored a run
            initial_epoch = self._initial_epoch
        with utils.training_threads(batch_size):
            for epoch in range(initial_epoch, epochs):
                hook("on_epoch_begin", epoch, {})
                order = rng.permutation(n) if shuffle else None
                if dist is not None and order is not None:
                    order = dist.broadcast(order)       # one order, whatever each rng drew
                bar = self._progress(verbose, steps, f"Epoch {epoch + 1}/{epochs}",
                                     compiling=True)
                t0 = time.perf_counter()
                loss_sum = 0.0
                correct = 0
                seen = 0
                for i in range(steps):
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
                logs = {"loss": loss_sum / seen}
                if with_acc:
                    logs["accuracy"] = correct / seen
                if validation_data is not None:
                    hook("on_test_begin", {})
                    vals = self._evaluate(*validation_data, batch_size=batch_size)
                    logs["val_loss"] = vals[0]
                    if with_acc:
                        logs["val_accuracy"] = vals[1]
                if bar is not None:
                    bar.finish(logs)
                elif verbose == 2:
                    text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                    print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - t0:.0f}s - "
                          + text, flush=True)
                history._append(epoch, logs)
                self._warn_nan_outputs(f"fit(), epoch {epoch + 1}")
                hook("on_epoch_end", epoch, dict(logs))
                if self.stop_training:
                    break
        hook("on_train_end", dict(history.history))
        self.history = history
        return history

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
        if self._plan is None:
            self._make_plan()
        calls, loss_fn, _, _ = self._plan
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

    # ------------------------------------------------------------- weights
    def save_weights(self, filepath):
        """Write every variable to a ``.npz`` file, keyed by name (NumPy's format, no pickle).

        The file is written exactly at ``filepath`` (NumPy would append
        ``.npz`` to other names), atomically: to a temporary file beside it,
        then renamed, so a save that fails or is interrupted (a full disk,
        Ctrl-C, a killed process) leaves the previous file as it was. A name
        ending in ``.h5`` (Keras 3's ``.weights.h5``) is written as HDF5 in
        Keras' layout (``layers/<class>_<k>/vars/<i>``; Keras reads it), which
        needs h5py (``pip install 'fastbn[h5]'``).

        Parameters
        ----------
        filepath : str or path-like

        Raises
        ------
        ValueError
            If the model is not built, or two variables share a name.
        ImportError
            For an ``.h5`` name without h5py (nothing is written).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from fastbn import nn
        >>> model = nn.Sequential([nn.Dense(2, input_shape=(3,)), nn.BatchNormalization()])
        >>> path = os.path.join(tempfile.mkdtemp(), "model.weights.npz")
        >>> model.save_weights(path)
        >>> other = nn.Sequential([nn.Dense(2, input_shape=(3,)), nn.BatchNormalization()])
        >>> other.load_weights(path)
        >>> all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))
        True
        """
        self._require_built("its weights")
        vs = self.variables
        arrays = {v.name: v.value for v in vs}
        if len(arrays) != len(vs):
            raise ValueError("save_weights: two variables share a name; give layers "
                             "distinct names")
        if saving.is_hdf5_name(filepath):
            saving.write_weights_h5(self, filepath)
            return
        with atomic_write(filepath) as f:  # a failed save leaves the old file whole
            np.savez(f, **arrays)

    # ------------------------------------------------------ config, saving
    def get_config(self):
        """The model's architecture: name, input shape, each layer's class and config.

        Returns
        -------
        dict
            JSON-ready; :meth:`from_config` rebuilds the model (new weights).

        Examples
        --------
        >>> from fastbn import nn
        >>> model = nn.Sequential([nn.Input((4,)), nn.Dense(2, activation="softmax")])
        >>> config = model.get_config()
        >>> [entry["class_name"] for entry in config["layers"]], config["input_shape"]
        (['Dense'], [None, 4])
        >>> nn.Sequential.from_config(config).count_params()
        10
        """
        return saving.model_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A new model from :meth:`get_config`'s dict (built when it has an input shape).

        Parameters
        ----------
        config : dict
        custom_objects : dict, optional
            Layer classes of your own, by class name.

        Returns
        -------
        Sequential
        """
        return saving.model_from_config(config, custom_objects)

    def save(self, filepath):
        """Save architecture, weights, compile settings and optimizer state to a ``.keras`` file.

        The file is a zip (``config.json``, ``model.weights.npz``,
        ``optimizer.npz``) written atomically: an interrupted save leaves the
        previous file whole. :func:`fastbn.nn.models.load_model` reads it
        back; training continues as if uninterrupted.

        Parameters
        ----------
        filepath : str or path-like
            Ends in ``.keras``.

        Raises
        ------
        ValueError
            For another ending, or an unbuilt model.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from fastbn import nn
        >>> model = nn.Sequential([nn.Input((3,)), nn.BatchNormalization(), nn.Dense(2)])
        >>> model.compile(loss="mse", optimizer="adam")
        >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> model.save(path)
        >>> back = nn.models.load_model(path)
        >>> all(np.array_equal(a, b) for a, b in zip(model.get_weights(), back.get_weights()))
        True
        >>> back.optimizer
        Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-07)
        """
        saving.save_model(self, filepath)

    def _save_training_state(self, path, epoch):
        saving.save_training_state(self, path, epoch)

    def _load_training_state(self, path):
        return saving.load_training_state(self, path)

    def load_weights(self, filepath):
        """Read weights written by :meth:`save_weights` into this model.

        Variables are matched by name; if the names differ (a model built in
        another session is numbered differently) but the count is the same,
        by order. Every entry is checked before any is assigned, so a file
        that fails a check leaves the model as it was.

        Parameters
        ----------
        filepath : str or path-like
            A ``.npz`` file written by :meth:`save_weights`.

        Raises
        ------
        ValueError
            If the file is not a :meth:`save_weights` file (not an ``.npz``,
            truncated, entries not named ``"<layer>/<weight>"`` or not real
            floating point); on a different number of weights or a shape
            mismatch (naming the variable and both shapes); or if a finite
            value overflows the variable's dtype (1e40 into float32). NaN
            and infinity stored in the file load as they are.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from fastbn import nn
        >>> path = os.path.join(tempfile.mkdtemp(), "not-weights.npz")
        >>> np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8))
        >>> model = nn.Sequential([nn.Dense(2, input_shape=(3,))])
        >>> model.load_weights(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: load_weights: not a save_weights file: ...not-weights.npz: entry 'x_train' is not named '<layer>/<weight>'
        """
        self._require_built("its weights")
        vs = self.variables
        if saving.is_hdf5_file(filepath):
            stored = saving.read_weights_h5(self, filepath)
        else:
            stored = _read_weights_file(filepath)
        names = [v.name for v in vs]
        if set(stored) == set(names):
            pairs = [(v, v.name, stored[v.name]) for v in vs]
        elif len(stored) == len(vs):
            pairs = [(v, k, stored[k]) for v, k in zip(vs, stored)]
        else:
            raise ValueError(f"load_weights: {filepath} holds {len(stored)} weights, the "
                             f"model {self.name!r} has {len(vs)}; it was saved from a "
                             f"different architecture")
        values = []
        for v, k, a in pairs:
            if a.shape != v.shape:
                raise ValueError(f"load_weights: weight {k!r} in {filepath} has shape "
                                 f"{a.shape}, but variable {v.name!r} has shape {v.shape}; "
                                 f"the file comes from a different architecture")
            with np.errstate(over="ignore"):
                cast = a.astype(v.dtype)
            overflow = np.isfinite(a) & ~np.isfinite(cast)
            if overflow.any():
                big = a[overflow].flat[0]
                raise ValueError(f"load_weights: weight {k!r} in {filepath} holds {big:.6g}, "
                                 f"beyond the range of variable {v.name!r}'s dtype {v.dtype} "
                                 f"(largest {np.finfo(v.dtype).max:.6g}); it would load as "
                                 f"inf")
            values.append(cast)
        for (v, _, _), cast in zip(pairs, values):  # nothing is assigned until all passed
            v.assign(cast)


def load_model(filepath, custom_objects=None, compile=True):
    """Read a model written by :meth:`Sequential.save` (Keras' ``load_model``).

    Parameters
    ----------
    filepath : str or path-like
        A ``.keras`` file.
    custom_objects : dict, optional
        Layer classes of your own, by class name.
    compile : bool, default True
        Compile with the saved optimizer (its state restored), loss and metrics.

    Returns
    -------
    Sequential

    Raises
    ------
    ValueError
        For a file that is not one :meth:`Sequential.save` wrote.

    Examples
    --------
    >>> import os, tempfile
    >>> from fastbn import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
    >>> nn.Sequential([nn.Input((2,)), nn.Dense(1, name="out")]).save(path)
    >>> [layer.name for layer in nn.models.load_model(path).layers]
    ['out']
    """
    return saving.load_model(filepath, custom_objects, compile)
