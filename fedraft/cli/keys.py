"""`fedraft keygen` (one Ed25519 identity key) and `fedraft init` (a whole local federation)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedraft.cli.common import (
    EXIT_OK,
    add_command,
    add_output_arg,
    emit_json,
    print_fields,
    print_table,
    wants_json,
    warn,
)
from fedraft.crypto.keyfile import write_private_key, write_public_key
from fedraft.crypto.signing import Identity
from fedraft.errors import CallerError
from fedraft.federation_files import create_federation


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = add_command(
        subparsers, "keygen", func=run_keygen,
        help="make an Ed25519 identity key (private file 0600, public file FILE.pub)",
        description="Make an Ed25519 identity key for a node, administrator, operator, submitter or agent.\n"
                    "The private key is written with mode 0600 and the public half next to it as FILE.pub.\n"
                    "Runs offline: no network, no federation needed.",
        example="fedraft keygen --out ~/.fedraft/alice.key --label alice\n"
                "fedraft keygen --out bob.key -o json",
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE", help="private key file to write")
    keygen.add_argument("--label", default="", metavar="TEXT", help="a note stored in both files (e.g. who owns it)")
    keygen.add_argument("--force", action="store_true", help="replace existing key files (the old key is lost)")
    add_output_arg(keygen)

    init = add_command(
        subparsers, "init", func=run_init,
        help="write a local federation: keys, CA, certificates, genesis, node configs, profiles",
        description="Write a complete federation of 1, 3 or 5 voter nodes into one directory: a genesis, a\n"
                    "federation CA, a directory per node (config, identity key, TLS certificate, data\n"
                    "directory), an administrator key and client profile per pool, and the break-glass key.\n"
                    "Node i listens for the API on BASE+10*i and for peers on BASE+10*i+1.",
        example="fedraft init --dir ./fed\n"
                "fedraft init --dir ./fed5 --nodes 5 --base-port 8400\n"
                "fedraft init --dir ./lab --names paris,berlin,rome -o json",
    )
    init.add_argument("--dir", type=Path, required=True, metavar="DIR", help="directory to write the federation to")
    init.add_argument("--nodes", type=int, choices=(1, 3, 5), default=None,
                      help="number of voter nodes (default 3, or the number of --names)")
    init.add_argument("--base-port", type=int, default=7400, metavar="PORT", help="first port (default 7400)")
    init.add_argument("--host", default="127.0.0.1", help="address the nodes listen on and are reached at "
                                                          "(default 127.0.0.1)")
    init.add_argument("--names", metavar="A,B,C", help="node ids (= pool names) instead of hq,gpu-dc,cpu-branch")
    init.add_argument("--force", action="store_true", help="replace an existing federation in DIR, node data included")
    add_output_arg(init)


def _pub(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def run_keygen(args: argparse.Namespace) -> int:
    out: Path = args.out.expanduser()
    pub = _pub(out)
    if not args.force:
        existing = [p for p in (out, pub) if p.exists() or p.is_symlink()]
        if existing:
            raise CallerError(f"{existing[0]} already exists", hint="pass --force to replace it (the old key is lost)")
    if out.is_dir():
        raise CallerError(f"{out} is a directory", hint="--out names the private key file to write")
    identity = Identity.generate()
    write_private_key(out, identity, label=args.label)
    write_public_key(pub, identity.public_key, label=args.label)
    result = {"private_key_file": str(out), "public_key_file": str(pub), "key_id": identity.key_id.hex(),
              "public_key": identity.public_key.hex(), "label": args.label}
    if wants_json(args):
        emit_json(result)
    else:
        print_fields([("key id", result["key_id"]), ("public key", result["public_key"]),
                      ("private key file", f"{out} (mode 0600: keep it secret)"), ("public key file", str(pub))]
                     + ([("label", args.label)] if args.label else []))
    return EXIT_OK


def _shown(path: Path) -> str:
    """Paths relative to the working directory when that is shorter, as an operator would type them."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if len(rel) < len(str(path)) else str(path)


def run_init(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names is not None else None
    layout = create_federation(args.dir, nodes=args.nodes, base_port=args.base_port, host=args.host, names=names,
                               force=args.force)
    offline = (f"move {_shown(layout.break_glass_key)} (break-glass key) and {_shown(layout.ca_key)} "
               "(CA key) offline; no running node needs them")
    if wants_json(args):
        emit_json({
            "dir": str(layout.dir),
            "federation": layout.federation,
            "cluster_id": layout.cluster_id.hex(),
            "genesis": str(layout.genesis),
            "ca_cert": str(layout.ca_cert),
            "ca_key": str(layout.ca_key),
            "break_glass_key": str(layout.break_glass_key),
            "nodes": [{"node_id": n.node_id, "pool": n.pool, "config": str(n.config), "api_listen": n.api_listen,
                       "peer_listen": n.peer_listen, "data_dir": str(n.data_dir)} for n in layout.nodes],
            "profiles": [{"pool": a.pool, "name": a.name, "profile": str(a.profile), "key": str(a.key)}
                         for a in layout.admins],
        })
        warn(offline)
        return EXIT_OK
    print_fields([("federation", layout.federation), ("cluster id", layout.cluster_id.hex()),
                  ("genesis", _shown(layout.genesis)), ("CA certificate", _shown(layout.ca_cert)),
                  ("break-glass key", f"{_shown(layout.break_glass_key)} (move it offline)")],
                 title=f"Wrote a {len(layout.nodes)}-node federation to {_shown(layout.dir)}")
    print()
    print_table(["node", "pool", "api", "peer", "config"],
                [(n.node_id, n.pool, n.api_listen, n.peer_listen, _shown(n.config)) for n in layout.nodes],
                title="Nodes")
    print()
    print_table(["pool", "admin", "profile"], [(a.pool, a.name, _shown(a.profile)) for a in layout.admins],
                title="Client profiles (use with --profile FILE or FEDRAFT_PROFILE=FILE)")
    print()
    sys.stdout.flush()
    warn(offline)
    return EXIT_OK
