"""mkdocs hook: executed notebook pages, offline MathJax and docstring roles.

The notebook pages themselves are rendered by the mkdocs-jupyter plugin (configured in
``mkdocs.yml``); this hook only feeds it and fills in what a plugin cannot know about this repo:

* ``on_config``: notebooks execute in quick mode (``SGDTHEORY_QUICK=1`` unless already set; build
  with ``SGDTHEORY_QUICK=0`` for the full runs) with the inline matplotlib backend, so every figure
  lands in the page.  Nav entries whose page does not exist (yet) are dropped with an info message.
* ``on_files``: every ``notebooks/NN_*.py`` (jupytext percent format, outside ``docs/``) becomes the
  page ``notebooks/NN_*.md`` whose source is that ``.py`` file; mkdocs-jupyter converts it with
  jupytext and executes it at build time.  Nothing executed is cached between builds
  (``cache: false`` in mkdocs.yml), so a page always shows the output of the notebook and library
  as they are now -- never stale results.  MathJax 2.7 is served from the site itself (the files
  ship in the ``jupyter-server-mathjax`` package, Apache-2.0), so formulas render offline.
* ``on_page_content``: the library's docstrings use Sphinx roles (``:math:`x```, ``:func:`f```);
  mkdocstrings renders them as ``:math:<code>x</code>``.  They are turned into MathJax spans and
  plain code here, so the API pages show formulas.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.sgdtheory")
ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
MATHJAX_PREFIX = "assets/mathjax"


def notebook_sources() -> list[pathlib.Path]:
    """The notebooks that become pages, in order."""
    return sorted(NOTEBOOK_DIR.glob("[0-9]*.py"))


def mathjax_dir() -> pathlib.Path:
    import jupyter_server_mathjax

    return pathlib.Path(jupyter_server_mathjax.__file__).parent / "static"


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
    # read by the notebook kernels, which inherit this process's environment
    os.environ.setdefault("SGDTHEORY_QUICK", "1")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    if config.get("nav"):
        config["nav"] = _prune(config["nav"], pathlib.Path(config["docs_dir"]))
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns the .py sources into pages
def on_files(files, config):
    for path in notebook_sources():
        files.append(File.generated(config, f"notebooks/{path.stem}.md", abs_src_path=str(path)))
    static = mathjax_dir()
    for path in sorted(p for p in static.rglob("*") if p.is_file()):
        files.append(File.generated(config, f"{MATHJAX_PREFIX}/{path.relative_to(static).as_posix()}",
                                    abs_src_path=str(path)))
    return files


def on_nav(nav, config, files):
    # mkdocs-jupyter wraps each notebook File in a NotebookFile that forwards only *missing*
    # attributes; a generated file's source path is a per-instance value, so copy it over.
    for f in files:
        inner = f.__dict__.get("file")
        if inner is not None and f.__dict__.get("abs_src_path") is None:
            f.abs_src_path = inner.abs_src_path
    return nav


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
