"""fastbn.torch's C++ training path: :func:`build_native`, its build lock, and
the plans of the training calls it takes.

Training calls on tensors under :data:`NATIVE_MAX_BYTES` whose kernel view is
C-contiguous rows (``(N, C)``, and NCHW / NCDHW in channels_last memory; from
their second call on a shape) or planes the fused kernels take (contiguous
NCHW) run in C++: ``_native.cpp``, an autograd Function that calls the
kernels' C entry points, built once with ``torch.utils.cpp_extension`` (a C++
compiler and ninja). The Python path costs about 70 us a call in PyTorch's
machinery, more than a small batch norm's kernels (see docs/torch.md).
"""
import contextlib
import fcntl
import os
import subprocess
import sys
import time
import warnings

import torch

from .. import _bn
from ._boundary import KERNEL_DTYPES, array

NATIVE_ENV = "FASTBN_TORCH_NATIVE"
#: Inputs of this many bytes and more train on the Python path: its ~70 us a
#: call is then under 5 % of the kernels' time, and the C++ path, writing into
#: PyTorch's freshly allocated outputs, ran at 0.58x its speed on (8192, 1024)
#: float32 (and 1.08-2.2x from 1 to 4 MiB).
NATIVE_MAX_BYTES = 4 << 20
_native_module = None                  # the extension once loaded; False: off or unbuildable
_NATIVE_PLANS = {}                      # (shape, strides, dtype, threads) -> Plan, or False
if hasattr(os, "register_at_fork"):     # a plan holds the parent's choice of parallel kernels
    os.register_at_fork(after_in_child=_NATIVE_PLANS.clear)


def build_native(verbose=False):
    """Build (or load, when built before) the C++ training path now, instead of
    on the first training call that needs it; returns whether it is available.

    Compiled with ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja``,
    which ``pip install "fastbn[torch]"`` brings), about 25 s once per machine
    and PyTorch version, into ``TORCH_EXTENSIONS_DIR`` (default
    ``~/.cache/torch_extensions``). Where it cannot be built, a warning says
    why and training runs the Python path (the same results, about 70 us more
    a call). Setting the environment variable ``FASTBN_TORCH_NATIVE=0`` turns it
    off. No wait is unbounded: a build left half done by a killed process is
    cleaned up and started again, a process waits at most
    :data:`NATIVE_WAIT_S` s for another one's build, and a build past
    :data:`NATIVE_BUILD_TIMEOUT_S` s is stopped; each of the last two warns and
    trains on the Python path.

    Parameters
    ----------
    verbose : bool, default False
        Show the compiler's output.

    Returns
    -------
    bool
        Whether training calls can take the C++ path.

    Examples
    --------
    >>> import fastbn.torch
    >>> fastbn.torch.build_native()     # doctest: +SKIP
    True
    """
    global _native_module
    if _native_module is None:
        _native_module = _load_native(verbose)
    return _native_module is not False


#: How long a process waits for another one's build of the C++ path before it
#: trains on the Python path instead; a build takes about 25 s on 2 idle cores.
NATIVE_WAIT_S = 300
#: A build (in a child process) running longer than this is stopped, and
#: training runs the Python path.
NATIVE_BUILD_TIMEOUT_S = 900
_NATIVE_NAME = "fastbn_torch_native"
_NATIVE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native.cpp")
_NATIVE_BUILD = ("import sys\nfrom torch.utils import cpp_extension\n"
                 "cpp_extension.load(sys.argv[1], [sys.argv[2]], extra_cflags=['-O2'], "
                 "verbose=sys.argv[3] == '1')\n")


def _load_native(verbose):
    if os.environ.get(NATIVE_ENV, "1") == "0":
        return False
    from torch.utils import cpp_extension

    def unavailable(why, fix="Install a C++ compiler and ninja (pip install ninja)"):
        warnings.warn(f"fastbn.torch: could not build the C++ training path ({why}); training "
                      f"runs the Python path instead (the same results, about 70 us more a "
                      f"call). {fix}, or set {NATIVE_ENV}=0 to stop trying",
                      RuntimeWarning, stacklevel=5)
        return False

    try:                        # (a private helper: where torch keeps this build)
        build_dir = cpp_extension._get_build_directory(_NATIVE_NAME, False)
        with _build_lock(build_dir) as held:
            if not held:
                return unavailable(f"another process has been building it in {build_dir} "
                                   f"for over {NATIVE_WAIT_S} s",
                                   "Later processes load it once that build is done")
            if not any(f.endswith(".so") for f in os.listdir(build_dir)):
                print("fastbn.torch: compiling the C++ training path (once; about 25 s) in "
                      f"{build_dir}", file=sys.stderr)
                # in a child, so that a build past the time limit can be stopped
                subprocess.run([sys.executable, "-c", _NATIVE_BUILD, _NATIVE_NAME,
                                _NATIVE_SOURCE, "1" if verbose else "0"], check=True,
                               stdout=None if verbose else subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=NATIVE_BUILD_TIMEOUT_S,
                               pass_fds=(held,), text=True)
            return cpp_extension.load(_NATIVE_NAME, [_NATIVE_SOURCE], extra_cflags=["-O2"],
                                      verbose=verbose)
    except subprocess.TimeoutExpired:
        return unavailable(f"the build ran past {NATIVE_BUILD_TIMEOUT_S} s and was stopped",
                           "Build it ahead with fastbn.torch.build_native(verbose=True)")
    except subprocess.CalledProcessError as e:
        return unavailable(f"the build failed: {(e.stderr or '').strip()[-300:]}")
    except Exception as e:      # no compiler, no ninja, headers missing: say so, go on
        return unavailable(f"{type(e).__name__}: {str(e).strip()[:300]}")


@contextlib.contextmanager
def _build_lock(build_dir):
    """Hold fastbn's build lock in ``build_dir`` (its file descriptor), or yield
    None after :data:`NATIVE_WAIT_S` s of another process holding it.

    The kernel drops a ``flock`` when its process dies, which torch's own lock
    file (``build_dir/lock``, created by the builder and removed when it
    finishes) does not: a build killed part-way leaves that file, and every
    later ``cpp_extension.load`` waits on it forever. Every fastbn build holds
    this lock, so while we hold it a torch lock file is a dead build's, and it
    is removed.
    """
    os.makedirs(build_dir, exist_ok=True)
    fd = os.open(os.path.join(build_dir, "fastbn-build.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + NATIVE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield None
                    return
                time.sleep(0.5)
        stale = os.path.join(build_dir, "lock")
        if os.path.exists(stale):
            print(f"fastbn.torch: removing {stale}, left by a build that was killed",
                  file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        yield fd
    finally:
        os.close(fd)


def _native_plan(key, input):
    """The native Plan for training calls like this one; False when they cannot
    have one; None when functional has no plan for the shape yet (its first
    call, or after functional's plans were emptied), to ask again next call."""
    plan = False
    if input.dtype in KERNEL_DTYPES and input.numel() * input.element_size() < NATIVE_MAX_BYTES:
        spec = _bn.native_plan(array(input), 1)
        if spec is None:
            return None
        if spec and build_native():
            plan = _native_module.Plan(float64=input.dtype == torch.float64, **spec)
    if len(_NATIVE_PLANS) >= 256:
        _NATIVE_PLANS.clear()
    _NATIVE_PLANS[key] = plan
    return plan


def train(input, weight, bias, running_mean, running_var, momentum, eps):
    """A training call on the C++ path: ``(output, held_var)``, or None where it
    does not take the call (off or unbuildable, no plan for the input, or
    arguments it leaves to Python). ``running_mean`` and ``running_var``, when
    not None, are updated in place; ``held_var``, when not None, is the
    variance of an update held back, for the caller's warning."""
    if _native_module is False:
        return None
    key = (input.shape, input.stride(), input.dtype, _bn.num_threads())
    plan = _NATIVE_PLANS.get(key)
    if plan is None:
        plan = _native_plan(key, input)
    if plan:
        out, held_var = _native_module.train(plan, input, weight, bias, running_mean,
                                             running_var, momentum, eps)
        if out is not None:
            return out, held_var
    return None
