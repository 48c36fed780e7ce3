"""HTTP probes for load balancers and orchestrators, on their own port (node config `http_listen`).

    GET /health           200 while the process serves (liveness)
    GET /ready            200 when caught up (applied >= commit - READY_MAX_LAG), in quorum (not in
                          lockdown, D11, and a leader known) and not halted; else 503 with the reasons
    GET /cluster/status   this node's view: role, leader, term, commit, applied, quorum, lockdown, ... (JSON)
    GET /cluster/peers    the other voters: API address, connected, ms since last contact (JSON)
    GET /metrics          Prometheus text (the [prometheus] extra); 404 with a hint without it

Nothing here is authenticated: bind it to localhost or an internal network and never expose it
publicly (it tells who leads and how far each node is). The server is the standard library's
ThreadingHTTPServer in a daemon thread, with bounded requests: GET/HEAD only, no body, a short path,
a socket timeout and at most MAX_CONNECTIONS handled at once.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from fedraft import __version__
from fedraft.service.metrics import EXTRA_HINT, NodeMetrics

if TYPE_CHECKING:  # importing the engine patches pysyncobj: only a node process should
    from fedraft.consensus.engine import RaftEngine

log = logging.getLogger(__name__)

READY_MAX_LAG = 10          # committed entries not yet applied that still count as caught up
MAX_PATH = 256
MAX_CONNECTIONS = 32
SOCKET_TIMEOUT_S = 5.0
JSON = "application/json"


def node_status(engine: RaftEngine, node_id: str, pool: str = "") -> dict[str, Any]:
    e = engine
    doc: dict[str, Any] = {
        "node_id": node_id, "pool": pool, "role": "leader" if e.is_leader else "follower",
        "leader_id": e.leader_id, "term": e.term, "commit_index": e.commit_index,
        "raft_applied_index": e.raft_last_applied, "has_quorum": e.has_quorum, "lockdown": e.in_lockdown(),
        "halted": e.halted or "", "voters": len(e.peer_ids) + 1, "version": __version__,
        "cluster_id": e.cluster_id.hex(),
    }
    with e.store.read() as st:
        doc["applied_index"] = st.applied_index
        doc["effective_time_ms"] = st.effective_ms
    used, size = e.store.usage()
    doc.update(db_used_bytes=used, db_map_bytes=size, journal_entries=len(e.journal),
               snapshot_index=e.snapshots.snapshot_index or 0,
               applied_age_ms=int((time.monotonic() - e.last_apply_monotonic) * 1000))
    return doc


def peers_status(engine: RaftEngine, peer_api: dict[str, str]) -> list[dict[str, Any]]:
    now = time.monotonic()
    out = []
    for peer in engine.peer_ids:
        last = engine.transport.last_contact(peer) if engine.transport is not None else None
        out.append({"node_id": peer, "api_address": peer_api.get(peer, ""),
                    "connected": last is not None and now - last < engine.tuning.election_max_s,
                    "last_contact_ms": int((now - last) * 1000) if last is not None else None})
    return out


def readiness(engine: RaftEngine) -> tuple[bool, list[str]]:
    """(ready, reasons it is not)."""
    reasons = []
    if engine.halted:
        reasons.append(f"halted: {engine.halted}")
    # In quorum is SPEC D11's measure (a majority of voters heard within raftMaxTimeout, at the transport)
    # plus a known leader; pysyncobj's own has_quorum is reported in /cluster/status only.
    if engine.in_lockdown():
        reasons.append("lockdown: fewer than a majority of voters in contact (no quorum)")
    if not engine.leader_id:
        reasons.append("no leader known (election in progress)")
    lag = engine.commit_index - engine.raft_last_applied
    if lag > READY_MAX_LAG:
        reasons.append(f"catching up: {lag} committed entries not applied")
    return not reasons, reasons


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], probes: ProbeServer,
                 family: socket.AddressFamily) -> None:
        self.address_family = family
        self.probes = probes
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # too many at once: drop this one
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.0"
    server_version = f"fedraft/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("probe %s: " + format, self.client_address[0], *args)

    def _send(self, code: int, body: bytes, content_type: str = JSON) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, (json.dumps(doc, sort_keys=True) + "\n").encode())

    def do_GET(self) -> None:
        if len(self.path) > MAX_PATH:
            self._json(414, {"error": "path too long"})
            return
        length = self.headers.get("Content-Length")
        if length not in (None, "0"):
            self._json(413, {"error": "probes take no request body"})
            return
        path = self.path.split("?", 1)[0]
        route = self.server.probes.routes.get(path)
        if route is None:
            self._json(404, {"error": f"no such path {path!r}",
                             "paths": sorted(self.server.probes.routes)})
            return
        try:
            route(self)
        except Exception as exc:
            log.exception("probe %s failed", path)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    do_HEAD = do_GET

    def _not_allowed(self) -> None:
        self._json(405, {"error": "only GET and HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed


class ProbeServer:
    def __init__(self, listen: str, engine: RaftEngine, node_id: str, *, pool: str = "",
                 peer_api: dict[str, str] | None = None, metrics: NodeMetrics | None = None) -> None:
        self.listen = listen
        self.engine = engine
        self.node_id = node_id
        self.pool = pool
        self.peer_api = dict(peer_api or {})
        self.metrics = metrics
        self.routes: dict[str, Callable[[_Handler], None]] = {
            "/health": self._health, "/ready": self._ready, "/cluster/status": self._status,
            "/cluster/peers": self._peers, "/metrics": self._metrics}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, int(port)), _Handler, self, family)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="fedraft-probes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ----- routes -----
    def _health(self, h: _Handler) -> None:
        h._json(200, {"status": "up", "node_id": self.node_id})

    def _ready(self, h: _Handler) -> None:
        ready, reasons = readiness(self.engine)
        h._json(200 if ready else 503, {"ready": ready, "node_id": self.node_id,
                                        "reason": "; ".join(reasons), "reasons": reasons})

    def _status(self, h: _Handler) -> None:
        h._json(200, node_status(self.engine, self.node_id, self.pool))

    def _peers(self, h: _Handler) -> None:
        h._json(200, {"node_id": self.node_id, "peers": peers_status(self.engine, self.peer_api)})

    def _metrics(self, h: _Handler) -> None:
        if self.metrics is None:
            h._send(404, f"metrics are off: {EXTRA_HINT}, then restart the node\n".encode(),
                    "text/plain; charset=utf-8")
            return
        body, content_type = self.metrics.render()
        h._send(200, body, content_type)
