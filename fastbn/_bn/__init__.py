"""The batch-norm engine behind :mod:`fastbn.functional` (package-private).

Its modules carry the underscore, their functions do not: ``checks``
(argument checks), ``dispatch`` (serial or parallel kernels, kernel views,
chunking, outputs), ``moving`` (moving statistics), ``plans`` (the plan
cache and :mod:`fastbn.torch`'s entry points), ``checked`` (the checked
calls, with :mod:`fastbn.distributed`'s hooks) and ``masked``. The names
used outside the package are re-exported here.
"""
from .checked import batch_norm_backward, batch_norm_forward, moments
from .checks import (check_epsilon, check_momentum, check_moving, check_training, feature_array,
                     features, float_input, number, param_dtype)
from .dispatch import (cols, copied, fuse, kernel_view, num_threads, overlaps, run, serial,
                       shift, split)
from .masked import masked_backward, masked_forward, masked_moments
from .moving import blend_running, check_variance, warn_native_held
from .plans import (PLANS, PLANS_MAX, native_plan, plan_key, planned_backward, planned_forward,
                    planned_training, planned_training_backward)

__all__ = ["moments", "batch_norm_forward", "batch_norm_backward",
           "check_epsilon", "check_momentum", "check_moving", "check_training", "feature_array",
           "features", "float_input", "number", "param_dtype",
           "cols", "copied", "fuse", "kernel_view", "num_threads", "overlaps", "run", "serial",
           "shift", "split",
           "masked_backward", "masked_forward", "masked_moments",
           "blend_running", "check_variance", "warn_native_held",
           "PLANS", "PLANS_MAX", "native_plan", "plan_key", "planned_backward", "planned_forward",
           "planned_training", "planned_training_backward"]
