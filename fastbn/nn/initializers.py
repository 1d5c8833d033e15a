r"""Weight initializers with Keras' names and formulas.

``fan_in`` and ``fan_out`` are Keras': for a Dense kernel ``(in, out)`` they
are ``in`` and ``out``.
"""
import math

import numpy as np

from . import utils

__all__ = ["Initializer", "Zeros", "Ones", "GlorotUniform", "HeNormal", "get"]

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

    def __repr__(self):
        return f"{type(self).__name__}()"


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


class GlorotUniform(Initializer):
    r"""Glorot (Xavier) uniform: :math:`U(-l, l)`, :math:`l = \sqrt{6 / (\mathrm{fan_{in}} + \mathrm{fan_{out}})}`.

    Keras' default kernel initializer.

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
    """

    def __call__(self, shape, dtype=np.float32):
        fan_in, fan_out = _fans(shape)
        limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
        return self.rng().uniform(-limit, limit, shape).astype(dtype)


class HeNormal(Initializer):
    r"""He normal, Keras' way: a truncated normal with stddev :math:`\sqrt{2 / \mathrm{fan_{in}}}`.

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
    """

    def __call__(self, shape, dtype=np.float32):
        fan_in, _ = _fans(shape)
        sigma = math.sqrt(2.0 / max(1.0, fan_in)) / _TRUNC_STD
        rng = self.rng()
        z = rng.standard_normal(shape)
        bad = np.abs(z) > 2.0
        while bad.any():                     # redraw outside +-2 sigma: truncated normal
            z[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(z) > 2.0
        return (z * sigma).astype(dtype)


_BY_NAME = {"zeros": Zeros, "ones": Ones, "glorot_uniform": GlorotUniform,
            "he_normal": HeNormal}


def get(identifier):
    """An initializer from a Keras name (``"he_normal"``, ...), an instance or a callable.

    Parameters
    ----------
    identifier : str or callable
        ``"zeros"``, ``"ones"``, ``"glorot_uniform"``, ``"he_normal"`` (or their
        CamelCase class names), an :class:`Initializer` or a function
        ``(shape, dtype)``.

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
