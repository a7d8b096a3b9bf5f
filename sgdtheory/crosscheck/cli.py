"""``sgdtheory`` command line: ``sgdtheory crosscheck`` runs every theory-vs-simulation check.

Usage::

    sgdtheory crosscheck                 # quick mode (default), all checks
    sgdtheory crosscheck --full          # longer runs, tighter standard errors
    sgdtheory crosscheck --only 'quadratic/*' --json results.json --seed 3
    sgdtheory crosscheck --list

Exit status: 0 when every check passes, 1 when any fails, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

__all__ = ["main", "format_table"]


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:.3e}"


def format_table(results) -> str:
    """The crosscheck table as text: one row per comparison."""
    header = ["check", "quantity", "params", "theory", "simulation ± se", "rel.err", "z", "verdict"]
    rows = []
    for res in results:
        if res.error is not None:
            rows.append([res.name, "ERROR", res.error[:60], "", "", "", "", "FAIL"])
            continue
        for c in res.comparisons:
            verdict = c.verdict
            if c.expect == "disagree":
                verdict += " (fails, as expected)" if c.passed else " (expected to fail)"
            rel = "inf" if not math.isfinite(c.rel_err) else f"{100 * c.rel_err:+.2f}%"
            rows.append([res.name, c.quantity, c.params, _fmt(c.theory),
                         f"{_fmt(c.simulation)} ± {_fmt(c.stderr)}", rel, f"{c.z:+.2f}", verdict])
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), line]
    out += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def _progress_printer(stream):
    start = time.perf_counter()

    def progress(i, n, name):
        if not stream.isatty() and i < n:
            print(f"[{i + 1}/{n}] {name} ...", file=stream, flush=True)
            return
        width = 24
        filled = int(width * i / max(n, 1))
        bar = "#" * filled + "." * (width - filled)
        msg = f"\r[{bar}] {i}/{n} {time.perf_counter() - start:6.1f}s {name[:40]:<40}"
        print(msg, end="" if i < n else "\n", file=stream, flush=True)

    return progress


def _crosscheck(args) -> int:
    import jax

    from sgdtheory.crosscheck import registry, run, select

    if args.list:
        for check in select(args.only):
            print(f"{check.name:40s} {check.description}")
        return 0
    if args.only and not select(args.only):
        print(f"no check matches {args.only!r}; known checks: {', '.join(registry())}",
              file=sys.stderr)
        return 2
    mode = "full" if args.full else "quick"
    t0 = time.perf_counter()
    progress = None if args.no_progress else _progress_printer(sys.stderr)
    results = run(args.only, mode=mode, seed=args.seed, progress=progress)
    elapsed = time.perf_counter() - t0
    print(format_table(results))
    n_fail = sum(not r.passed for r in results)
    n_rows = sum(len(r.comparisons) for r in results)
    print(f"\n{len(results) - n_fail} of {len(results)} checks passed ({n_rows} comparisons) "
          f"in {elapsed:.1f} s, mode={mode}, seed={args.seed}, backend={jax.default_backend()}.")
    if args.json:
        payload = {
            "mode": mode, "seed": args.seed, "seconds": elapsed,
            "backend": jax.default_backend(), "jax": jax.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"),
            "checks": [r.as_dict() for r in results],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
        print(f"wrote {args.json}")
    return 0 if n_fail == 0 else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sgdtheory", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cc = sub.add_parser("crosscheck", help="run the theory-vs-simulation cross-checks")
    speed = cc.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="short runs (default; ~1-2 min on 2 cores)")
    speed.add_argument("--full", action="store_true", help="long runs with tighter standard errors")
    cc.add_argument("--only", metavar="PATTERN", help="glob or substring of check names, e.g. 'quadratic/*'")
    cc.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    cc.add_argument("--seed", type=int, default=0, help="base seed (each check folds in its name)")
    cc.add_argument("--list", action="store_true", help="list the checks and exit")
    cc.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    if args.command == "crosscheck":
        return _crosscheck(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
