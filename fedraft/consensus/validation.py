"""Checks every envelope passes, at the leader's API (wall clock) and again at apply (effective time).

State may change between the two (a key revoked, a request applied), so apply never trusts the
leader's verdict. A refusal is a value with a gRPC-numbered code and a reason, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.handlers import static_problem
from fedraft.crypto.envelopes import body_digest, check_signed_shape, parse_envelope
from fedraft.crypto.signing import CTX_ENVELOPE, verify
from fedraft.domain.commands import Command
from fedraft.domain.outcome import Code
from fedraft.domain.roles import Role, may_issue
from fedraft.domain.validity import Window, window_problem
from fedraft.errors import DecodeError, SignatureError
from fedraft.storage import governance_schema
from fedraft.storage.state import StateTxn
from fedraft.wire.commands import command_from_pb


@dataclass(frozen=True)
class Checked:
    signed: pb.Signed
    envelope: pb.Envelope
    command: Command
    principal: pb.Principal
    body_hash: bytes
    first_result: pb.Result | None = None  # set when this exact request was applied before (D3)
    remember: bool = True


@dataclass(frozen=True)
class Refused:
    code: Code
    message: str
    remember: bool = False  # the author is established: keep it as the request's first result
    envelope: pb.Envelope | None = None
    body_hash: bytes = b""


def check_envelope(st: StateTxn, signed: pb.Signed, cluster_id: bytes, now_ms: int,
                   max_validity_ms: int | None = None) -> Checked | Refused:
    """`max_validity_ms`: the longest envelope window; None reads it from the replicated policy."""
    try:
        check_signed_shape(signed)
    except DecodeError as exc:
        return Refused(Code.UNAUTHENTICATED, str(exc))
    principal = st.principal(bytes(signed.key_id))
    if principal is None:
        return Refused(Code.UNAUTHENTICATED, f"unknown key id {bytes(signed.key_id).hex()}")
    if principal.revoked_index:
        # From the envelope after the change on (D9); what it signed before stays applied.
        return Refused(Code.UNAUTHENTICATED, f"key {bytes(signed.key_id).hex()} of {principal.name} was "
                                             f"{principal.revoked_why or 'revoked'} at index {principal.revoked_index}")
    if max_validity_ms is None:
        max_validity_ms = governance_schema.policy(st).max_validity_ms
    try:
        verify(bytes(principal.public_key), CTX_ENVELOPE, cluster_id, bytes(signed.body), bytes(signed.sig))
    except SignatureError:
        return Refused(Code.UNAUTHENTICATED, "envelope signature does not verify "
                       "(wrong key, wrong cluster id, or altered bytes)")
    try:
        env = parse_envelope(bytes(signed.body))
    except DecodeError as exc:
        return Refused(Code.INVALID_ARGUMENT, str(exc))
    if bytes(env.cluster_id) != cluster_id:
        return Refused(Code.UNAUTHENTICATED, "envelope names another federation's cluster id")
    body_hash = body_digest(bytes(signed.body))
    seen = st.dedup_get(bytes(signed.key_id), bytes(env.request_id))
    if seen is not None:
        if bytes(seen.body_sha256) != body_hash:
            return Refused(Code.INVALID_ARGUMENT, "request_id reused with a different body")
        return Checked(signed, env, command_from_pb(env), principal, body_hash, first_result=seen.result)
    problem = window_problem(Window(env.issued_at_ms, env.expires_at_ms), now_ms, max_validity_ms)
    if problem is not None:
        code = Code.DEADLINE_EXCEEDED if problem == "expired" else Code.INVALID_ARGUMENT
        return Refused(code, f"envelope {problem}")

    def refuse(code: Code, message: str) -> Refused:
        return Refused(code, message, remember=True, envelope=env, body_hash=body_hash)

    try:
        command = command_from_pb(env)
    except DecodeError as exc:
        return refuse(Code.INVALID_ARGUMENT, str(exc))
    try:
        role = Role.parse(principal.role)
    except ValueError:
        return refuse(Code.PERMISSION_DENIED, f"principal has unknown role {principal.role!r}")
    if not may_issue(role, command):
        return refuse(Code.PERMISSION_DENIED, f"role {principal.role} may not issue {command.NAME}")
    problem = static_problem(command)
    if problem is not None:
        return refuse(Code.INVALID_ARGUMENT, problem)
    return Checked(signed, env, command, principal, body_hash)
