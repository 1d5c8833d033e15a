"""Learnable MNIST-shaped data for the main job's tests (no network).

Used by ``test_mnist_job.py`` and, through ``mpi_scripts/mnist_job.py``, by
the distributed job's tests.
"""
import numpy as np


def synthetic_mnist(n_train=5000 + 192, n_test=96, seed=0):
    """MNIST-shaped uint8 data whose label is written into the image, so it is learnable."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 64, (n, 28, 28)).astype(np.uint8)
        x[np.arange(n), 2 * y + 4, 4:24] = 255           # a bright row per class
        return x, y
    return make(n_train), make(n_test)
