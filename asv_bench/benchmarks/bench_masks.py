"""Masked batch norm (Keras' ``mask``): the training forward with a padded
mask that keeps about 75% of the sample positions, beside the unmasked one
(``docs/scripts/mask_cost.py`` measures the same interleaved)."""
import numpy as np

from .common import CASES, EPSILON, inputs, median_seconds

#: The cases with one feature axis, last: a mask is one value per sample position.
MASK_CASES = [c for c in CASES if c[0] in "CE"]


def padded_mask(shape, seed=0):
    """``shape`` (the non-feature axes) as sequences along its trailing axes, one
    per leading index (C: 64 sequences of 128 positions), each keeping a prefix
    of half to all of it."""
    n = shape[0] if len(shape) > 1 else 64
    t = int(np.prod(shape)) // n
    rng = np.random.default_rng(seed)
    lengths = rng.integers(t // 2, t + 1, n)
    return (np.arange(t)[None, :] < lengths[:, None]).reshape(shape)


class MaskedForward:
    """Wall time of one masked and one unmasked training forward, and their ratio."""

    params = [MASK_CASES]
    param_names = ["case"]
    timeout = 120

    def setup(self, case):
        import fastbn
        self.f = fastbn
        i = inputs(case)
        self.x, self.gamma, self.beta = i["x"], i["gamma"], i["beta"]
        self.mask = padded_mask(self.x.shape[:-1])
        self.out = np.empty_like(self.x)
        self.masked(), self.plain()                 # compile outside the timings

    def masked(self):
        self.f.batch_norm_forward(self.x, self.gamma, self.beta, epsilon=EPSILON,
                                  mask=self.mask, out=self.out)

    def plain(self):
        self.f.batch_norm_forward(self.x, self.gamma, self.beta, epsilon=EPSILON,
                                  out=self.out)

    def time_masked_train(self, case):
        self.masked()

    def time_unmasked_train(self, case):
        self.plain()

    def track_masked_over_unmasked(self, case):
        return median_seconds(self.masked) / median_seconds(self.plain)
    track_masked_over_unmasked.unit = "ratio"
