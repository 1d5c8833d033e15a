"""What data-parallel training costs: time per step, per BN synchronization, per all-reduce.

Run it alone and under ``mpiexec``, with the threads split between the ranks::

    NUMBA_NUM_THREADS=2 OMP_NUM_THREADS=2 python docs/scripts/distributed_cost.py
    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 mpiexec -n 2 python docs/scripts/distributed_cost.py

Rank 0 prints one Markdown table row per measurement (median of ``--repeat``
timings of ``--steps`` steps each) for ``docs/distributed.md``. The model is
``fastbn-mnist``'s default (``bn-after``, three batch-norm layers) on random
MNIST-shaped data: the timings do not depend on the pixel values.
"""
import argparse
import time

import numpy as np


def median_time(fn, steps, repeat, barrier):
    fn()                                         # compile, allocate
    times = []
    for _ in range(repeat):
        barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        barrier()
        times.append((time.perf_counter() - t0) / steps)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)

    import numba

    from fastbn import distributed, functional as F, nn
    from fastbn.examples.mnist import build_model

    dp = distributed.DataParallel()
    comm = dp.comm if dp.size > 1 else None
    barrier = comm.Barrier if comm is not None else (lambda: None)
    rows = []

    def row(what, seconds):
        rows.append(f"| {what} | {dp.size} | {numba.get_num_threads()} | {seconds * 1e3:.3f} |")

    rng = np.random.default_rng(0)
    for batch in (32, 256):
        nn.clear_session()
        nn.set_random_seed(0)
        model = dp.distribute(build_model(synchronized=True))
        model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(0.1),
                      metrics=["accuracy"])
        model._make_plan()
        x = rng.random((batch, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        step = dp.step(model) if dp.size > 1 else model._fit_step
        row(f"training step, global batch {batch}",
            median_time(lambda: step(x, y), args.steps, args.repeat, barrier))

    for rows_per_rank in (16, 128):
        x = rng.standard_normal((rows_per_rank, 300)).astype(np.float32)
        g, b = np.ones(300, np.float32), np.zeros(300, np.float32)

        def local():
            _, mean, invstd = F.batch_norm_forward(x, g, b)
            F.batch_norm_backward(x, x, mean, invstd, g)

        def synced():
            _, mean, invstd = distributed.batch_norm_forward(x, g, b, comm=comm)
            distributed.batch_norm_backward(x, x, mean, invstd, g, comm=comm)

        t_local = median_time(local, args.steps * 4, args.repeat, barrier)
        t_sync = median_time(synced, args.steps * 4, args.repeat, barrier)
        row(f"BN forward + backward, ({rows_per_rank}, 300) fp32 per rank, local", t_local)
        row(f"BN forward + backward, ({rows_per_rank}, 300) fp32 per rank, synchronized",
            t_sync)

    if comm is not None:
        n = (1 << 20) // 4
        send, recv = np.ones(n, np.float32), np.empty(n, np.float32)
        row("Allreduce of 1 MiB (the gradient bucket: 1.03 MiB)",
            median_time(lambda: comm.Allreduce(send, recv), args.steps, args.repeat, barrier))
        h, hh = np.zeros(12, np.int64), np.zeros((dp.size, 12), np.int64)
        row("Allgather of the 96-byte shape check",
            median_time(lambda: comm.Allgather(h, hh), args.steps * 4, args.repeat, barrier))

    if dp.is_root:
        print("| measurement | ranks | threads per rank | ms |")
        print("|---|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
