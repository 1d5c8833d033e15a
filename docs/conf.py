"""Sphinx configuration for the fastbn documentation.

Build (from the repository root, warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing here reaches the network: no intersphinx inventories, no remote
images, and MathJax 3 is copied into the HTML from the
``sphinx-mathjax-offline`` package (in the ``docs`` extra), so the formulas
typeset with no network. Before
reading the sources the build writes ``docs/_generated/`` with the scripts in
``docs/scripts/`` (see :func:`_generate`), so every number and figure in the
pages comes from code in the repository.
"""
import importlib.util
import os
import subprocess
import sys
import time

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
GENERATED = os.path.join(DOCS, "_generated")
sys.path.insert(0, ROOT)            # document the source tree, installed or not

import fastbn  # noqa: E402

# -- project -----------------------------------------------------------------
project = "fastbn"
author = "the fastbn developers"
copyright = "the fastbn developers"
version = release = fastbn.__version__

# -- extensions --------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
# MathJax 3.2 bundled with the HTML (offline); without the package (an older
# environment) the pages fall back to Sphinx's CDN copy, and the build says so.
OFFLINE_MATHJAX = importlib.util.find_spec("sphinx-mathjax-offline") is not None
if OFFLINE_MATHJAX:
    extensions.append("sphinx-mathjax-offline")
else:
    print("docs: sphinx-mathjax-offline is not installed (pip install '.[docs]'); the "
          "formulas will load MathJax from a CDN")
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "scripts", "results", ".gitignore"]
templates_path = ["_templates"]   # autosummary/class.rst: documents public methods

# MyST: $...$ and $$...$$ math, \begin{aligned} blocks, ::: fences, anchors
# for headings so pages can link to sections.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autosummary writes one page per public name into api/generated/ (git-ignored).
autosummary_generate = True
autodoc_typehints = "none"          # numpydoc's Parameters section says it
# fastbn.torch's page builds without PyTorch (it is an optional extra): autodoc
# imports the module against a stand-in torch, so the pages are the same.
try:
    import torch  # noqa: F401
except ImportError:
    autodoc_mock_imports = ["torch"]
    # A stand-in base class has no signature to check the docstrings against.
    numpydoc_validation_exclude = {r"^fastbn\.torch\."}

# numpydoc renders the docstrings. The doctests of their Examples sections
# run under pytest (--doctest-modules), not here. The validation turns a
# public docstring without parameters or returns into a warning, which -W
# makes an error. "No Examples section" is checked by _require_examples
# below instead of numpydoc's EX01, because it applies to every public
# function and class but not to each method and property (a class's
# Examples show its methods).
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validate = True
numpydoc_validation_checks = {
    "GL03",   # double line break
    "GL06",   # unknown section
    "GL07",   # sections in the wrong order
    "PR01",   # parameter not documented
    "PR02",   # documented parameter that does not exist
    "RT01",   # no Returns section
    "SS01",   # no summary
}

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"fastbn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "secondary_sidebar_items": ["page-toc"],
    "header_links_before_dropdown": 4,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# No left sidebar: the pages are one level deep, so its "Section Navigation"
# was empty and took 300 px of a 1280 px window from the article.
html_sidebars = {"**": []}
html_static_path = ["_static"]
html_css_files = ["fastbn.css"]
html_show_sourcelink = False
html_last_updated_fmt = None


# -- generated content -------------------------------------------------------
def _run(script, *args):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(DOCS, "scripts", script), *args],
                   check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                       filter(None, [ROOT, os.environ.get("PYTHONPATH")]))))
    print(f"docs: {' '.join((script,) + args)} took {time.perf_counter() - t0:.1f} s")


def _generate(app):
    """Write docs/_generated/ before any source is read.

    Each script renders committed measurements (``docs/results/``), so a page
    shows the same numbers whatever is installed where it is built (PyTorch or
    not); ``layouts.py`` computes its small tables directly. Re-measure with
    ``python docs/scripts/<script> run`` and commit the results.
    """
    os.makedirs(GENERATED, exist_ok=True)
    _run("layouts.py")
    _run("mnist_results.py", "render")
    _run("cnn_results.py", "render")
    _run("bench_results.py", "render")
    _run("accuracy.py", "render")


# -- checks ------------------------------------------------------------------
# Every module of the package with an ``__all__`` is public, and api.rst must
# list each of its names; except these (private by design, see their docstrings).
PRIVATE_MODULES = ("fastbn.kernels",)


def _public_modules():
    import pkgutil
    yield "fastbn"
    for info in pkgutil.walk_packages(fastbn.__path__, "fastbn."):
        if any(p.startswith("_") for p in info.name.split(".")) or any(
                info.name == m or info.name.startswith(m + ".") for m in PRIVATE_MODULES):
            continue
        yield info.name


def _check_api_complete(app):
    """Warn (an error under -W) for a public name that api.rst does not list.

    A name counts as listed when api.rst documents the same object, under any
    module (``fastbn.nn.SGD`` is listed as ``fastbn.nn.optimizers.SGD``).
    """
    import importlib
    import re

    from sphinx.util import logging
    log = logging.getLogger("fastbn.docs")
    listed, module = set(), None
    with open(os.path.join(DOCS, "api.rst")) as f:
        for line in f:
            m = re.match(r"\.\. currentmodule:: (\S+)", line)
            if m:
                module = importlib.import_module(m.group(1))
            m = re.match(r"   ~?([A-Za-z_]\w*)\s*$", line)
            if m and module is not None and hasattr(module, m.group(1)):
                listed.add(id(getattr(module, m.group(1))))
    for modname in _public_modules():
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:
            log.warning(f"cannot import {modname} to check api.rst against it: {e}")
            continue
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if type(obj).__name__ == "module" or name == "__version__":
                continue                  # a subpackage: its names are checked
            if id(obj) not in listed:
                log.warning(f"api.rst does not list {modname}.{name} (in its __all__)")


def _require_examples(app, what, name, obj, options, lines):
    """Every public function and class needs an Examples section (a doctest)."""
    if what in ("function", "class", "exception") and not any(
            line.strip() in ("Examples", ":Examples:") or line.startswith(".. rubric:: Examples")
            for line in lines):
        from sphinx.util import logging
        logging.getLogger("fastbn.docs").warning(f"{name}: no Examples section")


def setup(app):
    app.connect("builder-inited", _generate)
    app.connect("builder-inited", _check_api_complete)
    app.connect("autodoc-process-docstring", _require_examples, priority=400)
