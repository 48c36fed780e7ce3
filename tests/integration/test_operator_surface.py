"""The operator surface on real `fedraft node` processes: Watch, reflection, quorum-status, HTTP probes.

Watch: events arrive in log order, every node replays the same history, a watch resumes after its
leader is killed without losing or repeating an event, an index below a node's kept results is
OUT_OF_RANGE naming the oldest one, and refusals (unauthenticated, malformed, oversized).
quorum-status: healthy (0), leader dead (1), only one node asked (1), two nodes down (2), none (3).
Probes: /health, /ready (200, then 503 when the node is cut off), /cluster/*, /metrics, 404.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft.client import Client, RequestFailed
from fedraft.config import load_node_config
from fedraft.crypto.keyfile import load_private_key
from fedraft.crypto.request_auth import AUTH_HEADER, sign_request
from fedraft.crypto.signing import Signer
from fedraft.domain.outcome import Code
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
METRIC_NAMES = ("fedraft_raft_term", "fedraft_raft_leader_changes_total", "fedraft_commit_latency_seconds",
                "fedraft_apply_lag_entries", "fedraft_requests_rejected_total", "fedraft_pools_total",
                "fedraft_pool_health", "fedraft_pool_gpus", "fedraft_pending_critical", "fedraft_lockdown")


# ----- helpers ------------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _quorum_status(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "quorum-status"), "--profile",
                           str(cluster.profile), "--timeout", "2", *args],
                          capture_output=True, text=True, timeout=60, env=_env(), cwd=REPO)


def _http(cluster: Cluster, node: str, path: str) -> tuple[int, str]:
    listen = load_node_config(cluster.config(node)).http_listen
    assert listen is not None
    try:
        with urllib.request.urlopen(f"http://{listen}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _watch_call(cluster: Cluster, node: str, request: bytes, metadata: Any = None, *,
                timeout: float = 10) -> list[api.WatchEvent]:
    """One raw Watch call: its events up to and including the first progress report, or the error."""
    client = cluster.client()
    stub = client._channel(cluster.endpoint(node)).unary_stream("/fedraft.v1.Federation/Watch", None, None)
    call = stub(request, metadata=metadata, timeout=timeout)
    out = []
    try:
        for raw in call:
            event = api.WatchEvent()
            event.ParseFromString(raw)
            out.append(event)
            if event.progress:
                break
    finally:
        call.cancel()
    return out


def _signed(cluster: Cluster, request: bytes) -> tuple[tuple[str, bytes], ...]:
    signer = Signer(load_private_key(cluster.layout.admins[0].key))
    return ((AUTH_HEADER, sign_request(signer, cluster.layout.cluster_id, "Watch", request)),)


class Collector:
    """Runs client.watch in a thread; events land in `events`."""

    def __init__(self, client: Client, from_index: int) -> None:
        self.events: list[api.WatchEvent] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, from_index), daemon=True)
        self._thread.start()

    def _run(self, client: Client, from_index: int) -> None:
        try:
            for event in client.watch(from_index, retry_for=90, idle_timeout=12):
                self.events.append(event)
                if self._stop.is_set():
                    return
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def put_keys(self) -> list[str]:
        return [e.result.record.key for e in self.events if e.command == "put"]

    def stop(self) -> None:
        self._stop.set()


def _prepend(config: Path, line: str) -> None:
    """A top-level setting must come before the first [table] of node.toml."""
    config.write_text(line + "\n" + config.read_text())


# ----- a shared, healthy cluster ------------------------------------------------------------------

def test_watch_events_arrive_in_log_order_with_their_results(shared_cluster: Cluster) -> None:
    client = shared_cluster.client(timeout=30)
    collector = Collector(shared_cluster.client(timeout=30), 0)
    wait_for(lambda: collector.events or (client.put("/routes/watch-warmup", b"w") and collector.events), 30, 0.2,
             "the watch to start")
    keys = [f"/routes/watch/{i}" for i in range(20)]
    for i, key in enumerate(keys):
        client.put(key, str(i).encode())
    wait_for(lambda: set(keys) <= set(collector.put_keys()), 30, 0.05, "every put watched")
    collector.stop()
    assert collector.error is None
    positions = [(e.index, e.ordinal) for e in collector.events]
    assert positions == sorted(set(positions))  # log order, nothing twice
    mine = [e for e in collector.events if e.result.record.key in keys]
    assert [e.result.record.key for e in mine] == keys
    assert all(e.result_known and e.code == Code.OK and e.author == "hq-admin" for e in mine)


def test_every_node_replays_the_same_history(shared_cluster: Cluster) -> None:
    client = shared_cluster.client(timeout=30)
    index = client.put("/routes/history", b"1").index  # a put: it has an event on every node
    shared_cluster.wait_applied(index)
    histories = []
    for node in shared_cluster.node_ids:
        with Client([shared_cluster.endpoint(node)], load_private_key(shared_cluster.layout.admins[0].key),
                    shared_cluster.layout.ca_cert.read_bytes(), shared_cluster.layout.cluster_id) as one:
            seen = []
            for event in one.watch(1):
                if event.index > index:
                    break
                seen.append((event.index, event.ordinal, event.command, event.author_key_id, event.code,
                             event.result_known))
                if event.index == index and event.entry_last:
                    break
            histories.append(seen)
    assert histories[0] and histories[0] == histories[1] == histories[2]


def test_watch_refuses_unauthenticated_malformed_and_oversized_requests(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    node = cluster.node_ids[1]
    request = api.WatchRequest(from_index=0).SerializeToString()
    cases = {
        "no auth header": (request, None, grpc.StatusCode.UNAUTHENTICATED),
        "garbage auth header": (request, ((AUTH_HEADER, b"\x0a\x03abc"),), grpc.StatusCode.UNAUTHENTICATED),
        "signed for other bytes": (request, _signed(cluster, b"\x08\x05"), grpc.StatusCode.UNAUTHENTICATED),
        "malformed bytes": (b"\xff\xff\xff", _signed(cluster, b"\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT),
    }
    for what, (body, metadata, code) in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            _watch_call(cluster, node, body, metadata)
        assert info.value.code() == code, what
    big = b"\x00" * (5 << 20)  # over the API's 4 MiB request limit
    with pytest.raises(grpc.RpcError) as info:
        _watch_call(cluster, node, big, _signed(cluster, big))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    events = _watch_call(cluster, node, request, _signed(cluster, request))  # the valid request is served
    assert events and events[0].progress and events[0].served_by == node


def test_reflection_lists_the_federation_and_health_services(shared_cluster: Cluster) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    channel = shared_cluster.client()._channel(shared_cluster.endpoint(shared_cluster.node_ids[0]))
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {"fedraft.v1.Federation", "grpc.health.v1.Health"} <= services
    federation = DescriptorPool(db).FindServiceByName("fedraft.v1.Federation")
    watch = federation.methods_by_name["Watch"]
    assert watch.server_streaming and watch.output_type.full_name == "fedraft.v1.WatchEvent"


def test_probes_on_a_healthy_node(shared_cluster: Cluster) -> None:
    node = shared_cluster.node_ids[0]
    assert _http(shared_cluster, node, "/health")[0] == 200
    wait_for(lambda: _http(shared_cluster, node, "/ready")[0] == 200, 30, 0.2, "the node to be ready")
    status = json.loads(_http(shared_cluster, node, "/cluster/status")[1])
    assert status["node_id"] == node and status["voters"] == 3 and status["has_quorum"] is True
    peers = json.loads(_http(shared_cluster, node, "/cluster/peers")[1])["peers"]
    assert sorted(p["node_id"] for p in peers) == sorted(shared_cluster.node_ids[1:])
    assert all(p["api_address"] for p in peers)
    code, text = _http(shared_cluster, node, "/metrics")
    assert code == 200
    for name in METRIC_NAMES:
        assert name in text, name
    assert _http(shared_cluster, node, "/nope")[0] == 404


def test_quorum_status_of_a_healthy_cluster(shared_cluster: Cluster) -> None:
    done = wait_for(lambda: (lambda d: d if d.returncode == 0 else None)(_quorum_status(shared_cluster, "-o", "json")),
                    30, 0.5, "quorum-status to say healthy")
    doc = json.loads(done.stdout)
    assert set(doc) == {"summary", "nodes"}
    summary = doc["summary"]
    assert summary["state"] == "healthy" and summary["quorum"] is True and summary["signed"] is True
    assert (summary["voters_up"], summary["voters_total"], summary["failure_tolerance"]) == (3, 3, 1)
    assert summary["leader"] in shared_cluster.node_ids
    assert sorted(n["node"] for n in doc["nodes"]) == sorted(shared_cluster.node_ids)
    for row in doc["nodes"]:
        assert {"node", "address", "role", "term", "commit", "applied", "lag", "last_contact_ms", "db_used_bytes",
                "db_map_bytes", "gpus_healthy", "gpus_total", "version", "errors"} <= set(row)
        assert row["errors"] == [] and row["db_map_bytes"] > 0 and row["version"]
    table = _quorum_status(shared_cluster)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].startswith("HEALTHY: leader ") and "quorum yes" in lines[0]
    assert lines[1].split()[:3] == ["NODE", "ADDRESS", "ROLE"] and lines[1].rstrip().endswith("ERRORS")


def test_fedraft_watch_cli_prints_json_lines(shared_cluster: Cluster) -> None:
    shared_cluster.client().put("/routes/cli-watch", b"1")
    done = subprocess.run([sys.executable, "-m", "fedraft", "watch", "--from", "1", "--limit", "3", "-o", "json",
                           "--profile", str(shared_cluster.profile)],
                          capture_output=True, text=True, timeout=60, env=_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(docs) == 3 and [d["index"] for d in docs] == sorted(d["index"] for d in docs)
    assert all({"index", "ordinal", "command", "author", "code_name", "result_known"} <= set(d) for d in docs)


# ----- fresh clusters: failures -------------------------------------------------------------------

def test_watch_resumes_after_the_leader_is_killed_without_losing_or_repeating(cluster: Cluster) -> None:
    cluster.start_all()
    leader = cluster.leader()
    others = [n for n in cluster.node_ids if n != leader]
    # the watch starts on the leader, so killing it breaks the stream mid-way
    key = load_private_key(cluster.layout.admins[0].key)
    watcher = Client([cluster.endpoint(n) for n in [leader, *others]], key, cluster.layout.ca_cert.read_bytes(),
                     cluster.layout.cluster_id, timeout=40)
    collector = Collector(watcher, 1)
    writer = cluster.client(timeout=60)
    keys = [f"/routes/failover/{i}" for i in range(40)]
    for i, k in enumerate(keys[:15]):
        writer.put(k, str(i).encode())
    wait_for(lambda: set(keys[:15]) <= set(collector.put_keys()), 30, 0.05, "the first puts watched")
    cluster.kill(leader)
    for i, k in enumerate(keys[15:], 15):
        writer.put(k, str(i).encode())
    wait_for(lambda: set(keys) <= set(collector.put_keys()), 60, 0.1, "every put watched after the failover")
    collector.stop()
    assert collector.error is None, collector.error
    watcher.close()
    got = [(e.index, e.ordinal) for e in collector.events]
    assert len(got) == len(set(got)) and got == sorted(got), "an event was repeated or out of order"
    assert [k for k in collector.put_keys() if k in keys] == keys
    # no gap: a survivor's own history up to the same point is exactly what the watcher saw
    last = got[-1][0]
    survivor = Client([cluster.endpoint(others[0])], key, cluster.layout.ca_cert.read_bytes(),
                      cluster.layout.cluster_id, timeout=30)
    reference = []
    for event in survivor.watch(1):
        reference.append((event.index, event.ordinal))
        if event.index >= last and event.entry_last:
            break
    survivor.close()
    assert got == reference[:len(got)]


def test_quorum_status_probes_and_compaction_as_nodes_fail(cluster: Cluster) -> None:
    for node in cluster.node_ids:
        _prepend(cluster.config(node), "watch_history_entries = 5")
    cluster.start_all()
    leader = cluster.leader()
    client = cluster.client(timeout=30)
    for i in range(12):
        client.put(f"/routes/c{i}", b"v")
    cluster.wait_applied(cluster.status(leader).applied_index)

    # Watch history below what a node kept: OUT_OF_RANGE naming the oldest available index
    request = api.WatchRequest(from_index=1).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        _watch_call(cluster, leader, request, _signed(cluster, request))
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    details = info.value.details() or ""
    assert "oldest available index is" in details
    oldest = int(details.split("oldest available index is ")[1].split(":")[0])
    assert oldest > 1
    with pytest.raises(RequestFailed) as failed:  # every node refuses: the client says so
        next(iter(client.watch(1)))
    assert failed.value.code == grpc.StatusCode.OUT_OF_RANGE
    recent = client.put("/routes/c-last", b"v").index  # the pool agents keep writing: ask for a recent index
    cluster.wait_applied(recent, [leader])
    served = _watch_call(cluster, leader, api.WatchRequest(from_index=recent).SerializeToString(),
                         _signed(cluster, api.WatchRequest(from_index=recent).SerializeToString()))
    assert any(not e.progress and e.index == recent and e.command == "put" for e in served)

    wait_for(lambda: _quorum_status(cluster).returncode == 0, 30, 0.5, "healthy")
    for node in cluster.node_ids:
        wait_for(lambda node=node: _http(cluster, node, "/ready")[0] == 200, 30, 0.2, f"{node} ready")

    # the leader dies: degraded (1), also when only one survivor is asked
    cluster.kill(leader)
    survivors = [n for n in cluster.node_ids if n != leader]
    def degraded() -> dict[str, Any] | None:
        done = _quorum_status(cluster, "-o", "json")
        doc: dict[str, Any] = json.loads(done.stdout)
        # the survivors count the dead node as up until they have not heard from it for election_max
        return doc if done.returncode == 1 and doc["summary"]["voters_up"] == 2 else None

    doc = wait_for(degraded, 30, 0.5, "degraded after the leader died")
    assert doc["summary"]["quorum"] is True and doc["summary"]["failure_tolerance"] == 0
    dead = next(r for r in doc["nodes"] if r["node"] == leader)
    assert dead["role"] == "unreachable" and dead["errors"]
    one = _quorum_status(cluster, "--endpoints", cluster.endpoint(survivors[0]))
    assert one.returncode == 1, one.stdout + one.stderr
    assert "quorum yes" in one.stdout.splitlines()[0]

    # a second node dies: the last one is cut off: no quorum (2), not ready (503)
    cluster.kill(survivors[0])
    last = survivors[1]
    wait_for(lambda: _quorum_status(cluster).returncode == 2, 30, 0.5, "no quorum")
    _code, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(_http(cluster, last, "/ready")), 30, 0.2,
                          "the cut-off node not ready")
    assert json.loads(body)["ready"] is False and "lockdown" in json.loads(body)["reason"]
    assert _http(cluster, last, "/health")[0] == 200
    assert "fedraft_lockdown 1.0" in _http(cluster, last, "/metrics")[1]
    with pytest.raises(grpc.RpcError) as info:  # Watch is refused in lockdown: resume elsewhere
        _watch_call(cluster, last, request, _signed(cluster, request))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "lockdown" in (info.value.details() or "")

    # nobody left: unreachable (3)
    cluster.kill(last)
    gone = _quorum_status(cluster, "-o", "json")
    assert gone.returncode == 3 and json.loads(gone.stdout)["summary"]["state"] == "unreachable"
