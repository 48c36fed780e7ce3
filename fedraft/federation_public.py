"""A federation of several hosts without any machine holding every private key (SPEC §3, decision 0015).

1. `fedraft keygen --node ID --out DIR` on each node's host: the node's Ed25519 key, its P-256 TLS key
   and a certificate signing request, and its pool's administrator key, all private (0600) in DIR;
   the public half in one shareable file, `DIR/ID.public.json`.
2. `fedraft init --from-public PUBDIR --dir OUT` on the CA holder's machine: reads every
   `*.public.json`, signs each TLS request with the federation CA (made here, or an existing one
   given), pins each node's Ed25519 key and TLS key hash in the genesis, and writes for each node a
   bundle OUT/ID/ of public files only (node.toml, genesis.json, ca.pem, tls.pem, the administrator's
   profile, data/BOOTSTRAP).
3. Each host copies its bundle into its keygen DIR and starts `fedraft node --config DIR/node.toml`.

The CA key (and the break-glass key, unless its public half is given) are the only secrets of step 2;
both go offline. Nothing a host sends in step 1 is secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedraft.config import check_node_against_genesis, load_node_config, load_profile
from fedraft.crypto.keyfile import load_public_key, write_private_key, write_public_key
from fedraft.crypto.signing import Identity
from fedraft.crypto.tls import KeyAndCert, csr_spki_sha256, make_ca, make_node_csr, sign_node_csr
from fedraft.domain.genesis import FORMAT, GenesisError, encode_genesis, parse_genesis
from fedraft.errors import ConfigError
from fedraft.federation_files import (
    BOOTSTRAP_MARKER,
    DEFAULT_NAMES,
    GENESIS_FILE,
    NODE_CONFIG_FILE,
    check_host,
    check_node_name,
    toml_str,
    write_new_file,
)

__all__ = ["PUBLIC_KIND", "PUBLIC_SUFFIX", "AssembledFederation", "NodeKeys", "assemble_from_public",
           "make_node_keys"]

PUBLIC_KIND = "fedraft-node-public/1"
PUBLIC_SUFFIX = ".public.json"
MAX_PUBLIC_FILE = 64 * 1024
NODE_KEY, TLS_KEY, ADMIN_KEY = "node.key", "tls.key", "admin.key"
CA_FILE, TLS_CERT = "ca.pem", "tls.pem"
PROFILE_SUFFIX = ".profile.toml"


@dataclass(frozen=True)
class NodeKeys:
    """What `make_node_keys` wrote on a node's host."""

    node_id: str
    dir: Path
    public_file: Path
    private_files: tuple[Path, ...]
    node_key_id: str


def make_node_keys(node_id: str, directory: Path, *, host: str = "127.0.0.1", base_port: int = 7400,
                   admin_public_key: Path | None = None, region: str = "", tier: str = "",
                   force: bool = False) -> NodeKeys:
    """Step 1 on a node's host: private keys in `directory`, public material in `ID.public.json`."""
    check_node_name(node_id)
    bare_host = check_host(host)
    if not 0 < base_port <= 65533:
        raise ConfigError(f"base port {base_port} leaves no room for the api, peer and http ports")
    directory = Path(directory).expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    names = [NODE_KEY, NODE_KEY + ".pub", TLS_KEY, f"{node_id}{PUBLIC_SUFFIX}"]
    if admin_public_key is None:
        names += [ADMIN_KEY, ADMIN_KEY + ".pub"]
    existing = [directory / n for n in names if (directory / n).exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists", hint="pass --force to replace the node's keys "
                                                                 "(only before the federation is founded)")
    admin_key = load_public_key(admin_public_key) if admin_public_key is not None else None

    node = Identity.generate()
    admin = Identity.generate() if admin_key is None else None
    tls = make_node_csr(node_id, [bare_host])
    address = (f"[{bare_host}]" if ":" in bare_host else bare_host) + ":{}"
    admin_name = f"{node_id}-admin"
    public = {
        "kind": PUBLIC_KIND,
        "node_id": node_id,
        "pool": node_id,
        "node_public_key": node.public_key.hex(),
        "admin": {"name": admin_name, "public_key": (admin_key or (admin.public_key if admin else b"")).hex()},
        "tls_csr": tls.cert_pem.decode(),
        "api_address": address.format(base_port),
        "peer_address": address.format(base_port + 1),
        "http_address": address.format(base_port + 2),
        "region": region,
        "tier": tier,
    }
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for n in names:
        (directory / n).unlink(missing_ok=True)
    write_private_key(directory / NODE_KEY, node, label=f"node {node_id}")
    write_public_key(directory / (NODE_KEY + ".pub"), node.public_key, label=f"node {node_id}")
    write_new_file(directory / TLS_KEY, tls.key_pem, 0o600)
    private = [directory / NODE_KEY, directory / TLS_KEY]
    if admin is not None:
        write_private_key(directory / ADMIN_KEY, admin, label=admin_name)
        write_public_key(directory / (ADMIN_KEY + ".pub"), admin.public_key, label=admin_name)
        private.append(directory / ADMIN_KEY)
    public_file = directory / f"{node_id}{PUBLIC_SUFFIX}"
    write_new_file(public_file, (json.dumps(public, indent=2) + "\n").encode())
    return NodeKeys(node_id, directory, public_file, tuple(private), node.key_id.hex())


# ----- step 2: assemble -----

@dataclass(frozen=True)
class _PublicNode:
    node_id: str
    node_public_key: bytes
    admin_name: str
    admin_public_key: bytes
    tls_csr: bytes
    api_address: str
    peer_address: str
    http_address: str
    region: str
    tier: str
    source: Path


_ADDRESS_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}")


def _field(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string")
    return value


def _key(doc: dict[str, Any], key: str, where: str) -> bytes:
    try:
        raw = bytes.fromhex(_field(doc, key, where))
    except ValueError:
        raise ConfigError(f"{where}: {key} is not hex") from None
    if len(raw) != 32:
        raise ConfigError(f"{where}: {key} must be a 32-byte Ed25519 public key")
    return raw


def _read_public(path: Path) -> _PublicNode:
    where = str(path)
    try:
        if path.stat().st_size > MAX_PUBLIC_FILE:
            raise ConfigError(f"{where}: larger than {MAX_PUBLIC_FILE} bytes: not a node's public file")
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not a node's public file ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{where}: not a node's public file (nested too deeply)") from None
    if not isinstance(doc, dict) or doc.get("kind") != PUBLIC_KIND:
        raise ConfigError(f"{where}: not a node's public file (kind must be {PUBLIC_KIND!r})")
    if any(k in doc for k in ("seed", "private_key", "key_pem")):
        raise ConfigError(f"{where}: holds private key material: never share it; make the keys again")
    node_id = check_node_name(_field(doc, "node_id", where))
    admin = doc.get("admin")
    if not isinstance(admin, dict):
        raise ConfigError(f"{where}: admin must be an object with name and public_key")
    addresses = [_field(doc, k, where) for k in ("api_address", "peer_address", "http_address")]
    for a in addresses:
        if not _ADDRESS_RE.fullmatch(a) or not 0 < int(a.rpartition(":")[2]) < 65536:
            raise ConfigError(f"{where}: {a!r} is not a host:port address")
    return _PublicNode(node_id=node_id, node_public_key=_key(doc, "node_public_key", where),
                       admin_name=_field(admin, "name", where), admin_public_key=_key(admin, "public_key", where),
                       tls_csr=_field(doc, "tls_csr", where).encode(), api_address=addresses[0],
                       peer_address=addresses[1], http_address=addresses[2],
                       region=_field(doc, "region", where) if "region" in doc else "",
                       tier=_field(doc, "tier", where) if "tier" in doc else "", source=path)


def _read_all_public(directory: Path) -> list[_PublicNode]:
    files = sorted(Path(directory).glob(f"*{PUBLIC_SUFFIX}"))
    if not files:
        raise ConfigError(f"{directory} holds no *{PUBLIC_SUFFIX} file",
                          hint="run `fedraft keygen --node ID --out DIR` on each host and copy DIR/ID.public.json here")
    nodes = sorted((_read_public(f) for f in files), key=lambda n: n.node_id)
    if len(nodes) not in DEFAULT_NAMES:
        raise ConfigError(f"a federation has 1, 3 or 5 voter nodes, found {len(nodes)} public files in {directory}")
    for what, values in (("node id", [n.node_id.lower() for n in nodes]),
                         ("node key", [n.node_public_key for n in nodes]),
                         ("admin key", [n.admin_public_key for n in nodes]),
                         ("admin name", [n.admin_name for n in nodes]),
                         ("TLS key", [csr_spki_sha256_checked(n) for n in nodes]),
                         ("address", [a for n in nodes for a in (n.api_address, n.peer_address, n.http_address)])):
        if len(set(values)) != len(values):
            raise ConfigError(f"two public files share a {what}: each node must make its own keys and ports")
    return nodes


def csr_spki_sha256_checked(node: _PublicNode) -> bytes:
    try:
        return csr_spki_sha256(node.tls_csr)
    except ValueError as exc:
        raise ConfigError(f"{node.source}: tls_csr is not a PEM certificate signing request ({exc})") from None


@dataclass(frozen=True)
class AssembledFederation:
    dir: Path
    federation: str
    cluster_id: bytes
    genesis: Path
    ca_cert: Path
    ca_key: Path | None          # written here (move it offline); None when an existing CA signed
    break_glass_key: Path | None  # written here (move it offline); None when its public half was given
    bundles: dict[str, Path]      # node id -> the directory of public files to copy to its host


def _node_toml(node: _PublicNode, others: list[_PublicNode], raft: dict[str, int]) -> str:
    lines = [
        f"# fedraft node config for node {node.node_id}, written by `fedraft init --from-public`.",
        "# Copy this directory's files into the node's keygen directory (beside node.key and tls.key).",
        f"node_id = {toml_str(node.node_id)}",
        f"genesis = {toml_str(GENESIS_FILE)}",
        'data_dir = "data"',
        f"key = {toml_str(NODE_KEY)}",
        f"tls_cert = {toml_str(TLS_CERT)}",
        f"tls_key = {toml_str(TLS_KEY)}",
        f"ca_cert = {toml_str(CA_FILE)}",
        f"api_listen = {toml_str(node.api_address)}",
        f"peer_listen = {toml_str(node.peer_address)}",
        f"http_listen = {toml_str(node.http_address)}",
        'log_level = "info"',
        f"region = {toml_str(node.region)}",
        f"tier = {toml_str(node.tier)}",
        'inventory = "auto"',
        "",
        "[peers]",
        *(f"{toml_str(p.node_id)} = {toml_str(p.peer_address)}" for p in others),
        "",
        "[api_peers]",
        *(f"{toml_str(p.node_id)} = {toml_str(p.api_address)}" for p in others),
        "",
        "[raft]",
        *(f"{k} = {v}" for k, v in sorted(raft.items())),
    ]
    return "\n".join(lines) + "\n"


def _load_ca(ca_cert: Path | None, ca_key: Path | None, federation: str) -> tuple[KeyAndCert, bool]:
    if (ca_cert is None) != (ca_key is None):
        raise ConfigError("give both --ca-cert and --ca-key, or neither (a new CA is made)")
    if ca_cert is None or ca_key is None:
        return make_ca(federation), True
    try:
        return KeyAndCert(ca_key.read_bytes(), ca_cert.read_bytes()), False
    except OSError as exc:
        raise ConfigError(f"cannot read the CA: {exc}") from None


def assemble_from_public(public_dir: Path, out: Path, *, federation: str | None = None,
                         ca_cert: Path | None = None, ca_key: Path | None = None,
                         break_glass_public: Path | None = None,
                         raft: dict[str, int] | None = None) -> AssembledFederation:
    """Step 2: genesis, CA-signed certificates, configs and profiles from the nodes' public files only."""
    nodes = _read_all_public(public_dir)
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty", hint="assemble into a new directory")
    name = federation or re.sub(r"[^A-Za-z0-9_.-]+", "-", out.name).strip("-_.")[:48] or "fedraft"
    ca, new_ca = _load_ca(ca_cert, ca_key, name)
    certs = {n.node_id: sign_node_csr(ca, n.tls_csr, n.node_id) for n in nodes}
    break_glass: Identity | None = None
    if break_glass_public is None:
        break_glass = Identity.generate()
        break_glass_key = break_glass.public_key
    else:
        break_glass_key = load_public_key(break_glass_public)
    genesis_doc = {
        "format": FORMAT,
        "federation": name,
        "nonce": secrets.token_hex(16),
        "created_at_ms": int(time.time() * 1000),
        "voters": [{"node_id": n.node_id, "pool": n.node_id, "public_key": n.node_public_key.hex(),
                    "tls_spki_sha256": csr_spki_sha256(n.tls_csr).hex()} for n in nodes],
        "admins": [{"name": n.admin_name, "pool": n.node_id, "public_key": n.admin_public_key.hex()}
                   for n in nodes],
        "break_glass": {"public_key": break_glass_key.hex()},
    }
    genesis_bytes = encode_genesis(genesis_doc)
    try:
        genesis = parse_genesis(genesis_bytes)
    except GenesisError as exc:
        raise ConfigError(f"cannot build a valid genesis from {public_dir}: {exc}") from None
    cluster_id = hashlib.sha256(genesis_bytes).digest()

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fedraft-assemble-", dir=out))
    try:
        write_new_file(staging / GENESIS_FILE, genesis_bytes)
        (staging / "ca").mkdir()
        write_new_file(staging / "ca" / CA_FILE, ca.cert_pem)
        if new_ca:
            write_new_file(staging / "ca" / "ca.key", ca.key_pem, 0o600)
        if break_glass is not None:
            write_private_key(staging / "break-glass.key", break_glass, label=f"{name} break-glass")
        endpoints = [n.api_address for n in nodes]
        for node in nodes:
            bundle = staging / node.node_id
            bundle.mkdir()
            write_new_file(bundle / GENESIS_FILE, genesis_bytes)
            write_new_file(bundle / CA_FILE, ca.cert_pem)
            write_new_file(bundle / TLS_CERT, certs[node.node_id])
            others = [p for p in nodes if p is not node]
            write_new_file(bundle / NODE_CONFIG_FILE, _node_toml(node, others, dict(raft or {})).encode())
            profile = "\n".join([
                f"# fedraft client profile for {node.admin_name} (pool {node.node_id}).",
                "# Keep it beside admin.key (made by keygen --node) and ca.pem.",
                f"name = {toml_str(node.admin_name)}",
                f"endpoints = [{', '.join(toml_str(e) for e in endpoints)}]",
                f"ca_cert = {toml_str(CA_FILE)}",
                f"key = {toml_str(ADMIN_KEY)}",
                f"cluster_id = {toml_str(cluster_id.hex())}",
            ]) + "\n"
            write_new_file(bundle / f"{node.admin_name}{PROFILE_SUFFIX}", profile.encode())
            (bundle / "data").mkdir(mode=0o700)
            write_new_file(bundle / "data" / BOOTSTRAP_MARKER,
                       (f"# Written by `fedraft init --from-public`: a data directory of a new federation.\n"
                        f"node_id = {toml_str(node.node_id)}\ncluster_id = {toml_str(cluster_id.hex())}\n"
                        f"created_at_ms = {int(time.time() * 1000)}\n").encode(), 0o600)
            check_node_against_genesis(load_node_config(bundle / NODE_CONFIG_FILE), genesis)
            load_profile(bundle / f"{node.admin_name}{PROFILE_SUFFIX}")
        for entry in sorted(staging.iterdir()):
            os.replace(entry, out / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return AssembledFederation(
        dir=out, federation=name, cluster_id=cluster_id, genesis=out / GENESIS_FILE, ca_cert=out / "ca" / CA_FILE,
        ca_key=out / "ca" / "ca.key" if new_ca else None,
        break_glass_key=out / "break-glass.key" if break_glass is not None else None,
        bundles={n.node_id: out / n.node_id for n in nodes})
