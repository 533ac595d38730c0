"""The one list of tests that may skip in CI, and the pytest hooks that make any other skip a failure.

In CI (environment variable ``CI`` set to anything but empty, 0, false or no; ``.ci/run`` sets it) a
test that skips because something it needs is missing - Chromium, playwright, the Tiny Shakespeare
corpus, transformers, statsmodels - is a failure, unless it is listed below with its reason. Outside
CI skips stay skips, so a developer without Chromium can still run the suite.

A key is a test's node id (``tests/test_x.py::test_y``, parameters left out to cover them all) or a
file (``tests/test_x.py``, for every test of it and a skip of the whole module). Keep each reason to
the one case that is expected on a complete CI machine.
"""

from __future__ import annotations

import os

import pytest

# None at present: .ci/run installs every test's dependency, and the corpus comes from ../shared.
ALLOWED_SKIPS: dict[str, str] = {
    # "tests/test_x.py::test_y": "why this skip is expected on a complete CI machine",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def allowed(nodeid: str) -> bool:
    """Whether a skip of ``nodeid`` (a test or a collected file) is listed in ALLOWED_SKIPS."""
    path, _, name = nodeid.partition("::")
    return nodeid in ALLOWED_SKIPS or path in ALLOWED_SKIPS or f"{path}::{name.split('[')[0]}" in ALLOWED_SKIPS


def _reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: why")
        return str(longrepr[2])
    return str(longrepr)


def _fail_unlisted_skip(report) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not in_ci() or allowed(report.nodeid):
        return
    report.outcome = "failed"
    report.longrepr = (f"{report.nodeid} skipped in CI ({_reason(report.longrepr)}); a test's dependency is "
                       "missing on this machine. Install it, or list the test with its reason in "
                       "tests/allowed_skips.py (ALLOWED_SKIPS).")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip inside a test or its fixtures (pytest.skip, importorskip in a test)."""
    outcome = yield
    _fail_unlisted_skip(outcome.get_result())


_UNLISTED_MODULE_SKIPS: list[str] = []


def pytest_collectreport(report):
    """A skip of a whole module at import (a module-level importorskip): a collection report cannot be
    turned into a failure without aborting the run, so it is noted here (in the process that reports,
    the xdist controller when there are workers) and fails the session's exit status at the end."""
    if (report.skipped and in_ci() and not allowed(report.nodeid)
            and not os.environ.get("PYTEST_XDIST_WORKER")):
        _UNLISTED_MODULE_SKIPS.append(f"{report.nodeid} skipped in CI ({_reason(report.longrepr)})")


def pytest_terminal_summary(terminalreporter):
    if _UNLISTED_MODULE_SKIPS:
        terminalreporter.section("skips in CI not listed in tests/allowed_skips.py", red=True)
        for line in _UNLISTED_MODULE_SKIPS:
            terminalreporter.line(line)


def pytest_sessionfinish(session, exitstatus):
    if _UNLISTED_MODULE_SKIPS and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
