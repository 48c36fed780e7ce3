"""The workload lifecycle table and ReportStatus rules."""

from __future__ import annotations

import pytest

from fedraft.domain.placement.lifecycle import (
    MOVE_HISTORY,
    TRANSITIONS,
    landing_phase,
    record_move,
    report,
    transition,
)
from fedraft.domain.placement.model import Move, Phase, Placement, Workload, WorkloadSpec

P, PL, R, D, M = Phase.PENDING, Phase.PLACED, Phase.RUNNING, Phase.DRAINING, Phase.MIGRATING
DONE, FAIL, GONE = Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED
HERE = Placement("a", "w1", ("gpu-1",))
THERE = Placement("b", "w2", ("gpu-9",))


def workload(phase: Phase) -> Workload:
    return Workload("job", WorkloadSpec(gpus=1), "a", phase=phase,
                    placement=HERE if phase.holds_resources else None, home_pool="a")


# Every (from, to) pair, allowed or not: the table is the whole truth.
ALLOWED = {
    P: {PL, FAIL, GONE},
    PL: {R, PL, D, P, DONE, FAIL, GONE},
    R: {M, PL, D, P, DONE, FAIL, GONE},
    D: {M, PL, P, DONE, FAIL, GONE},
    M: {R, M, PL, D, P, DONE, FAIL, GONE},
    DONE: set(), FAIL: set(), GONE: set(),
}


@pytest.mark.parametrize("src", list(Phase))
@pytest.mark.parametrize("dst", list(Phase))
def test_transition_table(src: Phase, dst: Phase) -> None:
    result = transition(workload(src), dst, "why", placement=THERE if dst in (PL, M) else None)
    if dst in ALLOWED[src]:
        assert isinstance(result, Workload), result
        assert result.phase is dst and result.reason == "why"
        if dst.holds_resources:
            assert result.placement == (THERE if dst in (PL, M) else HERE)
        else:
            assert result.placement is None      # pending and terminal work holds nothing
    else:
        assert result == f"workload job is {src.value} and cannot become {dst.value}"


def test_every_table_row_says_when() -> None:
    assert all(when for _, _, when in TRANSITIONS)
    assert {(a, b) for a, b, _ in TRANSITIONS} == {(a, b) for a, bs in ALLOWED.items() for b in bs}


def test_entering_placed_or_migrating_needs_a_placement() -> None:
    assert transition(workload(P), PL, "") == "workload job needs a placement to become placed"
    assert transition(workload(R), M, "") == "workload job needs a placement to become migrating"
    assert transition(workload(R), D, "", placement=THERE) == (
        "workload job keeps its placement when it becomes draining")


# phase, reporting pool, reported phase -> new phase, or the refusal
@pytest.mark.parametrize(("phase", "pool", "reported", "expected"), [
    (PL, "a", R, R),
    (M, "a", R, R),
    (R, "a", R, R),
    (D, "a", R, D),
    (R, "a", DONE, DONE),
    (PL, "a", DONE, DONE),
    (D, "a", FAIL, FAIL),
    (M, "a", FAIL, FAIL),
    (R, "b", R, "workload job is placed on a, not on b"),          # a stale report after a move
    (P, "a", R, "workload job is placed on no pool, not on a"),
    (R, "a", GONE, "a pool reports running, completed, failed; not cancelled"),
])
def test_reports(phase: Phase, pool: str, reported: Phase, expected: Phase | str) -> None:
    result = report(workload(phase), pool, reported, "reported")
    if isinstance(expected, Phase):
        assert isinstance(result, Workload) and result.phase is expected
    else:
        assert result == expected


def test_terminal_work_takes_no_report() -> None:
    done = Workload("job", WorkloadSpec(), "a", phase=DONE, placement=HERE)
    assert report(done, "a", R) == "workload job is completed; a running report does not apply"


def test_a_repeated_report_changes_nothing() -> None:
    running = workload(R)
    assert report(running, "a", R) is running


@pytest.mark.parametrize(("phase", "source_down", "landing"), [
    (PL, False, PL), (PL, True, PL),
    (R, False, M), (R, True, PL),
    (D, False, M), (D, True, PL),
    (M, False, M), (M, True, PL),
])
def test_landing_phase(phase: Phase, source_down: bool, landing: Phase) -> None:
    assert landing_phase(phase, source_down) is landing
    assert isinstance(transition(workload(phase), landing, "moved", placement=THERE), Workload)


def test_move_history_is_capped() -> None:
    w = workload(R)
    for i in range(MOVE_HISTORY + 5):
        w = record_move(w, Move(i, i, "a", "b", "rebalance"))
    assert len(w.moves) == MOVE_HISTORY
    assert w.moves[0].at_ms == 5 and w.moves[-1].at_ms == MOVE_HISTORY + 4
