"""What a mask costs: masked against unmasked ``batch_norm_forward`` (training).

::

    NUMBA_NUM_THREADS=2 python docs/scripts/mask_cost.py [--rounds 15] [--calls 5]

Shapes C = (8192, 1024) and E = (32, 56, 56, 64) (NHWC) float32, ``axis=-1``,
as in ``fastbn-bench``. The mask is a padded batch: the sample positions are
cut into sequences (C: 64 sequences of 128 rows; E: each image's 56 * 56
positions in storage order) and each sequence keeps a prefix whose length is
drawn uniformly from half to all of it, about 75% of the positions in all
(seeded; the script prints the fraction). Calls alternate masked / unmasked
within each round (interleaved, so drift in a shared machine's load hits both);
each round times ``--calls`` calls of each, and the script prints the medians
over rounds and the median of the per-round ratios. Both run once first, so
compilation is not timed. It imports the ``fastbn`` of the checkout it sits in.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

#: case (of ``fastbn.bench.cases``) -> the (sequences, positions) its mask is cut into
SEQUENCES = {"C": (64, 128), "E": (32, 56 * 56)}


def padded_mask(shape, seqs, rng):
    """A ``shape`` mask that keeps a prefix of each of the ``seqs = (n, t)`` sequences."""
    n, t = seqs
    lengths = rng.integers(t // 2, t + 1, n)
    return (np.arange(t)[None, :] < lengths[:, None]).reshape(shape)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--cases", default="CE")
    args = p.parse_args(argv)

    import numba

    import fastbn
    from fastbn.bench.cases import CASES

    rng = np.random.default_rng(0)
    print(f"threads={numba.get_num_threads()} rounds={args.rounds} calls={args.calls}")
    for name in args.cases:
        shape, seqs = CASES[name][0], SEQUENCES[name]
        x = rng.standard_normal(shape, dtype=np.float32)
        mask = padded_mask(shape[:-1], seqs, rng)
        c = shape[-1]
        gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
        out = np.empty_like(x)

        def masked():
            fastbn.batch_norm_forward(x, gamma, beta, mask=mask, out=out)

        def plain():
            fastbn.batch_norm_forward(x, gamma, beta, out=out)

        masked(), plain()
        tm, tp = [], []
        for _ in range(args.rounds):
            for fn, times in ((masked, tm), (plain, tp)):
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                times.append((time.perf_counter() - t0) / args.calls)
        ratio = float(np.median(np.array(tm) / np.array(tp)))
        print(f"{name} {shape} mask keeps {mask.mean():.1%}: masked {np.median(tm) * 1e3:.2f} ms, "
              f"unmasked {np.median(tp) * 1e3:.2f} ms, masked/unmasked {ratio:.2f}x "
              f"(rounds {min(a / b for a, b in zip(tm, tp)):.2f}-"
              f"{max(a / b for a, b in zip(tm, tp)):.2f})")


if __name__ == "__main__":
    main()
