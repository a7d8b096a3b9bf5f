"""sgdtheory.plot: the artists carry the right data (Agg backend, no display)."""

import json
import math

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgdtheory import plot as sp  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_ellipse_axes_match_eigenvalues():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2))
    cov = a @ a.T + 0.1 * np.eye(2)
    vals, vecs = np.linalg.eigh(cov)
    fig, ax = plt.subplots()
    e = sp.covariance_ellipse(cov, mean=[1.0, -2.0], n_std=2.0, ax=ax, color="k")
    assert e in ax.patches
    np.testing.assert_allclose(e.width, 4 * np.sqrt(vals[1]), rtol=1e-12)
    np.testing.assert_allclose(e.height, 4 * np.sqrt(vals[0]), rtol=1e-12)
    np.testing.assert_allclose(e.center, [1.0, -2.0])
    # the major axis points along the top eigenvector (up to sign)
    major = np.array([math.cos(math.radians(e.angle)), math.sin(math.radians(e.angle))])
    assert abs(abs(major @ vecs[:, 1]) - 1.0) < 1e-12
    # a boundary point of the patch satisfies x^T cov^{-1} x = n_std^2
    t = np.linspace(0, 2 * np.pi, 50)
    unit = np.stack([np.cos(t), np.sin(t)], axis=1)
    pts = e.get_patch_transform().transform(unit) - np.array([1.0, -2.0])
    q = np.einsum("ni,ij,nj->n", pts, np.linalg.inv(cov), pts)
    np.testing.assert_allclose(q, 4.0, rtol=1e-6)


def test_ellipse_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        sp.covariance_ellipse(np.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        sp.covariance_ellipse(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="semi-definite"):
        sp.covariance_ellipse(np.diag([1.0, -1.0]))


def test_theory_vs_simulation_data():
    x = np.array([0.1, 0.2, 0.3])
    xt = np.linspace(0.1, 0.3, 11)
    fig, ax = plt.subplots()
    line, eb = sp.theory_vs_simulation(x, xt**2, x**2 + 0.01, np.full(3, 0.005), ax=ax,
                                       x_theory=xt, n_se=2, label="Var")
    np.testing.assert_allclose(line.get_xdata(), xt)
    np.testing.assert_allclose(line.get_ydata(), xt**2)
    data_line, _, (bars,) = eb.lines
    np.testing.assert_allclose(data_line.get_ydata(), x**2 + 0.01)
    segs = np.array(bars.get_segments())  # (n, 2, 2): bottom and top of each bar
    np.testing.assert_allclose(segs[:, 1, 1] - segs[:, 0, 1], 2 * 2 * 0.005)
    assert data_line.get_color() == line.get_color()
    labels = [t.get_text() for t in ax.legend().get_texts()]
    assert labels == ["Var theory", "Var SGD (±2 se)"]
    with pytest.raises(ValueError):
        sp.theory_vs_simulation(x, xt**2, x, np.ones(3), ax=ax)


PAYLOAD = {
    "mode": "quick",
    "checks": [
        {"name": "a/ok", "description": "d1", "passed": True, "seconds": 1.0, "error": None,
         "comparisons": [
             {"quantity": "Var w1", "params": "lr=0.1", "theory": 1.0, "simulation": 1.01,
              "stderr": 0.01, "rel_err": 0.01, "z": 1.0, "expect": "agree", "z_max": 4.5,
              "passed": True, "note": ""},
             {"quantity": "Var w1 (continuous)", "params": "lr=0.1", "theory": 0.8,
              "simulation": 1.01, "stderr": 0.01, "rel_err": 0.26, "z": 21.0,
              "expect": "disagree", "z_max": 4.5, "passed": True, "note": "approx"}]},
        {"name": "b/bad", "description": "d2", "passed": False, "seconds": 1.0, "error": None,
         "comparisons": [
             {"quantity": "loss", "params": "", "theory": 1.0, "simulation": 1.1, "stderr": 0.01,
              "rel_err": 0.1, "z": 10.0, "expect": "agree", "z_max": 4.5, "passed": False,
              "note": ""}]},
        {"name": "c/err", "description": "d3", "passed": False, "seconds": 0.1,
         "error": "RuntimeError: boom", "comparisons": []},
    ],
}


def test_crosscheck_records_and_summary(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(PAYLOAD))
    rows = sp.crosscheck_records(path)
    assert rows == sp.crosscheck_records(PAYLOAD)
    assert [r["check"] for r in rows] == ["a/ok", "a/ok", "b/bad", "c/err"]
    assert [r["passed"] for r in rows] == [True, True, False, False]
    assert rows[3]["error"] == "RuntimeError: boom"
    ax = sp.crosscheck_summary(path)
    assert len(ax.get_yticklabels()) == 4
    assert ax.get_title() == "crosscheck: 2/4 comparisons pass"
    xs = [float(line.get_xdata()[0]) for line in ax.lines if len(line.get_xdata()) == 1]
    assert xs == [1.0, 12.0, 10.0, 0.0]  # z=21 clipped to z_clip=12; the error row drawn at 0


def test_crosscheck_records_from_run_objects():
    from sgdtheory.crosscheck import Comparison
    from sgdtheory.crosscheck import CheckResult

    res = CheckResult("x/y", "desc", [Comparison("q", "p", 1.0, 1.0, 0.1)])
    (row,) = sp.crosscheck_records([res])
    assert row["check"] == "x/y" and row["passed"] and row["z"] == 0.0
