"""Typed configuration: node configs and client profiles (TOML), with errors an operator can act on.

Relative paths inside a file are resolved against the file's own directory, so a federation
directory written by `fedraft init` can be moved as a whole.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedraft.domain.genesis import Genesis, GenesisError, parse_genesis
from fedraft.errors import ConfigError

MAX_CONFIG_BYTES = 64 * 1024


@dataclass(frozen=True)
class RaftTuning:
    """Raft timing. Defaults suit a LAN/loopback; tests raise the election timeouts on 2 cores."""

    election_min_ms: int = 1000
    election_max_ms: int = 2000
    heartbeat_ms: int = 100
    tick_ms: int = 20
    # Journal entries kept before a snapshot is taken and the journal compacted.
    compaction_min_entries: int = 5000
    compaction_min_time_s: int = 600


@dataclass(frozen=True)
class PeerAddress:
    node_id: str
    address: str  # host:port of the peer's node-to-node listener


@dataclass(frozen=True)
class AlertsConfig:
    """`[alerts]`: where this node sends each new incident (SPEC §8 alert hooks); both optional."""

    webhook: str | None = None     # http(s) URL: POST of the incident JSON
    exec_path: Path | None = None  # program run with the incident JSON on stdin


TELEMETRY_EXPORTERS = ("none", "console", "otlp")


@dataclass(frozen=True)
class TelemetryConfig:
    """`[telemetry]`: OpenTelemetry traces and metrics (docs/decisions/0014-telemetry.md); off by default."""

    exporter: str = "none"         # none, console (stdout) or otlp (gRPC to a collector; the [otlp] extra)
    endpoint: str = ""             # OTLP collector, e.g. http://127.0.0.1:4317; "" = the exporter's default
    metrics_interval_ms: int = 10_000  # how often metrics are exported


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    node_id: str
    genesis_path: Path
    data_dir: Path
    key_path: Path  # Ed25519 node identity
    tls_cert: Path  # P-256 certificate for mutual TLS (node-to-node) and server TLS (API)
    tls_key: Path
    ca_cert: Path
    peer_listen: str  # host:port
    api_listen: str  # host:port
    peers: tuple[PeerAddress, ...]
    raft: RaftTuning = field(default_factory=RaftTuning)
    log_level: str = "info"
    api_peers: tuple[PeerAddress, ...] = ()  # the other nodes' API addresses (the pool agent follows the leader)
    inventory: str = "auto"                  # auto, static, nvml, none
    inventory_file: Path | None = None
    region: str = ""
    tier: str = ""
    labels: tuple[str, ...] = ()
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    # HTTP probes and metrics (/health, /ready, /cluster/*, /metrics); None: off. Keep it off public networks.
    http_listen: str | None = None
    watch_history_entries: int = 200_000  # applied entries whose results Watch history keeps (pool-local)
    fanout_folder: Path | None = None     # what this pool's fan-out handler searches (decision 0009); None: no fan-out
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    def genesis(self) -> Genesis:
        return load_genesis(self.genesis_path)


@dataclass(frozen=True)
class Profile:
    """What a client needs: where the nodes are, how to trust them, and which key to sign with."""

    path: Path
    name: str
    endpoints: tuple[str, ...]
    ca_cert: Path
    key_path: Path
    cluster_id: bytes


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # bounded: never slurp a huge or endless file
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found", hint="run `fedraft init` or check the path") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} is not valid TOML: nested too deeply") from None


def _get(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in doc:
        raise ConfigError(f"{where}: missing required setting {key!r}")
    value = doc[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _address(value: str, where: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {value!r} is not a host:port address")
    return value


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


INVENTORY_KINDS = ("auto", "static", "nvml", "none")


def _peer_table(doc: dict[str, Any], table: str, where: str) -> tuple[PeerAddress, ...]:
    if table not in doc:
        if table == "peers":
            raise ConfigError(f"{where}: missing required setting 'peers'")
        return ()
    peers_doc = _get(doc, table, dict, where)
    return tuple(PeerAddress(str(k), _address(_get(peers_doc, k, str, f"{where} [{table}]"), f"{where} [{table}]"))
                 for k in sorted(peers_doc))


def _labels(doc: dict[str, Any], where: str) -> tuple[str, ...]:
    labels = _get(doc, "labels", list, where) if "labels" in doc else []
    if not all(isinstance(x, str) for x in labels) or len(labels) > 32:
        raise ConfigError(f"{where}: labels must be a list of at most 32 strings")
    return tuple(sorted(set(labels)))


def _alerts(doc: dict[str, Any], base: Path, where: str) -> AlertsConfig:
    if "alerts" not in doc:
        return AlertsConfig()
    table = doc["alerts"]
    where = f"{where} [alerts]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table with webhook and/or exec")
    unknown = sorted(set(table) - {"webhook", "exec"})
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}", hint="known: webhook, exec")
    webhook = _get(table, "webhook", str, where) if "webhook" in table else None
    if webhook is not None:
        from urllib.parse import urlsplit

        parts = urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: webhook {webhook!r} is not an http:// or https:// URL with a host")
    exec_path = _path(base, _get(table, "exec", str, where)) if "exec" in table else None
    if exec_path is not None and not (exec_path.is_file() and os.access(exec_path, os.X_OK)):
        raise ConfigError(f"{where}: exec {str(exec_path)!r} is not an executable file",
                          hint="give the path of a program (relative paths are from the config's directory)")
    return AlertsConfig(webhook=webhook, exec_path=exec_path)


def _telemetry(doc: dict[str, Any], where: str) -> TelemetryConfig:
    if "telemetry" not in doc:
        return TelemetryConfig()
    table = doc["telemetry"]
    where = f"{where} [telemetry]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table with exporter, endpoint, metrics_interval_ms")
    unknown = sorted(set(table) - {"exporter", "endpoint", "metrics_interval_ms"})
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}",
                          hint="known: exporter, endpoint, metrics_interval_ms")
    exporter = _get(table, "exporter", str, where) if "exporter" in table else "none"
    if exporter not in TELEMETRY_EXPORTERS:
        raise ConfigError(f"{where}: exporter must be one of {', '.join(TELEMETRY_EXPORTERS)}, got {exporter!r}")
    endpoint = _get(table, "endpoint", str, where) if "endpoint" in table else ""
    if endpoint and exporter != "otlp":
        raise ConfigError(f"{where}: endpoint is for the otlp exporter only")
    interval = _get(table, "metrics_interval_ms", int, where) if "metrics_interval_ms" in table else 10_000
    if interval < 100:
        raise ConfigError(f"{where}: metrics_interval_ms must be at least 100")
    return TelemetryConfig(exporter=exporter, endpoint=endpoint, metrics_interval_ms=interval)


def load_node_config(path: Path) -> NodeConfig:
    path = Path(path)
    doc = _read_toml(path, "node config")
    where = str(path)
    base = path.parent
    known = {"node_id", "genesis", "data_dir", "key", "tls_cert", "tls_key", "ca_cert", "peer_listen",
             "api_listen", "peers", "raft", "log_level", "api_peers", "inventory", "inventory_file", "region",
             "tier", "labels", "alerts", "http_listen", "watch_history_entries", "fanout_folder", "telemetry"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    peers = _peer_table(doc, "peers", where)
    raft_doc = doc.get("raft", {})
    if not isinstance(raft_doc, dict):
        raise ConfigError(f"{where}: [raft] must be a table")
    defaults = RaftTuning()
    raft_fields = set(RaftTuning.__dataclass_fields__)
    bad = sorted(set(raft_doc) - raft_fields)
    if bad:
        raise ConfigError(f"{where} [raft]: unknown setting(s) {', '.join(bad)}")
    values = {k: _get(raft_doc, k, int, f"{where} [raft]") if k in raft_doc else getattr(defaults, k)
              for k in raft_fields}
    raft = RaftTuning(**values)
    if not 0 < 3 * raft.heartbeat_ms < raft.election_min_ms < raft.election_max_ms:
        raise ConfigError(f"{where} [raft]: need 0 < 3*heartbeat_ms < election_min_ms < election_max_ms")
    if raft.tick_ms <= 0 or raft.compaction_min_entries < 2 or raft.compaction_min_time_s <= 0:
        raise ConfigError(f"{where} [raft]: tick_ms, compaction_min_time_s > 0 and compaction_min_entries >= 2")
    cfg = NodeConfig(
        path=path,
        node_id=_get(doc, "node_id", str, where),
        genesis_path=_path(base, _get(doc, "genesis", str, where)),
        data_dir=_path(base, _get(doc, "data_dir", str, where)),
        key_path=_path(base, _get(doc, "key", str, where)),
        tls_cert=_path(base, _get(doc, "tls_cert", str, where)),
        tls_key=_path(base, _get(doc, "tls_key", str, where)),
        ca_cert=_path(base, _get(doc, "ca_cert", str, where)),
        peer_listen=_address(_get(doc, "peer_listen", str, where), where),
        api_listen=_address(_get(doc, "api_listen", str, where), where),
        peers=peers,
        raft=raft,
        log_level=_get(doc, "log_level", str, where) if "log_level" in doc else "info",
        api_peers=_peer_table(doc, "api_peers", where),
        inventory=_get(doc, "inventory", str, where) if "inventory" in doc else "auto",
        inventory_file=_path(base, _get(doc, "inventory_file", str, where)) if "inventory_file" in doc else None,
        region=_get(doc, "region", str, where) if "region" in doc else "",
        tier=_get(doc, "tier", str, where) if "tier" in doc else "",
        labels=_labels(doc, where),
        alerts=_alerts(doc, base, where),
        http_listen=_address(_get(doc, "http_listen", str, where), where) if "http_listen" in doc else None,
        watch_history_entries=(_get(doc, "watch_history_entries", int, where)
                               if "watch_history_entries" in doc else 200_000),
        fanout_folder=_path(base, _get(doc, "fanout_folder", str, where)) if "fanout_folder" in doc else None,
        telemetry=_telemetry(doc, where),
    )
    if cfg.fanout_folder is not None and not cfg.fanout_folder.is_dir():
        raise ConfigError(f"{where}: fanout_folder {str(cfg.fanout_folder)!r} is not a directory",
                          hint="give the folder this pool's fan-out answers search (relative to the config)")
    if cfg.watch_history_entries < 1:
        raise ConfigError(f"{where}: watch_history_entries must be at least 1")
    if cfg.inventory not in INVENTORY_KINDS:
        raise ConfigError(f"{where}: inventory must be one of {', '.join(INVENTORY_KINDS)}, got {cfg.inventory!r}")
    if cfg.node_id in {p.node_id for p in peers}:
        raise ConfigError(f"{where}: [peers] must not list this node ({cfg.node_id}) itself")
    return cfg


def load_genesis(path: Path) -> Genesis:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"genesis {path}: {exc.strerror}") from None
    try:
        return parse_genesis(raw)
    except GenesisError as exc:
        raise ConfigError(f"genesis {path}: {exc}") from None


def check_node_against_genesis(cfg: NodeConfig, genesis: Genesis) -> None:
    if genesis.voter(cfg.node_id) is None:
        raise ConfigError(f"{cfg.path}: node {cfg.node_id} is not a voter in genesis",
                          hint=f"voters are {', '.join(genesis.node_ids)}")
    expected = set(genesis.node_ids) - {cfg.node_id}
    listed = {p.node_id for p in cfg.peers}
    if listed != expected:
        raise ConfigError(f"{cfg.path}: [peers] must list exactly the other voters {sorted(expected)}, "
                          f"got {sorted(listed)}")


def load_profile(path: Path) -> Profile:
    path = Path(path)
    doc = _read_toml(path, "client profile")
    where = str(path)
    unknown = sorted(set(doc) - {"name", "endpoints", "ca_cert", "key", "cluster_id"})
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    endpoints = _get(doc, "endpoints", list, where)
    if not endpoints or not all(isinstance(e, str) for e in endpoints):
        raise ConfigError(f"{where}: endpoints must be a non-empty list of host:port strings")
    try:
        cluster_id = bytes.fromhex(_get(doc, "cluster_id", str, where))
    except ValueError:
        raise ConfigError(f"{where}: cluster_id must be hex") from None
    if len(cluster_id) != 32:
        raise ConfigError(f"{where}: cluster_id must be 32 bytes of hex")
    return Profile(
        path=path,
        name=_get(doc, "name", str, where) if "name" in doc else path.stem,
        endpoints=tuple(_address(e, where) for e in endpoints),
        ca_cert=_path(path.parent, _get(doc, "ca_cert", str, where)),
        key_path=_path(path.parent, _get(doc, "key", str, where)),
        cluster_id=cluster_id,
    )
