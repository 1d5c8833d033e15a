"""Batch-norm forward: training (batch statistics + moving-statistics update)
and inference (moving statistics), fastbn beside NumPy and PyTorch."""
from .common import CASES, IMPLS, TRACED_IMPLS, gbps, median_seconds, ops
from .common import traced_peak_bytes, triad_gbps

PARAMS = [list(CASES), IMPLS]
PARAM_NAMES = ["case", "impl"]


class Forward:
    """Wall time and peak memory of one forward call."""

    params = PARAMS
    param_names = PARAM_NAMES
    timeout = 120

    def setup(self, case, impl):
        self.ops = ops(case, impl, warm=("forward", "inference"))

    def time_train(self, case, impl):
        self.ops.forward()

    def time_inference(self, case, impl):
        self.ops.inference()

    def peakmem_train(self, case, impl):
        self.ops.forward()

    def peakmem_inference(self, case, impl):
        self.ops.inference()


class ForwardBandwidth:
    """GB/s under the minimal-traffic model (train 3, inference 2 x itemsize
    per element) and the same as a percentage of a STREAM triad measured in
    this run."""

    params = PARAMS
    param_names = PARAM_NAMES
    timeout = 180

    def setup_cache(self):
        return triad_gbps()

    def setup(self, triad, case, impl):
        self.ops = ops(case, impl, warm=("forward", "inference"))

    def _gbps(self, op, case):
        return gbps(op, case, median_seconds(getattr(self.ops, op)))

    def track_gbps_train(self, triad, case, impl):
        return self._gbps("forward", case)
    track_gbps_train.unit = "GB/s"

    def track_gbps_inference(self, triad, case, impl):
        return self._gbps("inference", case)
    track_gbps_inference.unit = "GB/s"

    def track_pct_triad_train(self, triad, case, impl):
        return 100 * self._gbps("forward", case) / triad
    track_pct_triad_train.unit = "% of triad"

    def track_pct_triad_inference(self, triad, case, impl):
        return 100 * self._gbps("inference", case) / triad
    track_pct_triad_inference.unit = "% of triad"


class ForwardScratch:
    """Bytes allocated during a call beyond the arrays it returns (tracemalloc;
    PyTorch's allocator is not traced, so only fastbn and NumPy)."""

    params = [list(CASES), TRACED_IMPLS]
    param_names = PARAM_NAMES

    def setup(self, case, impl):
        self.ops = ops(case, impl, warm=("forward", "inference"))

    def track_scratch_bytes_train(self, case, impl):
        return traced_peak_bytes(self.ops.forward)
    track_scratch_bytes_train.unit = "bytes"

    def track_scratch_bytes_inference(self, case, impl):
        return traced_peak_bytes(self.ops.inference)
    track_scratch_bytes_inference.unit = "bytes"
