"""Every docstring example of the package runs (optax's habit): one test per module.

Modules are discovered with ``pkgutil.walk_packages``, so a new module is covered without editing
this file.  Examples marked ``# doctest: +SKIP`` stay skipped; output is compared with ``ELLIPSIS``
and ``NORMALIZE_WHITESPACE``.  ``sgdtheory.plot`` needs the optional matplotlib extra and is
skipped, with the reason shown, when matplotlib is not installed.
"""

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import sgdtheory

OPTIONAL = {"sgdtheory.plot": "matplotlib"}  # module -> the optional dependency it needs
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names():
    names = [sgdtheory.__name__]
    names += [m.name for m in pkgutil.walk_packages(sgdtheory.__path__, sgdtheory.__name__ + ".")]
    return sorted(names)


MODULES = _module_names()


def test_modules_are_discovered():
    # Guards the discovery itself: an empty or truncated list would make every case pass vacuously.
    assert {"sgdtheory.quadratic", "sgdtheory.simulate.quadratic", "sgdtheory._checks"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    dep = OPTIONAL.get(name)
    if dep is not None and importlib.util.find_spec(dep) is None:
        pytest.skip(f"{name} needs the optional dependency {dep!r}, which is not installed")
    if dep == "matplotlib":
        import matplotlib

        matplotlib.use("Agg", force=True)  # no display in CI
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    # Only objects defined in ``module`` (re-exports are tested where they are defined); each
    # example sees a copy of the module's globals, as under ``doctest.testmod``.
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    failed = runner.summarize(verbose=False).failed
    assert failed == 0, f"{failed} failing docstring example(s) in {name}:\n" + "".join(report)
