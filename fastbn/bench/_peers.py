"""The peers: fastbn, NumPy and PyTorch behind one interface, and the worker that
times one of them (or the triad) in a fresh process.

Each peer (and the triad) runs in its own interpreter (``subprocess``, never
``fork``: Numba's OpenMP layer aborts a forked child once a parallel kernel has
run in the parent), with its thread count in the environment, so the thread
pools never compete.

Examples
--------
>>> from fastbn.bench import _peers as peers, cases
>>> ops = peers.PEERS["numpy"](cases.make_inputs((16, 3), -1, "float32"), -1)
>>> ops.output("forward").shape
(16, 3)
"""
import gc
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np

from ._timing import measure_steady, triad
from .cases import EPSILON, MOMENTUM, feature_axes, make_inputs


_SAMPLE_POINTS = 64                  # output elements compared across peers
#: ``--malloc-reuse``: glibc keeps freed memory instead of returning each large
#: block to the OS, so an output allocated per call is not page-faulted (and
#: zeroed by the kernel) again on every call. Measured on (8192, 1024) fp32,
#: 2 threads: fastbn forward 6.4 -> 3.3 ms, a fresh 32 MiB np.empty + fill
#: 3.5 -> 1.1 ms. It applies to every peer alike (PyTorch's CPU allocator
#: also calls malloc).
MALLOC_REUSE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32),
                    "MALLOC_TRIM_THRESHOLD_": str(1 << 33),
                    "MALLOC_TOP_PAD_": str(1 << 28)}


class _Ops:
    """Zero-argument callables for one peer on one prepared input.

    ``forward``/``inference``/``backward`` are what gets timed; ``output(op)``
    returns the main result (y or dx) as a NumPy array shaped like ``x``, for
    the cross-peer agreement check.
    """

    def output(self, op):
        return getattr(self, op)()[0]


class FastbnPeer(_Ops):
    name = "fastbn"

    @staticmethod
    def available():
        return None

    def __init__(self, inputs, axis):
        from .. import functional as F
        self._f = F
        self.i, self.axis = inputs, axis
        self.y = self.dx = None              # fresh outputs per call (see FastbnOutPeer)
        _, self.mean, self.invstd = F.batch_norm_forward(
            inputs["x"], inputs["gamma"], inputs["beta"], axis=axis, epsilon=EPSILON)

    def forward(self):
        i = self.i
        return self._f.batch_norm_forward(
            i["x"], i["gamma"], i["beta"], axis=self.axis, epsilon=EPSILON, training=True,
            moving_mean=i["moving_mean_train"], moving_variance=i["moving_var_train"],
            momentum=MOMENTUM, out=self.y)

    def inference(self):
        i = self.i
        return self._f.batch_norm_forward(
            i["x"], i["gamma"], i["beta"], axis=self.axis, epsilon=EPSILON, training=False,
            moving_mean=i["moving_mean_inf"], moving_variance=i["moving_var_inf"], out=self.y)

    def backward(self):
        i = self.i
        return self._f.batch_norm_backward(i["dy"], i["x"], self.mean, self.invstd, i["gamma"],
                                           axis=self.axis, out=self.dx)


class FastbnOutPeer(FastbnPeer):
    """fastbn writing into outputs allocated once (``out=``): no page faults per call."""

    name = "fastbn-out"

    def __init__(self, inputs, axis):
        super().__init__(inputs, axis)
        self.y = np.empty_like(inputs["x"])
        self.dx = np.empty_like(inputs["x"])


class NumpyPeer(_Ops):
    """Textbook batch norm in plain NumPy, in the input's dtype (what a user writes)."""

    name = "numpy"

    @staticmethod
    def available():
        return None

    def __init__(self, inputs, axis):
        x = inputs["x"]
        feats = feature_axes(x.shape, axis)
        self.red = tuple(a for a in range(x.ndim) if a not in feats)
        self.n = math.prod(x.shape[a] for a in self.red)
        bshape = tuple(s if a in feats else 1 for a, s in enumerate(x.shape))
        self.i = {k: (v.reshape(bshape) if k not in ("x", "dy") else v)
                  for k, v in inputs.items()}
        _, self.mean, self.invstd = self.forward()

    def forward(self):
        i = self.i
        x = i["x"]
        mean = x.mean(axis=self.red, keepdims=True)
        var = x.var(axis=self.red, keepdims=True)
        invstd = 1 / np.sqrt(var + x.dtype.type(EPSILON))
        y = (x - mean) * (invstd * i["gamma"]) + i["beta"]
        for moving, batch in ((i["moving_mean_train"], mean), (i["moving_var_train"], var)):
            moving *= MOMENTUM
            moving += (1 - MOMENTUM) * batch
        return y, mean, invstd

    def inference(self):
        i = self.i
        scale = i["gamma"] / np.sqrt(i["moving_var_inf"] + i["x"].dtype.type(EPSILON))
        return ((i["x"] - i["moving_mean_inf"]) * scale + i["beta"],)

    def backward(self):
        i = self.i
        dy, x = i["dy"], i["x"]
        xhat = (x - self.mean) * self.invstd
        dbeta = dy.sum(axis=self.red, keepdims=True)
        dgamma = (dy * xhat).sum(axis=self.red, keepdims=True)
        dx = (i["gamma"] * self.invstd) * (dy - dbeta / self.n - xhat * (dgamma / self.n))
        return dx, dgamma, dbeta


def _torch_view(torch, a, feats):
    """``a`` as a tensor with its features in dim 1 (no copy), or None.

    Features last in 4-/5-d input (NHWC): permuted to NCHW, i.e. PyTorch's
    channels-last memory format. A run of adjacent feature axes: reshaped to
    ``(before, C)`` or ``(before, C, after)`` (``(N, 784)`` for
    ``axis=(1, 2)`` of ``(N, 28, 28)``).
    """
    t = torch.from_numpy(a)
    nd = a.ndim
    if feats == (nd - 1,) and nd in (4, 5):
        return t.permute(0, nd - 1, *range(1, nd - 1))
    if feats != tuple(range(feats[0], feats[-1] + 1)) or not a.flags.c_contiguous:
        return None
    before = math.prod(a.shape[:feats[0]])
    c = math.prod(a.shape[a_] for a_ in feats)
    after = math.prod(a.shape[feats[-1] + 1:])
    return t.reshape((before, c) if after == 1 else (before, c, after))


def _torch_unview(t, shape, feats):
    nd = len(shape)
    if feats == (nd - 1,) and nd in (4, 5):
        t = t.permute(0, *range(2, nd), 1)
    return t.reshape(shape).numpy()


class TorchPeer(_Ops):
    """PyTorch's CPU kernel through ``torch.ops.aten.native_batch_norm[_backward]``."""

    name = "torch"

    @staticmethod
    def available():
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed (pip install torch)"
        return None

    @staticmethod
    def supports(shape, axis):
        """Whether the features can be put in dim 1 without a copy."""
        feats = feature_axes(shape, axis)
        nd = len(shape)
        return (feats == (nd - 1,) and nd in (4, 5)) or feats == tuple(
            range(feats[0], feats[-1] + 1))

    def __init__(self, inputs, axis):
        import torch
        self.torch = torch
        x = inputs["x"]
        self.shape, self.feats = x.shape, feature_axes(x.shape, axis)
        self.x = _torch_view(torch, x, self.feats)
        self.dy = _torch_view(torch, inputs["dy"], self.feats)
        if self.x is None:
            raise NotImplementedError(f"no copy-free PyTorch view of {x.shape} axis={axis}")
        vec = {k: torch.from_numpy(np.ascontiguousarray(inputs[k]).reshape(-1))
               for k in ("gamma", "beta", "moving_mean_train", "moving_var_train",
                         "moving_mean_inf", "moving_var_inf")}
        self.v = vec
        self.aten = torch.ops.aten
        _, self.save_mean, self.save_invstd = self._forward()

    def _forward(self):
        v = self.v
        return self.aten.native_batch_norm(self.x, v["gamma"], v["beta"], v["moving_mean_train"],
                                           v["moving_var_train"], True, 1 - MOMENTUM, EPSILON)

    def forward(self):
        return self._forward()

    def inference(self):
        v = self.v
        return self.aten.native_batch_norm(self.x, v["gamma"], v["beta"], v["moving_mean_inf"],
                                           v["moving_var_inf"], False, 1 - MOMENTUM, EPSILON)

    def backward(self):
        v = self.v
        return self.aten.native_batch_norm_backward(
            self.dy, self.x, v["gamma"], v["moving_mean_train"], v["moving_var_train"],
            self.save_mean, self.save_invstd, True, EPSILON, [True, True, True])

    def output(self, op):
        return _torch_unview(getattr(self, op)()[0], self.shape, self.feats)


#: Peer registry, shared with the asv suite (``asv_bench/benchmarks/common.py``).
PEERS = {p.name: p for p in (FastbnPeer, FastbnOutPeer, NumpyPeer, TorchPeer)}


def worker(spec):
    """Run one peer (or the triad) in this process; return a JSON-able dict."""
    if spec["peer"] == "torch":
        # PyTorch first: its import loads its GNU OpenMP with the process' own
        # settings, not the short spin fastbn gives Numba's (_config.SPIN_COUNT),
        # which asking Numba for its thread count would load first.
        import torch  # noqa: F401
    import numba
    out = {"peer": spec["peer"], "threads": spec["threads"], "results": [],
           "numba_threads": numba.get_num_threads()}
    if spec["peer"] == "triad":
        out["triad"] = triad(spec.get("triad_mib"), repeat=spec["repeat"])
        out["threading_layer"] = numba.threading_layer()
        return out
    peer = PEERS[spec["peer"]]
    if peer is TorchPeer:
        import torch
        torch.set_num_threads(spec["threads"])
        out["versions"] = {"torch": torch.__version__}
        out["torch_threads"] = torch.get_num_threads()
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    elif peer is FastbnPeer:
        import fastbn
        out["versions"] = {"fastbn": fastbn.__version__}
    for case in spec["cases"]:
        shape, axis, dtype = tuple(case["shape"]), case["axis"], case["dtype"]
        axis = axis if isinstance(axis, int) else tuple(axis)
        base = dict(case=case["name"], shape=list(shape), axis=case["axis"], dtype=dtype,
                    peer=peer.name)
        if peer is TorchPeer and not TorchPeer.supports(shape, axis):
            for op in spec["ops"]:
                out["results"].append(dict(base, op=op, skipped="no copy-free PyTorch view"))
            continue
        inputs = make_inputs(shape, axis, dtype, seed=spec["seed"])
        ops = peer(inputs, axis)
        size = math.prod(shape)
        idx = np.linspace(0, size - 1, min(size, _SAMPLE_POINTS)).astype(np.int64)
        for op in spec["ops"]:
            samples, number, tries, noisy = measure_steady(
                getattr(ops, op), spec["repeat"], spec["min_time"], spec["max_time"])
            sample = np.asarray(ops.output(op), dtype=np.float64).reshape(-1)[idx]
            out["results"].append(dict(
                base, op=op, median_s=float(np.median(samples)), min_s=float(min(samples)),
                max_s=float(max(samples)), samples=len(samples), number=number,
                samplings=tries, noisy=noisy, output_sample=sample.tolist()))
        del ops, inputs
        gc.collect()
    if peer is FastbnPeer:
        out["threading_layer"] = numba.threading_layer()
    return out


def run_worker(spec, workdir):
    """Run ``spec`` in a fresh interpreter with the thread count in its environment."""
    t = str(spec["threads"])
    env = dict(os.environ, NUMBA_NUM_THREADS=t, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t,
               OPENBLAS_NUM_THREADS=t)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if spec.get("malloc_reuse"):
        env.update(MALLOC_REUSE_ENV)
    tag = "-".join(c["name"] for c in spec.get("cases", []))[:40] or "all"
    path = os.path.join(workdir, f"{spec['peer']}-{t}-{tag}-r{spec.get('round', 0)}")
    with open(path + ".spec.json", "w") as f:
        json.dump(spec, f)
    proc = subprocess.run([sys.executable, "-m", "fastbn.bench", "--_worker", path],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(path + ".out.json"):
        return {"peer": spec["peer"], "threads": spec["threads"], "results": [],
                "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    with open(path + ".out.json") as f:
        return json.load(f)


