#!/usr/bin/env bash
# The accelerator run of issue 15: on a machine with one GPU and the project installed with a
# CUDA jaxlib (pip install -e . "jax[cuda12]"), measures simulator throughput, the exact solver at
# D = 1000 and 4000 and the 2-D Fokker-Planck solve, and writes the table into
# docs/performance.md (between the gpu-table markers).  Expected wall time: under 5 minutes.
#   bash benchmarks/gpu.sh            # full sizes (2^20 replicas)
#   bash benchmarks/gpu.sh --tiny     # seconds, any machine (a smoke test of the script)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import jax; print('backend:', jax.default_backend(), jax.devices())"
extra=()
[[ " $* " == *" --tiny "* ]] || extra=(--write docs/performance.md)
exec python -m benchmarks.gpu "$@" "${extra[@]}"
