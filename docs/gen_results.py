"""Write the cross-check results page from ``sgdtheory crosscheck --json`` output.

Usage::

    sgdtheory crosscheck --json results.json        # quick mode; or --full
    python docs/gen_results.py results.json         # writes docs/results.md + docs/assets/crosscheck_summary.svg

The page has the run's metadata, one summary figure (every comparison's z-score, from
:func:`sgdtheory.plot.crosscheck_summary`) and a table with one row per comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

DOCS = pathlib.Path(__file__).resolve().parent
FIGURE = "assets/crosscheck_summary.svg"


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—" if x is None or math.isnan(x) else str(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:.3e}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(payload: dict, figure: str | None = FIGURE) -> str:
    from sgdtheory.plot import crosscheck_records

    rows = crosscheck_records(payload)
    checks = payload.get("checks", [])
    n_pass = sum(bool(c.get("passed")) for c in checks)
    meta = ", ".join(f"{k} {payload[k]}" for k in ("mode", "seed", "backend", "jax", "python", "date")
                     if k in payload)
    out = [
        "# Cross-check results",
        "",
        "Every analytic prediction in sgdtheory against simulated discrete-time SGD, as printed by "
        "`sgdtheory crosscheck`. A row passes when $|z| = |\\text{sim} - \\text{theory}|/\\text{se}$ "
        "is below its threshold $z_{\\max}$ (a Student-$t$ quantile at a false-alarm rate of "
        "$10^{-4}$; see [conventions](conventions.md#statistics-from-the-simulators)). Rows marked "
        "*expected to fail* are approximations (e.g. the continuous-time formula at a large learning "
        "rate) shown outside their regime of validity: they pass when they disagree.",
        "",
        f"**{n_pass} of {len(checks)} checks passed** ({len(rows)} comparisons) in "
        + (f"{payload['seconds']:.0f} s" if "seconds" in payload else "(time not recorded)")
        + f" — {meta}.",
        "",
        "Regenerate: `sgdtheory crosscheck --json results.json && python docs/gen_results.py "
        "results.json`.",
        "",
    ]
    if figure:
        out += [f"![z-score of every comparison]({figure})", ""]
    out += ["| check | quantity | params | theory | simulation ± se | rel. err | z | z<sub>max</sub> | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["error"]:
            out.append(f"| `{r['check']}` | ERROR | {_cell(r['error'])} | | | | | | **FAIL** |")
            continue
        verdict = ("heavy-tailed: SE not valid" if r.get("heavy_tailed")
                   else "ok" if r["passed"] else "**FAIL**")
        if r["expect"] == "disagree":
            verdict += " (fails, as expected)" if r["passed"] else " (expected to fail)"
        rel = r["rel_err"]
        rel_s = f"{100 * rel:+.2f} %" if rel is not None and math.isfinite(rel) else "—"
        out.append(
            f"| `{r['check']}` | {_cell(r['quantity'])} | {_cell(r['params'])} | {_fmt(r['theory'])} "
            f"| {_fmt(r['simulation'])} ± {_fmt(r['stderr'])} | {rel_s} | {r['z']:+.2f} "
            f"| {_fmt(r['z_max'])} | {verdict} |")
    out += ["", "## Checks", ""]
    for c in checks:
        out.append(f"- `{c['name']}` ({c.get('seconds', 0):.1f} s): {_cell(c.get('description', ''))}")
    return "\n".join(out) + "\n"


def write_figure(payload: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sgdtheory.plot import crosscheck_summary

    plt.rcParams["svg.hashsalt"] = "sgdtheory"  # deterministic ids: the file diffs cleanly
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small file, searchable
    ax = crosscheck_summary(payload)
    ax.figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(ax.figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", help="output of `sgdtheory crosscheck --json FILE`")
    parser.add_argument("--out", default=str(DOCS / "results.md"), help="page to write")
    parser.add_argument("--no-figure", action="store_true", help="table only")
    args = parser.parse_args(argv)
    payload = json.loads(pathlib.Path(args.json).read_text())
    out = pathlib.Path(args.out)
    figure = None
    if not args.no_figure:
        write_figure(payload, out.parent / FIGURE)
        figure = FIGURE
    out.write_text(render(payload, figure))
    print(f"wrote {out}" + (f" and {out.parent / FIGURE}" if figure else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
