"""Inputs and helpers shared by the fastbn asv benchmarks.

Append-only: never change what an existing name builds (shape, seed, values),
or results recorded before the change stop being comparable with those after
it. Add a new name instead.

The fastbn side calls only the public API (``fastbn.moments``,
``batch_norm_forward``, ``batch_norm_backward``), so the suite can measure any
commit that has it. The peers (plain NumPy, PyTorch) come from the one
registry in :mod:`fastbn.bench`, the cases from its one table,
:mod:`fastbn.bench.cases`; where that module or PyTorch is missing,
their benchmarks are skipped (``NotImplementedError`` in ``setup``).
"""
import importlib.util
import math
import os
import tracemalloc
from functools import lru_cache

import numpy as np

try:                                   # the peer registry (absent before it landed)
    from fastbn import bench as _bench
except ImportError:                    # pragma: no cover
    _bench = None
try:
    from fastbn.bench import cases as _cases
except ImportError:                    # pragma: no cover
    # a fastbn from before fastbn.bench.cases: this checkout's table (it imports no fastbn)
    _spec = importlib.util.spec_from_file_location(
        "_fastbn_bench_cases", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            os.pardir, os.pardir, "fastbn", "bench", "cases.py"))
    _cases = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_cases)
try:
    # imported here, once, in asv's forkserver: every benchmark process is
    # forked from it, and importing PyTorch in each of them cost 1-2 s apiece
    # (most of a 13-minute quick run)
    import torch
except ImportError:                    # pragma: no cover
    torch = None

#: The benchmark cases (fastbn.bench.cases.CASES): label -> (shape, feature axis, dtype),
#: e.g. "A 128x784 ax-1 f32" (fastbn.bench.cases.label). One parameter carries all
#: three, as they come in pairs (G is C in float64); a full (shape x axis x dtype)
#: grid would nearly double the run for pairs nobody asked about.
CASES = {_cases.label(name): case for name, case in _cases.CASES.items()}
IMPLS = ["fastbn", "numpy", "torch"]
#: Implementations whose every allocation tracemalloc sees (NumPy arrays and
#: Numba's NRT allocations, not PyTorch's allocator).
TRACED_IMPLS = ["fastbn", "numpy"]
#: Bytes moved per element, in itemsizes, under the minimal-traffic model.
TRAFFIC = {"moments": 1, **_cases.OPS}
EPSILON = _cases.EPSILON
MOMENTUM = _cases.MOMENTUM
SEED = 0
feature_axes = _cases.feature_axes


def reduced_axes(shape, axis):
    feats = feature_axes(shape, axis)
    return tuple(a for a in range(len(shape)) if a not in feats)


@lru_cache(maxsize=2)
def inputs(case):
    """Every array a benchmark needs for ``case``, built once per process.

    ``moving_*_train`` are updated in place by training forwards;
    ``moving_*_inf`` are only read.
    """
    shape, axis, dtype = CASES[case]
    return _cases.make_inputs(shape, axis, dtype, seed=SEED)


class _FastbnOps:
    """fastbn through its public API only."""

    def __init__(self, i, axis):
        import fastbn
        self.f, self.i, self.axis = fastbn, i, axis
        _, self.mean, self.invstd = fastbn.batch_norm_forward(
            i["x"], i["gamma"], i["beta"], axis=axis, epsilon=EPSILON)

    def moments(self):
        return self.f.moments(self.i["x"], axis=reduced_axes(self.i["x"].shape, self.axis))

    def forward(self):
        i = self.i
        return self.f.batch_norm_forward(
            i["x"], i["gamma"], i["beta"], axis=self.axis, epsilon=EPSILON, training=True,
            moving_mean=i["moving_mean_train"], moving_variance=i["moving_var_train"],
            momentum=MOMENTUM)

    def inference(self):
        i = self.i
        return self.f.batch_norm_forward(
            i["x"], i["gamma"], i["beta"], axis=self.axis, epsilon=EPSILON, training=False,
            moving_mean=i["moving_mean_inf"], moving_variance=i["moving_var_inf"])

    def backward(self):
        i = self.i
        return self.f.batch_norm_backward(i["dy"], i["x"], self.mean, self.invstd, i["gamma"],
                                          axis=self.axis)


def _peer_moments(impl, x, red):
    if impl == "numpy":
        return lambda: (x.mean(axis=red), x.var(axis=red))
    t = torch.from_numpy(x)
    return lambda: torch.var_mean(t, dim=red, correction=0)


def ops(case, impl, warm=("moments", "forward", "inference", "backward")):
    """Callables ``.moments/.forward/.inference/.backward`` for one implementation.

    Each operation named in ``warm`` is called once here, so compilation (or
    loading Numba's cache) and first-touch page faults land in ``setup``,
    never in a ``time_*``. Raises ``NotImplementedError`` (asv: skipped) for
    a peer that is not available.
    """
    shape, axis, _ = CASES[case]
    i = inputs(case)
    if impl == "fastbn":
        o = _FastbnOps(i, axis)
    else:
        if _bench is None:
            raise NotImplementedError("fastbn.bench (the peer registry) is not in this commit")
        peer = _bench.PEERS[impl]
        if peer.available():
            raise NotImplementedError(peer.available())
        if impl == "torch":
            import numba
            torch.set_num_threads(numba.get_num_threads())   # the same threads as fastbn
            if not peer.supports(shape, axis):
                raise NotImplementedError(f"no copy-free PyTorch view of {case}")
        o = peer({k: v.copy() if k.startswith("moving") else v for k, v in i.items()}, axis)
        o.moments = _peer_moments(impl, i["x"], reduced_axes(shape, axis))
    for op in warm:
        getattr(o, op)()
    return o


def median_seconds(fn, repeat=7):
    """Median seconds per call of ``fn()`` (for ``track_*``), after warm-up."""
    if _bench is not None:
        samples, _ = _bench.measure(fn, repeat=repeat, min_time=2e-3, max_time=2.0)
    else:                                                       # pragma: no cover
        import timeit
        fn()
        samples = [t / 3 for t in timeit.repeat(fn, number=3, repeat=repeat)]
    return float(np.median(samples))


def gbps(op, case, seconds):
    """GB/s under the minimal-traffic model (``TRAFFIC`` x itemsize per element)."""
    shape, _, dtype = CASES[case]
    return TRAFFIC[op] * np.dtype(dtype).itemsize * math.prod(shape) / seconds / 1e9


def triad_gbps():
    """STREAM triad bandwidth (GB/s, float32, this process's thread count)."""
    if _bench is None:
        raise NotImplementedError("fastbn.bench (the triad) is not in this commit")
    return _bench.triad(repeat=10)["gbps"]


def traced_peak_bytes(fn):
    """Peak bytes allocated (tracemalloc) during one call of ``fn``, minus what it returns.

    What is left is the scratch memory: the goal is O(C x chunks) beyond
    the outputs.
    """
    fn()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = sum(a.nbytes for a in (out if isinstance(out, tuple) else (out,))
               if isinstance(a, np.ndarray))
    return peak - base - kept
