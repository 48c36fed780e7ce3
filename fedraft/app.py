"""The composition root: builds a running node from its config. The only place that wires parts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fedraft.agent import PoolAgent, PoolIdentity
from fedraft.client import Client
from fedraft.config import NodeConfig, check_node_against_genesis
from fedraft.consensus.engine import EngineTuning, RaftEngine
from fedraft.consensus.journal import LmdbJournal
from fedraft.consensus.peer_transport import GrpcTransport, RejoinGuard
from fedraft.cosigner import Cosigner
from fedraft.crypto.keyfile import load_private_key
from fedraft.crypto.signing import Signer
from fedraft.errors import ConfigError, OperatorError
from fedraft.inventory.select import open_inventory
from fedraft.service.alerts import AlertDispatcher, AlertTargets
from fedraft.service.api import MAX_REQUEST_BYTES, SERVICE, FederationService
from fedraft.service.audit import LocalRecorder, RefusedRequest
from fedraft.service.fanout import SERVICE as FANOUT_SERVICE
from fedraft.service.fanout import FanoutService
from fedraft.service.fanout_search import FolderSearch
from fedraft.service.incidents import IncidentsService
from fedraft.service.memories import SERVICE as MEMORIES_SERVICE
from fedraft.service.memories import MemoriesService
from fedraft.service.metrics import NodeMetrics, NodeSources, make_metrics
from fedraft.service.otel_metrics import OtelMetrics
from fedraft.service.probes import ProbeServer
from fedraft.service.signals import NodeSignals
from fedraft.service.watch import WatchHub
from fedraft.storage.local import LocalStore, local_path
from fedraft.storage.state import StateStore
from fedraft.storage.watch_results import WatchResults, watch_path
from fedraft.telemetry import NodeTelemetry, start_node_telemetry
from fedraft.transport.links import PeerLinks
from fedraft.transport.server_tls import ServerTls

log = logging.getLogger(__name__)

BOOTSTRAP_MARKER = "BOOTSTRAP"
REJOIN_FLOOR_META = "rejoin_floor"
REJOIN_ACTIVE_META = "rejoin_active"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None


def check_data_dir(data_dir: Path, rejoin: bool) -> bool:
    """SPEC D5: an empty data directory starts only with --rejoin, unless init just made it.

    Returns True when this start is a rejoin (the node must not vote until it heard a leader).
    """
    has_state = (data_dir / "journal").exists() or (data_dir / "state").exists()
    if has_state:
        return False
    if (data_dir / BOOTSTRAP_MARKER).exists():
        return False
    if not rejoin:
        raise OperatorError(
            f"data directory {data_dir} is empty and was not created by `fedraft init`",
            hint="if this node was a member before (its disk was lost or replaced), start it with --rejoin "
                 "so it cannot vote twice in a term; it then catches up from the leader")
    return True


class FedraftNode:
    def __init__(self, cfg: NodeConfig, *, rejoin: bool = False) -> None:
        self.cfg = cfg
        self.genesis = cfg.genesis()
        check_node_against_genesis(cfg, self.genesis)
        self.rejoining = check_data_dir(cfg.data_dir, rejoin)
        self.identity = load_private_key(cfg.key_path)
        voter = self.genesis.voter(cfg.node_id)
        assert voter is not None
        if self.identity.public_key != voter.public_key:
            raise ConfigError(f"{cfg.key_path} is not the key genesis pins for node {cfg.node_id}")
        self.cert_pem = _read(cfg.tls_cert, "TLS certificate")
        self.key_pem = _read(cfg.tls_key, "TLS key")
        self.ca_pem = _read(cfg.ca_cert, "CA certificate")
        self.stopped = threading.Event()
        self.links: PeerLinks | None = None
        self.api_tls: ServerTls | None = None
        self.incidents: IncidentsService | None = None
        self.store: StateStore | None = None
        self.engine: RaftEngine | None = None
        self.server: grpc.Server | None = None
        self.health = health.HealthServicer()
        self.agent: PoolAgent | None = None
        self.cosigner: Cosigner | None = None
        self.local: LocalStore | None = None
        self.recorder: LocalRecorder | None = None
        self.alerts: AlertDispatcher | None = None
        self.watch_results: WatchResults | None = None
        self.watch_hub: WatchHub | None = None
        self.metrics: NodeMetrics | None = None
        self.signals: NodeSignals | None = None
        self.telemetry: NodeTelemetry | None = None
        self.probes: ProbeServer | None = None
        self.fanout: FanoutService | None = None

    def raise_incident(self, kind: str, detail: dict[str, Any] | None = None, *, level: str = "critical",
                       key: str | None = None) -> None:
        """Record an incident in this node's incident journal and alert on it; see LocalRecorder.raise_incident.

        For app-level code that sees something an operator must hear about (a break-glass override,
        ...); never call it from apply. `key` makes it idempotent across restarts and replays.
        """
        if self.recorder is None:
            raise RuntimeError("the node is not started")
        self.recorder.raise_incident(kind, detail, level=level, key=key)

    def reload_tls(self) -> None:
        """Re-read tls_cert, tls_key and ca_cert and use them without a restart (SIGHUP; decision 0015).

        Checked first (the key matches the certificate, which names this node, is valid now, keeps the
        key genesis pins, and is signed by a CA of the bundle); a bad set raises ConfigError and the
        node keeps what it had. Peer links, the API server and this node's own clients switch over.
        """
        from fedraft.crypto.tls import check_node_tls

        cfg = self.cfg
        cert, key, ca = (_read(cfg.tls_cert, "TLS certificate"), _read(cfg.tls_key, "TLS key"),
                         _read(cfg.ca_cert, "CA certificate"))
        voter = self.genesis.voter(cfg.node_id)
        check_node_tls(cfg.node_id, cert, key, ca, voter.tls_spki_sha256 if voter is not None else None)
        self.cert_pem, self.key_pem, self.ca_pem = cert, key, ca
        if self.links is not None:
            self.links.reload_tls(cert, key, ca)
        if self.api_tls is not None:
            self.api_tls.update(key, cert)
        for client in (self.agent.client if self.agent else None, self.cosigner.client if self.cosigner else None):
            if client is not None:
                client.trust_ca(ca)
        if self.fanout is not None:
            self.fanout.trust_ca(ca)

    def start(self) -> None:
        cfg = self.cfg
        self.telemetry = start_node_telemetry(cfg.telemetry, cfg.node_id)  # a missing exporter fails here
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = StateStore(cfg.data_dir / "state", self.genesis)
        links = PeerLinks(
            node_id=cfg.node_id, identity=self.identity, cluster_id=self.genesis.cluster_id,
            voters=self.genesis.voters, peer_addresses={p.node_id: p.address for p in cfg.peers},
            listen_address=cfg.peer_listen, tls_cert_pem=self.cert_pem, tls_key_pem=self.key_pem,
            ca_cert_pem=self.ca_pem)
        links.start()  # bind now: a port in use is an operator error at start-up, not a dead tick thread
        self.links = links
        rejoining = self.rejoining

        def transport_factory(sync_obj: Any, self_node: Any, other_nodes: Any, *, journal: LmdbJournal,
                              before_release: Callable[[], None], raft_min_timeout: float) -> GrpcTransport:
            floor = journal.get_meta(REJOIN_FLOOR_META)
            active = rejoining or journal.get_meta(REJOIN_ACTIVE_META) == b"1"
            if rejoining:
                journal.set_meta(REJOIN_ACTIVE_META, b"1")
            guard = RejoinGuard(
                active=active,
                load_floor=lambda: int.from_bytes(floor, "big") if floor else None,
                store_floor=lambda t: journal.set_meta(REJOIN_FLOOR_META, t.to_bytes(8, "big")))
            # Decision 0017: a leader's appends leave before its own journal fsync, unless a term or
            # vote change is pending.
            return GrpcTransport(sync_obj, self_node, other_nodes, links=links, rejoin=guard,
                                 before_release=before_release, raft_min_timeout=raft_min_timeout,
                                 appends_first=lambda: not journal.meta_pending())

        raft = cfg.raft
        tuning = EngineTuning(
            election_min_s=raft.election_min_ms / 1000, election_max_s=raft.election_max_ms / 1000,
            heartbeat_s=raft.heartbeat_ms / 1000, tick_s=raft.tick_ms / 1000,
            compaction_min_entries=raft.compaction_min_entries, compaction_min_time_s=raft.compaction_min_time_s)
        self.engine = RaftEngine(
            node_id=cfg.node_id, peer_ids=[p.node_id for p in cfg.peers], identity=self.identity,
            store=self.store, data_dir=cfg.data_dir, transport_factory=transport_factory, tuning=tuning)
        self._start_local_records()
        self._start_watch()
        self._start_metrics()
        marker = cfg.data_dir / BOOTSTRAP_MARKER
        if marker.exists():
            marker.unlink()
        self._start_api()
        self._start_probes()
        self._start_agent(voter_pool=self.genesis.voter(cfg.node_id).pool)  # type: ignore[union-attr]
        self._start_cosigner()
        log.info("node %s up: api %s, peers %s, cluster %s", cfg.node_id, cfg.api_listen, cfg.peer_listen,
                 self.genesis.cluster_id.hex()[:16])

    def _start_local_records(self) -> None:
        """Pool-local audit and incident journals (SPEC §5, D14) and the alert hooks (SPEC §8)."""
        cfg, engine = self.cfg, self.engine
        assert engine is not None and self.store is not None
        self.local = LocalStore(local_path(cfg.data_dir))
        alerts = cfg.alerts
        if alerts.webhook or alerts.exec_path:
            self.alerts = AlertDispatcher(self.local, AlertTargets(alerts.webhook, alerts.exec_path),
                                          node_id=cfg.node_id, cluster_id=self.genesis.cluster_id)
            self.alerts.start()
        self.recorder = LocalRecorder(
            self.local, self.store, cfg.node_id, in_lockdown=engine.in_lockdown,
            lockdown_grace_s=max(10.0, 3 * cfg.raft.election_max_ms / 1000),
            on_incident=self.alerts.notify if self.alerts is not None else None)
        engine.add_apply_listener(self.recorder.on_applied)
        engine.add_snapshot_listener(self.recorder.on_snapshot)
        self.recorder.start()

    def _start_watch(self) -> None:
        """Watch (docs/decisions/0008-watch.md): results kept pool-local, events published off the tick thread."""
        assert self.engine is not None and self.store is not None
        self.watch_results = WatchResults(watch_path(self.cfg.data_dir), keep_entries=self.cfg.watch_history_entries)
        self.watch_hub = WatchHub(self.store, self.watch_results, self.cfg.node_id)
        self.engine.add_apply_listener(self.watch_hub.on_applied)
        self.engine.add_snapshot_listener(self.watch_hub.on_snapshot)
        self.watch_hub.start()

    def _start_metrics(self) -> None:
        """Prometheus (/metrics on the probe port) and OpenTelemetry metrics, fed by one NodeSignals."""
        cfg, engine = self.cfg, self.engine
        assert engine is not None and self.links is not None and self.store is not None and self.local is not None
        links = self.links
        sources = NodeSources(
            peers_connected=lambda: sum(links.connected(peer) for peer in engine.peer_ids),
            databases={"state": self.store.usage, "journal": engine.journal.usage, "local": self.local.usage})
        signals = NodeSignals(engine, [])
        if cfg.http_listen is not None:
            self.metrics = make_metrics(engine, cfg.node_id, replication_lag=signals.replication_lag, sources=sources)
            if self.metrics is not None:
                signals.sinks.append(self.metrics)
        if self.telemetry is not None:
            signals.sinks.append(OtelMetrics(self.telemetry.meter, engine, cfg.node_id, signals.replication_lag,
                                             sources))
        if signals.sinks:
            engine.add_apply_listener(signals.on_applied)
            signals.start()
            self.signals = signals

    def _on_refused(self, refused: RefusedRequest) -> None:
        if self.recorder is not None:
            self.recorder.on_refused(refused)
        if self.signals is not None:
            self.signals.on_refused(refused)

    def _start_probes(self) -> None:
        """HTTP probes and /metrics on their own port (SPEC §8); unauthenticated: never a public address."""
        cfg = self.cfg
        if cfg.http_listen is None:
            return
        assert self.engine is not None
        voter = self.genesis.voter(cfg.node_id)
        self.probes = ProbeServer(cfg.http_listen, self.engine, cfg.node_id, pool=voter.pool if voter else "",
                                  peer_api={p.node_id: p.address for p in cfg.api_peers}, metrics=self.metrics)
        try:
            self.probes.start()
        except OSError as exc:
            raise OperatorError(f"cannot listen on {cfg.http_listen} (http_listen): {exc.strerror}",
                                hint="is another node or program using that port?") from None

    def _start_api(self) -> None:
        assert self.engine is not None
        server = grpc.server(ThreadPoolExecutor(max_workers=64, thread_name_prefix="fedraft-api"), options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ])
        service = FederationService(
            self.engine, self.cfg.node_id, on_refused=self._on_refused, watch=self.watch_hub,
            peer_api={p.node_id: p.address for p in self.cfg.api_peers},
            observe_commit=self.signals.observe_commit if self.signals is not None else None,
            telemetry=self.telemetry)
        server.add_generic_rpc_handlers((service.handler(),))
        # Memories and fan-out (decision 0009): the same server, TLS and request signatures.
        memories = MemoriesService(self.engine, self.cfg.node_id, self.identity, on_refused=self._on_refused)
        folder = self.cfg.fanout_folder
        self.fanout = FanoutService(
            self.engine.store, self.genesis, self.cfg.node_id, self.identity,
            handler=FolderSearch(folder) if folder is not None else None,
            peer_api={p.node_id: p.address for p in self.cfg.api_peers}, ca_pem=self.ca_pem,
            on_refused=self._on_refused)
        # The aggregated incident view (decision 0015): the fan-out service's signer, nonces and channels.
        assert self.local is not None
        self.incidents = IncidentsService(self.fanout, self.local)
        server.add_generic_rpc_handlers((memories.handler(), self.fanout.handler(self.incidents.methods())))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # SPEC §8: reflection for fedraft.v1.Federation and grpc.health.v1 (grpcurl, grpc_cli).
        reflection.enable_server_reflection((SERVICE, MEMORIES_SERVICE, FANOUT_SERVICE, health.SERVICE_NAME,
                                             reflection.SERVICE_NAME), server)
        self.api_tls = ServerTls(self.key_pem, self.cert_pem)
        creds = self.api_tls.credentials()
        try:
            server.add_secure_port(self.cfg.api_listen, creds)
        except RuntimeError as exc:
            raise OperatorError(f"cannot listen on {self.cfg.api_listen}: {exc}",
                                hint="is another node or program using that port?") from None
        server.start()
        self.server = server
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _start_agent(self, voter_pool: str) -> None:
        """This node speaks for its pool: heartbeats and inventory reports through the leader (SPEC D7)."""
        cfg = self.cfg
        inventory = open_inventory(cfg.inventory, cfg.inventory_file, host=cfg.node_id)
        endpoints = [cfg.api_listen, *(p.address for p in cfg.api_peers)]
        client = Client(endpoints, self.identity, self.ca_pem, self.genesis.cluster_id, timeout=5.0,
                        attempt_timeout=2.0)
        self.agent = PoolAgent(client, PoolIdentity(voter_pool, cfg.region, cfg.tier, cfg.labels), inventory)
        self.agent.start()

    def _start_cosigner(self) -> None:
        """Signed checkpoints (SPEC §4): cosign the checkpoints this node applied, through the leader."""
        cfg = self.cfg
        assert self.engine is not None and self.store is not None
        endpoints = [cfg.api_listen, *(p.address for p in cfg.api_peers)]
        client = Client(endpoints, self.identity, self.ca_pem, self.genesis.cluster_id, timeout=10.0,
                        attempt_timeout=2.0)
        self.cosigner = Cosigner(client, self.store, cfg.node_id, Signer(self.identity), self.genesis.cluster_id,
                                 floor=self.engine.snapshots.snapshot_index or 0)
        self.engine.add_apply_listener(self.cosigner.on_applied)
        self.engine.add_snapshot_listener(self.cosigner.on_snapshot)
        self.cosigner.start()

    def stop(self, grace: float = 2.0) -> None:
        if self.cosigner is not None:
            self.cosigner.stop()
            self.cosigner.client.close()
        if self.agent is not None:
            self.agent.stop()
            self.agent.client.close()
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.probes is not None:
            self.probes.stop()
        if self.watch_hub is not None:
            self.watch_hub.stop()  # open Watch streams end; their clients resume elsewhere
        if self.server is not None:
            self.server.stop(grace).wait(grace + 1)
        if self.fanout is not None:
            self.fanout.close()
        if self.incidents is not None:
            self.incidents.close()
        if self.recorder is not None:
            self.recorder.stop_observing()
        if self.engine is not None:
            self.engine.stop()
        if self.recorder is not None:
            self.recorder.stop()
        if self.alerts is not None:
            self.alerts.stop()
        if self.signals is not None:
            self.signals.stop()
        if self.telemetry is not None:
            self.telemetry.shutdown()
        if self.watch_results is not None:
            self.watch_results.close()
        if self.local is not None:
            self.local.close()
        if self.store is not None:
            self.store.close()
        self.stopped.set()
