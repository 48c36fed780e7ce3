"""Writing a whole local federation to one directory: keys, CA, certificates, genesis, node configs, profiles.

Used by `fedraft init`, `fedraft demo` and the tests. Everything is generated in memory, written to a
staging directory inside DIR, checked with the same loaders the node and the client use, and only then
moved into place, so a failure leaves DIR as it was. Paths inside the written files are relative, so
the directory can be moved or copied as a whole.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedraft.config import (
    RaftTuning,
    check_node_against_genesis,
    load_genesis,
    load_node_config,
    load_profile,
)
from fedraft.crypto.keyfile import write_private_key, write_public_key
from fedraft.crypto.signing import Identity
from fedraft.crypto.tls import KeyAndCert, issue_node_cert, make_ca, spki_sha256
from fedraft.domain.genesis import FORMAT, GenesisError, encode_genesis, parse_genesis
from fedraft.errors import ConfigError

__all__ = [
    "DEFAULT_NAMES",
    "AdminFiles",
    "FederationLayout",
    "NodeFiles",
    "create_federation",
    "list_profiles",
    "node_configs",
]

# Node ids (= pool names) by federation size: an HQ, a GPU datacenter, a CPU branch, then edge sites.
DEFAULT_NAMES: Mapping[int, tuple[str, ...]] = {
    1: ("hq",),
    3: ("hq", "gpu-dc", "cpu-branch"),
    5: ("hq", "gpu-dc", "cpu-branch", "edge-1", "edge-2"),
}
# Region and tier of the default pools (the scheduler's specialty and region scores use them).
POOL_TRAITS: Mapping[str, tuple[str, str]] = {
    "hq": ("hq", "hq"), "gpu-dc": ("dc-east", "gpu"), "cpu-branch": ("branch-west", "cpu"),
}
SAMPLE_INVENTORIES = Path(__file__).parent / "inventory" / "samples"
# Each node gets a block of ports: api, peer, and one reserved for HTTP probes.
PORT_STRIDE = 10
GENESIS_FILE = "genesis.json"
README_FILE = "README.txt"
BREAK_GLASS_FILE = "break-glass.key"
NODE_CONFIG_FILE = "node.toml"
BOOTSTRAP_MARKER = "BOOTSTRAP"
PROFILE_SUFFIX = ".profile.toml"

# Genesis allows 64 characters; the admin is named "<pool>-admin".
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,57}")
_RESERVED_NAMES = {"ca", "admins", GENESIS_FILE.lower(), README_FILE.lower(), BREAK_GLASS_FILE,
                   BREAK_GLASS_FILE + ".pub"}


@dataclass(frozen=True)
class NodeFiles:
    node_id: str
    pool: str
    dir: Path
    config: Path
    key: Path
    tls_cert: Path
    tls_key: Path
    data_dir: Path
    bootstrap_marker: Path
    api_listen: str
    peer_listen: str
    http_listen: str = ""  # HTTP probes and metrics (base + 10i + 2)


@dataclass(frozen=True)
class AdminFiles:
    name: str
    pool: str
    key: Path
    profile: Path


@dataclass(frozen=True)
class FederationLayout:
    """Every path `create_federation` wrote (absolute), in voter order."""

    dir: Path
    federation: str
    cluster_id: bytes
    genesis: Path
    readme: Path
    ca_cert: Path
    ca_key: Path
    break_glass_key: Path
    nodes: tuple[NodeFiles, ...]
    admins: tuple[AdminFiles, ...]

    @property
    def node_configs(self) -> dict[str, Path]:
        return {n.node_id: n.config for n in self.nodes}

    @property
    def profiles(self) -> dict[str, Path]:
        return {a.pool: a.profile for a in self.admins}

    def node(self, node_id: str) -> NodeFiles:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    def private_keys(self) -> tuple[Path, ...]:
        """Every secret written (all mode 0600)."""
        return (self.ca_key, self.break_glass_key, *(p for n in self.nodes for p in (n.key, n.tls_key)),
                *(a.key for a in self.admins))

    def files(self) -> Iterator[Path]:
        yield from (self.genesis, self.readme, self.ca_cert, self.ca_key, self.break_glass_key)
        for n in self.nodes:
            yield from (n.config, n.key, n.tls_cert, n.tls_key, n.bootstrap_marker)
        for a in self.admins:
            yield from (a.key, a.profile)


def _pub(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def check_node_name(name: str) -> str:
    """`name` if it can be a node id (= pool name) and a directory of the layout, else ConfigError."""
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"node name {name!r} is not usable",
                          hint="start with a letter or digit; then ASCII letters, digits, '-', '_', '.'; "
                               "at most 58 characters")
    if name.lower() in _RESERVED_NAMES:
        raise ConfigError(f"node name {name!r} is reserved for the federation directory layout")
    return name


def _names(nodes: int | None, names: list[str] | None) -> tuple[str, ...]:
    if names is None:
        count = 3 if nodes is None else nodes
        if count not in DEFAULT_NAMES:
            raise ConfigError(f"a federation has 1, 3 or 5 voter nodes, not {count}")
        return DEFAULT_NAMES[count]
    if nodes is not None and nodes != len(names):
        raise ConfigError(f"{nodes} nodes requested but {len(names)} names given")
    if len(names) not in DEFAULT_NAMES:
        raise ConfigError(f"a federation has 1, 3 or 5 voter nodes, got {len(names)} names")
    for name in names:
        check_node_name(name)
    if len({n.lower() for n in names}) != len(names):
        raise ConfigError(f"node names must be unique (ignoring case): {', '.join(names)}")
    return tuple(names)


# Genesis allows 64 characters, but the CA's common name "fedraft CA <federation>" may have at most 64.
_FEDERATION_NAME_MAX = 48


def _federation_name(directory: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.name).strip("-_.")[:_FEDERATION_NAME_MAX].strip("-_.")
    return name or "fedraft"


def _address(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def check_host(host: str) -> str:
    """The bare host (no brackets) if nodes and clients can connect to it, else ConfigError."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified:
            raise ConfigError(f"host {host} is not an address anyone can connect to",
                              hint="--host is the address nodes and clients use to reach the nodes")
        return bare
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", bare):
        raise ConfigError(f"host {host!r} is neither an IP address nor a DNS name")
    return bare


def _check_raft(raft: Mapping[str, Any] | None) -> dict[str, int]:
    if not raft:
        return {}
    fields = set(RaftTuning.__dataclass_fields__)
    unknown = sorted(set(raft) - fields)
    if unknown:
        raise ConfigError(f"unknown raft setting(s) {', '.join(unknown)}", hint=f"known: {', '.join(sorted(fields))}")
    for key, value in raft.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"raft setting {key} must be an integer, got {value!r}")
    return dict(raft)


def toml_str(value: str) -> str:
    """A TOML basic string: JSON-style escapes are valid TOML, except that TOML has no \\/ (unused here)."""
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create `path` (never overwrite), write and fsync `data`, then set `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)


def _node_toml(node: NodeFiles, peers: list[NodeFiles], raft: dict[str, int], inventory_file: str | None) -> str:
    region, tier = POOL_TRAITS.get(node.node_id, ("", ""))
    lines = [
        f"# fedraft node config for node {node.node_id} (pool {node.pool}), written by `fedraft init`.",
        "# Relative paths are resolved against this file's directory.",
        f"node_id = {toml_str(node.node_id)}",
        f"genesis = {toml_str('../' + GENESIS_FILE)}",
        f"data_dir = {toml_str('data')}",
        f"key = {toml_str('node.key')}",
        f"tls_cert = {toml_str('tls.pem')}",
        f"tls_key = {toml_str('tls.key')}",
        f"ca_cert = {toml_str('../ca/ca.pem')}",
        f"api_listen = {toml_str(node.api_listen)}",
        f"peer_listen = {toml_str(node.peer_listen)}",
        f"log_level = {toml_str('info')}",
        "# HTTP probes and metrics: /health, /ready, /cluster/status, /cluster/peers, /metrics. No",
        "# authentication: keep this port on the host or an internal network, never public.",
        f"http_listen = {toml_str(node.http_listen)}" if node.http_listen else '# http_listen = "127.0.0.1:7402"',
        "",
        "# How this pool describes itself to the scheduler, and where its inventory comes from:",
        "# auto (NVML if there is a GPU driver, else inventory_file, else nothing), static, nvml, none.",
        f"region = {toml_str(region)}",
        f"tier = {toml_str(tier)}",
        "labels = []",
        f"inventory = {toml_str('static' if inventory_file else 'auto')}",
        f"inventory_file = {toml_str(inventory_file)}" if inventory_file else '# inventory_file = "inventory.toml"',
        "",
        "# The other voters' node-to-node listeners.",
        "[peers]",
        *(f"{toml_str(p.node_id)} = {toml_str(p.peer_listen)}" for p in peers),
        "",
        "# The other voters' API addresses (this node's pool agent sends heartbeats to the leader).",
        "[api_peers]",
        *(f"{toml_str(p.node_id)} = {toml_str(p.api_listen)}" for p in peers),
        "",
        "# Timing overrides (fedraft.config.RaftTuning); settings not listed keep their defaults.",
        "[raft]",
        *(f"{key} = {value}" for key, value in sorted(raft.items())),
    ]
    return "\n".join(lines) + "\n"


def _profile_toml(admin: AdminFiles, endpoints: list[str], cluster_id: bytes) -> str:
    lines = [
        f"# fedraft client profile for {admin.name} (pool {admin.pool}), written by `fedraft init`.",
        "# Use it with `fedraft <command> --profile FILE` or FEDRAFT_PROFILE=FILE.",
        f"name = {toml_str(admin.name)}",
        f"endpoints = [{', '.join(toml_str(e) for e in endpoints)}]",
        f"ca_cert = {toml_str('../ca/ca.pem')}",
        f"key = {toml_str(admin.key.name)}",
        f"cluster_id = {toml_str(cluster_id.hex())}",
    ]
    return "\n".join(lines) + "\n"


def _readme(federation: str, cluster_id: bytes, nodes: tuple[NodeFiles, ...]) -> str:
    node_lines = "\n".join(f"  {n.node_id + '/':<18}  node {n.node_id}: api {n.api_listen}, peer {n.peer_listen}"
                           for n in nodes)
    return f"""fedraft federation {federation}
cluster id {cluster_id.hex()}  (sha256 of {GENESIS_FILE} exactly as written; never edit that file)

  {GENESIS_FILE}        voters, admins and the break-glass key pinned at founding
  ca/ca.pem           federation CA certificate (every node and client trusts it)
  ca/ca.key           federation CA private key: MOVE IT OFFLINE; it is needed only to issue certificates
  {BREAK_GLASS_FILE}     break-glass private key: MOVE IT OFFLINE (hardware token / safe); it overrides a
                      missing voter pool's approval and re-founds a lost federation
{node_lines}
        node.toml node config; node.key identity; tls.pem/tls.key TLS; data/ its state
        (data/{BOOTSTRAP_MARKER} marks a data directory created here; an empty data directory
        without it needs --rejoin)
  admins/<pool>.key   one administrator key per voter pool
  admins/<pool>{PROFILE_SUFFIX}  client profile for that administrator (--profile)

Private keys are mode 0600. On a real deployment each host keeps only its own directory.
"""


def _existing(directory: Path, names: tuple[str, ...]) -> list[Path]:
    candidates = [directory / GENESIS_FILE, directory / BREAK_GLASS_FILE, directory / "ca", directory / "admins",
                  *(directory / n for n in names)]
    return [p for p in candidates if p.exists()]


def _remove_previous(directory: Path, names: tuple[str, ...]) -> None:
    """--force: remove a previous federation's files, including its node data (it belongs to the old genesis)."""
    old_nodes = set(node_configs(directory))
    for entry in (GENESIS_FILE, README_FILE, BREAK_GLASS_FILE, _pub(Path(BREAK_GLASS_FILE)).name):
        (directory / entry).unlink(missing_ok=True)
    for sub in ("ca", "admins", *old_nodes, *names):
        path = directory / sub
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def create_federation(directory: Path, *, nodes: int | None = None, base_port: int = 7400,
                      host: str = "127.0.0.1", names: list[str] | None = None,
                      raft: dict[str, Any] | None = None, force: bool = False,
                      sample_inventory: bool = False) -> FederationLayout:
    """Write a complete local federation of 1, 3 or 5 voters into `directory`.

    `sample_inventory` gives each default-named node the sample static inventory of its pool (the demo).
    `nodes` defaults to 3, or to len(names). `raft` overrides go into every node's [raft] table.
    Refuses to touch an existing federation unless `force`, which replaces it (and its node data).
    """
    directory = Path(directory).expanduser().resolve()
    node_ids = _names(nodes, names)
    raft_overrides = _check_raft(raft)
    bare_host = check_host(host)
    if base_port <= 0 or base_port + PORT_STRIDE * (len(node_ids) - 1) + 2 > 65535:
        raise ConfigError(f"base port {base_port} leaves no room for {len(node_ids)} nodes "
                          f"({PORT_STRIDE} ports each, up to 65535)")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    existing = _existing(directory, node_ids)
    if existing and not force:
        raise ConfigError(f"{directory} already holds a federation ({existing[0].name} exists)",
                          hint="choose another --dir, or pass --force to replace it and its node data")
    federation = _federation_name(directory)

    # Generate every secret and the genesis in memory first.
    ca = make_ca(federation)
    break_glass = Identity.generate()
    node_keys = {n: Identity.generate() for n in node_ids}
    admin_keys = {n: Identity.generate() for n in node_ids}
    tls = {n: issue_node_cert(ca, n, [bare_host]) for n in node_ids}
    genesis_doc = {
        "format": FORMAT,
        "federation": federation,
        "nonce": secrets.token_hex(16),
        "created_at_ms": int(time.time() * 1000),
        "voters": [{"node_id": n, "pool": n, "public_key": node_keys[n].public_key.hex(),
                    "tls_spki_sha256": spki_sha256(tls[n].cert_pem).hex()} for n in node_ids],
        "admins": [{"name": f"{n}-admin", "pool": n, "public_key": admin_keys[n].public_key.hex()}
                   for n in node_ids],
        "break_glass": {"public_key": break_glass.public_key.hex()},
    }
    genesis_bytes = encode_genesis(genesis_doc)
    try:
        genesis = parse_genesis(genesis_bytes)  # what we write must be what every node accepts
    except GenesisError as exc:
        raise ConfigError(f"cannot build a valid genesis: {exc}") from None
    cluster_id = hashlib.sha256(genesis_bytes).digest()

    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fedraft-init-", dir=directory))
    try:
        layout = _layout(staging, federation, cluster_id, node_ids, bare_host, base_port)
        _write_all(layout, genesis_bytes, ca, break_glass, node_keys, admin_keys, tls, raft_overrides,
                   sample_inventory)
        try:
            for n in layout.nodes:
                check_node_against_genesis(load_node_config(n.config), genesis)
            for a in layout.admins:
                load_profile(a.profile)
        except ConfigError as exc:  # e.g. inconsistent raft timing: name the file as it would have been
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                directory.rmdir()
            raise ConfigError(exc.message.replace(str(staging), str(directory)), hint=exc.hint) from None
        if force:
            _remove_previous(directory, node_ids)
        for entry in sorted(staging.iterdir()):
            os.replace(entry, directory / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _layout(directory, federation, cluster_id, node_ids, bare_host, base_port)


def _layout(root: Path, federation: str, cluster_id: bytes, node_ids: tuple[str, ...], host: str,
            base_port: int) -> FederationLayout:
    nodes = tuple(
        NodeFiles(node_id=n, pool=n, dir=root / n, config=root / n / NODE_CONFIG_FILE, key=root / n / "node.key",
                  tls_cert=root / n / "tls.pem", tls_key=root / n / "tls.key", data_dir=root / n / "data",
                  bootstrap_marker=root / n / "data" / BOOTSTRAP_MARKER,
                  api_listen=_address(host, base_port + PORT_STRIDE * i),
                  peer_listen=_address(host, base_port + PORT_STRIDE * i + 1),
                  http_listen=_address(host, base_port + PORT_STRIDE * i + 2))
        for i, n in enumerate(node_ids))
    admins = tuple(AdminFiles(name=f"{n}-admin", pool=n, key=root / "admins" / f"{n}.key",
                              profile=root / "admins" / f"{n}{PROFILE_SUFFIX}") for n in node_ids)
    return FederationLayout(dir=root, federation=federation, cluster_id=cluster_id, genesis=root / GENESIS_FILE,
                            readme=root / README_FILE, ca_cert=root / "ca" / "ca.pem", ca_key=root / "ca" / "ca.key",
                            break_glass_key=root / BREAK_GLASS_FILE, nodes=nodes, admins=admins)


def _write_all(layout: FederationLayout, genesis_bytes: bytes, ca: KeyAndCert, break_glass: Identity,
               node_keys: dict[str, Identity], admin_keys: dict[str, Identity], tls: dict[str, KeyAndCert],
               raft: dict[str, int], sample_inventory: bool) -> None:
    federation, cluster_id = layout.federation, layout.cluster_id
    write_new_file(layout.genesis, genesis_bytes)
    write_new_file(layout.readme, _readme(federation, cluster_id, layout.nodes).encode())
    write_new_file(layout.ca_cert, ca.cert_pem)
    write_new_file(layout.ca_key, ca.key_pem, 0o600)
    write_private_key(layout.break_glass_key, break_glass, label=f"{federation} break-glass")
    write_public_key(_pub(layout.break_glass_key), break_glass.public_key, label=f"{federation} break-glass")
    created_at_ms = int(time.time() * 1000)
    for node in layout.nodes:
        others = [p for p in layout.nodes if p.node_id != node.node_id]
        inventory_file = None
        sample = SAMPLE_INVENTORIES / f"{node.node_id}.toml"
        if sample_inventory and sample.is_file():
            inventory_file = "inventory.toml"
            write_new_file(node.dir / inventory_file, sample.read_bytes())
        write_new_file(node.config, _node_toml(node, others, raft, inventory_file).encode())
        write_private_key(node.key, node_keys[node.node_id], label=f"node {node.node_id}")
        write_public_key(_pub(node.key), node_keys[node.node_id].public_key, label=f"node {node.node_id}")
        write_new_file(node.tls_cert, tls[node.node_id].cert_pem)
        write_new_file(node.tls_key, tls[node.node_id].key_pem, 0o600)
        node.data_dir.mkdir(mode=0o700)
        marker = (f"# Written by `fedraft init`: this data directory belongs to a new federation.\n"
                  f"node_id = {toml_str(node.node_id)}\ncluster_id = {toml_str(cluster_id.hex())}\n"
                  f"created_at_ms = {created_at_ms}\n")
        write_new_file(node.bootstrap_marker, marker.encode(), 0o600)
    endpoints = [n.api_listen for n in layout.nodes]
    for admin in layout.admins:
        write_private_key(admin.key, admin_keys[admin.pool], label=admin.name)
        write_public_key(_pub(admin.key), admin_keys[admin.pool].public_key, label=admin.name)
        write_new_file(admin.profile, _profile_toml(admin, endpoints, cluster_id).encode())


def _voter_order(directory: Path) -> list[str]:
    try:
        return list(load_genesis(directory / GENESIS_FILE).node_ids)
    except ConfigError:
        return []


def node_configs(directory: Path) -> dict[str, Path]:
    """Node id → node.toml of every node directory in a federation directory, in genesis voter order."""
    directory = Path(directory)
    found = {p.parent.name: p for p in sorted(directory.glob(f"*/{NODE_CONFIG_FILE}"))
             if not p.parent.name.startswith(".")}
    order = [n for n in _voter_order(directory) if n in found]
    return {n: found[n] for n in [*order, *(n for n in found if n not in order)]}


def list_profiles(directory: Path) -> dict[str, Path]:
    """Pool → client profile written by init, in genesis voter order."""
    directory = Path(directory)
    found = {p.name[: -len(PROFILE_SUFFIX)]: p for p in sorted((directory / "admins").glob(f"*{PROFILE_SUFFIX}"))}
    order = [n for n in _voter_order(directory) if n in found]
    return {n: found[n] for n in [*order, *(n for n in found if n not in order)]}
