"""fit/evaluate progress output: Keras' full epoch line at any terminal width,
the compile note on the first step, and a rate that leaves compile time out."""
import io
import re
import sys

import numpy as np

from fastbn import nn
from fastbn.nn import _progress

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _model():
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Dense(8, activation="relu", input_shape=(4,)),
                           nn.BatchNormalization(), nn.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd",
                  metrics=["accuracy"])
    return model


def _data():
    x = np.random.default_rng(0).standard_normal((96, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int)


def _epoch_lines(text):
    """What a terminal shows: each line's text after its last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n") if line]


def _check_epoch_line(line):
    for name in METRICS:
        assert re.search(rf"(^| ){name}: \d\.\d{{4}}( |$)", line), (name, line)
    assert re.search(r" \d+s \d+(ms|us)/step", line), line
    assert line.startswith("3/3 "), line


def test_fit_prints_every_metric_at_80_columns_in_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(_progress, "_warm", set())
    out = _Tty()
    monkeypatch.setattr(sys, "stdout", out)
    x, y = _data()
    _model().fit(x, y, batch_size=32, epochs=2, validation_split=0.25, verbose=1)
    text = out.getvalue()
    lines = _epoch_lines(text)
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2", lines
    _check_epoch_line(lines[1])
    _check_epoch_line(lines[3])
    # the live line while the first step compiles, then cut to the terminal
    assert "\r0/3 compiling kernels (first run only)\u2026" in text
    assert "compiling" not in text.split("Epoch 2/2")[1]
    for live in re.split(r"[\r\n]", text):
        if "val_loss" not in live:
            assert len(live) < 80, live


def test_fit_in_a_log_file_prints_full_lines_only(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    x, y = _data()
    h = _model().fit(x, y, batch_size=32, epochs=1, validation_split=0.25, verbose=1)
    text = capsys.readouterr().out
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "Epoch 1/1" and len(lines) == 2, lines
    _check_epoch_line(lines[1])
    assert f"val_accuracy: {h.history['val_accuracy'][0]:.4f}" in lines[1]


def test_evaluate_line_has_loss_and_accuracy(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    x, y = _data()
    loss, acc = _model().evaluate(x, y, batch_size=32, verbose=1)
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        f"- loss: {loss:.4f} - accuracy: {acc:.4f}")


def test_rate_and_eta_leave_the_first_step_out(monkeypatch):
    """A 10 s first step (compilation), then fast steps: the rate counts the fast ones."""
    clock = iter([0.0, 10.0, 10.01, 10.02, 10.2, 10.21])
    monkeypatch.setattr(_progress, "_clock", lambda: next(clock))
    out = _Tty()
    bar = _progress.Progbar(100, file=out, width=200)
    bar.update(1)                       # 10.0: the first step, compiling
    bar.update(1)                       # 10.01
    bar.update(1)                       # 10.02
    assert out.getvalue().endswith("ETA: ?")
    bar.update(1)                       # 10.2 (the redraw interval has passed)
    live = out.getvalue().rsplit("\r", 1)[-1]
    # 3 steps in 0.2 s after the first: 67 ms/step, 96 steps left -> 6 s
    assert "ETA: 6s - 67ms/step" in live, live
    bar.finish({"loss": 1.0})
    # the full line: the whole time (compilation and validation included), the
    # rate from the end of the first step to the end of the last (10.21: validation)
    assert out.getvalue().rsplit("\r", 1)[-1].endswith("] 10s 67ms/step - loss: 1.0000\n")


def test_no_compile_note_once_warm(monkeypatch):
    monkeypatch.setattr(_progress, "_warm", {"fit"})
    out = _Tty()
    _progress.Progbar(5, file=out, width=80, compiling=True)
    assert out.getvalue() == ""


def test_evaluate_says_it_compiles_on_its_first_run_only(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(_progress, "_warm", {"fit"})
    x, y = _data()
    model = _model()
    for expected in (True, False):
        out = _Tty()
        monkeypatch.setattr(sys, "stdout", out)
        model.evaluate(x, y, batch_size=32, verbose=1)
        assert ("compiling kernels" in out.getvalue()) is expected
