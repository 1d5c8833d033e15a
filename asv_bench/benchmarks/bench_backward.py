"""Batch-norm backward (training: dx, dgamma, dbeta), fastbn beside NumPy and
PyTorch."""
from .common import CASES, IMPLS, TRACED_IMPLS, gbps, median_seconds, ops
from .common import traced_peak_bytes, triad_gbps

PARAMS = [list(CASES), IMPLS]
PARAM_NAMES = ["case", "impl"]


class Backward:
    """Wall time and peak memory of one backward call."""

    params = PARAMS
    param_names = PARAM_NAMES
    timeout = 120

    def setup(self, case, impl):
        self.ops = ops(case, impl, warm=("backward",))

    def time_backward(self, case, impl):
        self.ops.backward()

    def peakmem_backward(self, case, impl):
        self.ops.backward()


class BackwardBandwidth:
    """GB/s under the minimal-traffic model (5 x itemsize per element: x and
    dy read twice, dx written) and as a percentage of a STREAM triad."""

    params = PARAMS
    param_names = PARAM_NAMES
    timeout = 180

    def setup_cache(self):
        return triad_gbps()

    def setup(self, triad, case, impl):
        self.ops = ops(case, impl, warm=("backward",))

    def track_gbps(self, triad, case, impl):
        return gbps("backward", case, median_seconds(self.ops.backward))
    track_gbps.unit = "GB/s"

    def track_pct_triad(self, triad, case, impl):
        return 100 * gbps("backward", case, median_seconds(self.ops.backward)) / triad
    track_pct_triad.unit = "% of triad"


class BackwardScratch:
    """Bytes allocated during a call beyond dx, dgamma and dbeta (tracemalloc)."""

    params = [list(CASES), TRACED_IMPLS]
    param_names = PARAM_NAMES

    def setup(self, case, impl):
        self.ops = ops(case, impl, warm=("backward",))

    def track_scratch_bytes(self, case, impl):
        return traced_peak_bytes(self.ops.backward)
    track_scratch_bytes.unit = "bytes"
