"""mkdocs hook: notebook pages and docstring roles.

* ``on_config``: nav entries whose page does not exist (yet) are dropped with an info message, so
  the site builds while theory pages written elsewhere are still landing.
* ``on_files``: every ``notebooks/NN_*.py`` (jupytext percent format) becomes a generated page
  ``notebooks/NN_*.md``: its markdown cells and code cells, **not executed** -- the test suite
  executes the notebooks (``tests/test_notebooks.py``); run one yourself to see its figures.
  jupytext is used rather than mkdocs-jupyter because the pages need no execution and no
  nbconvert/Jupyter stack at build time, and the ``.py`` sources stay the single source of truth.
* ``on_page_content``: the library's docstrings use Sphinx roles (``:math:`x```, ``:func:`f```);
  mkdocstrings renders them as ``:math:<code>x</code>``.  They are turned into MathJax spans and
  plain code here, so the API pages show formulas.
"""

from __future__ import annotations

import logging
import pathlib
import re

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.notebooks")
ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
HEADER = re.compile(r"\A---\n.*?\n---\n", re.S)


def _prune(nav, docs_dir: pathlib.Path):
    out = []
    for item in nav:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                sub = _prune(value, docs_dir)
                if sub:
                    out.append({title: sub})
                continue
            item_value = value
        else:
            title, item_value = None, item
        path = str(item_value)
        generated = path.startswith("notebooks/") and (NOTEBOOK_DIR / (pathlib.Path(path).stem + ".py")).exists()
        if "://" in path or (docs_dir / path).exists() or generated:
            out.append(item)
        else:
            log.info("nav: %s (%s) does not exist yet; left out", title, path)
    return out


def on_config(config):
    if config.get("nav"):
        config["nav"] = _prune(config["nav"], pathlib.Path(config["docs_dir"]))
    return config


def notebook_markdown(path: pathlib.Path) -> str:
    """A notebook source as a markdown page (no outputs)."""
    import jupytext

    nb = jupytext.read(path)
    nb.metadata = {}
    text = HEADER.sub("", jupytext.writes(nb, fmt="md"))
    note = (
        "\n!!! note \"Run it\"\n"
        f"    Source: `notebooks/{path.name}` (jupytext percent format). This page shows the code and\n"
        "    the math; figures and numbers appear when you run it, e.g.\n"
        f"    `jupytext --to ipynb notebooks/{path.name}` and open it in Jupyter, or\n"
        f"    `SGDTHEORY_QUICK=1 python notebooks/{path.name}` for the quick version.\n\n"
    )
    # put the note after the first heading
    lines = text.lstrip("\n").split("\n", 1)
    return lines[0] + "\n" + note + (lines[1] if len(lines) > 1 else "")


def on_files(files, config):
    for path in sorted(NOTEBOOK_DIR.glob("[0-9]*.py")):
        files.append(File.generated(config, f"notebooks/{path.stem}.md",
                                    content=notebook_markdown(path)))
    return files


_MATH = re.compile(r":math:<code>(.*?)</code>", re.S)
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):<code>~?(.*?)</code>")
_DIRECTIVE = re.compile(r"<p>\.\. math::(.*?)</p>", re.S)


def _unemphasize(tex: str) -> str:
    """Undo markdown emphasis that ``*`` in a formula (``h^*``) produced inside a math block."""
    for tag, mark in (("strong", "**"), ("em", "*")):
        tex = tex.replace(f"<{tag}>", mark).replace(f"</{tag}>", mark)
    return tex


def on_page_content(html, page, config, files):
    if not page.file.src_uri.startswith("api/"):
        return html
    html = _DIRECTIVE.sub(lambda m: f'<div class="arithmatex">\\[{_unemphasize(m.group(1))}\\]</div>', html)
    html = _MATH.sub(lambda m: f'<span class="arithmatex">\\({m.group(1)}\\)</span>', html)
    return _ROLE.sub(lambda m: f"<code>{m.group(1)}</code>", html)
