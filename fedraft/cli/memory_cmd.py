"""`fedraft memory put|get|reseal|delete|list|recipients`: replicated encrypted data (decision 0009).

A memory belongs to the pool of the key that puts it. The value is sealed here, before signing, to the
memory's pool and to every pool paired with it at the data class's trust level or more; the other
pools hold nothing of it. Reading needs a qualifying pool's key: on that pool's node host,
`--config NODE.toml` opens the box with the node key (`--open-key FILE` with a member pool's agent
key); otherwise a node of your pool opens it for you (you must be a principal of that pool).
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

from fedraft.cli.common import (
    EXIT_OK,
    add_command,
    add_output_arg,
    add_target_args,
    emit,
    emit_table,
    print_error,
    print_table,
    wants_json,
)
from fedraft.cli.placement_common import NOT_FOUND_EXIT, connect, refused, timestamp
from fedraft.config import load_node_config
from fedraft.crypto.keyfile import load_private_key
from fedraft.crypto.signing import Identity
from fedraft.domain.governance.memories import MAX_VALUE_BYTES, key_problem
from fedraft.domain.outcome import Code
from fedraft.domain.placement.commands import name_problem
from fedraft.errors import CallerError, FedraftError

HINTS: dict[int, str] = {Code.FAILED_PRECONDITION: "trust or keys changed, or the version moved: `fedraft memory "
                                                   "recipients CLASS` shows who qualifies now; retry",
                         Code.NOT_FOUND: "`fedraft policy show` lists the data classes (class/NAME)"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    memory = add_command(
        subparsers, "memory", func=_missing, help="replicated encrypted values, sealed to the pools trusted enough",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else "",
        example="fedraft memory put notes/plan --class internal --file plan.md\n"
                "fedraft memory get notes/plan --config fed/nodes/gpu-dc/node.toml\n"
                "fedraft memory reseal notes/plan\nfedraft memory list")
    actions = memory.add_subparsers(title="actions", metavar="ACTION")

    p = _cmd(actions, "put", put, "seal a value to the qualifying pools and store it",
             "fedraft memory put notes/plan --class internal --file plan.md\n"
             "echo -n 's3cr3t' | fedraft memory put db/password --class secret --stdin")
    p.add_argument("memory_key", metavar="KEY")  # not "key": --key names the signing key
    p.add_argument("value", nargs="?", metavar="VALUE", help="the value as text (or --file / --stdin)")
    p.add_argument("--class", dest="data_class", required=True, metavar="CLASS",
                   help="data class from the policy (default classes: public, internal, secret)")
    p.add_argument("--file", type=Path, metavar="FILE", help="read the value from a file")
    p.add_argument("--stdin", action="store_true", help="read the value from standard input")
    p.add_argument("--expect-version", type=int, metavar="N", help="only if the memory is at version N (0: new)")

    p = _cmd(actions, "get", get, "open a memory's value with your pool's key",
             "fedraft memory get notes/plan --config fed/nodes/gpu-dc/node.toml\n"
             "fedraft memory get notes/plan --profile fed/admins/hq.profile.toml --out plan.md")
    p.add_argument("memory_key", metavar="KEY")  # not "key": --key names the signing key
    _open_key_arg(p)
    p.add_argument("--out", type=Path, metavar="FILE", help="write the value to FILE instead of standard output")
    p.add_argument("--min-index", type=int, default=0, metavar="N", help="wait until the node applied index N")

    p = _cmd(actions, "reseal", reseal, "re-seal a value to the pools that qualify now (after trust or key changes)",
             "fedraft memory reseal notes/plan\n"
             "fedraft memory reseal notes/plan --config fed/nodes/hq/node.toml --key alice.key")
    p.add_argument("memory_key", metavar="KEY")  # not "key": --key names the signing key
    _open_key_arg(p)

    p = _cmd(actions, "delete", delete, "delete a memory of your pool (every pool's box goes)",
             "fedraft memory delete notes/plan")
    p.add_argument("memory_key", metavar="KEY")  # not "key": --key names the signing key
    p.add_argument("--expect-version", type=int, metavar="N", help="only if the memory is at version N")

    p = _cmd(actions, "list", list_memories, "list memories: class, pool, author, pools holding a box",
             "fedraft memory list\nfedraft memory list notes/ -o json")
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX")

    p = _cmd(actions, "recipients", recipients, "show which pools a class of your pool's values is sealed to now",
             "fedraft memory recipients internal")
    p.add_argument("data_class", metavar="CLASS")


def _cmd(actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, func: Any, help: str,
         example: str) -> argparse.ArgumentParser:
    p = add_command(actions, name, help=help, func=func, example=example)
    add_target_args(p)
    add_output_arg(p)
    return p


def _open_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--open-key", type=Path, metavar="FILE",
                   help="open the box here with this private key (your pool's node or agent key); with --config "
                        "the node key is used; without either, a node of your pool opens it")


def _missing(_args: argparse.Namespace) -> int:
    raise CallerError("name an action: put, get, reseal, delete, list or recipients",
                      hint="fedraft memory --help")


def _key(text: str) -> str:
    problem = key_problem(text)
    if problem is not None:
        raise CallerError(problem)
    return text


def _not_found(exc: FedraftError) -> bool:
    import grpc

    code = getattr(exc, "code", None)
    return code == Code.NOT_FOUND or code == grpc.StatusCode.NOT_FOUND


def _opener(args: argparse.Namespace) -> Identity | None:
    """The key that opens the box here: --open-key, else the node key of --config, else none (the API)."""
    if args.open_key is not None:
        return load_private_key(args.open_key)
    if getattr(args, "config", None) is not None:
        return load_private_key(load_node_config(args.config).key_path)
    return None


def _value(args: argparse.Namespace) -> bytes:
    given = [x for x in (args.value is not None, args.file is not None, args.stdin) if x]
    if len(given) != 1:
        raise CallerError("give the value once: as an argument, --file FILE or --stdin")
    value: bytes
    if args.file is not None:
        try:
            value = Path(args.file).read_bytes()
        except OSError as exc:
            raise CallerError(f"--file {args.file}: {exc.strerror}") from None
    elif args.stdin:
        value = sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
    else:
        value = str(args.value).encode()
    if len(value) > MAX_VALUE_BYTES:
        raise CallerError(f"a memory value is at most {MAX_VALUE_BYTES} bytes ({MAX_VALUE_BYTES // 1024} KiB)")
    return value


def _record(r: Any) -> dict[str, Any]:
    return {"key": r.key, "class": r.data_class, "level": r.level, "pool": r.pool, "author": r.author,
            "version": r.version, "pools": list(r.pools), "modified_index": r.modified_index,
            "modified": timestamp(r.modified_ms), "box_bytes": r.box_bytes}


def put(args: argparse.Namespace) -> int:
    key = _key(args.memory_key)
    problem = name_problem("data class", args.data_class)
    if problem is not None:
        raise CallerError(f"--class: {problem}")
    value = _value(args)
    with connect(args) as client:
        result = client.put_memory(key, value, args.data_class, expected_version=args.expect_version, check=False)
    if result.code != Code.OK:
        return refused(result, HINTS)
    record = result.governance.memory
    emit(args, {"index": result.index, **_record(record)},
         f"put {key} version {record.version} ({record.data_class}, {record.level}) at index {result.index}: "
         f"sealed to {', '.join(record.pools)}")
    return EXIT_OK


def get(args: argparse.Namespace) -> int:
    key = _key(args.memory_key)
    opener = _opener(args)
    with connect(args) as client:
        try:
            value = client.open_memory(key, opener, min_index=args.min_index)
        except FedraftError as exc:
            if _not_found(exc):
                print_error(exc.message)
                return NOT_FOUND_EXIT
            raise
    if wants_json(args):
        try:
            doc: dict[str, Any] = {"key": key, "value": value.decode()}
        except UnicodeDecodeError:
            doc = {"key": key, "value_base64": base64.b64encode(value).decode()}
        emit(args, doc, "")
    elif args.out is not None:
        args.out.write_bytes(value)
        print(f"wrote {len(value)} bytes to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(value)
        sys.stdout.flush()
    return EXIT_OK


def reseal(args: argparse.Namespace) -> int:
    key = _key(args.memory_key)
    opener = _opener(args)
    with connect(args) as client:
        try:
            result = client.reseal_memory(key, opener, check=False)
        except FedraftError as exc:
            if _not_found(exc):
                print_error(exc.message)
                return NOT_FOUND_EXIT
            raise
    if result.code != Code.OK:
        return refused(result, HINTS)
    record = result.governance.memory
    emit(args, {"index": result.index, **_record(record)},
         f"resealed {key}: version {record.version}, sealed to {', '.join(record.pools)}")
    return EXIT_OK


def delete(args: argparse.Namespace) -> int:
    key = _key(args.memory_key)
    with connect(args) as client:
        result = client.delete_memory(key, args.expect_version, check=False)
    if result.code != Code.OK:
        return refused(result, HINTS)
    emit(args, {"index": result.index, "key": key, "message": result.message}, result.message)
    return EXIT_OK


def list_memories(args: argparse.Namespace) -> int:
    with connect(args) as client:
        records = client.list("memories", prefix=args.prefix)
    rows = [_record(r) for r in records]
    if wants_json(args):
        emit(args, rows, "")
        return EXIT_OK
    if not rows:
        print("no memories" + (f" under {args.prefix}" if args.prefix else ""))
        return EXIT_OK
    emit_table(args, [{"key": r["key"], "class": f"{r['class']} ({r['level']})", "pool": r["pool"],
                       "author": r["author"], "version": r["version"], "sealed to": ", ".join(r["pools"]),
                       "modified": r["modified"]} for r in rows], title="fedraft memories")
    return EXIT_OK


def recipients(args: argparse.Namespace) -> int:
    problem = name_problem("data class", args.data_class)
    if problem is not None:
        raise CallerError(problem)
    with connect(args) as client:
        r = client.memory_recipients(args.data_class)
    doc = {"pool": r.pool, "class": r.data_class, "level": r.level,
           "recipients": [{"pool": x.pool, "trust": x.trust, "key_id": bytes(x.key_id).hex()} for x in r.recipients],
           "excluded": list(r.excluded)}
    if wants_json(args):
        emit(args, doc, "")
        return EXIT_OK
    print(f"class {r.data_class} ({r.level}) from {r.pool} is sealed to:")
    print_table(["pool", "trust", "key id"], [[x.pool, x.trust, bytes(x.key_id).hex()] for x in r.recipients])
    for line in r.excluded:
        print(f"not sealed to {line}")
    return EXIT_OK

