"""Every notebook runs in quick mode (``SGDTHEORY_QUICK=1``) and ends with its own assertion that
theory and simulation agree; the check here is that its page shows the result.

With the ``docs`` extra (as in CI), the notebooks are executed **once**, by the documentation build
that tests/_docs_site.py runs for the whole session (mkdocs-jupyter executes them and embeds their
outputs); each test then reads the built page: it must contain at least as many images as the
notebook draws figures, and the notebook's closing ``OK`` line.  Without the docs extra, the
notebooks are executed here with nbclient (``dev`` extra: jupytext, nbclient, ipykernel,
matplotlib) and the same two facts are checked on the executed notebook.

Each takes ~10-35 s in quick mode on 2 idle CPU cores (mostly XLA compiles); on a loaded machine
expect up to 2x.
"""

import os
import pathlib
import subprocess
import sys
import time

import pytest

import _docs_site
from _docs_site import NOTEBOOKS, figures_drawn

pytest.importorskip("matplotlib")


def _execute(path, monkeypatch):
    """Run one notebook with nbclient; (printed text, number of images in its outputs)."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("SGDTHEORY_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = jupytext.read(path)
    # the kernel is the interpreter running the tests (no kernelspec lookup needed)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    return printed, images


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_figures(path, monkeypatch):
    drawn = figures_drawn(path)
    assert drawn >= 1, f"{path.name} draws no figure (plt.subplots/plt.figure)"
    if _docs_site.MISSING:  # no docs extra: execute here
        printed, images = _execute(path, monkeypatch)
        ok = [line for line in printed.splitlines() if line.startswith("OK")]
        assert ok, f"{path.name} did not print its closing OK line"
        assert images >= drawn, f"{path.name}: {images} images in the outputs, {drawn} figures drawn"
        return
    proc, site = _docs_site.build()
    page = _docs_site.page(site, path)
    assert page.exists(), f"no page for {path.name}; mkdocs build output:\n{proc.stdout[-4000:]}{proc.stderr[-8000:]}"
    html = page.read_text()
    assert "quick mode: True" in _docs_site.text(html), "page was not executed in quick mode"
    images = _docs_site.images(html)
    assert images >= drawn, f"{page}: {images} images on the page, the notebook draws {drawn} figures"
    assert _docs_site.final_ok_line(html), f"{page}: the notebook's closing OK line is missing"


SCRIPT = """
import matplotlib.pyplot as plt
import sgdtheory as st
for k in range(2):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [k, 1 - k])
    st.plot.show(fig)
"""


def test_a_notebook_run_as_a_headless_script_saves_its_figures(tmp_path):
    """``python notebooks/0X_*.py`` without a display: figures go to figures/ beside the script."""
    script = tmp_path / "07_demo.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY", "SGDTHEORY_FIGURES")}
    env["MPLBACKEND"] = "agg"
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    saved = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert saved == ["07_demo-2.png", "07_demo.png"], out
    assert "saved figure:" in out
    # SGDTHEORY_FIGURES=DIR collects them elsewhere
    env["SGDTHEORY_FIGURES"] = str(tmp_path / "elsewhere")
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert len(list((tmp_path / "elsewhere").glob("07_demo*.png"))) == 2


def test_notebooks_do_not_lose_figures_when_run_headless():
    """Every notebook shows its figures through st.plot.show (saved when headless), never a bare
    plt.show() that drops them without a display."""
    for path in NOTEBOOKS:
        src = path.read_text()
        assert "plt.show()" not in src, path.name
        assert src.count("st.plot.show(") >= figures_drawn(path), path.name
