"""One look for every chart fastbn draws: its own PNGs and the docs' figures.

fastbn-mnist's ``learning_curve.png``, fastbn-bench's ``bench.png`` and the
scripts in ``docs/scripts/`` draw with these helpers, so a peer or a model
keeps its colour from one chart to the next, legends sit outside the data,
log axes carry readable ticks (1, 2, 5, 10, ...) and epoch axes integer ones.
Matplotlib is imported by the callers (after ``matplotlib.use("Agg")``);
this module only touches the axes it is given.
"""
import math

#: One colour per peer, model or implementation, in every chart (the
#: colour-blind-safe Okabe-Ito palette).
COLORS = {
    "fastbn": "#0072B2",        # blue
    "fastbn-out": "#56B4E9",    # sky blue: fastbn writing into out=
    "numpy": "#E69F00",         # orange
    "numpy float32": "#E69F00",
    "torch": "#D55E00",         # vermilion
    "PyTorch CPU": "#D55E00",
    "keras": "#CC79A7",         # purple
    "triad": "#000000",
    # fastbn-mnist's models
    "bn-after": "#0072B2",
    "bn-before": "#009E73",     # green
    "textbook": "#CC79A7",
    "plain": "#999999",         # grey: no batch norm
    "bn-before-lr0.01": "#E69F00",
    "plain-lr0.01": "#000000",
    # fastbn-bench's operations
    "forward": "#0072B2",
    "inference": "#56B4E9",
    "backward": "#E69F00",
    "training": "#0072B2",
    "validation": "#E69F00",
}
_SPARE = ("#009E73", "#F0E442", "#56B4E9", "#CC79A7", "#999999", "#000000")


def color(name):
    """The colour of ``name`` (a peer, a model, a split); unknown names get a
    fixed spare colour chosen from the name, so it too stays the same.

    Parameters
    ----------
    name : str
        ``"fastbn"``, ``"numpy"``, ``"torch"``, a model such as ``"bn-after"``...
        A suffix after a space (``"plain lr 0.01"``) keeps the base's colour.

    Returns
    -------
    str
        A hex colour.

    Examples
    --------
    >>> from fastbn._plotting import color
    >>> color("torch"), color("plain lr 0.01") == color("plain")
    ('#D55E00', True)
    """
    if name in COLORS:
        return COLORS[name]
    base = name.split(" ")[0]
    if base in COLORS:
        return COLORS[base]
    return _SPARE[sum(map(ord, name)) % len(_SPARE)]


def style(ax):
    """Light grid behind the data, no top/right frame."""
    ax.grid(True, alpha=0.3, lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def log_axis(ax, which="y"):
    """A log scale labelled at 1, 2, 5 x 10^k in plain numbers (0.5, 2, 50, 200)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def epoch_axis(ax, epochs):
    """Integer epoch ticks 1..epochs (at most ~10 labels), a half-epoch margin."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    if epochs <= 12:        # MaxNLocator(integer=True) gives 0.6, 1.2 for one epoch
        ax.xaxis.set_major_locator(FixedLocator(range(1, epochs + 1)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    ax.set_xlim(0.5, epochs + 0.5)
    ax.set_xlabel("epoch")


def limits(values, lo=None, hi=None, pad=0.08, min_span=None):
    """A y range around ``values``: padded, never thinner than ``min_span``
    (default 2% of the largest magnitude), clamped to ``[lo, hi]`` (e.g.
    accuracy in [0, 1]); non-finite values are ignored.

    Parameters
    ----------
    values : iterable of float
    lo, hi : float, optional
        Hard bounds of the quantity.
    pad : float, default 0.08
        Fraction of the span added on each side.
    min_span : float, optional

    Returns
    -------
    tuple of float
        ``(bottom, top)``.

    Examples
    --------
    >>> from fastbn._plotting import limits
    >>> bottom, top = limits([0.9712], lo=0, hi=1)   # one epoch's accuracy
    >>> 0.95 < bottom < 0.9712 < top <= 1.0
    True
    """
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return (0.0 if lo is None else lo, 1.0 if hi is None else hi)
    a, b = min(v), max(v)
    if min_span is None:
        min_span = 0.02 * max(abs(a), abs(b), 1e-12)
    if b - a < min_span:
        mid = (a + b) / 2
        a, b = mid - min_span / 2, mid + min_span / 2
    span = b - a
    a, b = a - pad * span, b + pad * span
    if lo is not None and a < lo:
        b, a = min(b + (lo - a), hi if hi is not None else math.inf), lo
    if hi is not None and b > hi:
        a, b = max(a - (b - hi), lo if lo is not None else -math.inf), hi
    return a, b


def legend_outside(ax_or_fig, where="right", **kw):
    """The legend beside the data (``"right"``) or under it (``"below"``), never on it."""
    if where == "below":
        kw = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.15), "ncol": 4, **kw}
    else:
        kw = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), **kw}
    kw.setdefault("frameon", False)
    kw.setdefault("fontsize", "small")
    return ax_or_fig.legend(**kw)
