"""``fastbn-mnist`` on synthetic MNIST, run by ``tests/test_distributed.py``.

``[mpiexec -n P] python mnist_job.py ARGS...`` replaces the MNIST loader with
the learnable synthetic digits of ``tests/synthetic_data.py`` (no network)
and runs ``fastbn.examples.mnist.main(ARGS)``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/
from synthetic_data import synthetic_mnist  # noqa: E402


def main(argv):
    from fastbn.datasets import mnist as data
    from fastbn.examples import mnist as job
    data.load_data = lambda path="mnist.npz": synthetic_mnist()
    return job.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
