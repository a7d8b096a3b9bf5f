"""The documentation site, built once per test session and shared by test_docs.py and
test_notebooks.py.

``mkdocs build --strict`` executes every notebook (mkdocs-jupyter, quick mode) and renders it with
its printed numbers and figures, so the notebook tests read the built pages instead of executing
the notebooks a second time: one execution per session, whichever test asks first.  Without the
``docs`` extra, test_notebooks.py executes the notebooks itself.
"""

from __future__ import annotations

import atexit
import functools
import html
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.py"))
NEEDS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers", "mkdocs_jupyter",
         "jupyter_server_mathjax", "pymdownx", "jupytext", "nbconvert", "ipykernel", "matplotlib")
MISSING = [m for m in NEEDS if importlib.util.find_spec(m) is None]


@functools.lru_cache(maxsize=None)
def build() -> tuple[subprocess.CompletedProcess, pathlib.Path]:
    """``mkdocs build --strict`` into a temporary folder: (the finished process, the site folder)."""
    out = pathlib.Path(tempfile.mkdtemp(prefix="sgdtheory-site-"))
    atexit.register(shutil.rmtree, out, True)
    env = {**os.environ, "SGDTHEORY_QUICK": "1", "SGDTHEORY_DOCS_EXECUTE": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env,
    )
    return proc, out / "site"


def page(site: pathlib.Path, notebook: pathlib.Path) -> pathlib.Path:
    return site / "notebooks" / notebook.stem / "index.html"


def figures_drawn(notebook: pathlib.Path) -> int:
    """How many figures a notebook source creates (``plt.subplots(``/``plt.figure(`` calls)."""
    return len(re.findall(r"\bplt\.(?:subplots|figure)\(", notebook.read_text()))


def images(page_html: str) -> int:
    """Embedded output images (matplotlib figures) in a built notebook page."""
    return len(re.findall(r'<img[^>]+src="data:image/(?:png|svg\+xml|jpeg)', page_html))


def text(page_html: str) -> str:
    """The page's visible text, one output line per line."""
    return html.unescape(re.sub(r"<[^>]+>", "", page_html))


def final_ok_line(page_html: str) -> str | None:
    """The notebook's closing ``OK...`` line, as printed in an output cell."""
    outputs = re.findall(r'data-mime-type="text/plain"[^>]*>\s*<pre>(.*?)</pre>', page_html, re.S)
    for out in reversed(outputs):
        for line in reversed(text(out).splitlines()):
            if line.startswith("OK"):
                return line
    return None
