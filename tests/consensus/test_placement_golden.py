"""The scheduler decides exactly as it did before the 2026-11-29 speed-up work (decision 0005): seeded workloads
(placement_golden.py) hashed decision by decision must match the digests recorded from the code
before that change (placement_golden.json). Placement results, explanations and the state digest
are part of the replicated state, so any difference here is a determinism break, not a tweak.
"""

from __future__ import annotations

import json

import pytest

from fedraft.consensus.handlers import placement as handler
from tests.consensus import placement_golden as golden

GOLDEN = json.loads(golden.FIXTURE.read_text())


def test_the_scheduler_alone_decides_as_recorded() -> None:
    assert golden.scheduler_run() == GOLDEN["scheduler_run"]


def test_alike_pools_broken_by_the_tie_break_decide_as_recorded() -> None:
    assert golden.uniform_run() == GOLDEN["uniform_run"]


def test_signed_entries_through_apply_leave_the_recorded_results_and_state(monkeypatch: pytest.MonkeyPatch) -> None:
    # Comparing the kept view with a fresh build on every envelope (FEDRAFT_CHECK_VIEW) is quadratic
    # in the workloads here; tests/consensus/test_placement_view.py holds that check with it on.
    monkeypatch.delenv(handler.CHECK_ENV, raising=False)
    assert golden.apply_run() == GOLDEN["apply_run"]


def test_the_workloads_exercise_what_the_scheduler_does() -> None:
    s, u, a = GOLDEN["scheduler_run"], GOLDEN["uniform_run"], GOLDEN["apply_run"]
    assert s["placed"] > 3_000 and s["preempting"] > 300 and s["pending"] > 300
    assert u["placed"] > 4_000 and u["evicted"] > 300
    assert a["placed"] > 500 and a["preempted"] > 100 and a["gpu_fault_moves"] > 10
