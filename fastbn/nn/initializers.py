r"""Weight initializers with Keras' names and formulas.

``fan_in`` and ``fan_out`` are Keras': for a Dense kernel ``(in, out)`` they
are ``in`` and ``out``.
"""
import math

import numpy as np

from . import _serialization, utils

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform",
           "TruncatedNormal", "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeNormal",
           "HeUniform", "LecunNormal", "LecunUniform", "get", "serialize", "deserialize"]

#: Standard deviation of a unit normal truncated at +-2 (Keras divides by it
#: so that the truncated draw keeps the intended stddev).
_TRUNC_STD = 0.87962566103423978


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class: ``init(shape, dtype)`` returns a new array.

    Parameters
    ----------
    seed : int, optional
        A private generator for this initializer; by default the session's
        generator (:func:`fastbn.nn.set_random_seed`).

    Notes
    -----
    Subclasses implement ``__call__(shape, dtype)`` and draw from ``self.rng()``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.initializers import Initializer
    >>> class Uniform01(Initializer):
    ...     def __call__(self, shape, dtype=np.float32):
    ...         return self.rng().uniform(0.0, 1.0, shape).astype(dtype)
    >>> w = Uniform01(seed=0)((2, 3))
    >>> w.shape, w.dtype, bool((w >= 0).all())
    ((2, 3), dtype('float32'), True)
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def rng(self):
        return utils.get_rng() if self._rng is None else self._rng

    def __call__(self, shape, dtype=np.float32):
        raise NotImplementedError

    def get_config(self):
        """The constructor's arguments, as Keras' ``get_config`` (``{"seed": None}``).

        Returns
        -------
        dict
        """
        return {"seed": self.seed}

    from_config = _serialization.from_config
    __repr__ = _serialization.config_repr(omit_if_none=("seed",))


class Zeros(Initializer):
    """All zeros.

    Parameters
    ----------
    seed : int, optional
        Accepted for Keras compatibility; unused.

    Examples
    --------
    >>> from fastbn.nn.initializers import Zeros
    >>> Zeros()((2,))
    array([0., 0.], dtype=float32)
    """

    def __call__(self, shape, dtype=np.float32):
        return np.zeros(shape, dtype)


class Ones(Initializer):
    """All ones.

    Parameters
    ----------
    seed : int, optional
        Accepted for Keras compatibility; unused.

    Examples
    --------
    >>> from fastbn.nn.initializers import Ones
    >>> Ones()((2,))
    array([1., 1.], dtype=float32)
    """

    def __call__(self, shape, dtype=np.float32):
        return np.ones(shape, dtype)


class Constant(Initializer):
    """Every entry equal to ``value`` (Keras' ``Constant``).

    Parameters
    ----------
    value : float, default 0.0

    Examples
    --------
    >>> from fastbn.nn.initializers import Constant
    >>> Constant(4.0)((2,))
    array([4., 4.], dtype=float32)
    """

    def __init__(self, value=0.0):
        super().__init__()
        if np.ndim(value) != 0:
            raise ValueError(f"Constant: value must be a scalar, got {value!r}")
        self.value = float(value)

    def __call__(self, shape, dtype=np.float32):
        return np.full(shape, self.value, dtype)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    r"""Normal draws, :math:`N(\mathrm{mean}, \mathrm{stddev}^2)` (Keras' defaults; ``"normal"``).

    Parameters
    ----------
    mean : float, default 0.0
    stddev : float, default 0.05
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import RandomNormal
    >>> round(float(RandomNormal(seed=0)((100000,)).std()), 2)
    0.05
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype=np.float32):
        return self.rng().normal(self.mean, self.stddev, shape).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    """Uniform draws in ``[minval, maxval)`` (Keras' defaults; ``"uniform"``).

    Parameters
    ----------
    minval : float, default -0.05
    maxval : float, default 0.05
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import RandomUniform
    >>> w = RandomUniform(seed=0)((1000,))
    >>> bool(w.min() >= -0.05 and w.max() < 0.05)
    True
    """

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape, dtype=np.float32):
        return self.rng().uniform(self.minval, self.maxval, shape).astype(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


def _truncated(rng, shape):
    """Unit normal draws, those beyond +-2 redrawn (Keras' ``truncated_normal``)."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    return z


class TruncatedNormal(Initializer):
    r"""Normal draws :math:`N(\mathrm{mean}, \mathrm{stddev}^2)`, redrawn beyond two stddevs.

    As Keras' ``TruncatedNormal``, ``stddev`` is that of the normal before
    truncation (the draws' own stddev is 0.88 times it).

    Parameters
    ----------
    mean : float, default 0.0
    stddev : float, default 0.05
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import TruncatedNormal
    >>> w = TruncatedNormal(seed=0)((1000,))
    >>> bool(abs(w).max() <= 0.1)
    True
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype=np.float32):
        return (_truncated(self.rng(), shape) * self.stddev + self.mean).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class VarianceScaling(Initializer):
    r"""Keras' ``VarianceScaling``: draws whose variance is ``scale / fan``.

    ``fan`` is ``fan_in``, ``fan_out`` or their mean (``mode``). With
    ``distribution="truncated_normal"`` (or ``"normal"``) the draws are a
    normal truncated at two stddevs with stddev :math:`\sqrt{s}/0.8796`
    before truncation (so :math:`\sqrt{s}` after), ``"untruncated_normal"``
    a plain normal with stddev :math:`\sqrt{s}`, ``"uniform"`` uniform in
    :math:`\pm\sqrt{3 s}`, where :math:`s = \mathrm{scale} / \max(1, \mathrm{fan})`.

    Parameters
    ----------
    scale : float, default 1.0
        Positive.
    mode : {"fan_in", "fan_out", "fan_avg"}, default "fan_in"
    distribution : {"truncated_normal", "untruncated_normal", "uniform"}, default "truncated_normal"
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Raises
    ------
    ValueError
        For a non-positive scale, an unknown mode or distribution.

    Examples
    --------
    >>> from fastbn.nn.initializers import VarianceScaling
    >>> w = VarianceScaling(2.0, "fan_in", "uniform", seed=0)((300, 100))
    >>> bool(abs(w).max() <= (6 / 300) ** 0.5)
    True
    """

    _defaults = {}

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if not scale > 0.0:
            raise ValueError(f"VarianceScaling: scale must be a positive float, got {scale!r}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be 'fan_in', 'fan_out' or "
                             f"'fan_avg', got {mode!r}")
        distribution = str(distribution).lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"VarianceScaling: distribution must be 'truncated_normal', "
                             f"'untruncated_normal' or 'uniform', got {distribution!r}")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def __call__(self, shape, dtype=np.float32):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out,
               "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        s = self.scale / max(1.0, fan)
        rng = self.rng()
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * s)
            return rng.uniform(-limit, limit, shape).astype(dtype)
        if self.distribution == "untruncated_normal":
            return (rng.standard_normal(shape) * math.sqrt(s)).astype(dtype)
        return (_truncated(rng, shape) * (math.sqrt(s) / _TRUNC_STD)).astype(dtype)

    def get_config(self):
        if type(self) is not VarianceScaling:
            return {"seed": self.seed}
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed}


def _variance_scaling(name, scale, mode, distribution, doc):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)
    cls = type(name, (VarianceScaling,), {"__init__": __init__, "__doc__": doc,
                                          "__module__": __name__})
    return cls


GlorotUniform = _variance_scaling("GlorotUniform", 1.0, "fan_avg", "uniform", r"""
    Glorot (Xavier) uniform: :math:`U(-l, l)`,
    :math:`l = \sqrt{6 / (\mathrm{fan_{in}} + \mathrm{fan_{out}})}`.

    Keras' default kernel initializer (``VarianceScaling(1.0, "fan_avg", "uniform")``).

    Parameters
    ----------
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import GlorotUniform
    >>> w = GlorotUniform(seed=0)((300, 100))
    >>> bool(abs(w).max() <= (6 / 400) ** 0.5)
    True
    """)

GlorotNormal = _variance_scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal", r"""
    Glorot normal: a truncated normal with stddev
    :math:`\sqrt{2 / (\mathrm{fan_{in}} + \mathrm{fan_{out}})}`.

    Keras' ``VarianceScaling(1.0, "fan_avg", "truncated_normal")``.

    Parameters
    ----------
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import GlorotNormal
    >>> w = GlorotNormal(seed=0)((300, 100))
    >>> round(float(w.std()) / (2 / 400) ** 0.5, 1)
    1.0
    """)

HeNormal = _variance_scaling("HeNormal", 2.0, "fan_in", "truncated_normal", r"""
    He normal, Keras' way: a truncated normal with stddev :math:`\sqrt{2 / \mathrm{fan_{in}}}`.

    Draws from :math:`N(0, \sigma^2)`, :math:`\sigma = \sqrt{2/\mathrm{fan_{in}}} / 0.8796`,
    redrawing values beyond :math:`2\sigma`; the division makes the truncated
    distribution's stddev :math:`\sqrt{2/\mathrm{fan_{in}}}` (Keras'
    ``VarianceScaling(2.0, "fan_in", "truncated_normal")``).

    Parameters
    ----------
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import HeNormal
    >>> w = HeNormal(seed=0)((784, 300))
    >>> round(float(w.std()) / (2 / 784) ** 0.5, 2)
    1.0
    """)

HeUniform = _variance_scaling("HeUniform", 2.0, "fan_in", "uniform", r"""
    He uniform: :math:`U(-l, l)`, :math:`l = \sqrt{6 / \mathrm{fan_{in}}}`.

    Keras' ``VarianceScaling(2.0, "fan_in", "uniform")``.

    Parameters
    ----------
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import HeUniform
    >>> w = HeUniform(seed=0)((300, 100))
    >>> bool(abs(w).max() <= (6 / 300) ** 0.5)
    True
    """)

LecunNormal = _variance_scaling("LecunNormal", 1.0, "fan_in", "truncated_normal", r"""
    LeCun normal: a truncated normal with stddev :math:`\sqrt{1 / \mathrm{fan_{in}}}`.

    Keras' ``VarianceScaling(1.0, "fan_in", "truncated_normal")``, the
    initializer ``selu`` is meant for.

    Parameters
    ----------
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import LecunNormal
    >>> w = LecunNormal(seed=0)((400, 100))
    >>> round(float(w.std()) / (1 / 400) ** 0.5, 1)
    1.0
    """)

LecunUniform = _variance_scaling("LecunUniform", 1.0, "fan_in", "uniform", r"""
    LeCun uniform: :math:`U(-l, l)`, :math:`l = \sqrt{3 / \mathrm{fan_{in}}}`.

    Keras' ``VarianceScaling(1.0, "fan_in", "uniform")``.

    Parameters
    ----------
    seed : int, optional
        A private generator; by default the session's (:func:`fastbn.nn.set_random_seed`).

    Examples
    --------
    >>> from fastbn.nn.initializers import LecunUniform
    >>> w = LecunUniform(seed=0)((300, 100))
    >>> bool(abs(w).max() <= (3 / 300) ** 0.5)
    True
    """)


_CLASSES = (Zeros, Ones, Constant, RandomNormal, RandomUniform, TruncatedNormal,
            VarianceScaling, GlorotUniform, GlorotNormal, HeNormal, HeUniform, LecunNormal,
            LecunUniform)
_BY_NAME = {utils.to_snake_case(c.__name__): c for c in _CLASSES}
_BY_NAME.update({"normal": RandomNormal, "uniform": RandomUniform, "zero": Zeros,
                 "one": Ones})               # Keras 3's aliases


def get(identifier):
    """An initializer from a Keras name (``"he_normal"``, ...), an instance or a callable.

    Parameters
    ----------
    identifier : str or callable
        A Keras name (``"zeros"``, ``"ones"``, ``"constant"``,
        ``"random_normal"``/``"normal"``, ``"random_uniform"``/``"uniform"``,
        ``"truncated_normal"``, ``"variance_scaling"``, ``"glorot_uniform"``,
        ``"glorot_normal"``, ``"he_normal"``, ``"he_uniform"``, ``"lecun_normal"``,
        ``"lecun_uniform"``) or its CamelCase class name, a config dict
        (:func:`serialize`), an :class:`Initializer` or a function ``(shape, dtype)``.

    Returns
    -------
    callable
        ``init(shape, dtype)`` returning a new array.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else that is not callable.

    Examples
    --------
    >>> from fastbn.nn import initializers
    >>> initializers.get("he_normal")
    HeNormal()
    """
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        key = identifier if identifier in _BY_NAME else _snake(identifier)
        if key not in _BY_NAME:
            raise ValueError(f"unknown initializer {identifier!r}; use one of "
                             f"{', '.join(repr(k) for k in _BY_NAME)} or an initializer object")
        return _BY_NAME[key]()
    if callable(identifier):
        return identifier
    raise TypeError(f"initializer must be a name or a callable, got {identifier!r}")


def _snake(name):
    return utils.to_snake_case(name)


def serialize(initializer):
    """Keras' serialized form: ``{"class_name": ..., "config": ...}``.

    Parameters
    ----------
    initializer : Initializer

    Returns
    -------
    dict

    Raises
    ------
    TypeError
        For a plain function (it has no config).

    Examples
    --------
    >>> from fastbn.nn import initializers
    >>> initializers.serialize(initializers.Constant(4.0))
    {'class_name': 'Constant', 'config': {'value': 4.0}}
    """
    return _serialization.serialize(initializer, Initializer, "initializer")


def deserialize(config):
    """The initializer that :func:`serialize` described.

    Parameters
    ----------
    config : dict
        ``{"class_name": ..., "config": {...}}``.

    Returns
    -------
    Initializer

    Examples
    --------
    >>> from fastbn.nn import initializers
    >>> initializers.deserialize({"class_name": "Constant", "config": {"value": 4.0}})
    Constant(value=4.0)
    """
    return _serialization.deserialize(config, _CLASSES, "initializer")
