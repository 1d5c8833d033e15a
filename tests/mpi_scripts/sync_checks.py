"""Synchronized batch norm on each rank's slice, run by ``tests/test_distributed.py``.

``mpiexec -n P python sync_checks.py OUT SIZES`` (SIZES: rows per rank, e.g.
``5,3,0``) runs every case of :data:`CASES` on this rank's rows of the global
batch and writes the results to ``OUT/sync<rank>.npz``; then it provokes the
errors of :func:`errors` and writes what each rank raised to
``OUT/errors<rank>.json``.
"""
import json
import sys

import numpy as np

#: name -> (sample shape, feature axis, dtype, offset, Fortran order on rank 1)
CASES = {
    "nc-f64": ((7,), -1, np.float64, 3.0, False),
    "nc-f32-offset": ((7,), -1, np.float32, 1e3, False),
    "nchw-f64": ((4, 3, 5), 1, np.float64, -2.0, False),
    "nchw-planes-f32": ((3, 16, 16), 1, np.float32, 0.5, False),
    "nhw-axes12-mixed-layouts": ((4, 6), (1, 2), np.float64, 1.0, True),
}
MOMENTUM = 0.9


def case_data(name, n):
    """The global batch of ``n`` rows: x, gamma, beta, dy (float64 draws cast to the dtype)."""
    shape, axis, dtype, offset, _ = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    x = (rng.standard_normal((n,) + shape) * 2 + offset).astype(dtype)
    fshape = tuple(x.shape[a] for a in sorted(np.atleast_1d(axis) % x.ndim))
    gamma = (1 + 0.5 * rng.standard_normal(fshape)).astype(dtype)
    beta = rng.standard_normal(fshape).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    return x, gamma, beta, dy, axis


def reduced_axes(x, axis):
    feats = set(np.atleast_1d(axis) % x.ndim)
    return tuple(a for a in range(x.ndim) if a not in feats)


def run_cases(comm, sizes):
    from fastbn import distributed
    rank = comm.Get_rank()
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    out = {}
    for name, (_, _, _, _, fortran) in CASES.items():
        x, gamma, beta, dy, axis = case_data(name, sum(sizes))
        xr, dyr = x[lo:hi], dy[lo:hi]
        if fortran and rank == 1:
            xr, dyr = np.asfortranarray(xr), np.asfortranarray(dyr)
        mm, mv = np.zeros(gamma.shape), np.ones(gamma.shape)
        y, mean, invstd = distributed.batch_norm_forward(
            xr, gamma, beta, comm=comm, axis=axis, moving_mean=mm, moving_variance=mv,
            momentum=MOMENTUM)
        dx, dgamma, dbeta = distributed.batch_norm_backward(dyr, xr, mean, invstd, gamma,
                                                            comm=comm, axis=axis)
        m_mean, m_var = distributed.moments(xr, reduced_axes(x, axis), comm=comm, ddof=1)
        for key, v in dict(y=y, mean=mean, invstd=invstd, dx=dx, dgamma=dgamma, dbeta=dbeta,
                           moving_mean=mm, moving_variance=mv, m_mean=m_mean,
                           m_var=m_var).items():
            out[f"{name}/{key}"] = v
    return out


def errors(comm):
    """Each provoked error: what this rank raised, or None."""
    from fastbn import distributed
    rank = comm.Get_rank()
    f64 = np.float64
    calls = {
        # rank 1 has 5 features, the others 4
        "feature-shape": lambda: distributed.batch_norm_forward(
            np.ones((3, 4 + (rank == 1))), None, None, comm=comm),
        # rank 1 float32, the others float64
        "dtype": lambda: distributed.batch_norm_forward(
            np.ones((3, 4), np.float32 if rank == 1 else f64), None, None, comm=comm),
        # rank 0's gamma is wrong: its own ValueError; RuntimeError elsewhere
        "bad-gamma-on-rank-0": lambda: distributed.batch_norm_forward(
            np.ones((3, 4)), np.ones(5 if rank == 0 else 4), None, comm=comm),
        "all-empty": lambda: distributed.batch_norm_forward(
            np.ones((0, 4)), None, None, comm=comm),
        # backward: rank 1's dy has the wrong shape
        "backward-bad-dy-on-rank-1": lambda: distributed.batch_norm_backward(
            np.ones((2 + (rank == 1), 4)), np.ones((2, 4)), np.zeros(4), np.ones(4), None,
            comm=comm),
        "moments-kept-shape": lambda: distributed.moments(
            np.ones((3, 2 + rank)), axis=0, comm=comm),
        # (4, 4): four features either way, but rank 0's are columns, the others' rows
        "axis": lambda: distributed.batch_norm_forward(
            np.arange(16.0).reshape(4, 4), None, None, axis=-1 if rank == 0 else 0,
            comm=comm),
        "moments-axis": lambda: distributed.moments(
            np.arange(16.0).reshape(4, 4), axis=0 if rank == 0 else 1, comm=comm),
    }
    seen = {}
    for name, call in calls.items():
        try:
            call()
            seen[name] = None
        except Exception as e:          # noqa: BLE001  (we record whatever it is)
            seen[name] = [type(e).__name__, str(e)]
    # still in step after all that: one more synchronized call works
    _, mean, _ = distributed.batch_norm_forward(np.full((1, 2), float(rank)), None, None,
                                                comm=comm)
    seen["after"] = mean.tolist()
    return seen


def main(out, sizes):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    assert comm.Get_size() == len(sizes), (comm.Get_size(), sizes)
    np.savez(f"{out}/sync{comm.Get_rank()}.npz", **run_cases(comm, sizes))
    with open(f"{out}/errors{comm.Get_rank()}.json", "w") as f:
        json.dump(errors(comm), f)


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")])
