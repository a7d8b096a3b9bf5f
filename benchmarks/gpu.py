"""``python -m benchmarks.gpu [--tiny] [--write docs/performance.md]``: the accelerator run (issue 15).

Measures, on whatever JAX's default backend is (meant for one GPU; ``--tiny`` shrinks every size
so the script itself can be tested on a CPU in seconds):

* simulator throughput in replica·steps/s of :func:`sgdtheory.simulate.quadratic_sgd` at
  ``D = 10`` (float32 and float64) and ``D = 100`` (float32) with ``2**20`` replicas, for each
  noise kind in :data:`sgdtheory.simulate.NOISE_KINDS`, beside a naive baseline measured in the
  same run: a plain ``lax.scan`` of the SGD step with ``jax.random.normal`` noise that keeps only
  a running sum of the squared iterate (the least a simulator can do);
* the exact stationary covariance (:func:`sgdtheory.stationary_covariance`) at ``D = 1000`` and
  ``4000`` beside its floor, one ``jnp.linalg.eigh`` of the same matrix;
* the 2-D Fokker--Planck stationary solve (:func:`sgdtheory.fokker_planck.stationary_2d`, a
  SciPy sparse LU on the host: the GPU does not help it; reported so the table is complete).

Every number is a best-of-3 wall time after a warm-up call (compilation excluded).  ``--write``
replaces the block between ``<!-- gpu-table:begin -->`` and ``<!-- gpu-table:end -->`` in the
given Markdown file with the table (the block is appended if absent).  Targets from issue 15:
>= 1e10 replica·steps/s at D = 10 float32 (the HBM roofline is ~2e10 on an H100/H200).
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import sgdtheory as st
from benchmarks._common import interleaved, problem

BEGIN, END = "<!-- gpu-table:begin -->", "<!-- gpu-table:end -->"


def _best(fn, repeats=3):
    """Best-of-``repeats`` wall time after a warm-up call (the shared timer, one workload)."""
    return interleaved({"run": fn}, repeats)["run"]


def _naive(d, replicas, steps, dtype):
    """The baseline: lax.scan of w <- w - lr (H w + L z), z ~ jax.random.normal; sum of w^2 only."""
    h, c = problem(d)
    lr = 1.0 / float(np.linalg.eigvalsh(h).max())
    hj = jnp.asarray(h, dtype)
    lj = jnp.asarray(np.linalg.cholesky(c), dtype)

    @jax.jit
    def run(key):
        def step(carry, k):
            w, acc = carry
            z = jax.random.normal(k, (replicas, d), dtype)
            w = w - lr * (w @ hj + z @ lj.T)
            return (w, acc + jnp.sum(w * w)), None

        w0 = jnp.zeros((replicas, d), dtype)
        return jax.lax.scan(step, (w0, jnp.zeros((), dtype)), jax.random.split(key, steps))[0][1]

    return lambda: run(jax.random.key(0))


def _ours(d, replicas, steps, dtype, noise):
    h, c = problem(d)
    lr = 1.0 / float(np.linalg.eigvalsh(h).max())
    return lambda: st.simulate.quadratic_sgd(jax.random.key(0), h, c, lr, steps=steps,
                                             replicas=replicas, burn_in=steps // 4, dtype=dtype,
                                             noise=noise).cov


def throughput_rows(tiny: bool):
    replicas, steps = (2048, 64) if tiny else (2 ** 20, 512)
    rows = []
    for d, dtype in ((10, jnp.float32), (10, jnp.float64), (100, jnp.float32)):
        if tiny and d == 100:
            d = 20
        name = jnp.dtype(dtype).name
        work = replicas * steps
        t_base = _best(_naive(d, replicas, steps, dtype))
        rows.append((f"D={d} {name}, R={replicas}", "naive lax.scan + jax.random.normal",
                     work / t_base, 1.0))
        for noise in st.simulate.NOISE_KINDS:
            t = _best(_ours(d, replicas, steps, dtype, noise))
            rows.append((f"D={d} {name}, R={replicas}", f"quadratic_sgd noise={noise!r}",
                         work / t, t_base / t))
    return rows


def solver_rows(tiny: bool):
    rows = []
    for d in ((100, 200) if tiny else (1000, 4000)):
        h, c = problem(d)
        hj, cj = jnp.asarray(h), jnp.asarray(c)
        lr = 1.0 / float(np.linalg.eigvalsh(h).max())
        t_eigh = _best(lambda: jnp.linalg.eigh(hj))
        t = _best(lambda: st.stationary_covariance(hj, cj, lr))
        rows.append((f"stationary_covariance D={d} (s)", "floor: one jnp.linalg.eigh", t_eigh, 1.0))
        rows.append((f"stationary_covariance D={d} (s)", "ours", t, t_eigh / t))
    return rows


def fokker_planck_rows(tiny: bool):
    from benchmarks.fokker_planck import _problem

    n = 64 if tiny else 256
    drift, diffusion, grid = _problem(n)
    t = _best(lambda: st.fokker_planck.stationary_2d(drift, diffusion, grid), repeats=2)
    return [(f"2-D Fokker-Planck {n}x{n} (s)", "stationary_2d (host sparse LU)", t, float("nan"))]


def table(rows) -> str:
    dev = jax.devices()[0]
    head = (f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
            f"`{dev.platform}` ({getattr(dev, 'device_kind', '?')}), jax {jax.__version__}, "
            f"{platform.python_version()}; best of 3 after a warm-up.\n\n"
            "| workload | variant | replica·steps/s or seconds | ratio vs first row |\n"
            "|---|---|---:|---:|\n")
    body = "".join(f"| {w} | {v} | {x:.3g} | {r:.2f} |\n" for w, v, x, r in rows)
    return head + body


def write(path: pathlib.Path, text: str):
    block_text = f"{BEGIN}\n{text}{END}\n"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block_text + old[old.index(END) + len(END) + 1:]
    else:
        new = old.rstrip("\n") + "\n\n## Accelerator run (`benchmarks/gpu.sh`)\n\n" + block_text
    path.write_text(new)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU smoke test)")
    ap.add_argument("--write", type=pathlib.Path, default=None, help="Markdown file to update")
    args = ap.parse_args(argv)
    rows = throughput_rows(args.tiny) + solver_rows(args.tiny) + fokker_planck_rows(args.tiny)
    text = table(rows)
    print(text)
    if args.write is not None:
        write(args.write, text)


if __name__ == "__main__":
    main()
