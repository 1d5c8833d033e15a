"""Files of whole models and training states: ``.keras`` (config, weights, optimizer
state), ``.weights.h5`` (Keras' HDF5 layout), the training state of
:class:`~fastbn.nn.callbacks.BackupAndRestore`.

Every file is written atomically (:mod:`fastbn._files`): to a temporary file
beside the destination, then renamed, so an interrupted save leaves the
previous file whole.
"""
import io
import json
import math
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

# ------------------------------------------------------------- .npz members
_NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError)


class Npz:
    """An ``.npz`` archive whose ``.npy`` headers are read first, before any array.

    :attr:`headers` maps each entry (its name without ``.npy``) to its
    ``(shape, dtype)``; each entry's size in the zip must be exactly what its
    header's shape and itemsize need, which bounds what :meth:`read`
    decompresses. The caller checks the shapes against what it expects, then
    reads. Anything malformed raises ``reject(why)``.

    Parameters
    ----------
    source : str, path-like or file object
    reject : callable
        ``reject(why)`` returns the exception to raise.
    """

    def __init__(self, source, reject):
        self._reject = reject
        try:
            self._zip = zipfile.ZipFile(source)
        except _NPZ_ERRORS as e:
            raise reject(f"it cannot be read as an .npz ({e})") from None
        try:
            self._infos, self.headers = {}, {}
            for info in self._zip.infolist():
                self._header(info)
        except BaseException:
            self._zip.close()
            raise

    def _header(self, info):
        fmt = np.lib.format
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        try:
            with self._zip.open(info) as fh:
                version = fmt.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = fmt.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"entry {key!r} has .npy format version {version}")
                offset = fh.tell()
        except _NPZ_ERRORS as e:
            raise self._reject(f"it cannot be read as an .npz (entry {key!r}: {e})") from None
        if dtype.hasobject:
            raise self._reject(f"entry {key!r} holds Python objects, which would need pickle")
        need = offset + math.prod(shape) * dtype.itemsize
        if info.file_size != need:
            raise self._reject(f"entry {key!r} is {info.file_size} bytes, but its header "
                               f"(shape {shape}, {dtype}) says {need}")
        self._infos[key] = info
        self.headers[key] = (shape, dtype)

    def read(self, key):
        """The array of entry ``key``."""
        try:
            with self._zip.open(self._infos[key]) as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        except _NPZ_ERRORS as e:
            raise self._reject(f"it cannot be read as an .npz (entry {key!r}: {e})") from None

    def close(self):
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def optimizer_state_keys(headers, variables, reject, prefix=""):
    """The entries of an optimizer state (:meth:`Optimizer._get_state`) to read, once
    their headers' shapes are checked against ``variables`` (others are ignored)."""
    keys = []
    for k, (shape, dtype) in headers.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        if name in ("iterations", "learning_rate"):
            want = ()
        else:
            i, _, j = name.partition("/")
            if not (i.isdigit() and j.isdigit() and int(i) < len(variables)):
                continue
            want = tuple(variables[int(i)].shape)
        if shape != want or dtype.kind not in "iuf":
            raise reject(f"optimizer entry {k!r} has shape {shape} and dtype {dtype}, "
                         f"expected shape {want}")
        keys.append(k)
    return keys


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
    """Restore what :func:`save_training_state` wrote; returns the epoch to start from.

    Every entry's shape is checked from its header before any array is read;
    a file that is not a training state (truncated, foreign) is a ``ValueError``.
    """
    def reject(why):
        return ValueError(f"{os.fspath(path)} is not a training state of this model "
                          f"({model.name!r}): {why}")

    vs = model.variables
    with Npz(path, reject) as f:
        shapes = {k: shape for k, (shape, _) in f.headers.items()}
        if any(shapes.get(f"weights/{i}") != v.shape for i, v in enumerate(vs)) or \
                f"weights/{len(vs)}" in shapes or shapes.get("epoch") != ():
            raise reject("the weights differ in number or shape")
        keys = optimizer_state_keys(f.headers, model.trainable_variables, reject,
                                    "optimizer/") if model.optimizer is not None else []
        weights = [f.read(f"weights/{i}") for i in range(len(vs))]
        state = {k[len("optimizer/"):]: f.read(k) for k in keys}
        epoch = f.read("epoch")
    for v, w in zip(vs, weights):
        v.assign(w)
    if model.optimizer is not None:
        model.optimizer._set_state(model.trainable_variables, state)
    return int(epoch)


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


_CONFIG_LIMIT = 64 << 20    # bytes of config.json: a 1,000-layer model's is about 1 MB
_DEFLATE_RATIO = 1032       # deflate's largest expansion: bounds a member's declared size


class _ShapeOnly:
    """What :func:`_weight_shapes` gives a layer's ``build`` instead of a variable."""

    def __init__(self, name, shape):
        self.name, self.shape, self.value, self.tensor = name, shape, None, None
        self.dtype = np.dtype(L.FLOATX)


def _weight_shapes(layers, input_shape):
    """``(layer name, weight name, shape)`` of each variable ``layers`` would create for
    ``input_shape``, found by building them with ``add_weight`` recording the shapes
    instead of allocating (a config may ask for 10**13 units)."""
    out = []
    shape = tuple(input_shape)
    for layer in layers:
        def record(name, shape, *args, _layer=layer, **kwargs):
            shape = tuple(shape)
            out.append((_layer.name, f"{_layer.name}/{name}", shape))
            return _ShapeOnly(f"{_layer.name}/{name}", shape)
        layer.add_weight = record
        shape = layer._build_once(shape)
    return out


def _check_config(config, reject):
    """Raise ``reject`` unless ``config`` has the structure :func:`save_model` writes."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise reject("config.json has no 'config' object")
    c = config["config"]
    if not isinstance(c.get("layers"), list) or not all(
            isinstance(e, dict) and isinstance(e.get("class_name"), str)
            and isinstance(e.get("config"), dict) for e in c["layers"]):
        raise reject("'layers' is not a list of {'class_name': str, 'config': {...}}")
    shape = c.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and shape and all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0)
            for d in shape)):
        raise reject(f"'input_shape' is {shape!r}, not a list of sizes")
    if c.get("name") is not None and not isinstance(c["name"], str):
        raise reject(f"the model name is {c['name']!r}, not a string")
    cc = config.get("compile_config")
    if cc is not None and not (
            isinstance(cc, dict) and isinstance(cc.get("optimizer"), dict)
            and isinstance(cc["optimizer"].get("class_name"), str)
            and isinstance(cc["optimizer"].get("config"), dict) and "loss" in cc
            and (cc.get("metrics") is None or (isinstance(cc["metrics"], list) and all(
                isinstance(m, str) for m in cc["metrics"])))):
        raise reject(f"compile_config {cc!r} is not {{'optimizer': {{'class_name': ..., "
                     f"'config': {{...}}}}, 'loss': ..., 'metrics': [...]}}")


def _member(z, name, reject):
    """Member ``name`` of zip ``z``, open, once its declared size is one its compressed
    data can hold (what is decompressed is bounded by that size)."""
    info = z.getinfo(name)
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO
    if info.file_size > max(info.compress_size, 1) * ratio:
        raise reject(f"{name} declares {info.file_size} bytes from {info.compress_size} "
                     f"compressed")
    return z.open(info)


def load_model(path, model_class, custom_objects=None, compile=True):
    """Read a ``.keras`` file written by :func:`save_model` into a new ``model_class``.

    Nothing the file describes is allocated before it is checked: the config's
    structure, the weights' shapes the config would build (computed without
    allocating) against the stored ``.npy`` headers, and those against the bytes
    the archive holds.
    """

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
        if z.getinfo("config.json").file_size > _CONFIG_LIMIT:
            raise reject(f"config.json is {z.getinfo('config.json').file_size} bytes, over "
                         f"{_CONFIG_LIMIT}")
        try:
            with _member(z, "config.json", reject) as fh:
                config = json.loads(fh.read(_CONFIG_LIMIT + 1))
        except (ValueError, EOFError, zipfile.BadZipFile) as e:
            raise reject(f"config.json cannot be read ({e})") from None
        if not isinstance(config, dict):
            raise reject("config.json is not an object")
        if config.get("format") != FORMAT:
            raise reject(f"format {config.get('format')!r}, expected {FORMAT!r}")
        _check_config(config, reject)
        classes = _layer_classes(custom_objects)
        for entry in config["config"]["layers"]:
            if entry["class_name"] not in classes:
                raise ValueError(f"unknown layer class {entry['class_name']!r}; pass it in "
                                 f"custom_objects={{'{entry['class_name']}': TheClass}}")
        shape = config["config"].get("input_shape")
        if shape is None:
            raise reject("the configuration has no input shape")
        try:
            planned = _weight_shapes([classes[e["class_name"]].from_config(dict(e["config"]))
                                      for e in config["config"]["layers"]], shape)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
            raise reject(f"its layer configuration cannot be built ({e})") from None
        with Npz(_member(z, "model.weights.npz", reject), reject) as f:
            stored = [f.headers.get(str(i)) for i in range(len(f.headers))]
            total = sum(math.prod(h[0]) * h[1].itemsize for h in stored if h is not None)
            if total > z.getinfo("model.weights.npz").file_size:
                raise reject(f"its weights' headers declare {total} bytes, more than "
                             f"model.weights.npz holds")
            if len(stored) != len(planned):
                raise reject(f"the configuration builds {len(planned)} weights, "
                             f"model.weights.npz holds {len(f.headers)}")
            for (layer, wname, want), h in zip(planned, stored):
                if h is None or h[0] != want or h[1].kind != "f":
                    raise reject(f"layer {layer!r} would build weight {wname!r} of shape "
                                 f"{want}, but model.weights.npz stores "
                                 f"{None if h is None else (h[0], str(h[1]))}")
            model = model_from_config(config["config"], model_class, custom_objects)
            if not model.built:
                raise reject("the configuration has no input shape")
            model.set_weights([f.read(str(i)) for i in range(len(stored))])
        cc = config.get("compile_config")
        if not (compile and cc is not None):
            return model
        try:
            optimizer = optimizers.get(cc["optimizer"])
            loss = losses.deserialize(cc["loss"])
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise reject(f"its compile_config cannot be used ({e})") from None
        model.compile(optimizer=optimizer, loss=loss, metrics=cc["metrics"] or None)
        if "optimizer.npz" in names:
            with Npz(_member(z, "optimizer.npz", reject), reject) as f:
                keys = optimizer_state_keys(f.headers, model.trainable_variables, reject)
                state = {k: f.read(k) for k in keys}
            model.optimizer._set_state(model.trainable_variables, state)
    return model
