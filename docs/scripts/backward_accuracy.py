"""What the backward's float64 arithmetic buys: errors of dx, dgamma and dbeta.

``python docs/scripts/backward_accuracy.py [--shape 128 784] [--seed 0]``

Float32 ``x = standard_normal + offset`` and ``dy = standard_normal + dy_offset``
of the given ``(N, C)`` shape (default: benchmark case A), features
last. The truth is the textbook backward (``tests/reference.py``) in float64 on the
*same* float32 values, with float64 statistics. Each implementation runs its
training forward and then its backward, so its own statistics feed its gradients
("end to end"); and its backward alone is also given the true statistics, rounded
to the dtype it takes them in ("backward only"). Errors are normwise, relative
to the largest true value: ``max |g - g64| / max |g64|``; float32 rounding alone
gives about ``6e-8``. PyTorch (``torch.ops.aten.native_batch_norm`` and
``native_batch_norm_backward``, its CPU kernels) is measured when importable.
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))

import reference as R  # noqa: E402

EPS = 1e-3
OFFSETS = ((0.0, 0.0), (1e2, 0.0), (1e3, 0.0), (1e4, 0.0), (0.0, 1e2), (1e3, 1e2))


def _err(got, want):
    got = np.asarray(got, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _truth(x, dy, gamma):
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean, var = x64.mean(axis=0), x64.var(axis=0)
    invstd = 1.0 / np.sqrt(var + EPS)
    dx, dgamma, dbeta = R.batch_norm_backward(dy64, x64, mean, invstd, gamma.astype(np.float64),
                                              axis=-1)
    return (dx, dgamma, dbeta), mean, invstd


def _fastbn(x, dy, gamma, stats=None):
    import fastbn
    if stats is None:
        _, mean, invstd = fastbn.batch_norm_forward(x, gamma, None, epsilon=EPS)
    else:
        mean, invstd = stats
    return fastbn.batch_norm_backward(dy, x, mean, invstd, gamma)


def _torch(x, dy, gamma, stats=None):
    import torch
    xt, dyt, gt = (torch.from_numpy(a) for a in (x, dy, gamma))
    with torch.no_grad():
        if stats is None:
            _, mean, invstd = torch.ops.aten.native_batch_norm(xt, gt, None, None, None, True,
                                                               0.0, EPS)
        else:
            mean, invstd = (torch.from_numpy(s.astype(np.float32)) for s in stats)
        dx, dg, db = torch.ops.aten.native_batch_norm_backward(
            dyt, xt, gt, None, None, mean, invstd, True, EPS, [True, True, True])
    return dx.numpy(), dg.numpy(), db.numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=2, default=(128, 784))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    impls = {"fastbn": _fastbn}
    try:
        import torch
        impls["PyTorch"] = _torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    rng = np.random.default_rng(args.seed)
    shape = tuple(args.shape)
    noise_x, noise_dy = rng.standard_normal(shape), rng.standard_normal(shape)
    gamma = (1 + 0.1 * rng.standard_normal(shape[1])).astype(np.float32)
    import fastbn
    print(f"shape {shape} float32, fastbn {fastbn.__version__}, PyTorch {torch_version}; "
          f"normwise relative errors max|g - g64| / max|g64|")
    print(f"{'x offset':>9} {'dy offset':>9} {'implementation':>15} {'stats':>14} "
          f"{'dx':>9} {'dgamma':>9} {'dbeta':>9}")
    for x_off, dy_off in OFFSETS:
        x = (noise_x + x_off).astype(np.float32)
        dy = (noise_dy + dy_off).astype(np.float32)
        truth, mean, invstd = _truth(x, dy, gamma)
        for name, fn in impls.items():
            for label, stats in (("end to end", None), ("backward only", (mean, invstd))):
                got = fn(x, dy, gamma, stats)
                errs = " ".join(f"{_err(g, t):9.1e}" for g, t in zip(got, truth))
                print(f"{x_off:9.0e} {dy_off:9.0e} {name:>15} {label:>14} {errs}")


if __name__ == "__main__":
    main()
