"""The documentation site builds with ``mkdocs build --strict`` (skipped without the ``docs``
extra).  The build executes the notebooks (tests/_docs_site.py shares it with
tests/test_notebooks.py, which checks each notebook page's figures and closing OK line)."""

import importlib.util
import pathlib
import re

import pytest

import _docs_site

ROOT = pathlib.Path(__file__).resolve().parent.parent
needs_docs = pytest.mark.skipif(bool(_docs_site.MISSING),
                                reason=f"docs extra not installed: {_docs_site.MISSING}")


@needs_docs
def test_mkdocs_build_strict():
    proc, site = _docs_site.build()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert (site / "index.html").exists()
    for nb in _docs_site.NOTEBOOKS:
        assert _docs_site.page(site, nb).exists(), nb.name
    api = (site / "api" / "quadratic" / "index.html").read_text()
    assert "stationary_covariance" in api and ":math:" not in api  # roles converted to MathJax
    simulate = (site / "api" / "simulate" / "index.html").read_text()
    for name in ("summarize", "kaplan_meier", "EscapeTimes", "EscapeSummary"):
        assert f"sgdtheory.simulate.escape.{name}" in simulate, name
    assert (site / "composable" / "index.html").exists()


@needs_docs
def test_formulas_render_offline():
    """MathJax is served from the site itself: no page loads a script from another host."""
    proc, site = _docs_site.build()
    assert (site / "assets" / "mathjax" / "MathJax.js").exists()
    assert (site / "assets" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").exists()
    for page in site.rglob("*.html"):
        remote = re.findall(r'<script[^>]+src="(?:https?:)?//[^"]*"', page.read_text())
        assert not remote, f"{page.relative_to(site)} loads {remote}"


def test_notebook_pages_are_never_stale():
    """The plugin re-executes every notebook on every build: its cache (keyed on the notebook text
    only, not on the library) is off, so a page never shows results of older code."""
    cfg = (ROOT / "mkdocs.yml").read_text()
    plugin = cfg[cfg.index("- mkdocs-jupyter:"):]
    plugin = plugin[:plugin.index("\n  - ") if "\n  - " in plugin else len(plugin)]
    assert re.search(r"^\s+cache: false\s*$", plugin, re.M), plugin
    assert re.search(r"^\s+execute: !ENV \[SGDTHEORY_DOCS_EXECUTE, true\]\s*$", plugin, re.M), plugin
    assert re.search(r"^\s+allow_errors: false\s*$", plugin, re.M), plugin


def test_results_page_renderer():
    """docs/gen_results.py renders a table row per comparison (no mkdocs needed)."""
    spec = importlib.util.spec_from_file_location("gen_results", ROOT / "docs" / "gen_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    payload = {"mode": "quick", "seed": 0, "seconds": 3.0, "checks": [
        {"name": "x/y", "description": "d", "passed": True, "seconds": 1.0, "error": None,
         "comparisons": [{"quantity": "Var|w", "params": "lr=1", "theory": 2.0, "simulation": 2.1,
                          "stderr": 0.05, "rel_err": 0.05, "z": 2.0, "expect": "agree",
                          "z_max": 4.6, "passed": True, "note": ""}]}]}
    page = mod.render(payload, figure=None)
    assert "**1 of 1 checks passed** (1 comparisons)" in page
    assert "| `x/y` | Var\\|w | lr=1 | 2 | 2.1 ± 0.05 | +5.00 % | +2.00 | 4.6 | ok |" in page
