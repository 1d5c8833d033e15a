"""``fastbn-mnist`` on synthetic MNIST, run by ``tests/test_distributed.py``.

``[mpiexec -n P] python mnist_job.py ARGS...`` replaces the MNIST loader with
the learnable synthetic digits of ``tests/test_mnist_job.py`` (no network)
and runs ``fastbn.examples.mnist.main(ARGS)``.
"""
import sys

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


def main(argv):
    from fastbn.datasets import mnist as data
    from fastbn.examples import mnist as job
    data.load_data = lambda path="mnist.npz": synthetic_mnist()
    return job.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
