from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import Cluster

SAMPLE_INVENTORY = "sample_inventory"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{SAMPLE_INVENTORY}: the cluster's nodes report their pool's sample "
                                       "static inventory (on a test, or a module's pytestmark for shared_cluster)")


def _inventory_option(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The marker asks for the sample inventories; without it the harness default holds."""
    return {"sample_inventory": True} if request.node.get_closest_marker(SAMPLE_INVENTORY) else {}


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One cluster for read-mostly tests of a module."""
    cluster = Cluster(tmp_path_factory.mktemp("shared"), **_inventory_option(request))
    cluster.start_all()
    try:
        cluster.leader()
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


@pytest.fixture()
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A fresh cluster a test may kill, pause and wipe; not started."""
    marker = request.node.get_closest_marker("raft")
    c = Cluster(tmp_path, raft=marker.kwargs if marker else None, **_inventory_option(request))
    try:
        yield c
    except BaseException:
        raise
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(c.logs())
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    # A failing test on the module's shared cluster shows the node logs as of the failure.
    funcargs = getattr(item, "funcargs", {})
    if rep.when == "call" and rep.failed and isinstance(funcargs.get("shared_cluster"), Cluster):
        rep.sections.append(("node logs (shared cluster)", funcargs["shared_cluster"].logs()))
