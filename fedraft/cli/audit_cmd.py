"""`fedraft audit|incidents|local`: a node's pool-local records, read from its own LMDB on its host.

These commands open `<data_dir>/local` of the node named by `--config` directly (LMDB lets them read
while the node runs; `local set|unset` writes beside it). They never talk to the federation: the
records are this node's, never replicated (SPEC §5, D14).
"""

from __future__ import annotations

import argparse
import getpass
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fedraft.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    add_output_arg,
    emit,
    emit_json,
    emit_table,
    print_error,
    wants_json,
)
from fedraft.errors import CallerError

NOT_FOUND = 4


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        subparsers, "audit", func=audit, help="this node's audit journal (applied commands, refused requests)",
        description="Show the node's pool-local audit journal: one record per applied envelope (index.ordinal,\n"
                    "command, author, result), per request refused at this node's API, per snapshot install\n"
                    "(entries a..b arrived by snapshot) and per change of a local toggle, flag or override.\n"
                    "Without --since: the latest --limit records; with --since INDEX: --limit records from the\n"
                    "first about that index on.\n\n"
                    "--verify walks the hash chains of the audit and incident journals: exit 0 if both are\n"
                    "intact, 1 naming the first bad record otherwise.",
        example="fedraft audit --config fed/hq/node.toml\n"
                "fedraft audit --config fed/hq/node.toml --since 120 --limit 20 -o json\n"
                "fedraft audit --config fed/hq/node.toml --verify",
    )
    _node_args(p)
    p.add_argument("--since", type=int, metavar="INDEX", help="from the first record about this applied index on")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N records (default 100; 0: all)")
    p.add_argument("--kind", metavar="KIND", help="only records of this kind: applied, refused, snapshot, local_set, "
                                                  "local_unset, refused_suppressed")
    p.add_argument("--verify", action="store_true", help="check the hash chains instead of listing")

    p = add_command(
        subparsers, "incidents", func=incidents, help="this node's incident journal (lockdown, pool down, veto, ...)",
        description="Show the incidents this node raised from what it applied and observed: lockdown entered/left,\n"
                    "a pool going DOWN or UP, vetoes, break-glass overrides. Each was also sent to the [alerts]\n"
                    "hooks of the node config, if any. --verify checks the incident journal's hash chain.\n\n"
                    "--all-pools: every pool's incidents, from any node, as an administrator (--profile or\n"
                    "$FEDRAFT_PROFILE): each voter pool's node signs its answer; pools that did not answer are\n"
                    "listed as unreachable. Exit 1 if a pool did not answer or an answer does not verify.",
        example="fedraft incidents --config fed/hq/node.toml\nfedraft incidents --config fed/hq/node.toml -o json\n"
                "fedraft incidents --all-pools --profile fed/admins/hq.profile.toml",
    )
    _node_args(p)
    p.add_argument("--limit", type=int, default=100, metavar="N",
                   help="the latest N incidents (default 100; 0: all; with --all-pools at most 500 per pool)")
    p.add_argument("--all-pools", action="store_true", help="every pool's incidents, gathered by signed fan-out")
    p.add_argument("--profile", type=Path, metavar="FILE", help="with --all-pools: an administrator's client profile")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="with --all-pools: per pool (default 5)")
    p.add_argument("--verify", action="store_true", help="check the hash chain instead of listing")

    p = add_command(
        subparsers, "local", func=_local_usage, help="this node's feature toggles, UI flags and admin overrides",
        description="Pool-local key/value tables, never replicated: feature toggles (--kind toggle), UI flags\n"
                    "(--kind flag) and admin overrides (--kind override). Every set and unset is also an audit\n"
                    "record (who, when, old and new value). get exits 4 when the name is not set.",
        example=LOCAL_EXAMPLE,
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    for action, what, args in (("set", "set NAME to VALUE", ("name", "value")), ("get", "show NAME's value", ("name",)),
                               ("list", "list the table", ()), ("unset", "remove NAME", ("name",))):
        sp = add_command(actions, action, func=local, help=what, example=LOCAL_EXAMPLE)
        for arg in args:
            sp.add_argument(arg, metavar=arg.upper())
        sp.add_argument("--kind", required=True, choices=("toggle", "flag", "override"), help="which table")
        sp.set_defaults(action=action)
        _node_args(sp)


LOCAL_EXAMPLE = """fedraft local set --config fed/hq/node.toml --kind toggle new-scheduler on
fedraft local get --config fed/hq/node.toml --kind toggle new-scheduler
fedraft local list --config fed/hq/node.toml --kind override -o json
fedraft local unset --config fed/hq/node.toml --kind flag banner"""


def _local_usage(_args: argparse.Namespace) -> int:
    raise CallerError("fedraft local needs an action: set, get, list or unset", hint="fedraft local --help")


def _node_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("node", "whose records (read from that node's data directory on this host)")
    group.add_argument("--config", type=Path, metavar="NODE.toml", help="the node's config")
    group.add_argument("--data-dir", type=Path, metavar="DIR", help="the node's data directory (instead of --config)")
    add_output_arg(p)


def _local_dir(args: argparse.Namespace) -> Path:
    from fedraft.config import load_node_config
    from fedraft.storage.local import local_path

    if (args.config is None) == (args.data_dir is None):
        raise CallerError("pass --config NODE.toml (or --data-dir DIR)", hint="the records are the node's own, "
                                                                             "read on its host")
    data_dir = load_node_config(args.config).data_dir if args.config is not None else args.data_dir
    return local_path(data_dir)


def _open(args: argparse.Namespace, *, readonly: bool = True) -> Any:
    from fedraft.storage.local import LocalStore

    path = _local_dir(args)
    if not readonly and not (path / "data.mdb").exists():
        raise CallerError(f"no pool-local records at {path}", hint="start the node once first; check --config")
    return LocalStore(path, readonly=readonly)


def _when(ms: Any) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return ""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _who(author: Any, key_id: Any) -> str:
    if isinstance(author, dict) and author.get("name"):
        return f"{author['name']}@{author.get('pool', '')} ({author.get('role', '')})"
    return f"key {key_id[:12]}" if isinstance(key_id, str) and key_id else ""


def _audit_row(r: dict[str, Any]) -> dict[str, Any]:
    kind = r.get("kind", "?")
    row: dict[str, Any] = {"seq": r.get("seq"), "index": "", "kind": kind, "what": "", "author": "", "result": "",
                           "message": "", "at": _when(r.get("at_ms"))}
    if "unreadable" in r:
        row.update(kind="?", message="unreadable record (run --verify)")
    elif kind == "applied":
        row.update(index=f"{r.get('index')}.{r.get('ordinal')}", what=r.get("command", ""),
                   author=_who(r.get("author"), r.get("key_id")), result=r.get("code_name", ""),
                   message=r.get("message", "") + (" [recovered]" if r.get("recovered") else ""))
    elif kind == "refused":
        extra = f" (+{r['suppressed_before']} not recorded)" if r.get("suppressed_before") else ""
        claimed = _who(r.get("claimed_author"), "")
        who = _who(r.get("author"), "") or (f"claims {claimed}" if claimed else _who(None, r.get("key_id")))
        row.update(what=r.get("method", ""), author=who or r.get("peer", ""),
                   result=r.get("code_name", ""), message=r.get("reason", "") + extra)
    elif kind == "snapshot":
        row.update(index=f"{r.get('first')}..{r.get('last')}", what="snapshot", message=r.get("message", ""))
    elif kind in ("local_set", "local_unset"):
        verb = "set" if kind == "local_set" else "unset"
        row.update(what=f"{verb} {r.get('table')} {r.get('key')}", author=r.get("by", ""),
                   message=f"{r.get('previous')!r} -> {r.get('value')!r}" if verb == "set"
                   else f"was {r.get('previous')!r}")
    else:
        row.update(message=r.get("reason", "") or r.get("message", ""))
    return row


def _verify(args: argparse.Namespace, chains: tuple[str, ...]) -> int:
    with _open(args) as store:
        reports = [store.verify(chain) for chain in chains]
    if wants_json(args):
        emit_json([{"chain": r.chain, "ok": r.ok, "records": r.records, "bad_record": r.bad_seq,
                    "reason": r.reason} for r in reports])
    else:
        for r in reports:
            if r.ok:
                print(r.describe())
            else:
                print_error(r.describe())
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILURE


def _limit(value: int) -> int | None:
    if value < 0:
        raise CallerError("--limit must be 0 (all) or more")
    return value or None


def audit(args: argparse.Namespace) -> int:
    from fedraft.storage.local import AUDIT, INCIDENTS

    if args.verify:
        return _verify(args, (AUDIT, INCIDENTS))
    limit = _limit(args.limit)
    with _open(args) as store:
        if args.kind:  # filter first, then limit
            records = store.records(AUDIT, since_index=args.since)
            records = [r for r in records if r.get("kind") == args.kind]
            if limit is not None:
                records = records[:limit] if args.since is not None else records[-limit:]
        else:
            records = store.records(AUDIT, since_index=args.since, limit=limit, latest=args.since is None)
        total = store.count(AUDIT)
    if wants_json(args):
        emit_json(records)
    else:
        emit_table(args, [_audit_row(r) for r in records],
                   title=f"audit journal: {len(records)} of {total} records")
    return EXIT_OK


def incidents(args: argparse.Namespace) -> int:
    from fedraft.storage.local import INCIDENTS

    if args.all_pools:
        return _all_pools(args)
    if args.profile is not None:
        raise CallerError("--profile goes with --all-pools", hint="this node's own journal is read with --config")
    if args.verify:
        return _verify(args, (INCIDENTS,))
    with _open(args) as store:
        records = store.records(INCIDENTS, limit=_limit(args.limit), latest=True)
        total = store.count(INCIDENTS)
    if wants_json(args):
        emit_json(records)
        return EXIT_OK
    rows = [{"seq": r.get("seq"), "at": _when(r.get("at_ms")), "level": r.get("level", ""),
             "kind": r.get("kind", ""), "index": r.get("applied_index", ""),
             "detail": ", ".join(f"{k}={v}" for k, v in sorted((r.get("detail") or {}).items())
                                 if v not in (None, ""))} for r in records]
    emit_table(args, rows, title=f"incidents: {len(records)} of {total}")
    return EXIT_OK


def _all_pools(args: argparse.Namespace) -> int:
    from fedraft.cli.common import resolve_target
    from fedraft.client import Client
    from fedraft.incidents_view import gather_incidents
    from fedraft.service.incidents import MAX_LIMIT

    if args.verify or args.data_dir is not None:
        raise CallerError("--all-pools gathers from the nodes: drop --verify and --data-dir")
    if not 0 <= args.limit <= MAX_LIMIT or not 0 < args.timeout <= 30:
        raise CallerError(f"with --all-pools, --limit is 1..{MAX_LIMIT} (0: 100) and --timeout 0..30 s")
    with Client.from_profile(resolve_target(args)) as client:
        view = gather_incidents(client, limit=args.limit, timeout_ms=int(args.timeout * 1000))
    failed = [p for p in view.pools if not p.answered]
    if wants_json(args):
        emit_json({"served_by": view.served_by, "pools": [
            {"pool": p.pool, "node_id": p.node_id, "answered": p.answered, "code": p.code.name, "message": p.message,
             "signed_by": p.signer, "total": p.total, "incidents": list(p.incidents)} for p in view.pools]})
        return EXIT_FAILURE if failed else EXIT_OK
    emit_table(args, [{"pool": p.pool, "node": p.node_id,
                       "answer": f"signed by {p.signer}, verified" if p.answered else f"{p.code.name}: {p.message}",
                       "incidents": p.total if p.answered else ""} for p in view.pools],
               title=f"pools (gathered by {view.served_by})")
    rows = [{"pool": p.pool, "seq": r["seq"], "at": _when(r["at_ms"]), "level": r["level"], "kind": r["kind"],
             "index": r["applied_index"] or "",
             "detail": ", ".join(f"{k}={v}" for k, v in sorted(r["detail"].items()) if v not in (None, ""))}
            for p in view.pools for r in p.incidents]
    rows.sort(key=lambda r: (str(r["at"]), str(r["pool"]), int(r["seq"])))
    emit_table(args, rows, title=f"incidents of every pool: {len(rows)}")
    for p in failed:
        print_error(f"pool {p.pool}: {p.code.name}: {p.message}")
    return EXIT_FAILURE if failed else EXIT_OK


def local(args: argparse.Namespace) -> int:
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    at = int(time.time() * 1000)
    if args.action == "set":
        with _open(args, readonly=False) as store:
            store.kv_set(args.kind, args.name, args.value, by=by, at_ms=at)
        emit(args, {"kind": args.kind, "key": args.name, "value": args.value, "set_by": by, "set_at_ms": at},
             f"{args.kind} {args.name} = {args.value}")
        return EXIT_OK
    if args.action == "unset":
        with _open(args, readonly=False) as store:
            removed = store.kv_unset(args.kind, args.name, by=by, at_ms=at)
        emit(args, {"kind": args.kind, "key": args.name, "removed": removed},
             f"{args.kind} {args.name} unset" if removed else f"{args.kind} {args.name} was not set")
        return EXIT_OK
    with _open(args) as store:
        if args.action == "get":
            entry = store.kv_get(args.kind, args.name)
            if entry is None:
                if wants_json(args):
                    emit_json(None)
                else:
                    print_error(f"{args.kind} {args.name!r} is not set")
                return NOT_FOUND
            emit(args, entry, str(entry["value"]))
            return EXIT_OK
        entries = store.kv_list(args.kind)
    emit_table(args, [{"name": e["key"], "value": e["value"], "set_by": e.get("set_by", ""),
                       "set_at": _when(e.get("set_at_ms"))} if not wants_json(args) else e for e in entries],
               title=f"{args.kind}s: {len(entries)}")
    return EXIT_OK
