"""Execute every notebook in quick mode (``SGDTHEORY_QUICK=1``); each ends with its own assertion
that theory and simulation agree, so a failing cell fails the test.

Notebooks are jupytext percent-format ``.py`` files in ``notebooks/``: converted with jupytext and
executed with nbclient in a ``python3`` kernel (ipykernel from the same environment).  Needs the
``dev`` extra (jupytext, nbclient, nbformat, ipykernel, matplotlib); skipped otherwise.

Part of the default suite: all six take ~2.3 min together on 2 idle CPU cores (11-34 s each in
quick mode, mostly XLA compiles, one per distinct optimizer); on a loaded machine expect up to 2x.
Run only these with ``pytest tests/test_notebooks.py``.
"""

import pathlib
import sys
import time

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.py"))

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, monkeypatch):
    monkeypatch.setenv("SGDTHEORY_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = jupytext.read(path)
    # the kernel is the interpreter running the tests (no kernelspec lookup needed)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    print(f"{path.name}: {elapsed:.1f} s", file=sys.stderr)
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "OK" in outputs
