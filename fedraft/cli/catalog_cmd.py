"""`fedraft catalog list|show|publish|replica|promote`: the model catalog (SPEC §5).

Every model has one master pool, the only one that publishes its versions; satellites report the copies
they hold, and the scheduler prefers pools holding the latest version of a workload's `--model`. A
version is a positive integer that only increases. Moving the master (`promote`) is critical: an admin
of another pool proposes it and every voter pool approves.
"""

from __future__ import annotations

import argparse
from typing import Any

from fedraft.cli.common import (
    EXIT_OK,
    add_command,
    add_output_arg,
    add_target_args,
    emit,
    emit_json,
    emit_table,
    print_error,
    print_fields,
    print_table,
    wants_json,
)
from fedraft.cli.placement_common import NOT_FOUND_EXIT, connect, integer, name, refused, timestamp
from fedraft.domain.catalog.commands import DIGEST_BYTES, MAX_GPU_MEMORY_MB, MAX_SIZE_BYTES, MAX_VERSION
from fedraft.domain.outcome import Code
from fedraft.errors import CallerError

SHOW_HINT = "`fedraft catalog show {name}` lists its versions and which pools hold them"
LIST_HINT = "`fedraft catalog list` lists the models"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    catalog = add_command(
        subparsers, "catalog", func=_no_action, help="the model catalog: versions, master pools, replicas",
        description="The model catalog. Each model has one master pool that publishes its versions (positive\n"
                    "integers that only increase); satellite pools report the copies they hold. Workloads\n"
                    "submitted with --model prefer pools holding its latest version.",
        example="fedraft catalog list\n"
                "fedraft catalog publish llama-7b --version 1 --sha256 <64 hex> --size 13476839424 --gpu-mem 16000",
    )
    actions = catalog.add_subparsers(title="actions", metavar="ACTION")

    p = add_command(actions, "list", func=list_models, help="list the models, their master and latest version",
                    example="fedraft catalog list\nfedraft catalog list -o json")
    _common(p)

    p = add_command(actions, "show", func=show, help="one model: its versions and the pools holding them",
                    example="fedraft catalog show llama-7b\nfedraft catalog show llama-7b -o json")
    p.add_argument("model", metavar="NAME")
    _common(p)

    p = add_command(
        actions, "publish", func=publish, help="publish a new version of a model from your pool",
        description="Publish a model version from your pool (the profile key's pool; admin or operator). The\n"
                    "first publish of a name makes your pool its master; later versions come from the master\n"
                    "only, each above the last.",
        example="fedraft catalog publish llama-7b --version 2 --sha256 9f86d0...0f00a08 --size 13476839424 "
                "--gpu-mem 16000",
    )
    p.add_argument("model", metavar="NAME", help="1-63 of a-z 0-9 . _ -")
    p.add_argument("--version", required=True, metavar="V", help="a whole number above the latest version")
    p.add_argument("--sha256", required=True, metavar="HEX", help="sha256 of the model's bytes (64 hex digits)")
    p.add_argument("--size", required=True, metavar="BYTES", help="size of the model in bytes")
    p.add_argument("--gpu-mem", metavar="MB", help="GPU memory one replica needs, in MiB (default 0)")
    _common(p)

    p = add_command(
        actions, "replica", func=replica, help="report that a pool holds a verified copy of a version",
        description="Report that a pool holds a verified copy of name@version (check its sha256 first). Signed\n"
                    "by the pool's node or agent (--config NODE.toml on its host), or an operator or admin of\n"
                    "that pool. The pool defaults to the signing key's own.",
        example="fedraft catalog replica llama-7b --version 2 --config fed/gpu-dc/node.toml\n"
                "fedraft catalog replica llama-7b --version 2 --pool gpu-dc",
    )
    p.add_argument("model", metavar="NAME")
    p.add_argument("--version", required=True, metavar="V", help="the published version held")
    p.add_argument("--pool", metavar="POOL", default="", help="the pool holding it (default: the key's pool)")
    _common(p)

    p = add_command(
        actions, "promote", func=promote, help="make another pool the master of a model (critical)",
        description="Make POOL the master of a model; the old master becomes a satellite. POOL must hold the\n"
                    "latest version. Critical: proposed by an admin of another pool (a satellite never\n"
                    "promotes itself), executed once every voter pool approved.",
        example="fedraft catalog promote llama-7b gpu-dc --profile fed/admins/hq.profile.toml",
    )
    p.add_argument("model", metavar="NAME")
    p.add_argument("pool", metavar="POOL", help="the new master")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    add_target_args(p)
    add_output_arg(p)


def _no_action(args: argparse.Namespace) -> int:
    raise CallerError("fedraft catalog: say list, show, publish, replica or promote",
                      hint="fedraft catalog --help")


# --- records as dicts ------------------------------------------------------------------------------

def size_text(n: int) -> str:
    """`13.5 GB`-style (powers of 1000, as model sizes are usually quoted)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _holders(m: Any) -> list[str]:
    latest = m.versions[-1].version if m.versions else 0
    return sorted({m.master, *(r.pool for r in m.replicas if r.version == latest)})


def _model_doc(m: Any) -> dict[str, Any]:
    return {
        "name": m.name, "master": m.master, "master_since_ms": m.master_since_ms,
        "latest": m.versions[-1].version if m.versions else 0, "holders": _holders(m),
        "versions": [{"version": v.version, "sha256": v.sha256.hex(), "size_bytes": v.size_bytes,
                      "gpu_memory_mb": v.gpu_memory_mb, "published_ms": v.published_ms,
                      "published_at": timestamp(v.published_ms), "published_index": v.published_index,
                      "published_by": v.published_by} for v in m.versions],
        "replicas": [{"pool": r.pool, "version": r.version, "reported_ms": r.reported_ms,
                      "reported_at": timestamp(r.reported_ms)} for r in m.replicas],
    }


def _model_row(m: Any) -> dict[str, Any]:
    latest = m.versions[-1] if m.versions else None
    return {"name": m.name, "master": m.master, "latest": latest.version if latest else "",
            "versions": len(m.versions), "size": size_text(latest.size_bytes) if latest else "",
            "gpu_mem_mb": latest.gpu_memory_mb if latest else "", "holders": ", ".join(_holders(m))}


def _find(client: Any, model: str) -> Any | None:
    return next((m for m in client.list("catalog", prefix=model) if m.name == model), None)


# --- commands --------------------------------------------------------------------------------------

def list_models(args: argparse.Namespace) -> int:
    with connect(args) as client:
        records = client.list("catalog")
    if wants_json(args):
        emit_json([_model_doc(m) for m in records])
    else:
        emit_table(args, [_model_row(m) for m in records], title=f"fedraft catalog ({len(records)} models)")
    return EXIT_OK


def show(args: argparse.Namespace) -> int:
    model = name("model", args.model)
    with connect(args) as client:
        m = _find(client, model)
    if m is None:
        print_error(f"model {model} is not in the catalog", LIST_HINT)
        return NOT_FOUND_EXIT
    doc = _model_doc(m)
    if wants_json(args):
        emit_json(doc)
        return EXIT_OK
    print_fields([("model", m.name), ("master", f"{m.master} (since {timestamp(m.master_since_ms)})"),
                  ("latest", doc["latest"]), ("holders of the latest", ", ".join(doc["holders"]))])
    print()
    print_table(["version", "sha256", "size", "gpu_mem_mb", "published_by", "published_at", "index"],
                [[v["version"], v["sha256"], size_text(v["size_bytes"]), v["gpu_memory_mb"], v["published_by"],
                  v["published_at"], v["published_index"]] for v in doc["versions"]], title="versions")
    print()
    rows = [[m.master, doc["latest"], "master", ""]] + [
        [r["pool"], r["version"], "satellite" + ("" if r["version"] == doc["latest"] else " (behind)"),
         r["reported_at"]] for r in doc["replicas"]]
    print_table(["pool", "version", "role", "reported_at"], rows, title="copies")
    return EXIT_OK


def _digest(text: str) -> bytes:
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        digest = b""
    if len(digest) != DIGEST_BYTES:
        raise CallerError(f"--sha256: {text!r} is not {DIGEST_BYTES * 2} hex digits",
                          hint="sha256sum MODEL_FILE prints it")
    return digest


def publish(args: argparse.Namespace) -> int:
    model = name("model", args.model)
    version = integer(args.version, "--version", 1, MAX_VERSION)
    digest = _digest(args.sha256)
    size = integer(args.size, "--size", 1, MAX_SIZE_BYTES)
    gpu_mem = integer(args.gpu_mem, "--gpu-mem", 0, MAX_GPU_MEMORY_MB)
    with connect(args) as client:
        result = client.publish_model(model, version, digest, size, gpu_mem, check=False)
    if result.code != 0:
        return refused(result, {Code.ALREADY_EXISTS: SHOW_HINT.format(name=model),
                                Code.FAILED_PRECONDITION: SHOW_HINT.format(name=model),
                                Code.PERMISSION_DENIED: "only an admin or operator of the model's master pool "
                                                        "publishes; " + SHOW_HINT.format(name=model)})
    emit(args, {"ok": True, "index": result.index, "model": model, "version": version, "message": result.message},
         f"{result.message or f'published {model} version {version}'} (index {result.index})")
    return EXIT_OK


def replica(args: argparse.Namespace) -> int:
    model = name("model", args.model)
    version = integer(args.version, "--version", 1, MAX_VERSION)
    pool = name("pool", args.pool, "--pool") if args.pool else ""
    with connect(args) as client:
        result = client.report_replica(model, version, pool, check=False)
    if result.code != 0:
        return refused(result, {Code.NOT_FOUND: SHOW_HINT.format(name=model),
                                Code.PERMISSION_DENIED: "a pool reports only its own copies: sign with a key "
                                                        "of that pool (its node: --config NODE.toml)"})
    emit(args, {"ok": True, "index": result.index, "model": model, "version": version, "pool": pool,
                "message": result.message},
         f"{result.message} (index {result.index})")
    return EXIT_OK


def promote(args: argparse.Namespace) -> int:
    model = name("model", args.model)
    pool = name("pool", args.pool)
    with connect(args) as client:
        result = client.promote_master(model, pool, check=False)
    if result.code != 0:
        return refused(result, {Code.NOT_FOUND: LIST_HINT,
                                Code.FAILED_PRECONDITION: SHOW_HINT.format(name=model),
                                Code.PERMISSION_DENIED: f"an admin of a pool other than {pool} proposes it"})
    emit(args, {"ok": True, "index": result.index, "model": model, "pool": pool, "message": result.message},
         f"{result.message or f'{pool} is the master of {model}'} (index {result.index})")
    return EXIT_OK
