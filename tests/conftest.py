"""Shared pytest fixtures.

Real-data tests take the ``shared_data`` fixture: the ``../shared/data`` folder beside the
repository (or ``$GPSCAT_SHARED_DATA``).  When it is absent (a user's machine) those tests
skip with a reason.  CI sets ``GPSCAT_NO_SKIPS=1``: there every test must run (real data
and the gammapy cross-checks are present), so any skipped test fails the session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_path() -> Path:
    env = os.environ.get("GPSCAT_SHARED_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"real-data test: shared data folder {path} not found (set GPSCAT_SHARED_DATA)")
    return path


#: test files that take minutes (whole workflow runs, classifier training): started first so
#: that the two xdist workers finish together (longest-first scheduling)
SLOW_FILES = ("test_workflow.py", "test_slurm.py", "test_fit_closure.py", "test_tiles.py", "test_catalog.py", "test_fit_stage.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: file order kept otherwise


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    # An expected failure (xfail) is reported as "skipped" by pytest but it ran: not a skip.
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("GPSCAT_NO_SKIPS") == "1" and _SKIPPED:
        print(f"\nGPSCAT_NO_SKIPS=1 but {len(_SKIPPED)} test(s) skipped:")
        for nodeid in _SKIPPED:
            print(f"  {nodeid}")
        session.exitstatus = 1
