"""`fedraft export-log` and `fedraft verify`: the signed log with its checkpoints, checked offline (SPEC §4)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from fedraft.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    PROFILE_ENV,
    add_command,
    add_output_arg,
    add_target_args,
    emit_json,
    resolve_target,
    wants_json,
)
from fedraft.errors import CallerError, ConfigError

EXPORT_DESCRIPTION = """Write the whole log to FILE: the genesis, every signed entry the node archived (from index
1, even after journal compaction), every signed checkpoint with the nodes' cosignatures, the
principals table and the node's chain head, in fedraft's versioned export format. Check it anywhere
with `fedraft verify FILE`.

With --config NODE.toml the node's state directory is read directly, on that host, whether or not
the node is running. Otherwise the export comes from a node's API (--profile, $FEDRAFT_PROFILE or
--endpoints/--key/--ca/--cluster-id): one node's applied state at one index."""

VERIFY_DESCRIPTION = """Check an exported log offline, with nothing but the file and the federation's genesis:
- every entry is signed by a genesis voter node naming itself as leader, terms never go back and one
  node signs per term (D10); only pysyncobj's no-op entries (one per new term) may be missing;
- every envelope is signed by a key of the exported principals table added before it (the table is
  the one as of the export: key additions, revocations and rotations are not replayed, so a key's
  role at the time is not checked);
- the hash chain over the entries reaches each checkpoint's chain head, and each checkpoint carries
  valid cosignatures of a majority of the voters, matching their Cosign entries in the log.
Pass --genesis or --cluster-id (or a profile) to pin the federation; otherwise the genesis inside the
file is trusted and the report says so. Exit 0 if the log verifies, 1 naming the first bad index."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "export-log", func=export_log,
                    help="write the signed log with its checkpoints to a file",
                    description=EXPORT_DESCRIPTION,
                    example="fedraft export-log --out fed.frlog --config fed/hq/node.toml\n"
                            "fedraft export-log --out fed.frlog --profile fed/admins/hq.profile.toml")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the export")
    add_output_arg(p)
    add_target_args(p)

    p = add_command(subparsers, "verify", func=verify, help="check an exported log offline (signatures, chain, "
                                                            "checkpoints)",
                    description=VERIFY_DESCRIPTION,
                    example="fedraft verify fed.frlog --genesis fed/genesis.json\n"
                            "fedraft verify fed.frlog --cluster-id 3f2a...  -o json")
    p.add_argument("file", type=Path, metavar="FILE", help="a file written by `fedraft export-log`")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--genesis", type=Path, metavar="GENESIS.json", help="the federation's genesis file")
    group.add_argument("--cluster-id", metavar="HEX", help="the federation's cluster id (sha256 of genesis.json)")
    group.add_argument("--profile", type=Path, metavar="FILE", help=f"take the cluster id from a client profile "
                                                                    f"(default: ${PROFILE_ENV} if set)")
    p.add_argument("--max-problems", type=int, default=20, metavar="N", help="list at most N problems (default 20)")
    add_output_arg(p)


def _write_atomically(path: Path, chunks: Any) -> int:
    tmp = path.with_name(path.name + ".tmp")
    size = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    return size


def export_log(args: argparse.Namespace) -> int:
    from fedraft.crypto.logfile import CHECKPOINT, ENTRY, read_records

    if args.config is not None and not (args.endpoints or args.key or args.ca or args.cluster_id):
        from fedraft.config import load_node_config
        from fedraft.storage.log_export import export_records, open_state

        cfg = load_node_config(args.config)
        genesis = cfg.genesis()
        with open_state(cfg.data_dir / "state", genesis.cluster_id) as st:
            size = _write_atomically(args.out, export_records(st, genesis.raw))
        source = f"{cfg.node_id}'s state directory"
    else:
        from fedraft.client import Client

        with Client.from_profile(resolve_target(args)) as client:
            size = _write_atomically(args.out, client.export_log())
        source = "the API"
    records = list(read_records(args.out.read_bytes()))
    entries = [int.from_bytes(r.payload[:8], "big") for r in records if r.kind == ENTRY]
    checkpoints = sum(1 for r in records if r.kind == CHECKPOINT)
    doc = {"file": str(args.out), "bytes": size, "entries": len(entries), "last_index": entries[-1] if entries else 0,
           "checkpoints": checkpoints, "source": source}
    if wants_json(args):
        emit_json(doc)
    else:
        print(f"wrote {args.out}: {len(entries)} entries up to index {doc['last_index']}, {checkpoints} checkpoints, "
              f"{size} bytes (from {source})")
    return EXIT_OK


def _expected_cluster_id(args: argparse.Namespace) -> bytes | None:
    if args.genesis is not None:
        try:
            return hashlib.sha256(args.genesis.read_bytes()).digest()
        except OSError as exc:
            raise ConfigError(f"genesis {args.genesis}: {exc.strerror}") from None
    if args.cluster_id is not None:
        try:
            cluster_id = bytes.fromhex(args.cluster_id)
        except ValueError:
            cluster_id = b""
        if len(cluster_id) != 32:
            raise CallerError(f"--cluster-id {args.cluster_id!r} is not 64 hex digits")
        return cluster_id
    profile = args.profile or (Path(os.environ[PROFILE_ENV]) if os.environ.get(PROFILE_ENV) else None)
    if profile is not None:
        from fedraft.config import load_profile

        return load_profile(profile).cluster_id
    return None


def verify(args: argparse.Namespace) -> int:
    from fedraft.crypto.logfile import verify_log

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{args.file}: {exc.strerror}") from None
    report = verify_log(data, _expected_cluster_id(args))
    doc = {
        "ok": report.ok, "first_bad_index": report.first_bad, "cluster_id": report.cluster_id.hex(),
        "genesis_trusted_from_file": report.genesis_trusted_from_file, "entries": report.entries,
        "first_index": report.first_index, "last_index": report.last_index, "envelopes": report.envelopes,
        "chain_head": report.head.hex(), "checkpoints": report.checkpoints,
        "complete_checkpoints": report.complete_checkpoints, "anchored_index": report.anchored_index,
        "problems": [{"index": p.index, "message": p.message} for p in report.problems],
        "warnings": report.warnings,
    }
    if wants_json(args):
        emit_json(doc)
        return EXIT_OK if report.ok else EXIT_FAILURE
    print(f"cluster {report.cluster_id.hex()}: {report.entries} entries ({report.first_index}..{report.last_index}), "
          f"{report.envelopes} envelopes, {report.checkpoints} checkpoints ({report.complete_checkpoints} complete)")
    print(f"chain head {report.head.hex()}; anchored by a complete checkpoint up to index {report.anchored_index}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.ok:
        print("ok: every signature, the hash chain and every checkpoint verify")
        return EXIT_OK
    print(f"FAILED: first bad index {report.first_bad}" if report.first_bad else "FAILED")
    for problem in report.problems[:max(1, args.max_problems)]:
        print(f"  {problem}")
    if len(report.problems) > args.max_problems:
        print(f"  ... and {len(report.problems) - args.max_problems} more (-o json lists all)")
    return EXIT_FAILURE
