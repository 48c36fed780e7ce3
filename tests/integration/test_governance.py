"""Critical operations with real `fedraft node` processes (SPEC §6): every voter pool approves, one veto
blocks, a replayed approval is not counted twice, and with a voter pool's node killed an operation
waits until the break-glass signature is added."""

from __future__ import annotations

from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft.client import Client
from fedraft.crypto.keyfile import load_private_key
from fedraft.crypto.signing import CTX_BREAKGLASS, Identity
from fedraft.domain.governance import commands as gc
from fedraft.domain.outcome import Code
from fedraft.domain.roles import Role
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.integration


def _admin(cluster: Cluster, pool: str) -> Client:
    c = Client.from_profile(cluster.layout.profiles[pool], timeout=30)
    cluster._clients.append(c)
    return c


def _on(cluster: Cluster, node: str, collection: str) -> list[Any]:
    """A collection as one node has applied it (STALE read of that node)."""
    client = cluster.client()
    request = api.ListRequest(collection=collection, limit=1000, consistency=api.STALE).SerializeToString()
    response = api.ListResponse()
    response.ParseFromString(client.call(cluster.endpoint(node), "List", request))
    return list(getattr(response, collection))


def _has_key(cluster: Cluster, node: str, key_id: bytes) -> bool:
    return any(bytes(p.key_id) == key_id and not p.revoked_index for p in _on(cluster, node, "principals"))


def test_every_voter_pool_approves_a_veto_blocks_and_a_replayed_approval_counts_once(cluster: Cluster) -> None:
    # Its own cluster, not shared_cluster: a module's shared cluster would still run (three more node
    # processes on two cores) while the next test kills a node and counts on heartbeats arriving on time.
    cluster.start_all()
    cluster.leader()
    hq, dc, branch = (_admin(cluster, p) for p in ("hq", "gpu-dc", "cpu-branch"))
    alice = Identity.generate()
    proposed = hq.add_principal(alice.public_key, "hq", Role.OPERATOR, "alice")
    g = proposed.governance
    assert (g.state, list(g.waiting_for)) == ("pending", ["cpu-branch", "gpu-dc"]), proposed
    pending_id, digest = bytes(g.pending_id), bytes(g.command_digest)

    first_vote = dc.envelope(gc.Approve(pending_id, digest))
    r = dc.propose_signed([first_vote])[0]
    assert r.code == Code.OK and list(r.governance.waiting_for) == ["cpu-branch"], r
    again = dc.propose_signed([first_vote])[0]  # the same signed envelope again: de-dup answers (D3)
    assert again == r
    assert [v.pool for v in hq.find_pending(pending_id.hex()).approvals] == ["gpu-dc", "hq"]
    refused = dc.approve(pending_id, digest, check=False)  # gpu-dc again, in a new envelope
    assert refused.code == Code.ALREADY_EXISTS and "gpu-dc already approved" in refused.message
    cluster.wait_applied(refused.index)
    assert not any(_has_key(cluster, n, alice.key_id) for n in cluster.node_ids)  # not executed before the last

    last = branch.approve(pending_id, digest)
    assert last.governance.state == "executed" and last.governance.result_code == Code.OK, last
    cluster.wait_applied(last.index)
    assert all(_has_key(cluster, n, alice.key_id) for n in cluster.node_ids)
    with Client(cluster.client().endpoints, alice, cluster.layout.ca_cert.read_bytes(),
                cluster.layout.cluster_id, timeout=30) as as_alice:
        assert as_alice.put("/routes/alice", b"1").code == Code.OK

    veto_me = hq.set_policy({"drain_ms": "1234"})
    vid, vdigest = bytes(veto_me.governance.pending_id), bytes(veto_me.governance.command_digest)
    vetoed = dc.veto(vid, vdigest, "drains stay at 60 s")
    assert vetoed.governance.state == "vetoed", vetoed
    late = branch.approve(vid, vdigest, check=False)
    assert late.code == Code.ABORTED and "drains stay at 60 s" in late.message
    cluster.wait_applied(late.index)
    for n in cluster.node_ids:
        assert _on(cluster, n, "policy") == []  # never executed: the defaults hold everywhere
        record = next(p for p in _on(cluster, n, "pending") if bytes(p.pending_id) == vid)
        assert (record.state, record.veto.pool, record.veto.reason) == ("vetoed", "gpu-dc", "drains stay at 60 s")


@pytest.mark.raft(election_min_ms=3000, election_max_ms=6000)
def test_with_a_voter_pool_down_it_waits_for_the_break_glass_signature(cluster: Cluster) -> None:
    cluster.start_all()
    leader = cluster.leader()
    admins = {p: _admin(cluster, p) for p in cluster.node_ids}
    # Lower the DOWN delay to 2 missed heartbeats (20 s): itself a critical operation every pool approves.
    policy = admins["hq"].set_policy({"missed_heartbeats": "2"})
    pid, digest = bytes(policy.governance.pending_id), bytes(policy.governance.command_digest)
    assert admins["gpu-dc"].approve(pid, digest).governance.state == "pending"
    assert admins["cpu-branch"].approve(pid, digest).governance.state == "executed"

    down = next(n for n in cluster.node_ids if n != leader)  # a follower: no election needed
    live = [n for n in cluster.node_ids if n != down]
    cluster.kill(down)
    bob = Identity.generate()
    proposed = admins[live[0]].add_principal(bob.public_key, live[0], Role.SUBMITTER, "bob")
    pid, digest = bytes(proposed.governance.pending_id), bytes(proposed.governance.command_digest)
    r = admins[live[1]].approve(pid, digest)
    assert r.governance.state == "pending" and list(r.governance.waiting_for) == [down], r

    signature = load_private_key(cluster.layout.break_glass_key).sign(CTX_BREAKGLASS, cluster.layout.cluster_id,
                                                                       pid)
    early = admins[live[0]].break_glass(pid, signature, check=False)
    if early.code != Code.OK:  # the pool is not DOWN yet: refused, still pending
        assert early.code == Code.FAILED_PRECONDITION and "degraded mode only" in early.message, early
        wait_for(lambda: {p.id: p.health for p in admins[live[0]].list("pools")}[down] == "down", timeout=90,
                 interval=0.5, what=f"pool {down} DOWN")
        assert admins[live[0]].find_pending(pid.hex()).state == "pending"
        done = admins[live[0]].break_glass(pid, signature)
    else:  # pragma: no cover - only if the pool went DOWN before the first try (a very slow machine)
        done = early
    g = done.governance
    assert (g.state, g.break_glass, list(g.excused)) == ("executed", True, [f"{down}: down"]), done
    cluster.wait_applied(done.index, nodes=live)
    for n in live:
        assert _has_key(cluster, n, bob.key_id)
        record = next(p for p in _on(cluster, n, "pending") if bytes(p.pending_id) == pid)
        assert record.override.excused[0].pool == down
