"""Files of whole models and training states: ``.keras`` (config, weights, optimizer
state), ``.weights.h5`` (Keras' HDF5 layout), the training state of
:class:`~fastbn.nn.callbacks.BackupAndRestore`.

Every file is written atomically (:mod:`fastbn._files`): to a temporary file
beside the destination, then renamed, so an interrupted save leaves the
previous file whole.
"""
import io
import json
import os
import warnings
import zipfile

import numpy as np

from .._files import atomic_path, atomic_write
from . import layers as L, losses, optimizers, utils

__all__ = []

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5_name(path):
    """Whether ``path`` names an HDF5 file (``.h5``, ``.hdf5``, Keras' ``.weights.h5``)."""
    return os.fspath(path).endswith((".h5", ".hdf5"))


def is_hdf5_file(path):
    """Whether the file at ``path`` starts with the HDF5 signature."""
    with open(path, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def _h5py(path, what):
    try:
        import h5py
    except ImportError:
        raise ImportError(f"{what}: {os.fspath(path)} is an HDF5 name, and HDF5 needs h5py, "
                          f"which is not installed: pip install 'fastbn[h5]' (or h5py), or "
                          f"use a .weights.npz name for NumPy's format") from None
    return h5py


def _h5_keys(model):
    """Keras' group name of each layer: its snake-case class name, numbered by class
    in model order (``dense``, ``dense_1``, ``batch_normalization``), whatever the
    layers' own names."""
    seen, keys = {}, []
    for layer in model.layers:
        base = utils.to_snake_case(type(layer).__name__)
        n = seen.get(base, 0)
        seen[base] = n + 1
        keys.append(base if n == 0 else f"{base}_{n}")
    return keys


def write_weights_h5(model, path):
    """Write ``model``'s weights to ``path`` in Keras 3's ``.weights.h5`` layout.

    ``layers/<key>/vars/<i>`` holds the layer's i-th variable (the order of
    ``layer.weights``, which is Keras': ``kernel, bias``; ``gamma, beta,
    moving_mean, moving_variance``), the key being the layer's class in
    snake case, numbered by class in model order (:func:`_h5_keys`). Keras
    reads such a file into a model of the same architecture, and fastbn
    reads Keras' files.
    """
    h5py = _h5py(path, "save_weights")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            layers = f.create_group("layers")
            for key, layer in zip(_h5_keys(model), model.layers):
                vg = layers.create_group(key).create_group("vars")
                vg.attrs["name"] = layer.name
                for i, v in enumerate(layer.weights):
                    vg.create_dataset(str(i), data=v.value)
            f.create_group("vars").attrs["name"] = model.name


def read_weights_h5(model, path):
    """The arrays of a ``.weights.h5`` file keyed by ``model``'s variable names.

    Layers are matched as Keras matches them (:func:`_h5_keys`). The file is
    data only: groups and datasets must be hard links stored in it (no external
    or soft links, external storage or virtual datasets, which read other files),
    and each dataset's dtype and shape are checked from its metadata before it is
    read. Values are checked by the caller.
    """
    h5py = _h5py(path, "load_weights")

    def reject(why):
        return ValueError(f"load_weights: not a weights file: {os.fspath(path)}: {why}")

    def member(group, name, where, kind):
        """``group[name]`` if it is stored in this file: a hard link to a ``kind``
        (an external or soft link would make the load read another file or object)."""
        link = group.get(name, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise reject(f"{where} is a {type(link).__name__}; weights files hold their "
                         f"data themselves, not links")
        obj = group[name]
        if not isinstance(obj, kind):
            raise reject(f"{where} is not an HDF5 {kind.__name__}")
        return obj

    def data(ds, where, v):
        """The dataset's array, once its metadata says it is ``v``'s, stored here."""
        if ds.external or ds.is_virtual:  # their bytes live in other (any local) files
            raise reject(f"{where} keeps its data in other files "
                         f"({'virtual dataset' if ds.is_virtual else 'external storage'}); "
                         f"weights files hold their data themselves")
        if ds.dtype.kind != "f":
            raise reject(f"{where} is {ds.dtype}; weights are real floating point")
        if ds.shape != v.shape:  # checked before reading: the shape bounds what is read
            raise ValueError(f"load_weights: weight {v.name!r} in {os.fspath(path)} has shape "
                             f"{ds.shape}, but variable {v.name!r} has shape {v.shape}; the "
                             f"file comes from a different architecture")
        return ds[()]

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise reject(f"it cannot be read as HDF5 ({e})") from None
    with f:
        group = member(f, "layers", "layers", h5py.Group)
        if group is None:
            raise reject("it has no 'layers' group (Keras' .weights.h5 layout)")
        stored = {}
        for key, layer in zip(_h5_keys(model), model.layers):
            lg = member(group, key, f"layers/{key}", h5py.Group)
            vg = None if lg is None else member(lg, "vars", f"layers/{key}/vars", h5py.Group)
            n = 0 if vg is None else len(vg)
            if n != len(layer.weights):
                raise ValueError(f"load_weights: {os.fspath(path)} holds {n} weights for "
                                 f"layers/{key}, but layer {layer.name!r} has "
                                 f"{len(layer.weights)}; it was saved from a different "
                                 f"architecture")
            for i, v in enumerate(layer.weights):
                where = f"layers/{key}/vars/{i}"
                ds = member(vg, str(i), where, h5py.Dataset)
                if ds is None:
                    raise reject(f"{where} is missing")
                stored[v.name] = data(ds, where, v)
        extra = []
        for k in sorted(set(group) - set(_h5_keys(model))):
            other = member(group, k, f"layers/{k}", h5py.Group)
            vars_ = member(other, "vars", f"layers/{k}/vars", h5py.Group)
            if vars_ is not None and len(vars_):
                extra.append(k)
        if extra:
            raise ValueError(f"load_weights: {os.fspath(path)} holds weights for layers "
                             f"{extra}, which the model {model.name!r} does not have; it was "
                             f"saved from a different architecture")
    return stored


def save_training_state(model, path, epoch):
    """Write weights, optimizer state and the next epoch to one ``.npz``, atomically."""
    arrays = {f"weights/{i}": v.value for i, v in enumerate(model.variables)}
    if model.optimizer is not None:
        for k, a in model.optimizer._get_state(model.trainable_variables).items():
            arrays[f"optimizer/{k}"] = a
    arrays["epoch"] = np.asarray(epoch, np.int64)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_training_state(model, path):
    """Restore what :func:`save_training_state` wrote; returns the epoch to start from."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    vs = model.variables
    weights = [arrays.get(f"weights/{i}") for i in range(len(vs))]
    if any(w is None or w.shape != v.shape for w, v in zip(weights, vs)) or \
            f"weights/{len(vs)}" in arrays or "epoch" not in arrays:
        raise ValueError(f"{os.fspath(path)} is not a training state of this model "
                         f"({model.name!r}): the weights differ in number or shape")
    for v, w in zip(vs, weights):
        v.assign(w)
    if model.optimizer is not None:
        model.optimizer._set_state(model.trainable_variables,
                                   {k[len("optimizer/"):]: a for k, a in arrays.items()
                                    if k.startswith("optimizer/")})
    return int(arrays["epoch"])


# ------------------------------------------------------------- .keras files
FORMAT = "fastbn.keras/1"


def _layer_classes(custom_objects):
    classes = {name: getattr(L, name) for name in L.__all__
               if isinstance(getattr(L, name), type) and issubclass(getattr(L, name), L.Layer)}
    classes.update(custom_objects or {})
    return classes


def model_config(model):
    """``Sequential.get_config()``: name, input shape and each layer's class and config."""
    return {"name": model.name,
            "input_shape": None if model._input_shape is None else list(model._input_shape),
            "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                       for layer in model.layers]}


def model_from_config(config, model_class, custom_objects=None):
    """``Sequential.from_config()``: the layers rebuilt from their configs (new weights),
    in a new ``model_class`` (the container, passed in: saving does not import models)."""
    classes = _layer_classes(custom_objects)
    layers = []
    for entry in config["layers"]:
        cls = classes.get(entry["class_name"])
        if cls is None:
            raise ValueError(f"unknown layer class {entry['class_name']!r}; pass it in "
                             f"custom_objects={{'{entry['class_name']}': TheClass}}")
        layers.append(cls.from_config(dict(entry["config"])))
    shape = config.get("input_shape")
    if shape is not None:
        layers.insert(0, L.Input(shape=tuple(shape)[1:]))
    return model_class(layers, name=config.get("name"))


def _compile_config(model):
    if not model.compiled:
        return None
    try:
        loss = losses.serialize(model.loss)
    except TypeError:
        warnings.warn(f"model.save: the loss {model.loss!r} has no config, so the file holds "
                      f"no compile settings; load_model returns an uncompiled model",
                      stacklevel=3)
        return None
    return {"optimizer": {"class_name": type(model.optimizer).__name__,
                          "config": model.optimizer.get_config()},
            "loss": loss, "metrics": model.metrics_names[1:]}


def save_model(model, path):
    """Write ``model`` to a ``.keras`` zip: config, weights and optimizer state, atomically."""
    if not os.fspath(path).endswith(".keras"):
        raise ValueError(f"model.save: the file name must end in .keras, got {os.fspath(path)}; "
                         f"for the weights alone use save_weights")
    model._require_built("its weights")
    config = {"format": FORMAT, "class_name": "Sequential", "config": model_config(model),
              "compile_config": _compile_config(model)}
    weights = io.BytesIO()
    np.savez(weights, **{f"{i}": v.value for i, v in enumerate(model.variables)})
    files = {"config.json": json.dumps(config, indent=1).encode(),
             "model.weights.npz": weights.getvalue()}
    if config["compile_config"] is not None:
        state = io.BytesIO()
        np.savez(state, **model.optimizer._get_state(model.trainable_variables))
        files["optimizer.npz"] = state.getvalue()
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)


def load_model(path, model_class, custom_objects=None, compile=True):
    """Read a ``.keras`` file written by :func:`save_model` into a new ``model_class``."""

    def reject(why):
        return ValueError(f"load_model: {os.fspath(path)} is not a fastbn .keras file: {why}")

    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise reject(f"not a zip archive ({e})") from None
    with z:
        names = set(z.namelist())
        if "config.json" not in names or "model.weights.npz" not in names:
            raise reject("no config.json / model.weights.npz inside (a Keras-written "
                         ".keras file stores HDF5 weights, which load_model does not read)")
        config = json.loads(z.read("config.json"))
        if config.get("format") != FORMAT:
            raise reject(f"format {config.get('format')!r}, expected {FORMAT!r}")
        with np.load(io.BytesIO(z.read("model.weights.npz")), allow_pickle=False) as f:
            weights = [f[str(i)] for i in range(len(f.files))]
        state = None
        if "optimizer.npz" in names:
            with np.load(io.BytesIO(z.read("optimizer.npz")), allow_pickle=False) as f:
                state = {k: f[k] for k in f.files}
    model = model_from_config(config["config"], model_class, custom_objects)
    if not model.built:
        raise reject("the configuration has no input shape")
    model.set_weights(weights)
    cc = config.get("compile_config")
    if compile and cc is not None:
        model.compile(optimizer=optimizers.get(cc["optimizer"]),
                      loss=losses.deserialize(cc["loss"]), metrics=cc["metrics"] or None)
        if state is not None:
            model.optimizer._set_state(model.trainable_variables, state)
    return model
