from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultCluster


@pytest.fixture()
def fault_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FaultCluster]:
    """A fresh cluster whose peer links go through the fault proxy; not started."""
    marker = request.node.get_closest_marker("raft")
    c = FaultCluster(tmp_path, raft=marker.kwargs if marker else None)
    try:
        yield c
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.logs())
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
