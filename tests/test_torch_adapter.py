"""fastbn.torch against torch.nn's batch norm, side by side, and its operators.

Every flag combination (affine, track_running_stats, momentum 0.1 / None,
train / eval) on random small shapes, contiguous and channels-last, float32 and
float64: outputs, input and parameter gradients, running statistics and
num_batches_tracked agree to the dtype's rounding.
"""
import itertools
import os
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fbt = pytest.importorskip("fastbn.torch")
fbt_native = pytest.importorskip("fastbn.torch._native")
fbt_boundary = pytest.importorskip("fastbn.torch._boundary")

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {1: (torch.nn.BatchNorm1d, fbt.BatchNorm1d), 2: (torch.nn.BatchNorm2d, fbt.BatchNorm2d),
           3: (torch.nn.BatchNorm3d, fbt.BatchNorm3d)}
FLAGS = list(itertools.product([True, False], [True, False], [0.1, None], [True, False]))
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def _shape(kind, rng):
    extra = {"1d-2": 0, "1d-3": 1, "2d": 2, "3d": 3}[kind]
    return ((int(rng.integers(2, 7)), int(rng.integers(1, 6)))
            + tuple(int(rng.integers(1, 5)) for _ in range(extra)))


def _format(kind, layout):
    if layout == "contiguous":
        return torch.contiguous_format
    return {"2d": torch.channels_last, "3d": torch.channels_last_3d}[kind]


def _pair(dim, c, dtype, affine, track, momentum, rng):
    ref_cls, fb_cls = CLASSES[dim]
    ref = ref_cls(c, momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
    fb = fb_cls(c, momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
    if affine:
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(rng.standard_normal(c)))
            ref.bias.copy_(torch.from_numpy(rng.standard_normal(c)))
    fb.load_state_dict(ref.state_dict())
    return ref, fb


def _close(a, b, dtype, what, scale=1.0):
    tol = {k: v * max(scale, 1.0) if k == "atol" else v for k, v in TOL[dtype].items()}
    torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,layout", [("1d-2", "contiguous"), ("1d-3", "contiguous"),
                                         ("2d", "contiguous"), ("2d", "channels_last"),
                                         ("3d", "contiguous"), ("3d", "channels_last")])
def test_modules_match_torch_nn(kind, layout, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{kind} {layout} {dtype}".encode()))
    dim = int(kind[0])
    fmt = _format(kind, layout)
    for affine, track, momentum, train in FLAGS:
        shape = _shape(kind, rng)
        ref, fb = _pair(dim, shape[1], dtype, affine, track, momentum, rng)
        what = f"{kind} {layout} {dtype} affine={affine} track={track} momentum={momentum} " \
               f"train={train} shape={shape}"
        for step in range(3):               # two training steps, then the mode under test
            mode = True if step < 2 else train
            ref.train(mode)
            fb.train(mode)
            x = torch.from_numpy(rng.standard_normal(shape) * 3 + 2).to(dtype)
            x = x.contiguous(memory_format=fmt)
            xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
            dy = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
            yr, yf = ref(xr), fb(xf)
            assert yf.dtype == dtype and yf.is_contiguous(memory_format=fmt), what
            yr.backward(dy)
            yf.backward(dy)
            _close(yf, yr, dtype, f"output {what}")
            # dx is a difference of terms of size invstd * |dy| (exactly 0 for N = 2)
            dims = [d for d in range(x.dim()) if d != 1]
            var = x.double().var(dims, unbiased=False) if mode or not track else ref.running_var
            scale = float(dy.abs().max() / torch.sqrt(var.double() + ref.eps).min())
            _close(xf.grad, xr.grad, dtype, f"grad input {what}", scale)
            if affine:
                _close(fb.weight.grad, ref.weight.grad, dtype, f"grad weight {what}")
                _close(fb.bias.grad, ref.bias.grad, dtype, f"grad bias {what}")
            for key, value in ref.state_dict().items():
                got = fb.state_dict()[key]
                if value.dtype == torch.int64:
                    assert torch.equal(got, value), f"{key} {what}"
                else:
                    _close(got, value, dtype, f"{key} {what}")


def test_state_dict_loads_both_ways():
    ref, fb = torch.nn.BatchNorm2d(5), fbt.BatchNorm2d(5)
    assert list(ref.state_dict()) == list(fb.state_dict())
    for k, v in fb.state_dict().items():
        assert v.shape == ref.state_dict()[k].shape and v.dtype == ref.state_dict()[k].dtype
    fb.train()
    fb(torch.randn(4, 5, 3, 3) * 2 + 1)
    ref.load_state_dict(fb.state_dict())
    back = fbt.BatchNorm2d(5)
    back.load_state_dict(ref.state_dict())
    for k, v in fb.state_dict().items():
        assert torch.equal(back.state_dict()[k], v) and torch.equal(ref.state_dict()[k], v)
    assert int(ref.num_batches_tracked) == 1


def test_constructor_defaults_and_device_dtype():
    fb = fbt.BatchNorm1d(4, dtype=torch.float64, device="cpu")
    assert (fb.eps, fb.momentum, fb.affine, fb.track_running_stats) == (1e-5, 0.1, True, True)
    assert fb.weight.dtype == torch.float64 and fb.running_var.dtype == torch.float64
    assert isinstance(fb, torch.nn.BatchNorm1d)
    assert repr(fb) == repr(torch.nn.BatchNorm1d(4))


def test_input_checks_name_the_fix():
    with pytest.raises(ValueError, match="expected 4D input"):
        fbt.BatchNorm2d(3)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fbt.BatchNorm1d(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\.float\(\)"):
        fbt.batch_norm(torch.ones(2, 3, dtype=torch.int64), None, None, training=True)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        fbt.batch_norm(torch.randn(4, 3), None, None, training=False)
    meta = torch.randn(4, 3, device="meta")
    with pytest.raises(ValueError, match=r"\.cpu\(\).*torch\.nn\.BatchNorm"):
        fbt.batch_norm(meta, None, None, training=True)


def test_functional_matches_torch_functional():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((6, 4, 5))).float()
    w, b = torch.randn(4), torch.randn(4)
    for training, momentum in ((True, 0.1), (True, 0.7), (False, 0.1)):
        rm1, rv1 = torch.randn(4), torch.rand(4) + 0.5
        rm2, rv2 = rm1.clone(), rv1.clone()
        want = torch.nn.functional.batch_norm(x, rm1, rv1, w, b, training, momentum, 1e-3)
        got = fbt.batch_norm(x, rm2, rv2, w, b, training, momentum, 1e-3)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(rm2, rm1)
        torch.testing.assert_close(rv2, rv1)


def test_zero_copy_views_and_memory_format():
    """CPU tensors reach the kernels as NumPy views of their own memory, in the
    layout the kernels read directly (no copy), and outputs keep the format."""
    from fastbn import _bn
    from fastbn._axes import layout
    for shape, fmt in [((8, 64, 16, 16), torch.channels_last),
                       ((8, 64, 16, 16), torch.contiguous_format),
                       ((4, 32, 4, 8, 8), torch.channels_last_3d), ((512, 64), None)]:
        x = torch.randn(shape)
        if fmt is not None:
            x = x.contiguous(memory_format=fmt)
        a = fbt_boundary.array(x)
        assert a.ctypes.data == x.data_ptr() and a.strides == tuple(s * 4 for s in x.stride())
        lay = layout(a, (1,))
        assert not lay.copies and not _bn.copied(lay.view(a))
        y = fbt.BatchNorm2d(shape[1]) if len(shape) == 4 else None
        if y is not None:
            out = y(x)
            assert out.stride() == x.stride()


def test_half_and_bfloat16_compute_in_float32():
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    w, b = torch.randn(3), torch.randn(3)
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype).requires_grad_()
        rm, rv = torch.zeros(3), torch.ones(3)
        y = fbt.batch_norm(xh, rm, rv, w, b, training=True)
        assert y.dtype == dtype
        want = torch.nn.functional.batch_norm(xh.detach().float(), torch.zeros(3),
                                              torch.ones(3), w, b, True)
        torch.testing.assert_close(y, want.to(dtype))
        y.float().sum().backward()
        assert xh.grad.dtype == dtype


def test_offset_running_variance_closer_to_float64_truth():
    """(N, C) float32 data with an offset of 1e4: fastbn's running variance is the
    nearer to the float64 truth (PyTorch accumulates in float32)."""
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((8192, 8)) + 1e4
    x = torch.from_numpy(x64).float()
    truth = np.var(x.double().numpy(), axis=0, ddof=1)
    ref, fb = torch.nn.BatchNorm1d(8, momentum=1.0), fbt.BatchNorm1d(8, momentum=1.0)
    ref(x)
    fb(x)
    err_fb = np.abs(fb.running_var.double().numpy() / truth - 1).max()
    err_ref = np.abs(ref.running_var.double().numpy() / truth - 1).max()
    assert err_fb < 1e-6, err_fb
    assert err_fb < err_ref, (err_fb, err_ref)


def test_convert_swaps_in_place_keeping_state():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(4 * 36)),
                              torch.nn.SyncBatchNorm(4))
    net.train()
    net[0:2](torch.randn(4, 3, 8, 8))
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net[1].weight
    out = fbt.convert(net)
    assert out is net
    assert type(net[1]) is fbt.BatchNorm2d and type(net[2][1]) is fbt.BatchNorm1d
    assert type(net[3]) is torch.nn.SyncBatchNorm
    assert net[1].weight is weight and not net[1].training
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert type(fbt.convert(torch.nn.BatchNorm3d(2))) is fbt.BatchNorm3d
    assert fbt.convert(net) is net and type(net[1]) is fbt.BatchNorm2d     # idempotent


def test_gradcheck_float64():
    x = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(
        lambda x, w, b: fbt.batch_norm(x, None, None, w, b, training=True), (x, w, b))
    assert torch.autograd.gradcheck(
        lambda x, w, b: fbt.batch_norm(x, rm, rv, w, b, training=False), (x, w, b))
    # the operators themselves, outside the eager shortcut
    assert torch.autograd.gradcheck(
        lambda x, w, b: torch.ops.fastbn.batch_norm(x, w, b, None, None, True, 1e-5)[0],
        (x, w, b))


def test_double_backward_raises_clearly():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    for f in (lambda x: fbt.batch_norm(x, None, None, training=True),
              lambda x: torch.ops.fastbn.batch_norm(x, None, None, None, None, True, 1e-5)[0]):
        (g,) = torch.autograd.grad((f(x) ** 3).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="second derivative"):
            g.sum().backward()


def test_opcheck_and_modes():
    """torch.library.opcheck (schema, fake tensors, autograd registration,
    mutation declared) on the three operators; no_grad and inference_mode give
    the eager result."""
    x = torch.randn(6, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    rm, rv = torch.zeros(3), torch.ones(3)
    torch.library.opcheck(torch.ops.fastbn.batch_norm.default, (x, w, b, None, None, True, 1e-5))
    torch.library.opcheck(torch.ops.fastbn.batch_norm.default, (x, w, b, rm, rv, False, 1e-5))
    out, mean, invstd, var = torch.ops.fastbn.batch_norm(x, w, b, None, None, True, 1e-5)
    torch.library.opcheck(torch.ops.fastbn.batch_norm_backward.default,
                          (torch.randn_like(x), x, w.detach(), mean, invstd, True))
    torch.library.opcheck(torch.ops.fastbn.update_running_stats.default,
                          (rm.clone(), rv.clone(), mean, var, 96, 0.1))
    bn = fbt.BatchNorm2d(3).eval()
    bn.running_mean.normal_()
    want = bn(x)
    with torch.no_grad():
        torch.testing.assert_close(bn(x), want)
    with torch.inference_mode():
        torch.testing.assert_close(bn(x), want)


class _SmallCNN(torch.nn.Module):
    def __init__(self, bn2d=torch.nn.BatchNorm2d, bn1d=torch.nn.BatchNorm1d):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = bn2d(8)
        self.fc = torch.nn.Linear(8, 6)
        self.bn1 = bn1d(6)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.bn1(self.fc(x.mean((2, 3))))


@pytest.mark.parametrize("train", [True, False])
def test_compile_fullgraph_gives_the_eager_result(train):
    torch.manual_seed(0)
    eager = _SmallCNN(fbt.BatchNorm2d, fbt.BatchNorm1d).train(train)
    twin = _SmallCNN(fbt.BatchNorm2d, fbt.BatchNorm1d).train(train)
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = eager(x1), compiled(x2)
    torch.testing.assert_close(y2, y1)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)
    torch.testing.assert_close(twin.conv.weight.grad, eager.conv.weight.grad)
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[k], v)
    explain = torch._dynamo.explain(_SmallCNN(fbt.BatchNorm2d, fbt.BatchNorm1d).train(train))(x)
    assert explain.graph_break_count == 0


DATALOADER = r"""
import numpy as np, torch
import fastbn, fastbn.torch as fbt
from torch.utils.data import DataLoader, Dataset

class Data(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        x = np.random.default_rng(i).standard_normal((4096, 16)).astype(np.float32)
        return torch.from_numpy(fastbn.batch_norm_forward(x, None, None)[0])

torch.manual_seed(0)
bn = fbt.BatchNorm2d(16)
opt = torch.optim.SGD(bn.parameters(), lr=0.1)
for _ in range(3):                       # the parent trains, parallel kernels and all
    opt.zero_grad()
    bn(torch.randn(64, 16, 16, 16)).square().mean().backward()
    opt.step()
loader = DataLoader(Data(), batch_size=2, num_workers=2, multiprocessing_context="fork",
                    timeout=120)
got = torch.cat(list(loader))
want = torch.stack([Data()[i] for i in range(4)])
assert torch.equal(got, want)
print("OK")
"""


def _run_ok(script, what):
    """Run ``script`` in a new Python on this source tree: it must print OK, and
    a hang (a forked child stuck) fails the test instead of waiting forever."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    try:
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} hung: {e.stderr}")
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_dataloader_fork_workers_after_training():
    _run_ok(DATALOADER, "DataLoader workers")


def test_import_fastbn_does_not_import_torch():
    code = "import sys, fastbn, fastbn.nn; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr


SYNC = r"""
import sys
import numpy as np, torch
import torch.distributed as dist
import fastbn.torch as fbt

rank, world, init = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
torch.set_num_threads(1)
rows = [5, 3]                            # uneven slices of one global batch
rng = np.random.default_rng(0)
shape = (sum(rows), 4, 3, 3)
fmt = torch.channels_last if rank == 1 else torch.contiguous_format   # layouts may differ
ref = torch.nn.BatchNorm2d(4, momentum=None)
with torch.no_grad():
    ref.weight.normal_(generator=torch.Generator().manual_seed(1))
net = fbt.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4, momentum=None)))
bn = net[0]
bn.load_state_dict(ref.state_dict())
lo, hi = sum(rows[:rank]), sum(rows[:rank + 1])
for step in range(2):
    x = torch.from_numpy(rng.standard_normal(shape) * 3 + 1e3).float()
    dy = torch.from_numpy(rng.standard_normal(shape)).float()
    xr = x.clone().requires_grad_()
    yr = ref(xr)
    yr.backward(dy)
    xs = x[lo:hi].clone().contiguous(memory_format=fmt).requires_grad_()
    bn.weight.grad = bn.bias.grad = None
    y = bn(xs)
    y.backward(dy[lo:hi].contiguous(memory_format=fmt))
    torch.testing.assert_close(y, yr[lo:hi], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xs.grad, xr.grad[lo:hi], rtol=1e-4, atol=1e-4)
    gw = bn.weight.grad.clone()
    dist.all_reduce(gw)                  # what DistributedDataParallel adds up
    torch.testing.assert_close(gw, ref.weight.grad, rtol=1e-4, atol=1e-4)
    ref.weight.grad = ref.bias.grad = None
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(bn.state_dict()[k], v, rtol=1e-5, atol=1e-5)
    stats = torch.stack([bn.running_mean, bn.running_var])
    every = [torch.empty_like(stats) for _ in range(world)]
    dist.all_gather(every, stats)
    assert all(torch.equal(e, every[0]) for e in every)   # bitwise the same on every rank
bn.eval()
torch.testing.assert_close(bn(x[lo:hi]), ref.eval()(x)[lo:hi], rtol=1e-4, atol=1e-4)
dist.destroy_process_group()
print("OK", rank)
"""


def test_sync_batchnorm_two_processes(tmp_path):
    """Two gloo processes with uneven slices (5 and 3 rows) and different memory
    formats: outputs, input gradients, summed weight gradients and running
    statistics (momentum None) equal one torch.nn.BatchNorm2d on the whole
    batch; running statistics bitwise equal on both ranks."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    init = (tmp_path / "rendezvous").as_uri()
    procs = [subprocess.Popen([sys.executable, "-c", SYNC, str(r), "2", init], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("SyncBatchNorm processes hung")
    for r, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0 and f"OK {r}" in out, err[-3000:]


def test_convert_sync_batchnorm_only_when_asked():
    net = torch.nn.Sequential(torch.nn.SyncBatchNorm(3), torch.nn.BatchNorm1d(3))
    fbt.convert(net)
    assert type(net[0]) is torch.nn.SyncBatchNorm and type(net[1]) is fbt.BatchNorm1d
    fbt.convert(net, sync_batchnorm=True)
    assert type(net[0]) is fbt.SyncBatchNorm
    x = torch.randn(4, 3)
    torch.testing.assert_close(net[0](x), torch.nn.functional.batch_norm(
        x, None, None, net[0].weight, net[0].bias, True))


def test_weight_without_bias_matches_torch_nn():
    kwargs = {"bias": False} if "bias" in torch.nn.BatchNorm2d.__init__.__code__.co_varnames else {}
    ref, fb = torch.nn.BatchNorm2d(3, **kwargs), fbt.BatchNorm2d(3, **kwargs)
    with torch.no_grad():
        ref.weight.normal_()
    fb.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 2, 2)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(xr).sum().backward()
    fb(xf).sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad)
    torch.testing.assert_close(fb.weight.grad, ref.weight.grad)


def _bits(t):
    return t.detach().contiguous().numpy().tobytes()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,fmt,planned", [
    ((32, 64), None, "rows"), ((128, 784), None, "rows"), ((6, 3), None, "rows"),
    ((8, 4, 3, 3), torch.channels_last, "rows"),    # NHWC memory: (72, 4) rows, planned
    ((4, 16, 130), None, "planes"), ((16, 32, 16, 16), None, "planes"),  # fused planes: C++
    ((8, 4, 5), None, None), ((8, 4, 3, 3), None, None)])    # other planes: checked calls
def test_planned_route_gives_the_checked_bits(shape, fmt, planned, dtype, monkeypatch):
    """The adapter's C++ training path (fastbn/torch/_native.cpp) and its Python
    planned calls (_bn.planned_training, its backward and blend_running;
    planes have no plan and take the checked calls) against the checked calls, on the same modules' states over
    three training steps then one in eval: outputs, input and parameter
    gradients and running statistics bit for bit, momentum 0.1 and None."""
    from fastbn import _bn
    cls = CLASSES[len(shape) - 2 if len(shape) > 2 else 1]
    native = _native()
    runs, calls = [], {}
    for route in ("native", "planned", "checked"):
        rng = np.random.default_rng(zlib.crc32(repr((shape, fmt, dtype)).encode()))
        monkeypatch.setattr(_bn.plans, "PLANS", {})
        monkeypatch.setattr(fbt_native, "_NATIVE_PLANS", {})
        if route == "native":
            monkeypatch.setattr(fbt_native, "_native_module", _Spy(native, calls))
        else:
            monkeypatch.setattr(fbt_native, "_native_module", False)
        if route == "checked":
            monkeypatch.setattr(_bn, "planned_training", lambda *a: None)
            monkeypatch.setattr(_bn, "planned_training_backward", lambda *a: None)
            monkeypatch.setattr(_bn, "blend_running", lambda *a: False)
        elif route == "planned":
            for name in ("_planned_training", "_planned_training_backward", "_blend_running"):
                def spy(*a, _f=getattr(_bn, name[1:]), _n=name):
                    r = _f(*a)
                    calls[_n] = calls.get(_n, 0) + (r is not None and r is not False)
                    return r
                monkeypatch.setattr(_bn, name[1:], spy)
        out = []
        for momentum in (0.1, None):
            fb = cls[1](shape[1], momentum=momentum, dtype=dtype)
            with torch.no_grad():
                fb.weight.copy_(torch.from_numpy(rng.standard_normal(shape[1])))
                fb.bias.copy_(torch.from_numpy(rng.standard_normal(shape[1])))
            step_rng = np.random.default_rng(3)
            for step in range(4):
                fb.train(step < 3)
                x = torch.from_numpy(step_rng.standard_normal(shape) * 3 + 1e3).to(dtype)
                if fmt is not None:
                    x = x.contiguous(memory_format=fmt)
                x.requires_grad_()
                dy = torch.from_numpy(step_rng.standard_normal(shape)).to(dtype)
                fb.weight.grad = fb.bias.grad = None
                y = fb(x)
                y.backward(dy)
                out += [y, x.grad, fb.weight.grad, fb.bias.grad, fb.running_mean,
                        fb.running_var]
        runs.append([_bits(t) for t in out])
    assert runs[0] == runs[2] and runs[1] == runs[2]
    if planned == "rows":   # every training step but the first forward (its checked call plans)
        assert calls == {"native": 5, "_planned_training": 5, "_planned_training_backward": 6,
                         "_blend_running": 6}
    elif planned == "planes":       # C++ from the first call
        assert calls == {"native": 6, "_planned_training": 0, "_planned_training_backward": 0,
                         "_blend_running": 6}
    else:
        assert calls == {"_planned_training": 0, "_planned_training_backward": 0,
                         "_blend_running": 6}


def _native():
    """The C++ training path's module: built here, or the test fails (set
    FASTBN_TORCH_NATIVE=0 to test without it)."""
    if os.environ.get(fbt.NATIVE_ENV) == "0":
        pytest.skip(f"{fbt.NATIVE_ENV}=0: the C++ training path is off")
    assert fbt.build_native(), "fastbn.torch could not build its C++ training path"
    return fbt_native._native_module


class _Spy:
    """The native module, counting the calls it took (returned an output)."""

    def __init__(self, module, calls):
        self.module, self.calls, self.Plan = module, calls, module.Plan

    def train(self, *args):
        out = self.module.train(*args)
        if out[0] is not None:
            self.calls["native"] = self.calls.get("native", 0) + 1
        return out


def _native_call(monkeypatch):
    """Count the native path's calls from here on: ``calls["native"]``."""
    calls = {}
    monkeypatch.setattr(fbt_native, "_native_module", _Spy(_native(), calls))
    monkeypatch.setattr(fbt_native, "_NATIVE_PLANS", {})   # (conftest empties functional's)
    return calls


def _step(bn, x, dy):
    x = x.clone().requires_grad_()
    bn.weight.grad = bn.bias.grad = None
    y = bn(x)
    y.backward(dy)
    return [_bits(t) for t in (y, x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean,
                               bn.running_var)]


def test_native_path_takes_any_gradient_layout_and_modes(monkeypatch):
    """On the C++ path: a gradient in another memory format, an expanded one
    (``y.sum().backward()``) and a sliced one give the Python path's bits; so
    does a step under no_grad (running statistics only)."""
    calls = _native_call(monkeypatch)
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((8, 6, 3, 3)) + 4).float()
    x = x.contiguous(memory_format=torch.channels_last)
    full = torch.from_numpy(rng.standard_normal((8, 6, 3, 6))).float()
    grads = [torch.from_numpy(rng.standard_normal(x.shape)).float(),          # NCHW
             torch.ones(()).float().expand(x.shape), full[..., ::2]]          # sliced
    runs = []
    for native in (True, False):
        if not native:
            monkeypatch.setattr(fbt_native, "_native_module", False)
        bn = fbt.BatchNorm2d(6)
        out = [_step(bn, x, dy) for dy in grads]
        with torch.no_grad():
            out.append([_bits(bn(x)), _bits(bn.running_mean), _bits(bn.running_var)])
        runs.append(out)
    assert runs[0] == runs[1]
    assert calls["native"] == 3             # the first call on the shape is the Python path's


def test_native_path_double_backward_raises_clearly(monkeypatch):
    calls = _native_call(monkeypatch)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    for _ in range(2):
        (g,) = torch.autograd.grad((fbt.batch_norm(x, None, None, training=True) ** 3).sum(), x,
                                   create_graph=True)
    assert calls["native"] == 1
    want = torch.autograd.grad((torch.nn.functional.batch_norm(x, None, None, training=True)
                                ** 3).sum(), x)[0]
    torch.testing.assert_close(g, want)     # the first derivative is still right
    with pytest.raises(RuntimeError, match="second derivative"):
        g.sum().backward()


def test_native_path_leaves_other_arguments_to_python(monkeypatch):
    """Parameters or running statistics the C++ path does not take (another
    dtype, strided) run the Python path, with the same results as torch.nn."""
    calls = _native_call(monkeypatch)
    x = torch.randn(16, 5) * 3 + 1
    w64, b = torch.rand(10, dtype=torch.float64)[::2], torch.randn(5)
    rm, rv = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    rm_ref, rv_ref = rm.clone(), rv.clone()
    for _ in range(3):
        y = fbt.batch_norm(x, rm, rv, w64, b, training=True)
        want = torch.nn.functional.batch_norm(x.double(), rm_ref, rv_ref, w64, b.double(),
                                              training=True)
        torch.testing.assert_close(y, want.float())
    torch.testing.assert_close(rm, rm_ref)
    torch.testing.assert_close(rv, rv_ref)
    big = torch.randn(fbt.NATIVE_MAX_BYTES // 4 // 64, 64)      # 4 MiB: large enough
    for _ in range(3):
        fbt.batch_norm(big, None, None, training=True)
    assert "native" not in calls


def test_native_path_warns_when_the_variance_overflows(monkeypatch):
    calls = _native_call(monkeypatch)
    x = torch.from_numpy(np.random.default_rng(9).standard_normal((6, 3)) * 1e300)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for _ in range(3):
        with pytest.warns(RuntimeWarning, match="overflowed float64") as rec:
            y = fbt.batch_norm(x, rm, rv, training=True)
        assert len(rec) == 1
        assert torch.equal(y, torch.zeros_like(y))      # invstd 0: the output is beta
    assert calls["native"] == 2
    assert torch.equal(rv, torch.full((3,), torch.inf, dtype=torch.float64))    # as PyTorch's


def test_native_path_warns_as_the_python_path(monkeypatch):
    """The warnings of a held momentum-0 update are the Python path's, word for
    word: an overflowed variance, and an inf in the data (an inf mean, a NaN
    variance: the moving statistics' warning, not the variance's)."""
    calls = _native_call(monkeypatch)
    native = fbt_native._native_module
    x = np.random.default_rng(4).standard_normal((6, 3))
    cases = [x * 1e300, np.where(np.arange(18).reshape(6, 3) == 4, np.inf, x)]
    said = {}
    for route in ("native", "python"):
        monkeypatch.setattr(fbt_native, "_native_module", native if route == "native" else False)
        for k, data in enumerate(cases):
            monkeypatch.setattr(fbt_native, "_NATIVE_PLANS", {})
            for _ in range(3):              # the first call on the shape plans it
                with warnings.catch_warnings(record=True) as rec:
                    warnings.simplefilter("always")
                    fbt.batch_norm(torch.from_numpy(data), None, None, training=True)
                said.setdefault((route, k), []).append([str(w.message) for w in rec])
    assert calls["native"] == 5             # 2, then 3: the second case's shape is planned
    for k in range(2):
        assert said[("native", k)] == said[("python", k)]
        assert all(len(m) == 1 for m in said[("native", k)])
    assert "overflowed float64" in said[("native", 0)][2][0]
    assert "largest value" in said[("native", 1)][2][0]


def test_native_path_off_or_unbuildable_falls_back(monkeypatch):
    """FASTBN_TORCH_NATIVE=0 never builds; a failed build warns once, naming the
    fix, and training goes on in Python."""
    code = ("import os, fastbn.torch as fbt, torch\n"
            "print(fbt.build_native(), fbt.BatchNorm1d(3)(torch.randn(4, 3)).shape)")
    env = dict(os.environ, FASTBN_TORCH_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split() == ["False", "torch.Size([4,", "3])"], \
        out.stderr[-2000:]
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: not found")
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(fbt_native, "_native_module", None)
    monkeypatch.setattr(fbt_native, "_NATIVE_PLANS", {})
    bn, ref = fbt.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with pytest.warns(RuntimeWarning, match="pip install ninja") as rec:
        for _ in range(3):
            x = torch.randn(8, 3)
            torch.testing.assert_close(bn(x), ref(x))
    assert len(rec) == 1 and "c++: not found" in str(rec[0].message)
    assert fbt_native._native_module is False


def test_native_path_from_threads_at_once(monkeypatch):
    """Four Python threads training their own modules at once on the C++ path
    (which runs without the GIL) get the bits of the same steps run in turn."""
    import threading
    calls = _native_call(monkeypatch)
    rng = np.random.default_rng(2)
    data = [torch.from_numpy(rng.standard_normal((64, 40)) * 2 + 1).float() for _ in range(4)]
    grads = [torch.from_numpy(rng.standard_normal((64, 40))).float() for _ in range(4)]

    def run(k, out):
        bn = fbt.BatchNorm1d(40)
        out[k] = [_step(bn, data[k], grads[k]) for _ in range(50)]
    want, got = {}, {}
    for k in range(4):
        run(k, want)
    threads = [threading.Thread(target=run, args=(k, got)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want
    assert calls["native"] >= 4 * 49 * 2 - 1


NATIVE_FORK = r"""
import multiprocessing as mp
import numpy as np, torch
import fastbn.torch as fbt
import fastbn.torch._native as fbt_native

def steps(shape):
    torch.manual_seed(0)
    bn = fbt.BatchNorm1d(shape[1])
    out = []
    for _ in range(3):
        x = torch.randn(*shape, requires_grad=True)
        y = bn(x)
        y.backward(torch.ones_like(y).cumsum(0))
        out.append([t.detach().numpy().tobytes() for t in (y, x.grad, bn.weight.grad,
                                                          bn.running_var)])
    return out, any(type(p).__name__ == "Plan" for p in fbt_native._NATIVE_PLANS.values())

assert fbt.build_native()
shape = (4096, 64)                       # parallel kernels in the parent
want = steps(shape)
assert want[1]
# one torch thread in the children, as DataLoader's workers have: torch's own
# OpenMP operations (randn, cumsum) hang in a child forked after they ran
with mp.get_context("fork").Pool(2, initializer=torch.set_num_threads, initargs=(1,)) as pool:
    got = pool.map(steps, [shape, shape], chunksize=1)
assert got == [want, want]
print("OK")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_native_path_in_forked_children_after_training():
    """A fork pool's children, forked after the parent trained on the C++ path
    with parallel kernels, train on it with the serial ones: the same bits."""
    _native()
    _run_ok(NATIVE_FORK, "fork pool")
