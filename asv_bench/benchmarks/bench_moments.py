"""Per-feature mean and variance (``fastbn.moments``, NumPy semantics: the
reduced axes), fastbn beside NumPy's ``mean``/``var`` and ``torch.var_mean``."""
from .common import CASES, IMPLS, TRACED_IMPLS, gbps, median_seconds, ops
from .common import traced_peak_bytes, triad_gbps

PARAMS = [list(CASES), IMPLS]
PARAM_NAMES = ["case", "impl"]


class Moments:
    params = PARAMS
    param_names = PARAM_NAMES
    timeout = 120

    def setup(self, case, impl):
        self.ops = ops(case, impl, warm=("moments",))

    def time_moments(self, case, impl):
        self.ops.moments()

    def peakmem_moments(self, case, impl):
        self.ops.moments()


class MomentsBandwidth:
    """GB/s with x read once (1 x itemsize per element) and % of triad."""

    params = PARAMS
    param_names = PARAM_NAMES
    timeout = 180

    def setup_cache(self):
        return triad_gbps()

    def setup(self, triad, case, impl):
        self.ops = ops(case, impl, warm=("moments",))

    def track_gbps(self, triad, case, impl):
        return gbps("moments", case, median_seconds(self.ops.moments))
    track_gbps.unit = "GB/s"

    def track_pct_triad(self, triad, case, impl):
        return 100 * gbps("moments", case, median_seconds(self.ops.moments)) / triad
    track_pct_triad.unit = "% of triad"


class MomentsScratch:
    params = [list(CASES), TRACED_IMPLS]
    param_names = PARAM_NAMES

    def setup(self, case, impl):
        self.ops = ops(case, impl, warm=("moments",))

    def track_scratch_bytes(self, case, impl):
        return traced_peak_bytes(self.ops.moments)
    track_scratch_bytes.unit = "bytes"
