"""Keras-style progress output for ``fit``, ``evaluate`` and ``predict``.

While steps run, one live line (redrawn with ``\\r``, shortened to the
terminal: the bar goes first, then the end of the logs); when a pass ends,
one full line with every metric, never shortened (a narrow terminal wraps
it), as Keras prints it. Output that is not a terminal or a notebook (a log
file, a pipe, pytest's capture) gets only the full lines.

The first training step of a process compiles the Numba kernels (15-45 s
on 2 cores with a cold cache), so the live line says so while it runs, and
the rate, ms/step and ETA are measured from the end of the first step to the
end of the last: neither compile time nor the validation after the last step
inflates them.
"""
import shutil
import sys
import time

COMPILING = "compiling kernels (first run only)\u2026"
#: Live redraws at most this often (seconds); a redraw costs ~20 us.
MIN_INTERVAL = 0.1
#: The passes ("fit", "evaluate", "predict") that have finished a step in this
#: process: their kernels are compiled.
_warm = set()
#: The clock (a name of its own so tests can drive it).
_clock = time.perf_counter


def _fmt_seconds(s):
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _fmt_step(seconds):
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def _fmt_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class Progbar:
    """One pass's progress: ``update`` per step, ``finish`` with the metrics.

    Parameters
    ----------
    total : int
        Steps in the pass (settable: a distributed evaluation sets its share).
    file : file object, default sys.stdout
    width : int, optional
        Terminal columns (default: ``shutil.get_terminal_size``, which reads
        ``COLUMNS`` first).
    dynamic : bool, optional
        Redraw a live line (default: when ``file`` is a terminal or runs in a
        Jupyter kernel).
    compiling : str or bool, default False
        The pass, ``"fit"`` (or True), ``"evaluate"`` or ``"predict"``: say that
        the kernels compile while its first step runs, until a step of that
        pass has finished in this process.
    """

    def __init__(self, total, file=None, width=None, dynamic=None, compiling=False):
        self.total = total
        self.file = sys.stdout if file is None else file
        self.width = width or shutil.get_terminal_size((80, 24)).columns
        if dynamic is None:
            isatty = getattr(self.file, "isatty", None)
            dynamic = bool(isatty and isatty()) or "ipykernel" in sys.modules
        self.dynamic = dynamic
        self.done = 0
        self.logs = {}
        self.t_start = _clock()
        self.t_first = None              # end of step 1: the rate clock starts here
        self.t_last = None               # end of the last step so far
        self._drawn = 0                  # length of the live line on screen
        self._last = 0.0
        self._kind = "fit" if compiling is True else (compiling or None)
        if self._kind and dynamic and self._kind not in _warm:
            self._draw(f"{self._count()} {COMPILING}")

    # -- timing
    def step_seconds(self, now):
        """Seconds per step after the first (which compiles), or None before step 2."""
        if self.t_first is None or self.done < 2:
            return None
        return (now - self.t_first) / (self.done - 1)

    def _count(self):
        digits = len(str(self.total))
        return f"{self.done:{digits}d}/{self.total}"

    # -- drawing
    def _draw(self, line):
        line = line[:max(self.width - 1, 10)]
        pad = " " * max(self._drawn - len(line), 0)
        self.file.write("\r" + line + pad)
        self.file.flush()
        self._drawn = len(line)

    def _bar(self, size=30):
        filled = size * self.done // max(self.total, 1)
        head = ">" if 0 < filled < size else ""
        return "[" + "=" * max(filled - len(head), 0) + head + "." * (size - filled) + "]"

    def update(self, n=1, logs=None):
        """Advance ``n`` steps; ``logs`` (a dict of running metrics) replaces the shown ones."""
        self.done += n
        now = self.t_last = _clock()
        if self.t_first is None:
            self.t_first = now
            if self._kind:
                _warm.add(self._kind)
        if logs is not None:
            self.logs = logs
        if not self.dynamic or (now - self._last < MIN_INTERVAL and self.done < self.total):
            return
        self._last = now
        per = self.step_seconds(now)
        if per is None:
            timing = "ETA: ?"
        else:
            timing = f"ETA: {_fmt_seconds(per * (self.total - self.done))} - {_fmt_step(per)}"
        text = _fmt_logs(self.logs)
        rest = f" {timing}" + (" - " + text if text else "")
        # the bar shrinks to fit, then goes; then _draw cuts the logs' tail
        size = min(30, self.width - 1 - len(self._count()) - len(rest) - 3)
        bar = f" {self._bar(size)}" if size >= 10 else ""
        self._draw(self._count() + bar + rest)

    def finish(self, logs=None):
        """Print the pass's full line: steps, time, ms/step and every metric."""
        if logs is not None:
            self.logs = logs
        elapsed = _clock() - self.t_start
        per = self.step_seconds(self.t_last)
        if per is None:
            per = elapsed / max(self.done, 1)
        text = _fmt_logs(self.logs)
        tail = f"{_fmt_seconds(elapsed)} {_fmt_step(per)}" + (" - " + text if text else "")
        line = f"{self._count()} {self._bar()} {tail}"
        if len(line) >= self.width:      # drop the bar, never a metric
            line = f"{self._count()} - {tail}"
        pad = " " * max(self._drawn - len(line), 0)
        self.file.write(("\r" if self.dynamic else "") + line + pad + "\n")
        self.file.flush()
        self._drawn = 0


def mark_warm(kind="fit"):
    """Record that a step of ``kind`` finished: later passes skip the compile note."""
    _warm.add(kind)
