"""``Sequential``: Keras' model container (layers, build, summary, compile, weights, files).

Training (``fit``, ``evaluate``, ``predict``, ``train_on_batch``) is inherited
from :class:`fastbn.nn.training.Trainer`; files are written and read by
:mod:`fastbn.nn.saving`.
"""
import textwrap

import numpy as np

from .. import autograd as ag
from .. import _bn
from .._files import atomic_write
from . import layers as L, losses as losses_mod, optimizers, saving, utils
from ._format import format_shape
from .training import History, Trainer

__all__ = ["Sequential", "History", "load_model"]


def _readable_size(nbytes):
    """Keras' ``readable_memory_size``: 1024-based, two decimals."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes / 1024 < 1:
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} PB"


def _wrap(text, width):
    """Split ``text`` into lines of at most ``width`` characters, at spaces where possible."""
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _read_weights_file(filepath):
    """The :class:`~fastbn.nn.saving.Npz` of a :meth:`Sequential.save_weights` file:
    its entries' names and dtypes checked from their ``.npy`` headers, no array read.

    Anything else (another array file, a truncated or foreign file) is one
    ``ValueError`` starting "not a save_weights file"; a missing file stays an
    ``OSError``.
    """
    def reject(why):
        return ValueError(f"load_weights: not a save_weights file: {filepath}: {why}")

    with open(filepath, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise reject("it is not an .npz (zip) archive")
    npz = saving.Npz(filepath, reject)
    try:
        for k, (_, dtype) in npz.headers.items():
            if "/" not in k:
                raise reject(f"entry {k!r} is not named '<layer>/<weight>'")
            if dtype.kind != "f":
                raise reject(f"entry {k!r} is {dtype}; weights are real floating point")
    except ValueError:
        npz.close()
        raise
    return npz


class Sequential(Trainer):
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
        #: the distribution strategy (hooks: fastbn.nn.training's docstring), None for one
        #: process; fastbn.distributed.DataParallel.distribute sets one
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

    # ---------------------------------------------------- training (Trainer's)
    # bound here too, so that the API page documents them on Sequential, as Keras does
    fit, evaluate, predict = Trainer.fit, Trainer.evaluate, Trainer.predict
    train_on_batch, step_plan = Trainer.train_on_batch, Trainer.step_plan

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
                             f"{format_shape(want)}, but {what} has shape {format_shape(tuple(shape))} "
                             f"(samples, ...); reshape the data or rebuild the model with "
                             f"input_shape={list(shape[1:])}")


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
        return saving.model_from_config(config, Sequential, custom_objects)

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

    def _pair_weights(self, filepath, stored):
        """``(variable, entry)`` for each variable, given each entry's shape in ``stored``:
        by name, or by order where the names differ; every shape checked."""
        vs = self.variables
        names = [v.name for v in vs]
        if set(stored) == set(names):
            pairs = [(v, v.name) for v in vs]
        elif len(stored) == len(vs):
            pairs = list(zip(vs, stored))
        else:
            raise ValueError(f"load_weights: {filepath} holds {len(stored)} weights, the "
                             f"model {self.name!r} has {len(vs)}; it was saved from a "
                             f"different architecture")
        for v, k in pairs:
            if stored[k] != v.shape:
                raise ValueError(f"load_weights: weight {k!r} in {filepath} has shape "
                                 f"{stored[k]}, but variable {v.name!r} has shape {v.shape}; "
                                 f"the file comes from a different architecture")
        return pairs

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
        if saving.is_hdf5_file(filepath):
            arrays = saving.read_weights_h5(self, filepath)
            pairs = self._pair_weights(filepath, {k: a.shape for k, a in arrays.items()})
        else:
            with _read_weights_file(filepath) as npz:
                pairs = self._pair_weights(
                    filepath, {k: shape for k, (shape, _) in npz.headers.items()})
                arrays = {k: npz.read(k) for _, k in pairs}  # shapes checked: only now read
        values = []
        for v, k in pairs:
            a = arrays[k]
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
        for (v, _), cast in zip(pairs, values):  # nothing is assigned until all passed
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
    return saving.load_model(filepath, Sequential, custom_objects, compile)
