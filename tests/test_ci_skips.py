"""In CI a skip is a failure unless tests/allowed_skips.py lists it: the hooks, run on a small
throw-away suite in a subprocess (with and without CI, with and without xdist workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import allowed_skips
allowed_skips.ALLOWED_SKIPS.clear()
allowed_skips.ALLOWED_SKIPS.update({{
    "test_listed.py::test_listed": "listed by its node id",
    "test_listed_module.py": "a listed module",
}})
from allowed_skips import (pytest_collectreport, pytest_runtest_makereport,  # noqa: F401
                           pytest_sessionfinish, pytest_terminal_summary)
"""

FILES = {
    "pytest.ini": "[pytest]\n",
    "conftest.py": CONFTEST,
    "test_listed.py": "import pytest\n\n@pytest.mark.parametrize('x', [1, 2])\ndef test_listed(x):\n"
                      "    pytest.skip('listed skip')\n",
    "test_listed_module.py": "import pytest\npytest.importorskip('gptwaves_no_such_module')\n",
    "test_inside.py": "import pytest\n\ndef test_fine():\n    pass\n\n"
                      "def test_needs_a_module():\n    pytest.importorskip('gptwaves_no_such_module')\n\n"
                      "@pytest.fixture\ndef browser():\n    pytest.skip('no chromium here')\n\n"
                      "def test_needs_a_fixture(browser):\n    pass\n\n"
                      "@pytest.mark.xfail(reason='expected')\ndef test_xfail():\n    assert False\n",
    "test_module.py": "import pytest\npytest.importorskip('gptwaves_no_such_module')\n\ndef test_x():\n    pass\n",
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("skips")
    for name, text in FILES.items():
        (d / name).write_text(text)
    return d


def _pytest(suite: Path, ci: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEs", *args], cwd=suite,
                          env=env, capture_output=True, text=True, timeout=300)  # a hang guard only


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_skips_stay_skips(suite, ci):
    r = _pytest(suite, ci, "-p", "no:xdist")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "1 passed, 6 skipped, 1 xfailed" in r.stdout, r.stdout[-3000:]


def test_in_ci_unlisted_skips_fail_and_listed_ones_do_not(suite):
    r = _pytest(suite, "true", "-p", "no:xdist")
    assert r.returncode == 1, r.stdout[-3000:]
    out = r.stdout
    # a skip in the test fails it; a skip in its fixture is an error in its setup
    assert "FAILED test_inside.py::test_needs_a_module" in out and "ERROR test_inside.py::test_needs_a_fixture" in out
    assert "could not import 'gptwaves_no_such_module'" in out and "no chromium here" in out
    assert "tests/allowed_skips.py" in out
    # the module skipped at import is named in its own section; the listed test and module still skip
    assert "skips in CI not listed" in out and "test_module.py skipped in CI" in out
    assert "test_listed_module.py skipped in CI" not in out
    assert "1 failed, 1 passed, 4 skipped, 1 xfailed, 1 error" in out, out[-3000:]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_in_ci_a_module_skipped_at_import_fails_the_run(suite, workers):
    """Only module skips and listed skips: no test fails, yet the exit status does (through the
    xdist controller too)."""
    if workers:
        pytest.importorskip("xdist")
    r = _pytest(suite, "1", *(workers or ["-p", "no:xdist"]), "test_listed.py", "test_module.py",
                "test_listed_module.py")
    assert r.returncode == 1, r.stdout[-3000:]
    assert r.stdout.count("test_module.py skipped in CI") == 1, r.stdout[-3000:]
    if not workers:
        r = _pytest(suite, "1", "-p", "no:xdist", "test_listed.py", "test_listed_module.py")
        assert r.returncode == 0, r.stdout[-3000:]  # listed skips only: passes
