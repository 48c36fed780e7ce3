"""`fedraft pending|approve|veto|break-glass`: voting on critical operations (SPEC §6).

A critical operation executes once an admin of every voter pool approved it; one veto from any voter
pool rejects it for good. An ID is the pending id in hex, or a unique prefix of it (4+ digits).
`break-glass sign` runs offline, where the break-glass key is kept; `break-glass submit` carries the
signature to the federation, which accepts it only in degraded mode (a voter pool DOWN or without an
admin who may vote) once every other voter pool approved.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from fedraft.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    PROFILE_ENV,
    add_command,
    add_output_arg,
    add_target_args,
    emit,
    emit_json,
    emit_table,
    print_fields,
    wants_json,
)
from fedraft.cli.placement_common import age, connect, effective_now, refused, timestamp
from fedraft.domain.outcome import Code
from fedraft.errors import CallerError

ID_HELP = "the pending id, or a unique prefix of it (4+ hex digits)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _cmd(subparsers, "pending", pending, "list critical operations, or show one in full",
             "fedraft pending\nfedraft pending --all -o json\nfedraft pending 1a2b3c")
    p.add_argument("id", nargs="?", metavar="ID", help=f"show this one: {ID_HELP}")
    p.add_argument("--all", action="store_true", help="include executed, vetoed and expired operations")

    p = _cmd(subparsers, "approve", approve, "approve a critical operation for your pool",
             "fedraft approve 1a2b3c\nfedraft approve 1a2b3c --digest 9f0e -o json")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--digest", metavar="HEX", help="approve only if the command digest starts with this")

    p = _cmd(subparsers, "veto", veto, "veto a critical operation: rejected for good",
             "fedraft veto 1a2b3c --reason 'not before the audit'")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (kept with the operation)")

    bg = add_command(subparsers, "break-glass", func=_no_action,
                     help="sign (offline) and submit a break-glass override for degraded mode",
                     description="In degraded mode (a voter pool DOWN, or without an admin who may vote) a pending\n"
                                 "operation approved by every other voter pool executes with the signature of\n"
                                 "the break-glass key over its pending id. Sign where the key is kept (offline),\n"
                                 "then submit the signature from any admin's profile. Every override is recorded.",
                     example="fedraft break-glass sign 1a2b...64 hex... --key break-glass.key --genesis genesis.json\n"
                             "fedraft break-glass submit 1a2b3c --sig 5e6f...")
    actions = bg.add_subparsers(title="actions", metavar="ACTION")
    p = add_command(actions, "sign", func=break_glass_sign, help="sign a pending id with the break-glass key (offline)",
                    example="fedraft break-glass sign 1a2b...(64 hex) --key break-glass.key --genesis genesis.json\n"
                            "fedraft break-glass sign 1a2b...(64 hex) --key /media/token/bg.key --cluster-id 77aa...")
    p.add_argument("id", metavar="PENDING_ID", help="the full pending id (64 hex digits: offline, no prefix lookup)")
    p.add_argument("--key", required=True, type=Path, metavar="FILE", help="the break-glass private key file")
    where = p.add_argument_group("federation", f"which cluster id to sign for (default: ${PROFILE_ENV}'s)")
    where.add_argument("--genesis", type=Path, metavar="FILE", help="the federation's genesis.json")
    where.add_argument("--cluster-id", metavar="HEX", help="the cluster id (sha256 of genesis.json)")
    where.add_argument("--profile", type=Path, metavar="FILE", help="a client profile naming the cluster id")
    add_output_arg(p)
    p = _cmd(actions, "submit", break_glass_submit, "submit a break-glass signature for a pending operation",
             "fedraft break-glass submit 1a2b3c --sig 5e6f...")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--sig", required=True, metavar="HEX", help="the signature `break-glass sign` printed")


def _cmd(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], command: str, func: Any, help: str,
         example: str) -> argparse.ArgumentParser:
    p = add_command(subparsers, command, func=func, help=help, example=example)
    add_target_args(p)
    add_output_arg(p)
    return p


def _no_action(_args: argparse.Namespace) -> int:
    raise CallerError("fedraft break-glass: say sign or submit", hint="fedraft break-glass --help")


# --- reading pending operations ----------------------------------------------------------------------

def _voter_pools(client: Any) -> list[str]:
    return sorted(p.id for p in client.list("pools") if p.voter)


def _marks(record: Any, voters: list[str]) -> str:
    approved = {v.pool for v in record.approvals}
    vetoed = record.veto.pool if record.HasField("veto") else ""
    return ", ".join(f"{pool} {'✗' if pool == vetoed else '✓' if pool in approved else '·'}" for pool in voters)


def _state(record: Any) -> str:
    state = str(record.state)
    if record.HasField("override"):
        state += " (break-glass)"
    if record.state == "executed" and record.result:
        from fedraft._proto.fedraft.v1 import entries_pb2 as pb

        result = pb.Result()
        result.ParseFromString(record.result)
        if result.code != Code.OK:
            state += f" ({Code(result.code).name.lower()})" if result.code in Code._value2member_map_ else " (failed)"
    return state


def _doc(record: Any, voters: list[str], now_ms: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pending_id": bytes(record.pending_id).hex(), "command": record.command,
        "command_digest": bytes(record.command_digest).hex(),
        "proposer": f"{record.proposer_name}@{record.proposer_pool}", "proposed_index": record.proposed_index,
        "approved": [v.pool for v in record.approvals],
        "waiting_for": [p for p in voters if p not in {v.pool for v in record.approvals}]
        if record.state == "pending" else [],
        "state": record.state, "expires_ms": record.expires_ms, "closed_index": record.closed_index,
        "expires_in": age(record.expires_ms, now_ms) if now_ms and record.state == "pending" else "",
    }
    if record.HasField("veto"):
        doc["veto"] = {"pool": record.veto.pool, "index": record.veto.index, "reason": record.veto.reason}
    if record.HasField("override"):
        doc["break_glass"] = {"index": record.override.index, "key_id": bytes(record.override.key_id).hex(),
                              "excused": {e.pool: e.why for e in record.override.excused}}
    if record.result:
        from fedraft._proto.fedraft.v1 import entries_pb2 as pb

        result = pb.Result()
        result.ParseFromString(record.result)
        doc["result"] = {"code": result.code, "message": result.message}
    return doc


def describe_command(envelope: bytes) -> dict[str, str]:
    """The proposed command's fields, readable (bytes as hex): what an approver reviews."""
    from fedraft._proto.fedraft.v1 import entries_pb2 as pb
    from fedraft.crypto.envelopes import parse_envelope
    from fedraft.wire.commands import command_from_pb

    signed = pb.Signed()
    signed.ParseFromString(envelope)
    command = command_from_pb(parse_envelope(bytes(signed.body)))
    out: dict[str, str] = {}
    if is_dataclass(command):
        for f in fields(command):
            value = getattr(command, f.name)
            if isinstance(value, bytes):
                text = value.hex()
            elif isinstance(value, Enum):
                text = str(value.name).lower()
            elif isinstance(value, tuple):
                text = " ".join("=".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value)
            else:
                text = str(value)
            out[f.name] = text
    return out


def pending(args: argparse.Namespace) -> int:
    with connect(args) as client:
        voters = _voter_pools(client)
        now_ms = effective_now(client)
        if args.id:
            record = client.find_pending(args.id)
            return _show(args, record, voters, now_ms)
        records = client.list("pending")
    records = [r for r in records if args.all or r.state == "pending"]
    records.sort(key=lambda r: r.proposed_index)
    if wants_json(args):
        emit_json([_doc(r, voters, now_ms) for r in records])
        return EXIT_OK
    if not records:
        print("no pending critical operations" + ("" if args.all else " (--all shows the closed ones)"))
        return EXIT_OK
    rows = [{"id": bytes(r.pending_id).hex()[:12], "command": r.command,
             "proposer": f"{r.proposer_name}@{r.proposer_pool}", "approvals": _marks(r, voters), "state": _state(r),
             "expires": f"{timestamp(r.expires_ms)} ({age(r.expires_ms, now_ms)} left)"
             if r.state == "pending" and now_ms else timestamp(r.expires_ms)}
            for r in records]
    emit_table(args, rows, title="fedraft pending")
    return EXIT_OK


def _show(args: argparse.Namespace, record: Any, voters: list[str], now_ms: int | None) -> int:
    doc = _doc(record, voters, now_ms)
    doc["arguments"] = describe_command(bytes(record.envelope))
    if wants_json(args):
        emit_json(doc)
        return EXIT_OK
    lines = [("pending id", doc["pending_id"]), ("command", record.command),
             *((f"  {k}", v) for k, v in doc["arguments"].items()),
             ("command digest", doc["command_digest"]), ("proposer", doc["proposer"]),
             ("proposed at index", record.proposed_index), ("approvals", _marks(record, voters)),
             ("state", _state(record)), ("expires", timestamp(record.expires_ms))]
    if "veto" in doc:
        lines.append(("veto", f"{doc['veto']['pool']} at index {doc['veto']['index']}: {doc['veto']['reason']}"))
    if "break_glass" in doc:
        excused = ", ".join(f"{p} ({why})" for p, why in doc["break_glass"]["excused"].items())
        lines.append(("break-glass", f"at index {doc['break_glass']['index']}, excused {excused}"))
    if "result" in doc:
        lines.append(("result", f"{doc['result']['code']} {doc['result']['message']}".strip()))
    print_fields(lines)
    return EXIT_OK


# --- votes ---------------------------------------------------------------------------------------------

def _voted(args: argparse.Namespace, result: Any, verb: str) -> int:
    if result.code != 0:
        return refused(result, {Code.PERMISSION_DENIED: "only an admin of a voter pool votes, never with a key the "
                                                        "operation revokes or rotates",
                                Code.NOT_FOUND: "`fedraft pending` lists the operations"})
    g = result.governance
    doc = {"ok": True, "index": result.index, "pending_id": bytes(g.pending_id).hex(), "command": g.command,
           "state": g.state, "approved": list(g.approved), "waiting_for": list(g.waiting_for),
           "break_glass": g.break_glass, "message": result.message}
    if g.state == "executed":
        doc.update(result_code=g.result_code, result_message=g.result_message)
    emit(args, doc, f"{verb}: {result.message} (index {result.index})")
    if g.state == "executed" and g.result_code != Code.OK:
        return EXIT_FAILURE
    return EXIT_OK


def approve(args: argparse.Namespace) -> int:
    with connect(args) as client:
        record = client.find_pending(args.id)
        digest = bytes(record.command_digest)
        if args.digest and not digest.hex().startswith(args.digest.lower()):
            raise CallerError(f"the command digest of {bytes(record.pending_id).hex()[:12]} is {digest.hex()}, "
                              f"not {args.digest}", hint="`fedraft pending ID` shows what it would do")
        result = client.approve(bytes(record.pending_id), digest, check=False)
    return _voted(args, result, "approve")


def veto(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if not 0 < len(reason) <= 512:
        raise CallerError("--reason: say why, in at most 512 characters")
    with connect(args) as client:
        record = client.find_pending(args.id)
        result = client.veto(bytes(record.pending_id), bytes(record.command_digest), reason, check=False)
    return _voted(args, result, "veto")


def _cluster_id(args: argparse.Namespace) -> tuple[bytes, bytes | None]:
    """(cluster id, the genesis break-glass public key when known) for an offline signature."""
    from fedraft.config import load_genesis, load_profile

    if args.genesis is not None:
        genesis = load_genesis(args.genesis)
        return genesis.cluster_id, genesis.break_glass_public_key
    if args.cluster_id:
        try:
            cluster_id = bytes.fromhex(args.cluster_id)
        except ValueError:
            cluster_id = b""
        if len(cluster_id) != 32:
            raise CallerError(f"--cluster-id {args.cluster_id!r} is not 64 hex digits")
        return cluster_id, None
    profile = args.profile or (Path(os.environ[PROFILE_ENV]) if os.environ.get(PROFILE_ENV) else None)
    if profile is None:
        raise CallerError("which federation? pass --genesis FILE, --cluster-id HEX or --profile FILE")
    return load_profile(profile).cluster_id, None


def break_glass_sign(args: argparse.Namespace) -> int:
    from fedraft.crypto.keyfile import load_private_key
    from fedraft.crypto.signing import CTX_BREAKGLASS

    try:
        pending_id = bytes.fromhex(args.id)
    except ValueError:
        pending_id = b""
    if len(pending_id) != 32:
        raise CallerError("PENDING_ID: give the full pending id (64 hex digits); `fedraft pending ID -o json` on a "
                          "connected machine prints it")
    cluster_id, expected = _cluster_id(args)
    identity = load_private_key(args.key)
    if expected is not None and identity.public_key != expected:
        raise CallerError(f"{args.key} is not this federation's break-glass key (genesis pins "
                          f"{expected.hex()[:16]}…)")
    signature = identity.sign(CTX_BREAKGLASS, cluster_id, pending_id)
    emit(args, {"pending_id": pending_id.hex(), "signature": signature.hex(), "cluster_id": cluster_id.hex(),
                "public_key": identity.public_key.hex()}, signature.hex())
    return EXIT_OK


def break_glass_submit(args: argparse.Namespace) -> int:
    try:
        signature = bytes.fromhex(args.sig)
    except ValueError:
        signature = b""
    if len(signature) != 64:
        raise CallerError("--sig: a break-glass signature is 128 hex digits (`fedraft break-glass sign` prints it)")
    with connect(args) as client:
        record = client.find_pending(args.id)
        result = client.break_glass(bytes(record.pending_id), signature, check=False)
    if result.code == Code.FAILED_PRECONDITION:
        return refused(result, {Code.FAILED_PRECONDITION: "`fedraft pools` shows which voter pools are DOWN; every "
                                                          "other voter pool must have approved"})
    return _voted(args, result, "break-glass")
