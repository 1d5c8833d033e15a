"""Session state: the seeded random generator and Keras-style automatic names.

Everything in :mod:`fastbn.nn` that draws random numbers (initializers,
shuffling in ``fit``, dropout masks) draws from one generator, so
:func:`set_random_seed` makes a whole training run repeat exactly.
"""
import random
import re
from contextlib import contextmanager

import numba
import numpy as np

from .. import _config

__all__ = ["set_random_seed", "clear_session", "get_rng", "unique_name", "to_snake_case",
           "training_threads"]

_STATE = {"rng": np.random.default_rng(), "uids": {}}


def set_random_seed(seed):
    """Seed every random source fastbn.nn uses, as ``keras.utils.set_random_seed``.

    Seeds Python's :mod:`random`, NumPy's global :mod:`numpy.random` state
    and the generator behind initializers, ``fit``'s shuffling and dropout.
    The same seed (and the same thread count) gives the same training run.

    Parameters
    ----------
    seed : int
        A non-negative integer.

    Examples
    --------
    >>> from fastbn import nn
    >>> nn.utils.set_random_seed(0); a = nn.utils.get_rng().random()
    >>> nn.utils.set_random_seed(0); b = nn.utils.get_rng().random()
    >>> a == b
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"set_random_seed: seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    _STATE["rng"] = np.random.default_rng(seed)


def get_rng():
    """The generator initializers, shuffling and dropout draw from.

    Returns
    -------
    numpy.random.Generator

    Examples
    --------
    >>> from fastbn.nn.utils import get_rng
    >>> 0.0 <= get_rng().random() < 1.0
    True
    """
    return _STATE["rng"]


def clear_session():
    """Restart automatic layer names from scratch (``dense``, ``dense_1``, ...).

    As ``keras.backend.clear_session()``: models built afterwards are named
    as in a fresh session. Weights of existing models are not touched.

    Examples
    --------
    >>> from fastbn import nn
    >>> nn.clear_session()
    >>> nn.Dense(2).name, nn.Dense(2).name
    ('dense', 'dense_1')
    """
    _STATE["uids"].clear()


def unique_name(prefix):
    """``prefix``, then ``prefix_1``, ``prefix_2``, ... within the session.

    Parameters
    ----------
    prefix : str

    Returns
    -------
    str

    Examples
    --------
    >>> from fastbn.nn.utils import clear_session, unique_name
    >>> clear_session()
    >>> unique_name("dense"), unique_name("dense")
    ('dense', 'dense_1')
    """
    n = _STATE["uids"].get(prefix, 0)
    _STATE["uids"][prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def to_snake_case(name):
    """Keras' layer-name rule: ``BatchNormalization`` -> ``batch_normalization``.

    Parameters
    ----------
    name : str
        A CamelCase class name.

    Returns
    -------
    str

    Examples
    --------
    >>> from fastbn.nn.utils import to_snake_case
    >>> to_snake_case("BatchNormalization"), to_snake_case("LeakyReLU")
    ('batch_normalization', 'leaky_re_lu')
    """
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


#: ``fit``/``evaluate``/``predict`` with batches up to this size run on one thread (BLAS and
#: Numba): on a busy 2-core machine the BLAS threads' waiting made a batch-32 step 137 ms, not 2.5.
SINGLE_THREAD_BLAS_MAX_BATCH = 64


@contextmanager
def training_threads(batch_size):
    """Share the cores between BLAS, Numba and fastbn's worker threads during
    a model's steps, and keep freed memory for the next step.

    Batches of at most :data:`SINGLE_THREAD_BLAS_MAX_BATCH` run on one
    thread: their products and batch norms are too small to split. Larger
    batches run BLAS on one thread, and Numba's kernels and fastbn's blocked
    work (the convolutions, :mod:`fastbn._workers`) on Numba's thread count:
    one pool at a time on the cores. Two pools that both wait for work by
    spinning took each other's cores: a batch-128 step of the MNIST MLP took
    30 ms with Numba and BLAS on 2 threads each and 4.5 ms with Numba on one
    (2 cores); fastbn shortens Numba's spinning
    (:data:`fastbn._config.SPIN_COUNT`). Inside the block freed memory is
    also kept for reuse (:func:`fastbn._config.keep_freed_memory`). Previous
    settings are restored on exit; without threadpoolctl only BLAS is left
    alone.

    Parameters
    ----------
    batch_size : int
        The batch size of the steps about to run.

    Examples
    --------
    >>> import numba
    >>> import numpy as np
    >>> from fastbn.nn.utils import training_threads
    >>> with training_threads(32):
    ...     inside = numba.get_num_threads()
    ...     _ = np.ones((32, 8)) @ np.ones((8, 4))
    >>> inside
    1
    """
    small = batch_size <= SINGLE_THREAD_BLAS_MAX_BATCH
    forked = _config.FORKED             # serial kernels; Numba is not asked (see FORKED)
    if not forked and small:
        before = numba.get_num_threads()
        numba.set_num_threads(1)
    try:
        with _config.keep_freed_memory(), _config.blas_one_thread():
            yield
    finally:
        if not forked and small:
            numba.set_num_threads(before)


