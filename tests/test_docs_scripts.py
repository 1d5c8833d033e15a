"""The docs scripts render committed measurements: the same pages whatever is
installed (PyTorch or not), commands without this machine's paths, the MNIST
figure's axes set by the runs that learned."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "docs", "scripts")


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(SCRIPTS)


def test_accuracy_page_keeps_its_pytorch_column_without_pytorch(tmp_path):
    """A build without PyTorch renders the committed measurement, PyTorch included."""
    code = ("import sys, runpy; sys.modules['torch'] = None; "
            f"sys.argv = ['accuracy.py', 'render', '--out', {str(tmp_path)!r}]; "
            f"runpy.run_path({os.path.join(SCRIPTS, 'accuracy.py')!r}, run_name='__main__')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=ROOT))
    text = (tmp_path / "accuracy.md").read_text()
    assert "| fastbn | numpy float32 | PyTorch CPU |" in text
    assert "PyTorch 2." in text and "no PyTorch column" not in text
    assert (tmp_path / "accuracy.png").stat().st_size > 0


def test_bench_commands_lose_this_machines_paths(scripts):
    import bench_results
    cmd = ("python -m fastbn.bench --threads 2 --out /work/main/docs/results/bench/bench-2t "
           "--peers fastbn,numpy")
    assert bench_results._clean_command(cmd) == (
        "fastbn-bench --threads 2 --out docs/results/bench/bench-2t --peers fastbn,numpy")


def test_bench_summary_and_tables_name_cases_in_words(scripts):
    import bench_results
    with open(os.path.join(ROOT, "docs", "results", "bench", "bench-2t", "bench.json")) as f:
        d = json.load(f)
    text = bench_results.summary(d)
    assert "× as fast as PyTorch" in text and "issue" not in text
    table = bench_results.results_table(d)
    assert "| A: MLP input batch (128, 784) | forward |" in table
    line = bench_results.machine_line(d)
    assert "{" not in line and "[" not in line and "/work/" not in line


def test_mnist_flags_are_the_non_default_ones_and_divergence_is_named(scripts):
    import mnist_results
    run = {"settings": {"model": "bn-before", "lr": 0.01, "schedule": "constant",
                        "optimizer": "sgd", "epochs": 10},
           "history": {"loss": [2e6], "val_accuracy": [0.1]}}
    assert mnist_results._flags("x", run) == "--model bn-before --lr 0.01"
    default = {"settings": {"model": "bn-after", "lr": 1.0, "schedule": "cosine"}}
    assert mnist_results._flags("bn-after", default) == ""
    assert mnist_results.diverged(run)
    assert not mnist_results.diverged({"history": {"loss": [0.1], "val_accuracy": [0.98]}})


def test_readme_headline_numbers_match_the_committed_results(scripts):
    """The README's numbers are typed (a Git host shows no generated text): they
    must be the ones the docs render from docs/results/."""
    import bench_results
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = " ".join(f.read().split())
    with open(os.path.join(ROOT, "docs", "results", "bench", "bench-2t", "bench.json")) as f:
        d = json.load(f)
    rows, _ = bench_results._rows(d)
    fast = [r for (c, op, p), r in rows.items() if p == "fastbn"]
    span = bench_results._span
    assert f"{span([r['speedup_vs_torch'] for r in fast], '.2f')} × as fast" in readme
    assert f"{span([r['speedup_vs_numpy'] for r in fast], '.1f')} × as fast" in readme
    assert f"{span([r['pct_triad'] for r in fast], '.0f')} % of a STREAM triad" in readme
    with open(os.path.join(ROOT, "docs", "results", "mnist", "bn-after", "metrics.json")) as f:
        m = json.load(f)
    assert f"{100 * m['test_accuracy']:.2f} % test accuracy" in readme


def test_cnn_speed_line_names_the_command_without_where_it_was_written(scripts, tmp_path,
                                                                       monkeypatch):
    import cnn_results
    monkeypatch.setattr(cnn_results, "GENERATED", str(tmp_path))
    cnn_results.render_speed()
    text = (tmp_path / "cnn_speed.md").read_text()
    assert "`python -m fastbn.examples.train_speed --model cnn" in text
    assert "--out" not in text and "/tmp/" not in text
