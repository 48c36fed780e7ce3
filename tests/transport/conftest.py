"""A small federation for transport tests: CA, node certificates, identities and genesis-like voter pins.

Also imported by tests/security for the rogue-peer tests.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame
from fedraft.crypto.signing import Identity
from fedraft.crypto.tls import KeyAndCert, issue_node_cert, make_ca, spki_sha256
from fedraft.domain.genesis import Voter
from fedraft.transport.links import LinkLimits, PeerLinks

NODE_IDS = ("n1", "n2", "n3")


@dataclass(frozen=True)
class NodeKit:
    node_id: str
    identity: Identity
    tls: KeyAndCert
    voter: Voter


@dataclass
class Federation:
    ca: KeyAndCert
    cluster_id: bytes
    nodes: dict[str, NodeKit]
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def voters(self) -> list[Voter]:
        return [kit.voter for kit in self.nodes.values()]

    def address(self, node_id: str) -> str:
        return f"127.0.0.1:{self.ports[node_id]}"

    def links(self, node_id: str, peers: tuple[str, ...] | None = None,
              limits: LinkLimits | None = None) -> PeerLinks:
        kit = self.nodes[node_id]
        peers = tuple(p for p in self.nodes if p != node_id) if peers is None else peers
        return PeerLinks(
            node_id=node_id, identity=kit.identity, cluster_id=self.cluster_id, voters=self.voters,
            peer_addresses={p: self.address(p) for p in peers}, listen_address=self.address(node_id),
            tls_cert_pem=kit.tls.cert_pem, tls_key_pem=kit.tls.key_pem, ca_cert_pem=self.ca.cert_pem,
            limits=limits or LinkLimits(handshake_timeout_s=2.0),
        )


def make_federation(node_ids: tuple[str, ...] = NODE_IDS) -> Federation:
    ca = make_ca("test")
    nodes = {}
    for node_id in node_ids:
        identity = Identity.generate()
        tls = issue_node_cert(ca, node_id, ["127.0.0.1"])
        nodes[node_id] = NodeKit(node_id, identity, tls,
                                 Voter(node_id=node_id, pool=f"pool-{node_id}", public_key=identity.public_key,
                                       tls_spki_sha256=spki_sha256(tls.cert_pem)))
    return Federation(ca=ca, cluster_id=hashlib.sha256(b"test genesis").digest(), nodes=nodes)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Recorder:
    """Collects what PeerLinks reports through its callbacks."""

    def __init__(self, links: PeerLinks) -> None:
        self.frames: list[tuple[str, PeerFrame]] = []
        self.events: list[tuple[str, str]] = []
        links.on_frame = lambda peer, frame: self.frames.append((peer, frame))
        links.on_connected = lambda peer: self.events.append(("up", peer))
        links.on_disconnected = lambda peer: self.events.append(("down", peer))

    def terms_from(self, peer: str) -> list[int]:
        return [f.request_vote.term for p, f in self.frames if p == peer and f.WhichOneof("kind") == "request_vote"]


@pytest.fixture(scope="session")
def federation_keys() -> Federation:
    return make_federation()


@pytest.fixture
def federation(federation_keys: Federation) -> Federation:
    """Fresh ports per test on shared (slow to make) keys and certificates."""
    return Federation(ca=federation_keys.ca, cluster_id=federation_keys.cluster_id,
                      nodes=federation_keys.nodes, ports={n: free_port() for n in federation_keys.nodes})


@pytest.fixture
def started() -> Iterator[Callable[[PeerLinks], PeerLinks]]:
    """Start links and stop them at the end of the test whatever happens."""
    running: list[PeerLinks] = []

    def start(links: PeerLinks) -> PeerLinks:
        links.start()
        running.append(links)
        return links

    yield start
    for links in running:
        links.stop(0)
