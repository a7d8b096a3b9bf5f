"""Package-level behaviour: the float64 policy (in fresh subprocesses) and the crosscheck CLI."""

import json
import pathlib
import math
import os
import subprocess
import sys

import pytest

from sgdtheory.crosscheck import Comparison, register, registry, unregister
from sgdtheory.crosscheck.cli import main

SNIPPET = """
import numpy as np, scipy.linalg as sl, jax
import sgdtheory as st
h = np.array([[1.0, 0.3], [0.3, 0.4]]); c = np.array([[0.5, -0.2], [-0.2, 1.0]]); lr = 1.3
ref = sl.solve_discrete_lyapunov(np.eye(2) - lr * h, lr**2 * c)
sig = np.asarray(st.stationary_covariance(h, c, lr))
print(jax.config.jax_enable_x64, sig.dtype, float(np.max(np.abs(sig - ref) / np.abs(ref).max())))
"""


def _run(env_extra):
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env,
                         check=True)
    x64, dtype, err = out.stdout.split()
    return x64 == "True", dtype, float(err)


def test_import_enables_float64_and_matches_scipy():
    x64, dtype, err = _run({"SGDTHEORY_ENABLE_X64": "1"})
    assert x64 and dtype == "float64" and err < 1e-10


def test_x64_opt_out_keeps_jax_default():
    x64, dtype, err = _run({"SGDTHEORY_ENABLE_X64": "0"})
    assert not x64 and dtype == "float32" and err < 1e-5


def test_comparison_verdicts():
    ok = Comparison("v", "", 1.0, 1.01, 0.01)
    assert ok.passed and math.isclose(ok.z, 1.0) and math.isclose(ok.rel_err, 0.01)
    assert not Comparison("v", "", 1.0, 1.1, 0.01).passed
    assert Comparison("v", "", 1.0, 1.1, 0.01, expect="disagree").passed
    assert not Comparison("v", "", 1.0, 1.01, 0.01, expect="disagree").passed
    assert not Comparison("v", "", 1.0, float("nan"), 0.01).passed
    with pytest.raises(ValueError, match="expect"):
        Comparison("v", "", 1.0, 1.0, 0.1, expect="maybe")


def test_cli_runs_a_check_writes_json_and_exit_codes(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main(["crosscheck", "--only", "quadratic/sgd-large-lr", "--json", str(path),
                 "--no-progress"]) == 0
    data = json.loads(path.read_text())
    assert data["mode"] == "quick" and data["checks"][0]["passed"]
    assert "fails, as expected" in capsys.readouterr().out
    assert main(["crosscheck", "--only", "no-such-check"]) == 2
    assert main(["crosscheck", "--list"]) == 0


def test_failing_or_broken_check_gives_exit_status_1():
    @register("test/always-fails", "a check that must fail")
    def _fails(key, mode):
        return [Comparison("x", "", 1.0, 2.0, 0.01)]

    @register("test/raises", "a check that raises")
    def _raises(key, mode):
        raise RuntimeError("boom")

    try:
        assert main(["crosscheck", "--only", "test/always-fails", "--no-progress"]) == 1
        assert main(["crosscheck", "--only", "test/raises", "--no-progress"]) == 1
    finally:
        unregister("test/always-fails")
        unregister("test/raises")
    assert "test/always-fails" not in registry()


def test_release_compiled_programs_clears_only_past_the_threshold():
    """The guard against Linux's mapping limit: a no-op below the threshold, a cache clear past
    it (a threshold of 0 forces it), after which jitted code still runs (recompiled)."""
    import sys

    import jax
    import jax.numpy as jnp

    from sgdtheory.crosscheck._runner import release_compiled_programs

    f = jax.jit(lambda x: x * 2.0)
    assert float(f(jnp.asarray(1.0))) == 2.0
    assert release_compiled_programs(max_mappings=10 ** 9) is False
    forced = release_compiled_programs(max_mappings=0)
    assert forced is sys.platform.startswith("linux")
    assert float(f(jnp.asarray(2.0))) == 4.0


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "sgdtheory.crosscheck.cli", "crosscheck", "--list"],
                         capture_output=True, text=True, check=True)
    assert "quadratic/sgd-large-lr" in out.stdout


def test_package_explains_itself():
    """help(sgdtheory) maps every module; plot and crosscheck load lazily; dir() has no strays."""
    import sgdtheory

    doc = sgdtheory.__doc__
    for name in ("quadratic", "noise", "linreg", "escape", "landscape", "fokker_planck", "optim",
                 "simulate", "crosscheck", "plot"):
        assert f"\n    {name} " in doc, name
    assert ">>> import jax.numpy as jnp, sgdtheory as st" in doc
    names = dir(sgdtheory)
    assert "annotations" not in names and "plot" in names and "crosscheck" in names
    assert all(not n.startswith("_") or n == "__version__" for n in names)
    code = ("import sys, sgdtheory as st\n"
            "assert 'matplotlib' not in sys.modules and 'sgdtheory.plot' not in sys.modules\n"
            "assert 'sgdtheory.crosscheck' not in sys.modules\n"
            "assert callable(st.plot.show) and callable(st.crosscheck.run)\n"
            "assert st.plot is sys.modules['sgdtheory.plot']\n"
            "try:\n    st.no_such_thing\nexcept AttributeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "has no attribute 'no_such_thing'" in out.stdout


def test_benchmarks_help_names_the_parts_and_rejects_unknown_ones():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    for part in "abcde":
        assert f"\n  {part}  " in out, part
    bad = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "a,z"], cwd=root,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown part(s) 'z'" in bad.stderr and "KeyError" not in bad.stderr


def test_gpu_benchmark_writes_its_table_between_markers(tmp_path):
    """benchmarks/gpu.py's --write replaces its own block and nothing else (the run itself is
    exercised by the slow test below and, on a GPU, by benchmarks/gpu.sh)."""
    import importlib

    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    try:
        gpu = importlib.import_module("benchmarks.gpu")
    finally:
        sys.path.remove(str(root))
    page = tmp_path / "perf.md"
    page.write_text("# Performance\n\ntext before\n")
    gpu.write(page, "first table\n")
    gpu.write(page, "second table\n")
    text = page.read_text()
    assert text.count(gpu.BEGIN) == 1 and "second table" in text and "first table" not in text
    assert text.startswith("# Performance\n\ntext before\n")


@pytest.mark.slow
def test_gpu_benchmark_runs_tiny_on_cpu():
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run(["bash", "benchmarks/gpu.sh", "--tiny"], cwd=root, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "quadratic_sgd noise='gaussian'" in out.stdout and "stationary_covariance" in out.stdout
