"""A workload's lifecycle: the allowed phase changes and who may report what, as tables.

Phases that hold resources (a booking of GPUs, CPU and RAM on one pool): PLACED, RUNNING, DRAINING,
MIGRATING. Leaving them releases the booking; PENDING and the terminal phases hold nothing.

A move re-places a workload on another pool in one step (the booking moves with it); the agents of the
two pools act on the new state (SPEC D14: level-triggered). Where the move lands it:
- work that had not started yet (PLACED) is simply PLACED elsewhere;
- work whose pool is DOWN is restarted on the target: PLACED (there is nothing to hand over);
- work that runs on an UP pool (return, drain end, rebalance, Migrate) is MIGRATING until the target
  reports it running — the source checkpoints and stops.
"""

from __future__ import annotations

from dataclasses import replace

from fedraft.domain.placement.model import Move, Phase, Placement, Workload

__all__ = [
    "MOVE_HISTORY", "REPORTABLE", "REPORTS", "TRANSITIONS", "landing_phase", "record_move", "report", "transition",
]

P, PL, R, D, M = Phase.PENDING, Phase.PLACED, Phase.RUNNING, Phase.DRAINING, Phase.MIGRATING
DONE, FAIL, GONE = Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED

#  from  to    when
TRANSITIONS: tuple[tuple[Phase, Phase, str], ...] = (
    (P,  PL,   "the scheduler found a pool"),
    (P,  FAIL, "it can never be placed"),
    (P,  GONE, "Cancel"),
    (PL, R,    "the placed pool reports it running"),
    (PL, PL,   "moved before it started"),
    (PL, D,    "its pool starts draining"),
    (PL, P,    "failover or drain found no target; preempted"),
    (R,  M,    "moved off an UP pool: return, drain end, rebalance, Migrate"),
    (R,  PL,   "failover: its pool is DOWN, the target starts it afresh"),
    (R,  D,    "its pool starts draining"),
    (R,  P,    "failover found no target; preempted"),
    (D,  M,    "drain ended and it moved"),
    (D,  PL,   "failover: its draining pool went DOWN"),
    (D,  P,    "drain ended or failover found no target; preempted"),
    (M,  R,    "the target reports it running"),
    (M,  M,    "moved again before it ran on the target"),
    (M,  PL,   "failover: the target went DOWN"),
    (M,  D,    "the target starts draining"),
    (M,  P,    "failover found no target; preempted"),
    *((held, end, "reported, or Cancel") for held in (PL, R, D, M) for end in (DONE, FAIL, GONE)),
)

# ReportStatus (the phase a pool reports), accepted only from the pool the workload is placed on:
# (phase, reported) -> new phase. A RUNNING report while draining changes nothing: the drain still ends on time.
REPORTS: dict[tuple[Phase, Phase], Phase] = {
    (PL, R): R, (R, R): R, (D, R): D, (M, R): R,
    **{(held, DONE): DONE for held in (PL, R, D, M)},
    **{(held, FAIL): FAIL for held in (PL, R, D, M)},
}
REPORTABLE = (R, DONE, FAIL)

# Moves kept per workload, most recent last.
MOVE_HISTORY = 16

_ALLOWED = frozenset((a, b) for a, b, _ in TRANSITIONS)


def transition(workload: Workload, to: Phase, reason: str, placement: Placement | None = None) -> Workload | str:
    """The workload in phase `to`, or why it may not get there.

    Entering PLACED or MIGRATING needs the new `placement`; a phase that holds no resources drops it.
    `reason` is kept on the workload (why it is pending, failed, cancelled, draining, ...).
    """
    if (workload.phase, to) not in _ALLOWED:
        return f"workload {workload.id} is {workload.phase.value} and cannot become {to.value}"
    if to in (PL, M):
        if placement is None:
            return f"workload {workload.id} needs a placement to become {to.value}"
        return replace(workload, phase=to, placement=placement, reason=reason)
    if placement is not None and placement != workload.placement:
        return f"workload {workload.id} keeps its placement when it becomes {to.value}"
    kept = workload.placement if to.holds_resources else None
    return replace(workload, phase=to, placement=kept, reason=reason)


def report(workload: Workload, pool: str, reported: Phase, reason: str = "") -> Workload | str:
    """ReportStatus from `pool`: the workload after it, or why the report is refused."""
    if reported not in REPORTABLE:
        return f"a pool reports {', '.join(p.value for p in REPORTABLE)}; not {reported.value}"
    if workload.placement is None or workload.placement.pool != pool:
        where = workload.placement.pool if workload.placement is not None else "no pool"
        return f"workload {workload.id} is placed on {where}, not on {pool}"
    to = REPORTS.get((workload.phase, reported))
    if to is None:
        return f"workload {workload.id} is {workload.phase.value}; a {reported.value} report does not apply"
    if to is workload.phase:
        return workload
    return transition(workload, to, reason)


def landing_phase(phase: Phase, source_down: bool) -> Phase:
    """The phase a move gives a resource-holding workload on its target (see the module docstring)."""
    if phase is PL or source_down:
        return PL
    return M


def record_move(workload: Workload, move: Move) -> Workload:
    """Append `move` to the workload's history, keeping the last MOVE_HISTORY moves."""
    return replace(workload, moves=(*workload.moves, move)[-MOVE_HISTORY:])
