"""`fedraft watch`: applied results as they happen (or from an index), one line per envelope."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fedraft.cli.common import EXIT_OK, add_command, add_target_args, resolve_target
from fedraft.errors import CallerError

DESCRIPTION = """Follow the applied results of the log, one line per envelope, in log order: index.ordinal,
command, author, result code and message (and the result's detail with -o json, one JSON object per
line). --from INDEX replays history from that index first (from the node's archive; 0, the default:
only what is applied from now on). When a node fails the watch resumes on another one from the last
index seen: nothing is missed, nothing repeated. Ctrl-C stops it (exit 130); --limit N stops after N
events (exit 0). If the node says the index was compacted away, the error names the oldest available
index."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "watch", func=watch, help="follow applied results as they happen (or from an index)",
                    description=DESCRIPTION,
                    example="fedraft watch                          # from now on\n"
                            "fedraft watch --from 1 --limit 20       # the first 20 events of the log\n"
                            "fedraft watch --command put,delete -o json | jq .key")
    p.add_argument("--from", dest="from_index", type=int, default=0, metavar="INDEX",
                   help="first log index to show (default 0: from now on)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="stop after N events (default: never)")
    p.add_argument("--command", action="append", metavar="NAME",
                   help="only these commands (repeat, or a,b): put, submit, approve, ...")
    p.add_argument("--include-barriers", action="store_true", help="also show read barriers (leader no-ops)")
    p.add_argument("--retry-for", type=float, default=60.0, metavar="S",
                   help="give up when no node served the stream for S seconds (default 60)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="table: one line per event (default); json: one JSON object per line")
    add_target_args(p)


def event_doc(event: Any) -> dict[str, Any]:
    """An event as JSON: the fields, the code's name, and the result's detail (protobuf JSON mapping)."""
    from google.protobuf.json_format import MessageToDict

    from fedraft.domain.outcome import Code

    doc: dict[str, Any] = {
        "index": event.index, "ordinal": event.ordinal, "command": event.command,
        "author": event.author, "author_pool": event.author_pool, "author_key_id": event.author_key_id.hex(),
        "request_id": event.request_id.hex(), "result_known": event.result_known,
    }
    if event.result_known:
        code = int(event.code)
        doc.update(code=code, code_name=Code(code).name if code in Code._value2member_map_ else f"CODE_{code}",
                   message=event.message)
        detail = event.result.WhichOneof("detail")
        if detail is not None:
            doc["detail"] = {detail: MessageToDict(getattr(event.result, detail), preserving_proto_field_name=True)}
    else:
        doc.update(code=None, code_name="", message="")
    return doc


def event_line(doc: dict[str, Any]) -> str:
    author = doc["author"] or doc["author_key_id"][:12]
    outcome = doc["code_name"] or "result not kept on this node"
    text = f"{doc['index']}.{doc['ordinal']}  {doc['command'] or '?'}  by {author}  {outcome}"
    if doc["message"]:
        text += f": {doc['message']}"
    detail = doc.get("detail", {})
    record = detail.get("record") or detail.get("deleted")
    if record is not None:
        text += f"  {record.get('key', '')} v{record.get('version', 0)}"
    placement = detail.get("placement")
    if placement is not None:
        parts = (placement.get("workload_id", ""), placement.get("phase", ""), placement.get("pool", ""))
        text += "  " + " ".join(p for p in parts if p)
    return text


def watch(args: argparse.Namespace) -> int:
    from fedraft.client import Client

    if args.from_index < 0 or args.limit < 0:
        raise CallerError("--from and --limit are not negative")
    if not args.retry_for > 0:
        raise CallerError("--retry-for must be more than 0 seconds")
    commands = {c.strip() for text in args.command or () for c in text.split(",") if c.strip()}
    shown = 0
    with Client.from_profile(resolve_target(args)) as client:
        for event in client.watch(args.from_index, include_barriers=args.include_barriers,
                                  retry_for=args.retry_for):
            if commands and event.command not in commands:
                continue
            doc = event_doc(event)
            print(json.dumps(doc, sort_keys=True) if args.output == "json" else event_line(doc), flush=True)
            shown += 1
            if args.limit and shown >= args.limit:
                break
    sys.stdout.flush()
    return EXIT_OK
