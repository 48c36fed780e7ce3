"""Settings for the whole test suite."""

from __future__ import annotations

import os

import pytest

# Every reuse of the placement view kept across entries is compared with a fresh build of the state
# (fedraft.consensus.handlers.placement): a difference raises InvariantBroken. Node processes started
# by integration tests inherit it.
os.environ.setdefault("FEDRAFT_CHECK_VIEW", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fedraft simulation (tests/sim)")
    group.addoption("--sim-seed", type=int, default=None, metavar="N",
                    help="replay the deterministic simulation for seed N only")
    group.addoption("--sim-seeds", type=int, default=None, metavar="K",
                    help="run K simulation seeds (default: 100 in CI, 2000 in the nightly run)")


@pytest.fixture()
def real_pysyncobj_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that drive plain pysyncobj (pickled @replicated methods): importing
    fedraft.consensus.engine anywhere in the session closes pysyncobj's pickle path for the whole
    process, as it must in a node; these tests get the real module back for their duration."""
    import pickle

    import pysyncobj.syncobj as ps

    monkeypatch.setattr(ps, "pickle", pickle)
