"""Smoke tests for the measurement side: ``fastbn.bench`` and the asv suite.

These check that the commands run and measure the right computation; they
assert nothing about speed (the issue: measure, do not assert speed in tests).
"""
import importlib
import json
import math
import os
import sys

import numpy as np
import pytest

import reference
from fastbn import bench
from fastbn.bench import _cli, _report, _timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_TORCH = importlib.util.find_spec("torch") is not None

# one small input per layout the shapes exercise
SMALL = [((6, 5), -1), ((3, 4, 5, 2), 1), ((3, 2, 4, 5), -1), ((4, 3, 5), (1, 2))]


def test_traffic_model_and_axis_parsing():
    assert bench.traffic_bytes("forward", (8192, 1024), "float32") == 3 * 4 * 8192 * 1024
    assert bench.traffic_bytes("inference", (10,), "float64") == 2 * 8 * 10
    assert bench.traffic_bytes("backward", (2, 3), "float32") == 5 * 4 * 6
    assert bench.parse_axis("-1") == -1
    assert bench.parse_axis("1,2") == (1, 2)
    assert bench.parse_axis("(1, 2)") == (1, 2)


@pytest.mark.parametrize("peer", ["fastbn", "numpy", "torch"])
@pytest.mark.parametrize("shape,axis", SMALL)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_peers_compute_batch_norm(peer, shape, axis, dtype):
    """Every peer's forward, inference and backward agree with the float64 reference."""
    cls = bench.PEERS[peer]
    if cls.available():
        pytest.skip(cls.available())
    i = bench.make_inputs(shape, axis, dtype, seed=1)
    x, dy, g, b = (i[k].astype(np.float64) for k in ("x", "dy", "gamma", "beta"))
    ops = cls({k: v.copy() for k, v in i.items()}, axis)
    tol = 2e-4 if dtype == "float32" else 1e-10
    y_ref, mean, invstd = reference.batch_norm_forward(x, g, b, axis=axis, epsilon=bench.EPSILON)
    np.testing.assert_allclose(ops.output("forward"), y_ref, rtol=tol, atol=tol)
    y_inf, _, _ = reference.batch_norm_forward(
        x, g, b, axis=axis, epsilon=bench.EPSILON, training=False,
        moving_mean=i["moving_mean_inf"], moving_variance=i["moving_var_inf"])
    np.testing.assert_allclose(ops.output("inference"), y_inf, rtol=tol, atol=tol)
    dx_ref, _, _ = reference.batch_norm_backward(dy, x, mean, invstd, g, axis=axis)
    np.testing.assert_allclose(ops.output("backward"), dx_ref, rtol=tol, atol=tol * 10)


def test_measure_returns_samples():
    calls = []
    samples, number = bench.measure(lambda: calls.append(1), repeat=4, min_time=1e-4)
    assert len(samples) == 4 and number >= 1 and all(s >= 0 for s in samples)
    assert len(calls) == 3 + 4 * number                 # 3 warm-up calls, then the samples


def test_triad_small():
    t = bench.triad(mib=4, repeat=3)
    assert t["gbps"] > 0 and t["best_gbps"] >= t["gbps"] and t["elements"] == (4 << 20) // 4
    assert t["fresh_gbps"] > 0


def test_command_writes_table_json_and_chart(tmp_path, capsys):
    """``python -m fastbn.bench`` on a tiny NHWC shape: every peer in its own process."""
    out = tmp_path / "bench"
    status = bench.main(["--shape", "4,3,5,8", "--axis", "-1", "--repeat", "2",
                         "--min-time", "0", "--max-time", "0.5", "--triad-mib", "4",
                         "--threads", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert status == 0, text
    assert "STREAM triad" in text and "fastbn ms" in text and "disagree" not in text
    report = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 0
    for key in ("cpu", "logical_cpus", "python", "numpy", "numba", "date", "versions"):
        assert key in report["machine"]
    assert report["triad"]["1"]["gbps"] > 0
    rows = [r for r in report["results"] if "median_s" in r]
    peers = {r["peer"] for r in rows}
    assert {"fastbn", "numpy"} <= peers and (("torch" in peers) == HAVE_TORCH)
    assert {r["op"] for r in rows} == set(bench.OPS)
    size = math.prod((4, 3, 5, 8))
    for r in rows:
        assert r["gbps"] == pytest.approx(
            bench.OPS[r["op"]] * 4 * size / r["median_s"] / 1e9)
        assert r.get("max_rel_diff_vs_numpy", 0) < 1e-4
        if r["peer"] == "fastbn":
            assert r["speedup_vs_numpy"] > 0


def test_table_gives_fastbn_out_its_own_speedup():
    """The fastbn-out column shows fastbn-out's speed-up over torch, not a blank."""
    def row(peer, ms, **extra):
        return dict(case="A", op="forward", peer=peer, threads=2, shape=[128, 784], axis=-1,
                    dtype="float32", median_s=ms / 1e3, median_ms=ms, min_s=ms / 1e3,
                    max_s=ms / 1e3, gbps=1.0, pct_triad=5.0, **extra)
    results = [row("fastbn", 2.0, speedup_vs_torch=1.5), row("fastbn-out", 1.0, speedup_vs_torch=3.0),
               row("torch", 3.0)]
    text = _report.table(results, {2: {"gbps": 20.0, "best_gbps": 21.0}},
                         ["fastbn", "fastbn-out", "torch"], 2)
    head, _, line = text.splitlines()[1:4]
    assert "vs torch" in head and len(head) == len(line)
    cells = line.split()
    # fastbn-out: time, GB/s, %triad, its speed-up; then torch: time, ..., fastbn's speed-up
    assert cells[-8:] == ["1.000", "1.0", "5%", "3.00x", "3.000", "1.0", "5%", "1.50x"]
    assert "vs torch = torch time / fastbn-out time" in text


def test_command_rejects_unknown_case():
    with pytest.raises(SystemExit):
        bench.main(["--cases", "Z"])


@pytest.mark.parametrize("text, says", [("x", "comma-separated"), ("0,2", "at least 1"),
                                        ("", "comma-separated")])
def test_command_rejects_bad_thread_counts(text, says):
    with pytest.raises(SystemExit, match=says):
        bench.main(["--threads", text, "--cases", "A"])


def test_command_refuses_more_threads_than_cpus():
    usable = len(os.sched_getaffinity(0))
    with pytest.raises(SystemExit, match=f"may run on {usable} CPUs.*--threads 1"):
        bench.main(["--threads", f"1,{usable + 1}", "--cases", "A"])


# ------------------------------------------------------------------ asv suite
@pytest.fixture(scope="module")
def asv_benchmarks():
    sys.path.insert(0, os.path.join(ROOT, "asv_bench"))
    try:
        yield importlib.import_module("benchmarks")
    finally:
        sys.path.remove(os.path.join(ROOT, "asv_bench"))


def test_asv_config_is_offline():
    text = open(os.path.join(ROOT, "asv_bench", "asv.conf.json")).read()
    conf = json.loads("\n".join(l for l in text.splitlines() if not l.strip().startswith("//")))
    assert conf["environment_type"] == "existing" and conf["repo"] == ".."


@pytest.mark.parametrize("impl", ["fastbn", "numpy", "torch"])
def test_asv_benchmarks_run_one_param_set(asv_benchmarks, impl):
    """Each benchmark class runs directly (no asv) on one small case."""
    if impl == "torch" and not HAVE_TORCH:
        pytest.skip("PyTorch is not installed")
    mods = [importlib.import_module(f"benchmarks.{m}")
            for m in ("bench_moments", "bench_forward", "bench_backward")]
    common = importlib.import_module("benchmarks.common")
    case = "B 256x300 ax-1 f32"
    assert case in common.CASES
    ran = 0
    for mod in mods:
        for name in dir(mod):
            cls = getattr(mod, name)
            if not isinstance(cls, type) or cls.__module__ != mod.__name__:
                continue
            assert cls.param_names == ["case", "impl"]
            assert set(cls.params[0]) == set(common.CASES)
            if impl not in cls.params[1]:
                continue
            bench_obj = cls()
            extra = (30.0,) if hasattr(cls, "setup_cache") else ()   # a stand-in triad
            bench_obj.setup(*extra, case, impl)
            for meth in dir(cls):
                if meth.startswith(("time_", "peakmem_", "track_")):
                    value = getattr(bench_obj, meth)(*extra, case, impl)
                    if meth.startswith("track_"):
                        assert getattr(cls, meth).unit
                        assert value >= 0
                    ran += 1
    assert ran >= 10


def test_asv_mask_benchmark_runs(asv_benchmarks):
    mod = importlib.import_module("benchmarks.bench_masks")
    assert mod.MaskedForward.params == [mod.MASK_CASES] and len(mod.MASK_CASES) == 2
    case = mod.MASK_CASES[-1]                                   # E, the smaller one
    b = mod.MaskedForward()
    b.setup(case)
    assert 0.7 < b.mask.mean() < 0.8 and b.mask.shape == b.x.shape[:-1]
    b.time_masked_train(case)
    b.time_unmasked_train(case)
    assert b.track_masked_over_unmasked(case) > 0
    assert mod.MaskedForward.track_masked_over_unmasked.unit == "ratio"


def test_asv_compile_benchmarks_are_valid_code(asv_benchmarks):
    mod = importlib.import_module("benchmarks.bench_compile")
    layout = next(iter(mod.LAYOUTS))
    stmt, setup = mod.FirstCallColdCache().timeraw_first_call(layout, "float32")
    compile(stmt, "stmt", "exec")
    compile(setup, "setup", "exec")
    stmt, setup = mod.Import().timeraw_import_fastbn()
    compile(setup + stmt, "import", "exec")


def test_noisy_sampling_is_taken_again_then_flagged(monkeypatch):
    """A median far above the minimum is resampled (at most RESAMPLE times),
    the least noisy sampling kept, and one still noisy flagged."""
    quiet, noisy = [1.0, 1.1, 1.0, 1.2, 1.1], [1.0, 9.0, 8.0, 7.0, 9.0]
    takes = iter([(noisy, 1), (quiet, 1)])
    monkeypatch.setattr(_timing, "measure", lambda *a: next(takes))
    samples, number, tries, flagged = _timing.measure_steady(None, 5, 0, 1)
    assert samples == quiet and tries == 2 and not flagged
    calls = []
    monkeypatch.setattr(_timing, "measure", lambda *a: calls.append(1) or (noisy, 1))
    samples, number, tries, flagged = _timing.measure_steady(None, 5, 0, 1)
    assert flagged and tries == len(calls) == 1 + bench.RESAMPLE


def _noisy_rows():
    def row(peer, ms, noisy=False, **extra):
        return dict(case="C", op="backward", peer=peer, threads=2, shape=[8192, 1024],
                    axis=-1, dtype="float32", median_s=ms / 1e3, median_ms=ms,
                    min_s=ms / 1e3 / (450 if noisy else 1), max_s=ms / 1e3, gbps=10.0 / ms,
                    pct_triad=5.0, noisy=noisy, rounds=5, noisy_rounds=4 if noisy else 0,
                    **extra)
    return [row("fastbn", 4.5, noisy=True, speedup_vs_torch=1.1), row("torch", 5.0)]


def test_table_says_in_words_which_time_is_noisy():
    text = _report.table(_noisy_rows(), {2: {"gbps": 20.0, "best_gbps": 21.0}},
                         ["fastbn", "torch"], 2)
    line = next(t for t in text.splitlines() if t.startswith("C "))
    assert "4.500!" in line
    note = next(t for t in text.splitlines() if "NOISY" in t)
    assert "fastbn C backward" in note and "450.0x" in note and "4 of 5 rounds" in note
    assert "unreliable" in note


def test_chart_hatches_and_labels_a_noisy_bar():
    import matplotlib.pyplot as plt
    fig = _report.chart(_noisy_rows(), {2: {"gbps": 20.0}}, ["fastbn", "torch"], 2)
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.texts] == ["noisy"]
        assert sum(bool(p.get_hatch()) for p in ax.patches) == 1
        legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        assert any(t.startswith("noisy") for t in legend) and "fastbn" in legend
    finally:
        plt.close(fig)


def _flags(parser):
    return [a for a in parser._actions if a.option_strings and a.help != "==SUPPRESS=="
            and a.dest != "help"]


def test_help_names_the_command_and_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: fastbn-bench")
    assert "issue" not in text
    for name, words in bench.CASE_NAMES.items():
        assert f"{name}: {words}" in " ".join(text.split())
    for action in _flags(_cli.parser()):
        # a help text that says more than its default
        assert action.help and len(action.help.replace("(default: %(default)s)", "")) > 12, \
            action.option_strings

