"""The Simulate call (issue 9): who may ask, and the what-if answer in its wire form.

Thin: decode, check the role, run `fedraft.consensus.what_if.simulate` on a read transaction of this
node's state, encode. Any node serves it from its applied state (the answer names the index); the
servicer puts LINEARIZABLE requests behind a read barrier on the leader first.
"""

from __future__ import annotations

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.consensus.what_if import KINDS, Scenario, simulate
from fedraft.domain.placement.model import Placement
from fedraft.domain.roles import Role
from fedraft.errors import CallerError
from fedraft.storage.state import StateStore

MAX_TARGET = 256
ALLOWED = (Role.OPERATOR, Role.ADMIN)


class NotAllowed(CallerError):
    """The caller's role may not run a what-if."""


def check_request(principal: pb.Principal, request: api.SimulateRequest) -> Scenario:
    """The scenario asked for; NotAllowed for a caller below operator, CallerError for a bad request."""
    try:
        role = Role.parse(principal.role)
    except ValueError:
        role = None
    if role not in ALLOWED:
        raise NotAllowed(f"a what-if is for operators and admins; {principal.name or 'this key'} is "
                         f"{principal.role or 'no principal'}")
    if request.kind not in KINDS:
        raise CallerError(f"unknown what-if {request.kind!r} (one of: {', '.join(KINDS)})")
    if not request.target or len(request.target) > MAX_TARGET:
        raise CallerError(f"a what-if names a pool or GPU of 1-{MAX_TARGET} characters")
    return Scenario(request.kind, request.target)


def answer(store: StateStore, scenario: Scenario, served_by: str) -> api.SimulateResponse:
    """Run the what-if on this node's applied state (raises UnknownTarget for a pool or GPU it lacks)."""
    with store.read() as st:
        found = simulate(st, store.genesis, scenario)
    response = api.SimulateResponse(scenario=scenario.describe(), applied_index=found.applied_index,
                                    at_index=found.at_index, effective_ms=found.effective_ms, served_by=served_by)
    for change in found.changes:
        row = response.changes.add(workload_id=change.workload_id, phase_before=change.phase_before,
                                   phase=change.phase, reason=change.reason, detail=change.detail)
        if change.before is not None:
            row.before.CopyFrom(_placement(change.before))
        if change.after is not None:
            row.after.CopyFrom(_placement(change.after))
    return response


def _placement(p: Placement) -> ppb.PlacementRecord:
    return ppb.PlacementRecord(pool=p.pool, worker=p.worker, gpus=list(p.gpus))
