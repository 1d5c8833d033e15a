"""The package's layout, in code: data flows one way, nobody reads another public
module's private names, no import circles, and the source carries no lab notebook.

Every ``import`` in ``fastbn/`` is parsed (those inside functions too) and
resolved to the fastbn module it names. The order, top to bottom (STYLE.md):
``examples``/``bench`` > ``nn``/``datasets`` > ``autograd``/``torch``/``distributed``
> the package's ``__init__`` > ``functional`` > ``_bn``/``_conv``/``_activations`` > ``_axes``/``kernels``/``_workers``
> ``_config``/``_files``/``_plotting``. A module may import any module below its own
level, and nothing above it.
"""
import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastbn"

#: Each top-level part of fastbn and its level (higher imports lower).
LEVELS = {
    "examples": 7, "bench": 7,
    "nn": 6, "datasets": 6,
    "autograd": 5, "torch": 5, "distributed": 5,
    "fastbn": 4.5,                                # the package's __init__ re-exports functional
    "functional": 4,
    "_bn": 3, "_conv": 3, "_activations": 3,
    "_axes": 2, "kernels": 2, "_workers": 2,
    "_config": 1, "_files": 1, "_plotting": 1,
}
#: Imports between parts of one level that the layout allows: the synchronized
#: batch-norm op and SyncBatchNorm are clients of distributed's merged statistics,
#: and the convolution and activation dispatch share the engine's serial/parallel run.
SIDEWAYS = {("autograd", "distributed"), ("torch", "distributed"),
            ("_conv", "_bn"), ("_activations", "_bn")}


def _modules():
    """``{dotted module name: path}`` of every Python file in the package."""
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _part(module):
    """The top-level part a module belongs to (``fastbn.nn.layers`` -> ``nn``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fastbn"


def _is_package(module):
    return MODULES[module].name == "__init__.py"


def _is_public(module):
    return not any(p.startswith("_") for p in module.split(".")[1:])


def _absolute(module, level, name):
    """The absolute name of ``from <level dots><name> import ...`` in ``module``."""
    if level == 0:
        return name
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


class _Imports(ast.NodeVisitor):
    """Every fastbn module ``module`` imports, and every private name it reads from
    another fastbn module: ``(line, imported module, name or None)``."""

    def __init__(self, module):
        self.module = module
        self.aliases = {}                     # local name -> fastbn module
        self.edges = set()                    # (line, module)
        self.privates = set()                 # (line, module, name)

    def visit_Import(self, node):
        for a in node.names:
            if a.name.split(".")[0] == "fastbn" and a.name in MODULES:
                self.edges.add((node.lineno, a.name))
                if a.asname:
                    self.aliases[a.asname] = a.name
                else:
                    self.aliases["fastbn"] = "fastbn"

    def visit_ImportFrom(self, node):
        src = _absolute(self.module, node.level, node.module)
        if src.split(".")[0] != "fastbn" or src not in MODULES:
            return
        for a in node.names:
            sub = f"{src}.{a.name}"
            if sub in MODULES:                # `from . import functional`: a module
                self.edges.add((node.lineno, sub))
                self.aliases[a.asname or a.name] = sub
            else:
                self.edges.add((node.lineno, src))
                if _private(a.name):
                    self.privates.add((node.lineno, src, a.name))

    def visit_Attribute(self, node):
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in self.aliases:
            module = self.aliases[value.id]
            for attr in reversed(chain):
                if f"{module}.{attr}" in MODULES:
                    module = f"{module}.{attr}"
                    continue
                if _private(attr):
                    self.privates.add((node.lineno, module, attr))
                break
        self.generic_visit(node)


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _parse(module):
    v = _Imports(module)
    v.visit(ast.parse(MODULES[module].read_text(), str(MODULES[module])))
    return v


PARSED = {m: _parse(m) for m in MODULES}


def _where(module, line):
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def test_every_part_has_a_level():
    assert {_part(m) for m in MODULES} <= set(LEVELS), \
        "a new top-level part of fastbn: give it a level in LEVELS"


def test_no_upward_imports():
    bad = []
    for m, v in PARSED.items():
        for line, dep in sorted(v.edges):
            a, b = _part(m), _part(dep)
            if a == b or (a, b) in SIDEWAYS or LEVELS[b] < LEVELS[a]:
                continue
            bad.append(f"{_where(m, line)}: {m} ({a}, level {LEVELS[a]}) imports {dep} "
                       f"({b}, level {LEVELS[b]})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_reach_ins_into_public_modules_private_names():
    """``kernels/`` holds ``@njit`` code under private names by design: its callers in
    the engine read them; everyone else goes through the engine."""
    bad = []
    for m, v in PARSED.items():
        for line, src, name in sorted(v.privates):
            if src == m or not _is_public(src):
                continue
            if _part(src) == "kernels" and LEVELS[_part(m)] <= LEVELS["_bn"]:
                continue
            if _is_package(src) and m.startswith(src + "."):
                continue                      # a package's own submodules share its __init__
            bad.append(f"{_where(m, line)}: {m} reads {src}.{name}")
    assert not bad, "private names read across modules:\n" + "\n".join(bad)


def test_no_import_circles():
    graph = {m: {d for _, d in v.edges if d != m} for m, v in PARSED.items()}
    # a package's __init__ importing its own submodules, which import siblings, is a
    # tree, not a circle; a submodule importing its package's __init__ back is one
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(m):
        index[m] = low[m] = len(index)
        stack.append(m)
        on.add(m)
        for d in graph[m]:
            if d not in index:
                visit(d)
                low[m] = min(low[m], low[d])
            elif d in on:
                low[m] = min(low[m], index[d])
        if low[m] == index[m]:
            scc = []
            while True:
                d = stack.pop()
                on.discard(d)
                scc.append(d)
                if d == m:
                    break
            if len(scc) > 1:
                circles.append(sorted(scc))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize("module, most", [("fastbn.functional", 450)])
def test_the_public_api_is_a_thin_facade(module, most):
    assert len(MODULES[module].read_text().splitlines()) <= most


def test_no_file_over_900_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > 900}
    assert not long, f"split these files: {long}"


DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b|\b[0-2]?\d:[0-5]\d(:[0-5]\d)? ?UTC\b")
HASH = re.compile(r"(?<![.\w])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,12}(?![-+\w])")


def _comments_and_docstrings(path):
    text = path.read_text()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.body[0].lineno, doc


def test_source_comments_carry_no_dates_clock_times_or_commit_hashes():
    """History goes in commit messages and docs/notes, not in the source."""
    bad = []
    for path in MODULES.values():
        for line, text in _comments_and_docstrings(path):
            for pattern in (DATE, HASH):
                for hit in pattern.finditer(text):
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {hit.group(0)!r}")
    assert not bad, "\n".join(bad)


def test_the_checks_see_what_they_check():
    """The parser finds real edges and reach-ins (a test that cannot fail is worse
    than none): a module written to break each rule is caught."""
    src = ("from .. import functional as F\nfrom ..nn import models\n"
           "def f():\n    import fastbn.examples.mnist\n    return F._private(), F.public\n")
    v = _Imports("fastbn.autograd.tensor")
    v.visit(ast.parse(src))
    assert {d for _, d in v.edges} >= {"fastbn.functional", "fastbn.nn.models",
                                       "fastbn.examples.mnist"}
    assert [(s, n) for _, s, n in v.privates] == [("fastbn.functional", "_private")]
    assert DATE.search("# measured 2026-12-02 16:46 UTC") and HASH.search("of 6a7d680 ...")
    assert not HASH.search("a decade of 1234567 samples") and not HASH.search("deadbeef")
