"""The documentation site builds with ``mkdocs build --strict`` (skipped without the ``docs``
extra).  Notebook pages are generated from the sources without executing them (the notebooks run
in tests/test_notebooks.py)."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

needs = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "jupytext",
         "pymdownx")
missing = [m for m in needs if importlib.util.find_spec(m.split(".")[0]) is None]


@pytest.mark.skipif(bool(missing), reason=f"docs extra not installed: {missing}")
def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    assert (site / "index.html").exists()
    assert (site / "notebooks" / "01_quickstart" / "index.html").exists()
    api = (site / "api" / "quadratic" / "index.html").read_text()
    assert "stationary_covariance" in api and ":math:" not in api  # roles converted to MathJax


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
