"""Ranks that disagree about fit/evaluate, run by ``tests/test_distributed.py``.

``mpiexec -n 2 python fit_checks.py OUT counts``: the ranks pass fit()
different numbers of samples (each rank must raise ValueError at the start,
not abort in a later collective), then fit alike, then rank 0 alone
evaluates (no collective: it must return), then every rank evaluates.
Writes ``OUT/fit<rank>.json``.

``mpiexec -n 2 python fit_checks.py OUT root-only SECONDS``: rank 0 alone
calls fit() with ``DataParallel(timeout=SECONDS)``; it must raise (and so
abort the job) instead of waiting forever.
"""
import json
import sys

import numpy as np


def model_and_data(dp):
    from fastbn import nn
    nn.set_random_seed(0)
    model = dp.distribute(nn.Sequential([
        nn.Dense(4, input_shape=(3,)), nn.BatchNormalization(synchronized=True),
        nn.Dense(2, activation="softmax")]))
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd",
                  metrics=["accuracy"])
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    return model, x, (x[:, 0] > 0).astype(int)


def counts(out):
    from fastbn import distributed
    dp = distributed.DataParallel(abort_on_error=False)
    model, x, y = model_and_data(dp)
    seen = {}
    n = len(x) - 2 * dp.rank                     # rank 1 has two samples fewer
    try:
        model.fit(x[:n], y[:n], batch_size=8, verbose=0)
        seen["counts"] = None
    except Exception as e:                       # noqa: BLE001  (we record whatever it is)
        seen["counts"] = [type(e).__name__, str(e)]
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)     # still in step
    if dp.is_root:
        seen["root-only"] = model.evaluate(x, y, verbose=0)
    dp.comm.Barrier()
    seen["every-rank"] = model.evaluate(x, y, verbose=0)
    with open(f"{out}/fit{dp.rank}.json", "w") as f:
        json.dump(seen, f)


def root_only(seconds):
    from fastbn import distributed
    dp = distributed.DataParallel(timeout=seconds)
    model, x, y = model_and_data(dp)
    if dp.is_root:
        model.fit(x, y, batch_size=8, verbose=0)
        print("rank 0 finished fit alone", flush=True)
    else:
        dp.comm.Barrier()                       # rank 0 never comes; the abort ends this


if __name__ == "__main__":
    if sys.argv[2] == "counts":
        counts(sys.argv[1])
    else:
        root_only(float(sys.argv[3]))
