"""`fedraft recover`: the offline, break-glass-signed re-founding of a federation (SPEC §6).

When two voter pools are lost for good, nothing commits any more. On an offline machine holding the
break-glass key, recover reads the last state directory of a surviving node (copied there, or the
node stopped) and writes a new genesis for new voters, naming the old cluster id and that state's
checkpoint (index, chain head, state digest). Node configs for the new voters are written as for any
genesis; their addresses live there, not in genesis.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedraft.cli.common import EXIT_OK, add_command, add_output_arg, emit, warn
from fedraft.errors import CallerError

EXAMPLE = ("fedraft recover --genesis old/genesis.json --break-glass-key /media/token/break-glass.key \\\n"
           "    --state old/hq/data/state --voter hq=keys/hq.key.pub,certs/hq.crt \\\n"
           "    --voter dc2@gpu-dc=keys/dc2.key.pub,certs/dc2.crt \\\n"
           "    --voter br2@cpu-branch=keys/br2.key.pub,certs/br2.crt \\\n"
           "    --out new/genesis.json")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        subparsers, "recover", func=recover, help="write a new genesis after two voter pools are lost (offline)",
        description="Re-found a federation below quorum for good (SPEC §6). Reads the surviving node's state\n"
                    "(read-only), writes a new genesis for the new voters that names the old cluster id and that\n"
                    "state's checkpoint, signed by the old federation's break-glass key. The admins the state\n"
                    "knows for the new voter pools are kept; --admin adds one for a pool that has none.\n"
                    "--verify NEW checks a recovered genesis against the old one instead.",
        example=EXAMPLE + "\nfedraft recover --genesis old/genesis.json --verify new/genesis.json")
    p.add_argument("--genesis", required=True, type=Path, metavar="FILE", help="the old federation's genesis.json")
    p.add_argument("--verify", type=Path, metavar="NEW", help="check that NEW was recovered from --genesis")
    p.add_argument("--break-glass-key", type=Path, metavar="FILE", help="the old break-glass private key file")
    p.add_argument("--state", type=Path, metavar="DIR", help="a surviving node's state directory (data/state)")
    p.add_argument("--voter", action="append", default=[], metavar="NODE[@POOL]=KEY.pub,TLS.crt",
                   help="a new voter node: its public key file and TLS certificate (repeat: 1, 3 or 5)")
    p.add_argument("--admin", action="append", default=[], metavar="NAME@POOL=KEY.pub",
                   help="an extra admin for a new voter pool")
    p.add_argument("--new-break-glass", type=Path, metavar="FILE.pub",
                   help="pin a new break-glass public key (default: keep the old one)")
    p.add_argument("--federation", metavar="NAME", help="the new federation's name (default: the old one)")
    p.add_argument("--out", type=Path, metavar="FILE", help="where to write the new genesis")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    add_output_arg(p)


def _voter(spec: str) -> tuple[str, str, Path, Path]:
    who, sep, files = spec.partition("=")
    key, comma, cert = files.partition(",")
    node, _, pool = who.partition("@")
    if not sep or not comma or not node or not key or not cert:
        raise CallerError(f"--voter {spec!r}: write NODE[@POOL]=KEY.pub,TLS.crt")
    return node, pool or node, Path(key), Path(cert)


def _admin(spec: str) -> tuple[str, str, Path]:
    who, sep, key = spec.partition("=")
    name, at, pool = who.partition("@")
    if not sep or not at or not name or not pool or not key:
        raise CallerError(f"--admin {spec!r}: write NAME@POOL=KEY.pub")
    return name, pool, Path(key)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CallerError(f"{what} {path}: {exc.strerror}") from None


def recover(args: argparse.Namespace) -> int:
    from fedraft.config import load_genesis
    from fedraft.crypto.keyfile import load_private_key, load_public_key
    from fedraft.crypto.tls import spki_sha256
    from fedraft.domain.genesis import Admin
    from fedraft.recovery import NewVoter, read_checkpoint, recovery_genesis, verify_recovery

    old = load_genesis(args.genesis)
    if args.verify is not None:
        checkpoint = verify_recovery(_read(args.verify, "genesis"), old)
        emit(args, {"ok": True, "old_cluster_id": old.cluster_id.hex(), "index": checkpoint.index,
                    "chain_head": checkpoint.chain_head.hex(), "state_digest": checkpoint.state_digest.hex()},
             f"{args.verify} was recovered from {old.federation} ({old.cluster_id.hex()[:16]}…) at index "
             f"{checkpoint.index}, chain head {checkpoint.chain_head.hex()[:16]}…, signed by its break-glass key")
        return EXIT_OK
    missing = [flag for flag, value in (("--break-glass-key", args.break_glass_key), ("--state", args.state),
                                        ("--out", args.out)) if value is None]
    if missing or not args.voter:
        raise CallerError(f"recover needs {', '.join(missing + ([] if args.voter else ['--voter']))}",
                          hint="fedraft recover --help")
    if args.out.exists() and not args.force:
        raise CallerError(f"{args.out} already exists", hint="pass --force to replace it")
    voters = []
    for spec in args.voter:
        node, pool, key, cert = _voter(spec)
        voters.append(NewVoter(node, pool, load_public_key(key), spki_sha256(_read(cert, "TLS certificate"))))
    checkpoint, admins = read_checkpoint(args.state, old)
    for spec in args.admin:
        name, pool, key = _admin(spec)
        admins.append(Admin(name, pool, load_public_key(key)))
    raw = recovery_genesis(old, checkpoint, voters, admins, load_private_key(args.break_glass_key),
                           new_break_glass_key=load_public_key(args.new_break_glass) if args.new_break_glass else None,
                           federation=args.federation)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(raw)
    new = load_genesis(args.out)
    emit(args, {"ok": True, "genesis": str(args.out), "cluster_id": new.cluster_id.hex(),
                "old_cluster_id": old.cluster_id.hex(), "index": checkpoint.index,
                "chain_head": checkpoint.chain_head.hex(), "state_digest": checkpoint.state_digest.hex(),
                "voters": [v.node_id for v in voters], "admins": [f"{a.name}@{a.pool}" for a in new.admins]},
         f"wrote {args.out}: cluster id {new.cluster_id.hex()}\nrecovered from {old.cluster_id.hex()[:16]}… at index "
         f"{checkpoint.index} (chain head {checkpoint.chain_head.hex()[:16]}…)\nadmins: "
         + ", ".join(f"{a.name}@{a.pool}" for a in new.admins))
    warn("give each new voter a node config (addresses) naming this genesis and a data directory holding an "
         "empty BOOTSTRAP file, as `fedraft init` does; keep the old genesis and log to verify the history")
    return EXIT_OK
