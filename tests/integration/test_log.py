"""The signed log end to end with real `fedraft node` processes on loopback (issue: the signed log)."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from fedraft.client import Client
from fedraft.crypto.keyfile import load_private_key
from fedraft.domain.commands import Put
from fedraft.domain.outcome import Code
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.integration


def _digests(cluster: Cluster, nodes: list[str]) -> set[bytes]:
    return {cluster.status(n, digest=True).state_digest for n in nodes}


def test_concurrent_writes_reach_every_node_with_identical_state(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    errors: list[BaseException] = []
    acked: dict[str, bytes] = {}
    lock = threading.Lock()

    def writer(w: int) -> None:
        try:
            with Client.from_profile(cluster.profile, timeout=30) as client:
                for i in range(500 // 8 + (1 if w < 500 % 8 else 0)):
                    key, value = f"/routes/w{w}/k{i}", f"{w}:{i}".encode()
                    result = client.put(key, value)
                    assert result.code == Code.OK
                    with lock:
                        acked[key] = value
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(acked) == 500
    leader_applied = cluster.status(cluster.leader()).applied_index
    cluster.wait_applied(leader_applied)
    wait_for(lambda: len(_digests(cluster, cluster.node_ids)) == 1, 30, what="identical digests")
    client = cluster.client()
    for node in cluster.node_ids:
        endpoint = cluster.endpoint(node)
        for key in list(acked)[::25]:
            got = client.get(key, stale=True, endpoint=endpoint)
            assert got.found and got.record.value == acked[key], (node, key)


def test_linearizable_read_sees_the_last_acknowledged_write(shared_cluster: Cluster) -> None:
    client = shared_cluster.client()
    for i in range(5):
        client.put("/settings/counter", str(i).encode())
        assert client.get("/settings/counter").record.value == str(i).encode()


def test_compare_and_set_and_delete(shared_cluster: Cluster) -> None:
    client = shared_cluster.client()
    assert client.compare_and_set("/settings/lock", b"me", 0).record.version == 1
    refused = client.compare_and_set("/settings/lock", b"you", 0, check=False)
    assert refused.code == Code.FAILED_PRECONDITION
    assert client.delete("/settings/lock", 1).deleted.value == b"me"
    assert not client.get("/settings/lock").found


def test_a_retried_request_applies_once(shared_cluster: Cluster) -> None:
    client = shared_cluster.client()
    env = client.envelope(Put("/routes/once", b"1"))
    first = client.propose_signed([env])[0]
    again = client.propose_signed([env])[0]
    assert first == again and first.record.version == 1
    assert client.get("/routes/once").record.version == 1


def test_kill_leader_keeps_every_acknowledged_write(cluster: Cluster) -> None:
    cluster.start_all()
    old = cluster.leader()
    client = cluster.client(timeout=40)
    for i in range(30):
        client.put(f"/routes/k{i}", str(i).encode())
    term = cluster.status(old).term
    cluster.kill(old)
    new = cluster.leader()
    assert new != old
    assert cluster.status(new).term > term
    for i in range(30):
        assert client.get(f"/routes/k{i}").record.value == str(i).encode()
    client.put("/routes/after", b"x")


def test_full_restart_loses_nothing_and_terms_never_go_back(cluster: Cluster) -> None:
    cluster.start_all()
    cluster.leader()
    client = cluster.client(timeout=40)
    for i in range(20):
        client.put(f"/routes/r{i}", b"v")
    terms = {n: cluster.status(n).term for n in cluster.node_ids}
    for n in cluster.node_ids:
        assert cluster.terminate(n) == 0  # SIGTERM is a graceful shutdown
    cluster.start_all()
    cluster.leader()
    for n in cluster.node_ids:
        assert cluster.status(n).term >= terms[n]
    for i in range(20):
        assert client.get(f"/routes/r{i}").found


@pytest.mark.raft(compaction_min_entries=40, compaction_min_time_s=3)
def test_wiped_node_rejoins_by_snapshot_and_does_not_vote_before_hearing_a_leader(cluster: Cluster) -> None:
    cluster.start_all()
    leader = cluster.leader()
    victim = next(n for n in cluster.node_ids if n != leader)
    other = next(n for n in cluster.node_ids if n not in (leader, victim))
    client = cluster.client(timeout=40)
    for i in range(150):
        client.put(f"/routes/s{i}", str(i).encode())
    wait_for(lambda: cluster.status(leader).snapshot_index > 0, 40, 0.2, "the leader to take a snapshot")
    cluster.kill(victim)
    cluster.wipe(victim)
    cluster.start(victim)  # no --rejoin: refused, clear error
    proc = cluster.procs.pop(victim)
    assert proc.wait(30) != 0
    assert "--rejoin" in (cluster.config(victim).parent / "node.log").read_text()

    # With the leader paused, the rejoining node must not vote for the other follower.
    cluster.pause(leader)
    cluster.start(victim, "--rejoin")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        for n in (victim, other):
            try:
                s = cluster.status(n)
            except grpc.RpcError:
                continue
            assert s.role != "leader", f"{n} was elected without the rejoining node hearing a leader"
        time.sleep(0.2)
    cluster.resume(leader)
    new_leader = cluster.leader()
    index = cluster.status(new_leader).applied_index
    cluster.wait_applied(index, [victim], timeout=60)
    assert cluster.status(victim).snapshot_index > 0
    wait_for(lambda: len(_digests(cluster, cluster.node_ids)) == 1, 30, what="identical digests")
    assert client.get("/routes/s149", stale=True, endpoint=cluster.endpoint(victim)).record.value == b"149"


def test_cut_off_leader_refuses_writes_within_the_election_timeout(cluster: Cluster) -> None:
    cluster.start_all()
    leader = cluster.leader()
    client = cluster.client(timeout=5)
    client.put("/routes/before", b"1")
    followers = [n for n in cluster.node_ids if n != leader]
    for n in followers:
        cluster.pause(n)
    try:
        paused_at = time.monotonic()
        only_leader = Client([cluster.endpoint(leader)], load_private_key(cluster.layout.admins[0].key),
                             cluster.layout.ca_cert.read_bytes(), cluster.layout.cluster_id,
                             timeout=1, attempt_timeout=1)

        def refused() -> bool:
            try:
                only_leader.put("/routes/during", b"x")
            except Exception as exc:  # Unavailable after the retries of one second
                return "lockdown" in str(exc) or "not the leader" in str(exc)
            return False

        wait_for(refused, 10, 0.2, "the cut-off leader to refuse writes")
        assert time.monotonic() - paused_at < 3.0 + 2.0  # election_max (3 s) plus one client attempt
        stale = only_leader.get("/routes/before", stale=True, endpoint=cluster.endpoint(leader))
        assert stale.found  # STALE reads are still served
        only_leader.close()
    finally:
        for n in followers:
            cluster.resume(n)
