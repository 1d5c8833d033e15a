"""fastbn.torch against torch.nn where fastbn.torch claims to be a drop-in: PyTorch's
own module samples (``module_db``), zero-size batches, ``eps`` checks and vmap."""
import copy
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")    # torch.testing._internal imports it

import fastbn.torch as ft                                        # noqa: E402
from torch.testing._internal.common_modules import FunctionInput, module_db  # noqa: E402

_FASTBN = {"BatchNorm1d": ft.BatchNorm1d, "BatchNorm2d": ft.BatchNorm2d,
           "BatchNorm3d": ft.BatchNorm3d}
_INFOS = [m for m in module_db if m.module_cls.__name__ in _FASTBN
          and m.module_cls.__module__.startswith("torch.nn")]


def _pair(info, constructor_input, dtype):
    """torch.nn's module and fastbn's, built with the same arguments and state."""
    args, kwargs = constructor_input.args, constructor_input.kwargs
    ref = info.module_cls(*args, **kwargs).to(dtype)
    ours = _FASTBN[info.module_cls.__name__](*args, **kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _run(module, forward_input, training):
    """``(output, input grads, parameter grads, buffers)`` or the exception raised."""
    module.train(training)
    args = copy.deepcopy(forward_input.args)
    try:
        out = module(*args, **forward_input.kwargs)
    except Exception as e:          # noqa: BLE001 -- compared with torch.nn's below
        return e
    grads = []
    if out.requires_grad:
        g = torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape) / max(out.numel(), 1)
        out.backward(g)
        grads = [a.grad for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        grads += [p.grad for p in module.parameters()]
    return out.detach(), grads, [b.clone() for b in module.buffers()]


def _assert_same(ref, ours, dtype):
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    if isinstance(ref, Exception) or isinstance(ours, Exception):
        assert type(ours) is type(ref), (ref, ours)
        return
    for r, o in zip(ref[1:], ours[1:]):
        assert len(r) == len(o)
        for a, b in zip(r, o):
            torch.testing.assert_close(b, a, **tol)
    torch.testing.assert_close(ours[0], ref[0], **tol)


def _cases(func):
    """A param per case of each entry's ``func`` (``module_inputs_func`` or
    ``module_error_inputs_func``), for float32 and float64, training and eval."""
    for info in _INFOS:
        for dtype in (torch.float32, torch.float64):
            for training in (True, False):
                inputs = getattr(info, func)(info, device="cpu", dtype=dtype,
                                             requires_grad=True, training=training)
                for i, _ in enumerate(inputs):
                    yield pytest.param(info, dtype, training, i,
                                       id=f"{info.module_cls.__name__}-{dtype}-"
                                          f"{'train' if training else 'eval'}-{i}")


@pytest.mark.parametrize("info,dtype,training,i", list(_cases("module_inputs_func")))
def test_module_db_samples_match_torch_nn(info, dtype, training, i):
    sample = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                     training=training)[i]
    ref, ours = _pair(info, sample.constructor_input, dtype)
    _assert_same(_run(ref, sample.forward_input, training),
                 _run(ours, sample.forward_input, training), dtype)


@pytest.mark.parametrize("info,dtype,training,i", list(_cases("module_error_inputs_func")))
def test_module_db_error_inputs_match_torch_nn(info, dtype, training, i):
    case = info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                         training=training)[i]
    sample = case.module_error_input
    ref, ours = _pair(info, sample.constructor_input, dtype)
    r = _run(ref, sample.forward_input, training)
    o = _run(ours, sample.forward_input, training)
    _assert_same(r, o, dtype)
    if isinstance(r, Exception) and re.search(case.error_regex, str(r)):
        # (evaluation with eps < 0: torch says "non-negative", the case's regex not)
        assert isinstance(o, case.error_type) and re.search(case.error_regex, str(o)), o


def test_module_db_has_the_batch_norm_samples():
    # the three entries and their 94 samples with error inputs: a torch that
    # renames them must not leave the tests above empty
    assert sorted(m.module_cls.__name__ for m in _INFOS) == sorted(_FASTBN)
    count = len(list(_cases("module_inputs_func")))
    assert count + len(list(_cases("module_error_inputs_func"))) >= 94


# ---------------------------------------------------------------- zero-size batches
@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (0, 3)), ("BatchNorm1d", (0, 3, 4)),
                                       ("BatchNorm2d", (0, 3, 2, 2)),
                                       ("BatchNorm3d", (0, 3, 2, 2, 2))])
def test_zero_size_batch_matches_torch_nn(cls, shape, training, native, monkeypatch):
    if not native:      # the Python path, as where the C++ one cannot be built
        monkeypatch.setattr("fastbn.torch._native._native_module", False)
    ref = getattr(torch.nn, cls)(3, momentum=None)
    ours = _FASTBN[cls](3, momentum=None)
    ref.running_mean.fill_(0.5)
    ours.load_state_dict(ref.state_dict())
    for _ in range(2):      # the C++ path takes a shape from its second call
        for m in (ref, ours):
            m.train(training)
        x = torch.zeros(shape, requires_grad=True)
        r = _run(ref, FunctionInput(x), training)
        o = _run(ours, FunctionInput(x), training)
        assert not isinstance(o, Exception), o
        _assert_same(r, o, torch.float32)
        assert o[0].shape == shape
        assert torch.equal(ours.num_batches_tracked, ref.num_batches_tracked)


def test_zero_size_batch_functional_leaves_running_stats():
    rm, rv = torch.full((3,), 0.5), torch.full((3,), 2.0)
    w = torch.ones(3, requires_grad=True)
    out = ft.batch_norm(torch.zeros(0, 3, 4), rm, rv, w, None, training=True)
    out.sum().backward()
    assert out.shape == (0, 3, 4)
    assert torch.equal(rm, torch.full((3,), 0.5)) and torch.equal(rv, torch.full((3,), 2.0))
    assert torch.equal(w.grad, torch.zeros(3))


# ------------------------------------------------------------------------ eps
@pytest.mark.parametrize("eps", [0.0, -1.0])
def test_non_positive_eps_refused_in_training_as_torch(eps):
    x = torch.ones(4, 3)          # a constant channel: 0 / 0 with eps=0
    with pytest.raises(ValueError) as ref:
        torch.nn.functional.batch_norm(x, None, None, training=True, eps=eps)
    with pytest.raises(type(ref.value), match="eps must be positive"):
        ft.batch_norm(x, None, None, training=True, eps=eps)
    with pytest.raises(type(ref.value), match="eps must be positive"):
        ft.BatchNorm1d(3, eps=eps)(x)
    if eps < 0:                   # refused in evaluation too, by both
        return
    # evaluation with running statistics takes eps=0, as torch.nn does
    rm, rv = torch.zeros(3), torch.ones(3)
    torch.testing.assert_close(ft.batch_norm(x, rm, rv, eps=eps),
                               torch.nn.functional.batch_norm(x, rm, rv, eps=eps))


# ----------------------------------------------------------------------- vmap
@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (5, 4, 3)), ("BatchNorm1d", (5, 4, 3, 6)),
                                       ("BatchNorm2d", (5, 4, 3, 2, 2))])
@pytest.mark.parametrize("training,track", [(False, True), (True, False), (True, True)])
def test_vmap_matches_torch_nn(cls, shape, training, track):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen) * 3 + 1
    ref = getattr(torch.nn, cls)(3, track_running_stats=track)
    ours = _FASTBN[cls](3, track_running_stats=track)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2.0, generator=gen)
        ref.bias.uniform_(-1.0, 1.0, generator=gen)
        if track:
            ref.running_mean.uniform_(-1.0, 1.0, generator=gen)
            ref.running_var.uniform_(0.5, 2.0, generator=gen)
    ours.load_state_dict(ref.state_dict())
    ref.train(training)
    ours.train(training)
    try:
        r = torch.func.vmap(ref)(x)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="vmap"):
            torch.func.vmap(ours)(x)
        return
    o = torch.func.vmap(ours)(x)
    torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-5)
    # and the gradient through it, of the parameters
    r.sum().mul(0).add((r * r).sum()).backward()
    o.sum().mul(0).add((o * o).sum()).backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
