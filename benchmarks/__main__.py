"""``python -m benchmarks [--quick] [--json FILE] [--only a,b,c,d,e]``: every workload beside its
baseline, measured in the same run (interleaved, best-of-N), printed as a table of ratios."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller workloads (< ~2 min)")
    ap.add_argument("--json", metavar="FILE", help="write all rows and the environment as JSON")
    ap.add_argument("--only", default="a,b,c,d,e", help="comma-separated subset of a,b,c,d,e")
    args = ap.parse_args(argv)

    import jax
    import numpy as np
    import scipy

    import sgdtheory  # noqa: F401  (x64 on)
    from benchmarks.fokker_planck import fokker_planck
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
             "e": fokker_planck}
    rows = []
    t0 = time.perf_counter()
    for name in args.only.split(","):
        t = time.perf_counter()
        part = parts[name.strip()](args.quick)
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
