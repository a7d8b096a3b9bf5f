"""The README's examples run, and every number they show is what they print.

Each ``<!-- readme-example: NAME -->`` code block is executed; its output is compared with the
``<!-- readme-output: NAME -->`` block number by number, to a relative 2e-3 or one unit of the last
printed digit, whichever is larger (the same seeds on another BLAS or jax version may move the last
digit, nothing more).
"""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NUM = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _last_digit(token: str) -> float:
    """One unit of the last printed digit of a number such as '1.74', '2e-06' or '-4.3919e-05'."""
    mant, _, exp = token.lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 10.0 ** (-decimals + (int(exp) if exp else 0))


def _block(text, tag, name):
    m = re.search(rf"<!-- readme-{tag}: {name} -->\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"README has no readme-{tag} block named {name!r}"
    return m.group(1)


@pytest.mark.parametrize("name", ["quadratic", "byom"])
def test_readme_example_prints_what_the_readme_shows(name):
    text = README.read_text()
    code, shown = _block(text, "example", name), _block(text, "output", name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README:{name}", "exec"), {"__name__": "__readme__"})
    got_lines, shown_lines = out.getvalue().strip().splitlines(), shown.strip().splitlines()
    assert len(got_lines) == len(shown_lines), out.getvalue()
    for got, want in zip(got_lines, shown_lines):
        g, w = NUM.findall(got), NUM.findall(want)
        assert len(g) == len(w), (got, want)
        assert NUM.sub("#", got).split() == NUM.sub("#", want).split(), (got, want)
        for a, b in zip(g, w):
            tol = max(2e-3 * abs(float(b)), _last_digit(b))
            assert abs(float(a) - float(b)) <= tol, (got, want)
