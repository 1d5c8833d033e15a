r"""Peer comparison: fastbn against NumPy and PyTorch, and against the memory bus.

``python -m fastbn.bench`` (or ``fastbn-bench``) measures, in one run:

1. a STREAM triad ``a = b + s * c`` (float32, a Numba ``prange`` kernel on
   arrays far larger than the last-level cache, 12 bytes per element): the
   bandwidth an ordinary compiled loop reaches on this machine;
2. batch-norm forward (training), forward (inference) and backward on seven
   shapes, ``CASE_NAMES`` (or ``--shape``/``--axis``/``--dtype``),
   for each peer: ``fastbn``, ``numpy`` (a plain NumPy implementation in the
   input dtype, what a user would write) and ``torch`` (PyTorch's ATen CPU
   kernel, when PyTorch is installed).

Each peer (and the triad) runs in its own fresh process (``subprocess``, never
``fork``: Numba's OpenMP layer aborts a forked child once a parallel kernel
has run in the parent), with ``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS`` and
``torch.set_num_threads`` set to ``--threads``, so the thread pools never
compete. Inputs are built once per shape before any timing; each operation is
warmed up (compilation, page faults), then timed as the median of ``--repeat``
samples, each sample long enough (``--min-time``) for the clock. A sampling
whose median is over ``NOISE_RATIO`` times its fastest sample (other work on
the cores) is taken again, up to ``RESAMPLE`` times; one still noisy is
flagged: a warning in the terminal, a "noisy" note in the table and a hatched,
labelled bar on the chart.

Bandwidth uses the minimal-traffic model: per element, forward (training)
moves ``3 * itemsize`` bytes (reads x twice, writes y), inference ``2 *``
(reads x, writes y), backward ``5 *`` (reads x and dy twice, writes dx).
Inputs that fit in cache can beat the triad; large ones cannot beat it by
much. The table, a JSON file (with machine information) and a PNG bar chart
are written to ``--out``.

The case table is :mod:`fastbn.bench.cases` (the asv suite and the docs
scripts import it too); behind this module, package-private: ``_timing``
(medians, the noise re-measure, the triad), ``_peers`` (the peers and the
worker process), ``_report`` (machine, rows, table, chart) and ``_cli`` (the
command).

Examples
--------
>>> from fastbn import bench
>>> bench.traffic_bytes("backward", (8192, 1024), "float32") / 2**20
160.0
>>> bench.parse_axis("1,2"), bench.parse_axis("-1")
((1, 2), -1)
"""
from . import _peers
from ._cli import main, parse_axis, run
from ._peers import MALLOC_REUSE_ENV, FastbnOutPeer, FastbnPeer, NumpyPeer, TorchPeer
from ._report import machine_info
from ._timing import NOISE_RATIO, RESAMPLE, TRIAD_BYTES_PER_ELEMENT, measure, triad
from .cases import CASE_NAMES, CASES, EPSILON, MOMENTUM, OPS, make_inputs, traffic_bytes

#: The peers by name (``fastbn``, ``fastbn-out``, ``numpy``, ``torch``), each a class
#: built from :func:`make_inputs`' arrays; the asv suite uses the same registry.
PEERS = _peers.PEERS

__all__ = ["CASES", "CASE_NAMES", "OPS", "PEERS", "make_inputs", "traffic_bytes",
           "measure", "triad", "run", "main"]
