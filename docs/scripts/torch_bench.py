"""fastbn.torch against torch.nn's batch norm, interleaved in one process.

1. The modules alone, forward + backward through autograd (``y = bn(x);
   y.backward(dy)``, training mode, running statistics updated), on the
   benchmark cases C, D, E (``fastbn.bench.CASES``; E is D's shape in
   ``channels_last`` memory) and small shapes; fastbn.torch with its C++
   training path (where the input's layout takes it) and without (its Python
   path); and the adapter's own cost per call: the module's time minus
   fastbn's functional forward + backward on the same arrays.
2. A training step (forward, loss, backward, SGD) of a small ResNet-style CNN
   on 32x32 inputs, batch 64, NCHW and channels_last: ``fastbn.torch.convert``
   of the model against the model as it is.

Each round times every variant once, in turn; the ratios are per round, and
the medians over rounds are reported. Run::

    python docs/scripts/torch_bench.py --threads 2 --rounds 7

``--pieces`` times instead where a small step's time goes (:func:`pieces`).
"""
import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import numpy as np


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="Numba and torch threads (default 2)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--budget", type=float, default=0.25,
                   help="seconds per variant per round (default 0.25)")
    p.add_argument("--skip-cnn", action="store_true", help="modules only")
    p.add_argument("--pieces", action="store_true",
                   help="only the pieces of a small step (where the time of (32, 64) and A goes)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args()


ARGS = _args()
os.environ.setdefault("NUMBA_NUM_THREADS", str(ARGS.threads))

import numba  # noqa: E402
import torch  # noqa: E402

import fastbn  # noqa: E402
import fastbn.torch as fbt  # noqa: E402
import fastbn.torch._native as fbt_native  # noqa: E402
from fastbn.bench import CASES  # noqa: E402

torch.set_num_threads(ARGS.threads)
numba.set_num_threads(ARGS.threads)


def _timed(step, budget):
    """Seconds per call of ``step``, calling it until ``budget`` seconds have passed."""
    calls, t0 = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= budget:
            return elapsed / calls


def interleave(steps, rounds, budget):
    """{name: [seconds per call, one per round]}; each round runs every step in turn."""
    for f in steps.values():                # warm up: compilation, plans, allocator
        f()
        f()
    times = {k: [] for k in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(steps)[::-1]
        for k in order:
            times[k].append(_timed(steps[k], budget))
    return times


def _module_case(shape, fmt):
    c = shape[1]
    cls = {2: (torch.nn.BatchNorm1d, fbt.BatchNorm1d), 3: (torch.nn.BatchNorm1d, fbt.BatchNorm1d),
           4: (torch.nn.BatchNorm2d, fbt.BatchNorm2d)}[len(shape)]
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 2 + 1).contiguous(memory_format=fmt)
    dy = torch.randn(shape, generator=g).contiguous(memory_format=fmt)
    steps = {}
    for name, mcls in (("torch", cls[0]), ("fastbn", cls[1])):
        bn = mcls(c)
        xr = x.clone().requires_grad_()

        def step(bn=bn, xr=xr):
            xr.grad = None
            bn.weight.grad = bn.bias.grad = None
            bn(xr).backward(dy)
        steps[name] = step
    steps["python"] = _python_path(steps["fastbn"])
    # fastbn's functional API on the same arrays: what the module computes
    xa, dya = x.numpy(), dy.numpy()
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)

    def functional():
        mean_b, var_b = np.zeros(c), np.zeros(c)
        _, mean, invstd = fastbn.batch_norm_forward(xa, gamma, beta, axis=1, epsilon=1e-5,
                                                    moving_mean=mean_b, moving_variance=var_b,
                                                    momentum=0.0)
        fastbn.batch_norm_backward(dya, xa, mean, invstd, gamma, axis=1)
    steps["functional"] = functional
    return steps


def _python_path(step):
    """``step`` with fastbn.torch's C++ training path off: its Python path."""
    def python():
        native, fbt_native._native_module = fbt_native._native_module, False
        try:
            step()
        finally:
            fbt_native._native_module = native
    return python


def modules():
    cases = {"C": (CASES["C"][0], torch.contiguous_format),
             "D": (CASES["D"][0], torch.contiguous_format),
             "E": (CASES["D"][0], torch.channels_last),
             "A": (CASES["A"][0], torch.contiguous_format),
             "B": (CASES["B"][0], torch.contiguous_format),
             "(64, 32, 16, 16)": ((64, 32, 16, 16), torch.contiguous_format),
             "(64, 32, 16, 16) CL": ((64, 32, 16, 16), torch.channels_last),
             "(32, 64)": ((32, 64), torch.contiguous_format)}
    out = {}
    for name, (shape, fmt) in cases.items():
        times = interleave(_module_case(shape, fmt), ARGS.rounds, ARGS.budget)
        ratio = statistics.median(t / f for t, f in zip(times["torch"], times["fastbn"]))
        med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        python = statistics.median(t / f for t, f in zip(times["torch"], times["python"]))
        out[name] = dict(shape=list(shape), channels_last=fmt is torch.channels_last,
                         torch_us=med["torch"], fastbn_us=med["fastbn"],
                         python_path_us=med["python"], python_path_speedup=python,
                         native=_takes_native(shape, fmt), functional_us=med["functional"],
                         adapter_us=med["fastbn"] - med["functional"], speedup=ratio)
        print(f"{name:>20}: torch.nn {med['torch']:9.1f} us  fastbn.torch {med['fastbn']:9.1f} us"
              f"  speed-up {ratio:5.2f}x  (C++ path: {out[name]['native']}; Python path "
              f"{med['python']:9.1f} us, {python:5.2f}x; functional {med['functional']:9.1f} us, "
              f"adapter {med['fastbn'] - med['functional']:6.1f} us)", flush=True)
    return out


def pieces():
    """Where a small training step's time goes, fastbn.torch's C++ path: on
    (32, 64), the whole step, the module's forward alone, the C++ call alone
    (``train``), and a trivial PyTorch operator's step (``x * 1.0``, forward +
    backward: the engine's floor); on A, the step and its two fused kernels
    alone on preallocated arrays. Medians over the rounds, in us."""
    out = {}
    for shape in ((32, 64), CASES["A"][0]):
        c = shape[1]
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(shape, generator=g) * 2 + 1).requires_grad_()
        dy = torch.randn(shape, generator=g)
        bn = fbt.BatchNorm1d(c)

        def step():
            x.grad = bn.weight.grad = bn.bias.grad = None
            bn(x).backward(dy)
        step()
        step()
        key = (x.shape, x.stride(), x.dtype, fastbn._bn.num_threads())
        plan = fbt_native._NATIVE_PLANS[key]
        w, b, rm, rv = bn.weight, bn.bias, bn.running_mean, bn.running_var
        steps = {"step": step}
        if shape == (32, 64):
            def forward():
                bn(x)

            def native_call():
                fbt_native._native_module.train(plan, x, w, b, rm, rv, 0.1, 1e-5)

            def trivial_op():
                x.grad = None
                (x * 1.0).backward(dy)
            steps.update(forward=forward, native_call=native_call, trivial_op_step=trivial_op)
        else:
            from fastbn import _bn
            xa, dya = x.detach().numpy(), dy.numpy()
            fp = _bn.PLANS[_bn.plan_key(xa, 1)]
            gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
            y, dx = np.empty_like(xa), np.empty_like(xa)
            stats, grads = np.empty((3, c)), np.empty((2, c), np.float32)

            def kernels():
                fp.forward(xa, gamma, beta, 1e-5, y, stats, fp.chunk, fp.forward_cols)
                fp.backward(dya, xa, stats[0], stats[2], gamma, dx, grads, fp.chunk,
                            fp.backward_cols)
            steps["kernels"] = kernels
        times = interleave(steps, ARGS.rounds, ARGS.budget)
        name = "(32, 64)" if shape == (32, 64) else "A"
        out[name] = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        print(f"{name:>9}: " + "  ".join(f"{k} {v:.1f} us" for k, v in out[name].items()),
              flush=True)
    return out


def _takes_native(shape, fmt):
    """Whether fastbn.torch's training calls on this input run its C++ path."""
    x = torch.zeros(shape).contiguous(memory_format=fmt)
    key = (x.shape, x.stride(), x.dtype, fastbn._bn.num_threads())
    return bool(fbt_native._NATIVE_PLANS.get(key))


class Block(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.skip is None else self.skip(x)))


def resnet():
    """A small ResNet for 32x32 inputs: 16-32-64 channels, one block per stage."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))


def cnn():
    torch.manual_seed(0)
    base = resnet()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    out = {}
    for fmt_name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        steps = {}
        for name in ("torch", "fastbn"):
            model = copy.deepcopy(base).to(memory_format=fmt)
            if name == "fastbn":
                fbt.convert(model)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            xf = x.contiguous(memory_format=fmt)

            def step(model=model, opt=opt, xf=xf):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xf), y).backward()
                opt.step()
            steps[name] = step
        times = interleave(steps, ARGS.rounds, max(ARGS.budget, 1.0))
        ratio = statistics.median(t / f for t, f in zip(times["torch"], times["fastbn"]))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        out[fmt_name] = dict(torch_ms=med["torch"], fastbn_ms=med["fastbn"], speedup=ratio)
        print(f"ResNet step {fmt_name:>13}: torch.nn {med['torch']:7.2f} ms  convert(model) "
              f"{med['fastbn']:7.2f} ms  speed-up {ratio:5.2f}x", flush=True)
    return out


def main():
    info = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                threads=ARGS.threads, rounds=ARGS.rounds, torch=torch.__version__,
                numba=numba.__version__, python=sys.version.split()[0],
                load_average_before=os.getloadavg()[0])
    print(json.dumps(info), flush=True)
    if ARGS.pieces:
        res = dict(info=info, pieces=pieces())
    else:
        res = dict(info=info, modules=modules())
    if not (ARGS.skip_cnn or ARGS.pieces):
        res["cnn"] = cnn()
    res["info"]["load_average_after"] = os.getloadavg()[0]
    print(f"load average (1 min) before {info['load_average_before']:.1f}, after "
          f"{res['info']['load_average_after']:.1f}, on {os.cpu_count()} CPUs")
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
