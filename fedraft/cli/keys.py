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
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="private key file to write (with --node: the node's directory)")
    keygen.add_argument("--label", default="", metavar="TEXT", help="a note stored in both files (e.g. who owns it)")
    multi = keygen.add_argument_group(
        "a node of a multi-host federation (docs/multi-host.md)",
        "--node ID writes into the directory --out the node's Ed25519 key, its TLS key and certificate request,\n"
        "its pool's admin key (private, 0600), and ID.public.json: the public half to send to whoever runs\n"
        "`fedraft init --from-public`. Example: fedraft keygen --node hq --out /etc/fedraft/hq --host 10.0.0.1")
    multi.add_argument("--node", metavar="ID", help="the node id (= pool name) to make keys for")
    multi.add_argument("--host", default="127.0.0.1", help="address the node is reached at (default 127.0.0.1)")
    multi.add_argument("--base-port", type=int, default=7400, metavar="PORT",
                       help="api port; peer = PORT+1, http probes = PORT+2 (default 7400)")
    multi.add_argument("--admin-pub", type=Path, metavar="FILE",
                       help="the pool administrator's existing public key (else admin.key is made here)")
    multi.add_argument("--region", default="", help="the pool's region (scheduler)")
    multi.add_argument("--tier", default="", help="the pool's tier, e.g. gpu or cpu (scheduler)")
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
    public = init.add_argument_group(
        "assemble a multi-host federation from the nodes' public files (docs/multi-host.md)",
        "--from-public PUBDIR reads every ID.public.json there, signs the TLS requests with the CA, writes\n"
        "genesis.json and one bundle of public files per node into --dir. No node private key is needed.\n"
        "Example: fedraft init --from-public ./pub --dir ./fed --break-glass-pub bg.key.pub")
    public.add_argument("--from-public", type=Path, metavar="PUBDIR", help="directory of the nodes' *.public.json")
    public.add_argument("--ca-cert", type=Path, metavar="PEM", help="an existing federation CA certificate")
    public.add_argument("--ca-key", type=Path, metavar="KEY", help="its private key (else a new CA is made)")
    public.add_argument("--break-glass-pub", type=Path, metavar="FILE",
                        help="public half of a break-glass key made offline (else one is made in --dir)")
    public.add_argument("--federation", metavar="NAME", help="federation name (default: --dir's name)")
    add_output_arg(init)


def _pub(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def run_keygen(args: argparse.Namespace) -> int:
    if args.node is not None:
        return _keygen_node(args)
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


def _keygen_node(args: argparse.Namespace) -> int:
    from fedraft.federation_public import make_node_keys

    keys = make_node_keys(args.node, args.out, host=args.host, base_port=args.base_port,
                          admin_public_key=args.admin_pub, region=args.region, tier=args.tier, force=args.force)
    if wants_json(args):
        emit_json({"node_id": keys.node_id, "dir": str(keys.dir), "public_file": str(keys.public_file),
                   "private_files": [str(p) for p in keys.private_files], "node_key_id": keys.node_key_id})
        return EXIT_OK
    print_fields([("node", keys.node_id), ("node key id", keys.node_key_id),
                  ("private keys", ", ".join(_shown(p) for p in keys.private_files) + " (0600: never copy them)"),
                  ("public file", f"{_shown(keys.public_file)} (send it to whoever assembles the federation)")],
                 title=f"Keys for node {keys.node_id} in {_shown(keys.dir)}")
    return EXIT_OK


def _init_from_public(args: argparse.Namespace) -> int:
    from fedraft.federation_public import assemble_from_public

    fed = assemble_from_public(args.from_public, args.dir, federation=args.federation, ca_cert=args.ca_cert,
                               ca_key=args.ca_key, break_glass_public=args.break_glass_pub)
    offline = [str(p) for p in (fed.ca_key, fed.break_glass_key) if p is not None]
    if wants_json(args):
        emit_json({"dir": str(fed.dir), "federation": fed.federation, "cluster_id": fed.cluster_id.hex(),
                   "genesis": str(fed.genesis), "ca_cert": str(fed.ca_cert),
                   "ca_key": str(fed.ca_key) if fed.ca_key else None,
                   "break_glass_key": str(fed.break_glass_key) if fed.break_glass_key else None,
                   "bundles": {n: str(p) for n, p in fed.bundles.items()}})
    else:
        print_fields([("federation", fed.federation), ("cluster id", fed.cluster_id.hex()),
                      ("genesis", _shown(fed.genesis)), ("CA certificate", _shown(fed.ca_cert))],
                     title=f"Assembled a {len(fed.bundles)}-node federation in {_shown(fed.dir)}")
        print()
        print_table(["node", "copy these files into the node's keygen directory"],
                    [(n, f"{_shown(p)}/*") for n, p in fed.bundles.items()], title="Bundles (public files only)")
        print()
        sys.stdout.flush()
    if offline:
        warn(f"move {' and '.join(offline)} offline; no running node needs them")
    return EXIT_OK


def run_init(args: argparse.Namespace) -> int:
    if args.from_public is not None:
        if args.names or args.nodes or args.force:
            raise CallerError("--from-public takes the nodes from the public files",
                              hint="drop --names, --nodes and --force")
        return _init_from_public(args)
    if args.ca_cert or args.ca_key or args.break_glass_pub or args.federation:
        raise CallerError("--ca-cert, --ca-key, --break-glass-pub and --federation go with --from-public")
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
