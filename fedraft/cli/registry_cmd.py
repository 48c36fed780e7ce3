"""`fedraft put|get|delete|status`: the registry and the cluster view from a client's seat."""

from __future__ import annotations

import argparse
import time
from typing import Any

import grpc

EXAMPLES = {
    "put": "example:\n  fedraft put /routes/api 10.0.0.7:8080 --profile fed/admins/hq.profile.toml\n"
           "  fedraft put /settings/mode blue --if-version 3     # compare-and-set on the key's version\n"
           "  fedraft put /settings/lock on --if-version 0       # only if the key does not exist",
    "get": "example:\n  fedraft get /routes/api              # linearizable (through the leader)\n"
           "  fedraft get /routes/api --stale -o json   # any node; reports its applied index and age",
    "delete": "example:\n  fedraft delete /routes/api\n  fedraft delete /routes/api --if-version 4",
    "status": "example:\n  fedraft status --profile fed/admins/hq.profile.toml\n  fedraft status -o json --digest",
}


NOT_FOUND_EXIT = 4


def _parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    from fedraft.cli.common import add_output_arg, add_target_args

    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text, epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p)
    add_output_arg(p)
    return p


def register(subparsers: Any) -> None:
    p = _parser(subparsers, "put", "write a registry key (under /routes/ or /settings/)")
    p.add_argument("registry_key", metavar="KEY", help="a key under /routes/ or /settings/")
    p.add_argument("value", help="the value (UTF-8 text); use @FILE to read bytes from a file")
    p.add_argument("--if-version", type=int, default=None, metavar="N",
                   help="compare-and-set: only if the key's version is N (0: must not exist)")
    p.set_defaults(func=put)
    p = _parser(subparsers, "get", "read a registry key")
    p.add_argument("registry_key", metavar="KEY", help="a key under /routes/ or /settings/")
    p.add_argument("--stale", action="store_true", help="read from the first reachable node without a barrier")
    p.set_defaults(func=get)
    p = _parser(subparsers, "delete", "delete a registry key")
    p.add_argument("registry_key", metavar="KEY", help="a key under /routes/ or /settings/")
    p.add_argument("--if-version", type=int, default=None, metavar="N", help="only if the key's version is N")
    p.set_defaults(func=delete)
    p = _parser(subparsers, "status", "show every node's view of the cluster")
    p.add_argument("--digest", action="store_true", help="include each node's state digest (full scan)")
    p.set_defaults(func=status)


def _client(args: argparse.Namespace) -> Any:
    from fedraft.cli.common import resolve_target
    from fedraft.client import Client

    return Client.from_profile(resolve_target(args))


def _record_dict(record: Any) -> dict[str, Any]:
    try:
        value: str = record.value.decode()
    except UnicodeDecodeError:
        value = "0x" + record.value.hex()
    return {"key": record.key, "value": value, "version": record.version,
            "create_revision": [record.create_revision.index, record.create_revision.ordinal],
            "mod_revision": [record.mod_revision.index, record.mod_revision.ordinal]}


def _result_exit(args: argparse.Namespace, result: Any, verb: str) -> int:
    from fedraft.cli.common import emit, fail_result

    if result.code != 0:
        return fail_result(result)
    record = result.record if result.HasField("record") else result.deleted
    doc = {"ok": True, "index": result.index, **_record_dict(record)}
    emit(args, doc, f"{verb} {record.key} (version {record.version}, index {result.index})")
    return 0


def _value(text: str) -> bytes:
    from fedraft.errors import CallerError

    if text.startswith("@"):
        try:
            with open(text[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            raise CallerError(f"cannot read value file {text[1:]}: {exc.strerror}") from None
    return text.encode()


def put(args: argparse.Namespace) -> int:
    with _client(args) as client:
        value = _value(args.value)
        if args.if_version is None:
            result = client.put(args.registry_key, value, check=False)
        else:
            result = client.compare_and_set(args.registry_key, value, args.if_version, check=False)
    return _result_exit(args, result, "put")


def delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.delete(args.registry_key, args.if_version, check=False)
    return _result_exit(args, result, "deleted")


def get(args: argparse.Namespace) -> int:
    from fedraft.cli.common import emit, print_error

    with _client(args) as client:
        response = client.get(args.registry_key, stale=args.stale)
    if not response.found:
        if args.output == "json":
            emit(args, {"found": False, "key": args.registry_key, "applied_index": response.applied_index}, "")
        else:
            print_error(f"{args.registry_key} not found")
        return NOT_FOUND_EXIT
    doc = {"found": True, **_record_dict(response.record), "applied_index": response.applied_index,
           "served_by": response.served_by}
    if args.stale:
        doc["applied_age_ms"] = response.applied_age_ms
    emit(args, doc, doc["value"])
    return 0


def status(args: argparse.Namespace) -> int:
    from fedraft.cli.common import emit_table

    rows = []
    with _client(args) as client:
        for endpoint in client.endpoints:
            started = time.monotonic()
            try:
                s = client.status(endpoint, include_digest=args.digest)
            except grpc.RpcError as exc:
                rows.append({"node": "?", "address": endpoint, "role": "unreachable", "term": None,
                             "commit": None, "applied": None, "leader": None, "quorum": None,
                             "lockdown": None, "error": f"{exc.code().name}: {exc.details()}"})
                continue
            row = {"node": s.node_id, "address": endpoint, "role": s.role, "term": s.term,
                   "commit": s.commit_index, "applied": s.applied_index, "leader": s.leader_id,
                   "quorum": s.has_quorum, "lockdown": s.lockdown,
                   "rtt_ms": round((time.monotonic() - started) * 1000, 1), "error": ""}
            if args.digest:
                row["digest"] = s.state_digest.hex()[:16]
            rows.append(row)
    emit_table(args, rows, title="fedraft cluster status")
    return 0 if any(r["role"] == "leader" for r in rows) else 1
