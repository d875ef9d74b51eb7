"""Fixtures for end-to-end tests with real processes (see ``tests/e2e/harness.py``)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ProcessRegistry


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"_e2e_report_{report.when}", report)
    return report


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[ProcessRegistry]:
    """Registry of started processes/components; everything is stopped at teardown.

    Pass it as ``registry=procs`` to harness components (or call ``procs.add(x)``).  When the
    test failed, the tail of every registered process log is printed (shown by pytest).
    """
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        failed = any(
            getattr(getattr(request.node, f"_e2e_report_{when}", None), "failed", False)
            for when in ("setup", "call")
        )
        if failed:
            for proc in registry.processes():
                print(f"\n----- {proc.name} ({proc.log_path}) -----\n{proc.log_tail(60)}")
        errors = registry.stop_all()
        if errors:
            print("errors while stopping processes:\n" + "\n".join(errors))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh work directory for configs, logs and data (inside pytest's ``tmp_path``)."""
    path = tmp_path / "work"
    path.mkdir(parents=True, exist_ok=True)
    return path
