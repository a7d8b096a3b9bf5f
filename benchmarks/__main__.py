"""``python -m benchmarks [--quick] [--json FILE] [--only a,b,c,d,e,f,g]``: every workload beside its
baseline, measured in the same run (interleaved, best-of-N), printed as a table of ratios.
Results and how to read them: docs/performance.md."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time


# the parts behind --only, in order (table letters of docs/performance.md)
PARTS = {
    "a": "simulator throughput (replica-steps/s) vs a NumPy loop, D=10, R=4096",
    "b": "time to a 1 % standard error on the stationary variance vs NumPy",
    "c": "exact solvers (stationary_covariance, heavy ball, vmap over lr) vs scipy",
    "d": "compiled memory of the simulator as the number of steps grows",
    "e": "2-D Fokker-Planck stationary solve vs scipy's shift-invert eigs",
    "f": "simulator presets now vs a baseline git revision; generic minibatch_sgd vs linreg_sgd",
    "g": "local theory: matrix-free exact moment solve vs the dense Kronecker solve",
}


def _parts(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {','.join(PARTS)}")
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="parts (--only):\n" + "\n".join(f"  {k}  {v}" for k, v in PARTS.items()))
    ap.add_argument("--quick", action="store_true", help="smaller workloads (< ~2 min)")
    ap.add_argument("--json", metavar="FILE", help="write all rows and the environment as JSON")
    ap.add_argument("--only", default=",".join(PARTS), type=_parts, metavar="a,b,...",
                    help="comma-separated subset of the parts listed below (default: all)")
    args = ap.parse_args(argv)

    import jax
    import numpy as np
    import scipy

    import sgdtheory  # noqa: F401  (x64 on)
    from benchmarks.fokker_planck import fokker_planck
    from benchmarks.generic import generic
    from benchmarks.local import local_bench
    from benchmarks.memory import memory
    from benchmarks.simulator import throughput, time_to_precision
    from benchmarks.solvers import solvers

    env = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               machine=platform.machine(), processor=platform.processor(),
               cpus=os.cpu_count(), python=platform.python_version(), jax=jax.__version__,
               numpy=np.__version__, scipy=scipy.__version__,
               devices=[str(d) for d in jax.devices()], quick=args.quick,
               load_average=os.getloadavg())
    print("env:", json.dumps(env))
    parts = {"a": throughput, "b": time_to_precision, "c": solvers, "d": memory,
             "e": fokker_planck, "f": generic, "g": local_bench}
    rows = []
    t0 = time.perf_counter()
    for name in args.only:
        t = time.perf_counter()
        part = parts[name](args.quick)
        rows += part
        _print(part)
        print(f"  [{name}: {time.perf_counter() - t:.1f} s]\n", flush=True)
    print(f"total {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(env=env, rows=rows), f, indent=1, default=float)
    return 0


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _print(rows):
    if not rows:
        return
    keys = [k for k in rows[0] if k != "workload"]
    current = None
    for r in rows:
        if r["workload"] != current:
            current = r["workload"]
            print(current)
            print("  " + " | ".join(f"{k:>14s}" if k != "variant" else f"{k:36s}" for k in keys))
        print("  " + " | ".join(f"{_fmt(r.get(k)):>14s}" if k != "variant" else f"{r[k]:36s}"
                                for k in keys))


if __name__ == "__main__":
    sys.exit(main())
