"""Workload (f): the presets after the composable-simulator change against the same presets at a
baseline revision, and the generic ``minibatch_sgd`` against the ``linreg_sgd`` preset.

"Measured in one run": the baseline's ``sgdtheory/`` is extracted from git (``git archive``) into a
temporary folder, and worker processes of the two trees are started alternately
(baseline, current, baseline, current, ...); each worker times every workload best-of-N after a
warm-up (compilation excluded).  The best time per workload over all workers of a tree is kept.
Set ``SGDTHEORY_BASELINE_REV`` to choose the baseline (default: the commit before the change).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = os.environ.get("SGDTHEORY_BASELINE_REV", "43b3320")


def _extract(rev: str, dest: str) -> bool:
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "sgdtheory"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def _worker(pythonpath: str, repeats: int, quick: bool, generic: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pythonpath, str(ROOT)]))
    args = [sys.executable, "-m", "benchmarks._preset_worker", str(repeats)]
    args += ["--quick"] if quick else []
    args += ["--generic"] if generic else []
    out = subprocess.run(args, env=env, cwd=str(ROOT), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def generic(quick: bool):
    rounds, repeats = (2, 2) if quick else (3, 3)
    best: dict[str, dict[str, float]] = {"baseline": {}, "current": {}}
    steps = None
    with tempfile.TemporaryDirectory() as tmp:
        have_base = _extract(BASELINE, tmp)
        for _ in range(rounds):
            for tree, path in (("baseline", tmp), ("current", str(ROOT))):
                if tree == "baseline" and not have_base:
                    continue
                res = _worker(path, repeats, quick, generic=tree == "current")
                steps = res["steps"]
                for k, t in res["times"].items():
                    best[tree][k] = min(best[tree].get(k, float("inf")), t)
    rows = []
    for name, t in best["current"].items():
        if name.startswith("minibatch_sgd"):
            continue
        replicas = 1024 if ("linreg" in name) else 4096
        base = best["baseline"].get(name)
        rows.append(dict(workload=f"(f) presets now vs baseline {BASELINE}, {steps} steps",
                         variant=name, seconds=t, rate=replicas * steps / t,
                         baseline_seconds=base,
                         ratio_vs_baseline=None if base is None else base / t))
    gen = best["current"].get("minibatch_sgd (user loss) N=256 S=8 iid")
    pre = best["current"].get("linreg_sgd N=256 S=8 iid")
    if gen and pre:
        rows.append(dict(workload=f"(f) generic minibatch_sgd vs the linreg_sgd preset, {steps} steps",
                         variant="minibatch_sgd (user loss) / linreg_sgd", seconds=gen,
                         rate=1024 * steps / gen, baseline_seconds=pre,
                         ratio_vs_baseline=pre / gen))
    return rows
