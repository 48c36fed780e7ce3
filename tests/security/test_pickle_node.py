"""A compromised voter (its node key and TLS key stolen) feeds pickle payloads to a real node.

The real `fedraft node` process must run no code from them: REGULAR commands reach the applier as
inert bytes (pysyncobj's pickle is replaced in the engine), MEMBERSHIP/VERSION entries never pass the
codec. The node keeps serving.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from fedraft.config import load_genesis
from fedraft.crypto.keyfile import load_private_key
from fedraft.transport.codec import encode
from fedraft.transport.links import PeerLinks
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.integration


class _Bomb:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_pickle_from_a_compromised_peer_runs_no_code(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    marker = tmp_path / "pwned"
    # Node ids sort cpu-branch < gpu-dc < hq and the larger id dials: hq dials the rogue "cpu-branch".
    rogue_files = cluster.layout.node("cpu-branch")
    links = PeerLinks(
        node_id="cpu-branch", identity=load_private_key(rogue_files.key), cluster_id=cluster.layout.cluster_id,
        voters=load_genesis(cluster.layout.genesis).voters,
        peer_addresses={n.node_id: n.peer_listen for n in cluster.layout.nodes if n.node_id != "cpu-branch"},
        listen_address=rogue_files.peer_listen, tls_cert_pem=rogue_files.tls_cert.read_bytes(),
        tls_key_pem=rogue_files.tls_key.read_bytes(), ca_cert_pem=cluster.layout.ca_cert.read_bytes())
    replies: list[object] = []
    links.on_frame = lambda peer, frame: replies.append(frame)
    links.start()
    try:
        cluster.start("hq")
        wait_for(lambda: links.connected("hq"), 30, what="hq to connect to the rogue peer")
        bomb = b"\x00" + pickle.dumps(_Bomb(marker))
        regular = encode({"type": "append_entries", "term": 100, "commit_index": 2, "prevLogIdx": 1,
                          "prevLogTerm": 0, "entries": [(bomb, 2, 100)]})
        # The codec refuses to encode a MEMBERSHIP entry; a rogue builds the frame by hand.
        membership = encode({"type": "append_entries", "term": 100, "commit_index": 2, "prevLogIdx": 1,
                             "prevLogTerm": 0, "entries": [(b"\x00", 2, 100)]})
        assert regular is not None and membership is not None
        membership.append_entries.entries[0].command = b"\x02" + pickle.dumps(_Bomb(marker))

        def resend(frame: object) -> bool:  # like a leader, resend until the follower acknowledges
            if links.connected("hq"):
                links.send("hq", frame)
            return any(f.WhichOneof("kind") == "next_node_idx" and f.next_node_idx.success  # type: ignore[attr-defined]
                       for f in replies)

        assert links.send("hq", membership)
        wait_for(lambda: "invalid append_entries" in (cluster.config("hq").parent / "node.log").read_text(), 30,
                 what="hq to refuse the membership entry")
        wait_for(lambda: resend(regular), 30, 0.3, "hq to accept the rogue append")
        # hq commits the REGULAR entry (commit_index 2) and applies it as a rejected entry.
        wait_for(lambda: cluster.status("hq").applied_index >= 2, 30, what="hq to apply the rogue entry")
        assert not marker.exists()
        status = cluster.status("hq")
        assert status.term >= 100  # it served the rogue leader like any other, and is still serving
        assert "rejected as a whole" in (cluster.config("hq").parent / "node.log").read_text()
    finally:
        links.stop(0)
        cluster.close()
    assert not marker.exists()
