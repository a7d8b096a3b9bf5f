r"""Optional matplotlib helpers for the recurring pictures (the ``plot`` extra).

matplotlib is imported lazily inside each function, so ``import sgdtheory`` never needs it.  Every
helper draws into an ``Axes`` you pass (or a new figure when ``ax=None``) and returns what it drew,
so notebooks and tests can inspect the artists.

* :func:`covariance_ellipse` -- the :math:`k`-standard-deviation ellipse of a 2-D covariance.
* :func:`theory_vs_simulation` -- a theory curve with simulated points and error bars.
* :func:`crosscheck_records` / :func:`crosscheck_summary` -- the ``sgdtheory crosscheck`` results
  (a JSON file, its parsed dict, or :func:`sgdtheory.crosscheck.run` output) as flat rows and as a
  one-figure summary of z-scores.
* :func:`show` -- ``plt.show()`` where a figure can be seen (Jupyter, a desktop); on a headless
  machine it saves the figure instead, so ``python notebooks/01_quickstart.py`` keeps its figures.

Example:
  >>> import matplotlib; matplotlib.use("Agg")
  >>> import jax.numpy as jnp, sgdtheory.plot as sp
  >>> e = sp.covariance_ellipse(jnp.diag(jnp.array([4.0, 1.0])))
  >>> float(e.width), float(e.height)     # 2 * sqrt(eigenvalue): full axes of the 1-sigma ellipse
  (4.0, 2.0)
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

__all__ = [
    "covariance_ellipse",
    "theory_vs_simulation",
    "crosscheck_records",
    "crosscheck_summary",
    "show",
]

FIGURES_ENV_VAR = "SGDTHEORY_FIGURES"
_saved_count: dict[str, int] = {}


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    return ax


def _non_interactive(backend: str) -> bool:
    backend = backend.lower()
    try:  # matplotlib >= 3.9
        from matplotlib.backends import BackendFilter, backend_registry

        names = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    except ImportError:  # pragma: no cover - older matplotlib
        from matplotlib import rcsetup

        names = rcsetup.non_interactive_bk
    return backend in {n.lower() for n in names}


def _default_name_and_folder() -> tuple[str, str]:
    import __main__

    script = getattr(__main__, "__file__", None)
    if script:  # run as a script: figures/ next to it, named after it
        path = os.path.abspath(script)
        return os.path.splitext(os.path.basename(path))[0], os.path.join(os.path.dirname(path), "figures")
    session = os.environ.get("JPY_SESSION_NAME")  # the notebook's path, in a Jupyter kernel
    if session:
        return os.path.splitext(os.path.basename(session))[0], "figures"
    return "figure", "figures"


def show(fig=None, *, name: str | None = None, folder: str | None = None, dpi: int = 110):
    """Show a figure where it can be seen; save it where it cannot.

    With an interactive backend (Jupyter's inline backend, a desktop window) this is
    ``plt.show()``.  With a non-interactive one -- matplotlib picks ``Agg`` on a machine without a
    display, e.g. ``python notebooks/01_quickstart.py`` over ssh or in CI -- ``plt.show()`` would
    drop the figure, so it is saved as a PNG instead and its path printed.  Setting the environment
    variable ``SGDTHEORY_FIGURES=DIR`` saves every figure into ``DIR`` (and still shows it).

    Args:
      fig: the figure (default: the current one).
      name: file name without extension.  Default: the running script's name
        (``01_quickstart``), then ``01_quickstart-2``, ... for its later figures.
      folder: where to save.  Default: ``$SGDTHEORY_FIGURES`` if set, else ``figures/`` next to
        the running script (the current directory when there is no script).
      dpi: resolution of the saved PNG.

    Returns:
      The path of the saved PNG, or ``None`` when the figure was only shown.

    Example:
      >>> import matplotlib; matplotlib.use("Agg")
      >>> import matplotlib.pyplot as plt, sgdtheory.plot as sp, tempfile
      >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1], [1, 0])
      >>> path = sp.show(fig, name="line", folder=tempfile.mkdtemp())  # doctest: +ELLIPSIS
      saved figure: .../line.png
    """
    import matplotlib
    import matplotlib.pyplot as plt

    fig = plt.gcf() if fig is None else fig
    env_folder = os.environ.get(FIGURES_ENV_VAR) or None
    headless = _non_interactive(matplotlib.get_backend())
    path = None
    if headless or env_folder or folder is not None:
        default_name, default_folder = _default_name_and_folder()
        folder = folder or env_folder or default_folder
        if name is None:
            count = _saved_count[default_name] = _saved_count.get(default_name, 0) + 1
            name = default_name if count == 1 else f"{default_name}-{count}"
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{name}.png")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        print(f"saved figure: {path}")
    if not headless:
        plt.show()
    return path


def covariance_ellipse(cov, mean=None, *, n_std: float = 1.0, ax=None, **kwargs):
    r"""Draw the ellipse :math:`\{x : (x-m)^\top \Sigma^{-1} (x-m) = k^2\}` of a 2-D covariance.

    Its full axes are :math:`2k\sqrt{\sigma_i}` along the eigenvectors of :math:`\Sigma`
    (eigenvalues :math:`\sigma_1 \ge \sigma_2`); ``angle`` is the direction of the major axis in
    degrees.  For a Gaussian, the 1-sigma ellipse holds 39 % of the mass, the 2-sigma one 86 %.

    Args:
      cov: ``(2, 2)`` symmetric PSD covariance (for higher-dimensional ``w``, pass a 2x2 block).
      mean: ``(2,)`` centre (default the origin).
      n_std: :math:`k`, the number of standard deviations.
      ax: matplotlib ``Axes`` (default: a new figure).
      **kwargs: passed to ``matplotlib.patches.Ellipse`` (default ``fill=False``).

    Returns:
      The ``matplotlib.patches.Ellipse`` added to ``ax``; the view limits are updated to show it.
    """
    from matplotlib.patches import Ellipse

    cov = np.asarray(cov, dtype=float)
    if cov.shape != (2, 2):
        raise ValueError(f"cov must have shape (2, 2); got {cov.shape}.")
    if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12 * max(1.0, np.abs(cov).max())):
        raise ValueError("cov must be symmetric.")
    mean = np.zeros(2) if mean is None else np.asarray(mean, dtype=float).reshape(2)
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    if vals[0] < -1e-12 * max(1.0, abs(vals[1])):
        raise ValueError(f"cov must be positive semi-definite; smallest eigenvalue {vals[0]:.3g}.")
    vals = np.clip(vals, 0.0, None)
    major = vecs[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    kwargs.setdefault("fill", False)
    ell = Ellipse(xy=tuple(mean), width=2 * n_std * math.sqrt(vals[1]),
                  height=2 * n_std * math.sqrt(vals[0]), angle=angle, **kwargs)
    ax = _axes(ax)
    ax.add_patch(ell)
    r = n_std * math.sqrt(vals[1])
    ax.update_datalim([mean - r, mean + r])
    ax.autoscale_view()
    return ell


def theory_vs_simulation(x, theory, simulation, stderr, *, ax=None, x_theory=None, n_se: float = 2.0,
                         label: str = "", color=None, theory_style: str = "-", marker: str = "o"):
    r"""A theory curve and simulated points with :math:`\pm` ``n_se`` standard-error bars.

    Args:
      x: ``(n,)`` abscissae of the simulated points.
      theory: theory values, at ``x`` or at ``x_theory`` if given (a finer grid for a smooth curve).
      simulation: ``(n,)`` simulated estimates.
      stderr: ``(n,)`` their standard errors; bars are ``n_se * stderr`` (default 2: ~95 %).
      ax: matplotlib ``Axes`` (default: a new figure).
      x_theory: optional abscissae of ``theory``.
      label: legend label; the curve is labelled ``"<label> theory"`` and the points
        ``"<label> SGD"``.
      color: one color for both (default: the next in the cycle).
      theory_style, marker: line style of the curve and marker of the points.

    Returns:
      ``(line, errorbar_container)``: the theory ``Line2D`` and the points' ``ErrorbarContainer``.
    """
    ax = _axes(ax)
    x = np.asarray(x, dtype=float)
    xt = x if x_theory is None else np.asarray(x_theory, dtype=float)
    theory = np.asarray(theory, dtype=float)
    simulation = np.asarray(simulation, dtype=float)
    stderr = np.asarray(stderr, dtype=float)
    if theory.shape != xt.shape:
        raise ValueError(f"theory has shape {theory.shape}; its abscissae have {xt.shape}.")
    if simulation.shape != x.shape or stderr.shape != x.shape:
        raise ValueError(f"simulation {simulation.shape} and stderr {stderr.shape} must match x {x.shape}.")
    prefix = f"{label} " if label else ""
    (line,) = ax.plot(xt, theory, theory_style, color=color, label=f"{prefix}theory")
    eb = ax.errorbar(x, simulation, yerr=n_se * stderr, fmt=marker, color=line.get_color(),
                     capsize=3, ms=4, label=f"{prefix}SGD (±{n_se:g} se)")
    return line, eb


def _load_results(results) -> list[dict]:
    """Normalise a JSON path / parsed payload / list of CheckResult (or dicts) to check dicts."""
    if isinstance(results, (str, os.PathLike)):
        with open(results) as f:
            results = json.load(f)
    if isinstance(results, dict):
        results = results.get("checks", [])
    out = []
    for r in results:
        out.append(r.as_dict() if hasattr(r, "as_dict") else dict(r))
    return out


def crosscheck_records(results) -> list[dict[str, Any]]:
    """Flatten crosscheck results to one dict per comparison.

    Args:
      results: a path to ``sgdtheory crosscheck --json`` output, the parsed JSON dict, or the list
        returned by :func:`sgdtheory.crosscheck.run`.

    Returns:
      A list of dicts with the keys ``check``, ``description``, ``quantity``, ``params``,
      ``theory``, ``simulation``, ``stderr``, ``rel_err``, ``z``, ``z_max``, ``expect``, ``passed``,
      ``note``, ``heavy_tailed``, ``error``.  A check that raised gives one row with ``error`` set and
      ``passed=False``.
    """
    rows = []
    for chk in _load_results(results):
        base = {"check": chk["name"], "description": chk.get("description", "")}
        if chk.get("error"):
            rows.append({**base, "quantity": "ERROR", "params": "", "theory": math.nan,
                         "simulation": math.nan, "stderr": math.nan, "rel_err": math.nan,
                         "z": math.nan, "z_max": math.nan, "expect": "agree", "passed": False,
                         "note": "", "error": chk["error"]})
            continue
        for c in chk.get("comparisons", []):
            rows.append({**base, **{k: c.get(k) for k in (
                "quantity", "params", "theory", "simulation", "stderr", "rel_err", "z", "z_max",
                "expect", "passed", "note", "heavy_tailed")}, "error": None})
    return rows


def crosscheck_summary(results, *, ax=None, z_clip: float = 12.0, max_label: int = 60):
    r"""One-figure summary of a crosscheck run: the z-score of every comparison, by check.

    Each row is one comparison, :math:`z = (\text{sim} - \text{theory})/\text{se}`, clipped to
    :math:`\pm` ``z_clip`` (clipped points drawn as triangles).  Green circles pass, red crosses fail;
    hollow diamonds are approximations *expected* to disagree in that regime (they pass when
    :math:`|z| > z_{max}`).  The shaded band is :math:`|z| \le z_{max}`.

    Args:
      results: as in :func:`crosscheck_records`.
      ax: matplotlib ``Axes`` (default: a new figure sized to the number of rows).
      z_clip: display limit for :math:`|z|`.
      max_label: row labels (``"check: quantity"``) longer than this are shortened.

    Returns:
      The ``Axes``.
    """
    rows = crosscheck_records(results)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(9.0, 1.2 + 0.2 * max(len(rows), 1)))
    if not rows:
        ax.text(0.5, 0.5, "no crosscheck results", ha="center", va="center", transform=ax.transAxes)
        return ax
    n = len(rows)
    y = np.arange(n)[::-1]
    labels = []
    zmax = max((r["z_max"] for r in rows if r["z_max"] is not None and math.isfinite(r["z_max"])),
               default=4.5)
    ax.axvspan(-zmax, zmax, color="0.9", zorder=0, label=f"|z| ≤ {zmax:g}")
    ax.axvline(0.0, color="0.6", lw=0.8, zorder=1)
    for yi, r in zip(y, rows):
        label = f"{r['check']}: {r['quantity']}"
        labels.append(label if len(label) <= max_label else label[:max_label - 1] + "…")
        z = r["z"]
        if r["error"] or z is None or not math.isfinite(z):
            ax.plot([0.0], [yi], "x", color="tab:red", ms=8, zorder=3)
            continue
        zc = float(np.clip(z, -z_clip, z_clip))
        clipped = abs(z) > z_clip
        if r.get("heavy_tailed"):  # not tested: its standard error is not valid
            ax.plot([zc], [yi], "s", mfc="none", color="tab:gray", zorder=3)
        elif r["expect"] == "disagree":
            ax.plot([zc], [yi], ">" if clipped and z > 0 else "<" if clipped else "D",
                    mfc="none", color="tab:green" if r["passed"] else "tab:red", zorder=3)
        elif r["passed"]:
            ax.plot([zc], [yi], "o", color="tab:green", zorder=3)
        else:
            ax.plot([zc], [yi], ">" if clipped and z > 0 else "<" if clipped else "X",
                    color="tab:red", ms=8, zorder=3)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(-z_clip - 0.5, z_clip + 0.5)
    ax.set_ylim(-0.8, n - 0.2)
    ax.set_xlabel("z = (simulation − theory) / stderr")
    n_pass = sum(bool(r["passed"]) for r in rows)
    n_heavy = sum(bool(r.get("heavy_tailed")) for r in rows)
    ax.set_title(f"crosscheck: {n_pass}/{n - n_heavy} comparisons pass"
                 + (f" ({n_heavy} heavy-tailed: not tested)" if n_heavy else ""))
    return ax
