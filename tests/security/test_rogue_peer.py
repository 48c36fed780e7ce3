"""Rogue peers against the node-to-node transport (SPEC §2, §3, §9).

Who cannot connect at all (no certificate, another CA, a CA-signed but unpinned key, a bad hello),
what closes a stream without hurting the node (garbage, oversized, too fast, a second hello), a rogue
server that a dialer must not trust, and a pickle bomb fed through a real pysyncobj node.
"""

from __future__ import annotations

import functools
import os
import pickle
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pysyncobj.syncobj as ps
import pytest
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.node import Node

from fedraft._proto.fedraft.v1.peer_pb2 import (
    AppendEntries,
    NextNodeIdx,
    PeerFrame,
    PeerHello,
    RequestVote,
    WireEntry,
)
from fedraft.consensus.peer_transport import GrpcTransport
from fedraft.crypto.signing import Identity, Signer
from fedraft.crypto.tls import KeyAndCert, issue_node_cert, make_ca
from fedraft.transport.links import NONCE_LEN, STREAM_METHOD, LinkLimits, PeerLinks, check_hello, sign_hello
from tests.transport.conftest import Federation, Recorder, free_port, make_federation, wait_for

SERVER = "n1"  # the smallest id: every other node dials it


@pytest.fixture(scope="module")
def keys() -> Federation:
    return make_federation()


@pytest.fixture
def fed(keys: Federation) -> Federation:
    return Federation(ca=keys.ca, cluster_id=keys.cluster_id, nodes=keys.nodes,
                      ports={n: free_port() for n in keys.nodes})


@pytest.fixture
def running() -> Iterator[list[PeerLinks]]:
    links: list[PeerLinks] = []
    yield links
    for link in links:
        link.stop(0)


class RawPeer:
    """A hand-driven client of a node's peer port: raw bytes out, raw bytes (or the end) in."""

    def __init__(self, address: str, ca_pem: bytes, tls: KeyAndCert | None, target: str = SERVER) -> None:
        credentials = (grpc.ssl_channel_credentials(ca_pem, tls.key_pem, tls.cert_pem) if tls is not None
                       else grpc.ssl_channel_credentials(ca_pem))
        self.channel = grpc.secure_channel(address, credentials, options=[
            ("grpc.ssl_target_name_override", target), ("grpc.use_local_subchannel_pool", 1)])
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.received: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.ended = threading.Event()
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.call: Any = self.channel.stream_stream(STREAM_METHOD)(iter(self._out.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self.call:
                self.received.put(raw)
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""
        self.ended.set()

    def send(self, raw: bytes) -> None:
        self._out.put(raw)

    def handshake(self, kit_identity: Identity, node_id: str, cluster_id: bytes, server: Any) -> None:
        nonce = os.urandom(NONCE_LEN)
        self.send(PeerFrame(hello=sign_hello(Signer(kit_identity), cluster_id, node_id, SERVER, nonce))
                  .SerializeToString())
        reply = PeerFrame.FromString(self.received.get(timeout=5))
        assert check_hello(reply.hello, cluster_id=cluster_id, speaker=server, listener=node_id,
                           echo_nonce=nonce) is None
        self.send(PeerFrame(hello=sign_hello(Signer(kit_identity), cluster_id, node_id, SERVER, nonce,
                                             echo_nonce=reply.hello.nonce)).SerializeToString())

    def wait_end(self, timeout: float = 5.0) -> grpc.StatusCode | None:
        assert self.ended.wait(timeout), "the stream was not closed"
        return self.code

    def close(self) -> None:
        self._out.put(None)
        self.call.cancel()
        self.channel.close()


def vote(term: int) -> bytes:
    return PeerFrame(request_vote=RequestVote(term=term)).SerializeToString()


def server_with_good_peer(fed: Federation, running: list[PeerLinks],
                          limits: LinkLimits | None = None) -> tuple[PeerLinks, Recorder, PeerLinks, Recorder]:
    """n1 serving, n3 connected to it as a well-behaved peer."""
    server = fed.links(SERVER, peers=("n2", "n3"), limits=limits)
    good = fed.links("n3", peers=(SERVER,))
    server_rec, good_rec = Recorder(server), Recorder(good)
    for link in (server, good):
        link.start()
        running.append(link)
    wait_for(lambda: good.connected(SERVER) and server.connected("n3"), what="the good peer")
    return server, server_rec, good, good_rec


def assert_good_peer_still_served(server: PeerLinks, server_rec: Recorder, good: PeerLinks,
                                  good_rec: Recorder, term: int) -> None:
    assert good.send(SERVER, PeerFrame(request_vote=RequestVote(term=term)))
    assert server.send("n3", PeerFrame(request_vote=RequestVote(term=term + 1)))
    wait_for(lambda: term in server_rec.terms_from("n3") and term + 1 in good_rec.terms_from(SERVER),
             what="the good peer exchanging frames")


# ----- who cannot connect -----

def test_client_without_certificate_is_refused(fed: Federation, running: list[PeerLinks]) -> None:
    server, server_rec, good, good_rec = server_with_good_peer(fed, running)
    rogue = RawPeer(fed.address(SERVER), fed.ca.cert_pem, None)
    rogue.send(vote(1))
    assert rogue.wait_end() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
    rogue.close()
    assert not server.connected("n2")
    assert_good_peer_still_served(server, server_rec, good, good_rec, 10)


def test_certificate_from_another_ca_is_refused(fed: Federation, running: list[PeerLinks]) -> None:
    server, *_ = server_with_good_peer(fed, running)
    other_ca = make_ca("elsewhere")
    rogue = RawPeer(fed.address(SERVER), fed.ca.cert_pem, issue_node_cert(other_ca, "n2", ["127.0.0.1"]))
    rogue.send(vote(1))
    assert rogue.wait_end() == grpc.StatusCode.UNAVAILABLE
    rogue.close()
    assert not server.connected("n2")


def test_stolen_ca_key_cannot_impersonate_a_node(fed: Federation, running: list[PeerLinks],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    server, *_ = server_with_good_peer(fed, running)
    # A certificate the real CA signed, named n2, but for a key genesis does not pin.
    forged = issue_node_cert(fed.ca, "n2", ["127.0.0.1"])
    rogue = RawPeer(fed.address(SERVER), fed.ca.cert_pem, forged)
    n2 = fed.nodes["n2"]
    # Even the genuine n2 hello (its Ed25519 key leaked too) does not help without the pinned TLS key.
    rogue.send(PeerFrame(hello=sign_hello(Signer(n2.identity), fed.cluster_id, "n2", SERVER, os.urandom(16)))
               .SerializeToString())
    assert rogue.wait_end() == grpc.StatusCode.PERMISSION_DENIED
    assert "not pinned" in rogue.details
    rogue.close()
    assert not server.connected("n2")
    assert "not pinned for any voter" in caplog.text


@pytest.mark.parametrize("make_hello", [
    pytest.param(lambda f: sign_hello(Signer(Identity.generate()), f.cluster_id, "n2", SERVER, os.urandom(16)),
                 id="signed-with-another-key"),
    pytest.param(lambda f: sign_hello(Signer(f.nodes["n3"].identity), f.cluster_id, "n3", SERVER, os.urandom(16)),
                 id="claims-another-node"),
    pytest.param(lambda f: sign_hello(Signer(f.nodes["n2"].identity), b"\x00" * 32, "n2", SERVER, os.urandom(16)),
                 id="another-cluster"),
    pytest.param(lambda f: sign_hello(Signer(f.nodes["n2"].identity), f.cluster_id, "n2", "n3", os.urandom(16)),
                 id="addressed-to-another-node"),
    pytest.param(lambda f: sign_hello(Signer(f.nodes["n2"].identity), f.cluster_id, "n2", SERVER, b"short"),
                 id="short-nonce"),
    pytest.param(None, id="frame-before-hello"),
])
def test_bad_hello_is_refused(fed: Federation, running: list[PeerLinks],
                              make_hello: Callable[[Federation], PeerHello] | None) -> None:
    server, server_rec, good, good_rec = server_with_good_peer(fed, running)
    rogue = RawPeer(fed.address(SERVER), fed.ca.cert_pem, fed.nodes["n2"].tls)
    rogue.send(vote(1) if make_hello is None else PeerFrame(hello=make_hello(fed)).SerializeToString())
    assert rogue.wait_end() == grpc.StatusCode.PERMISSION_DENIED
    assert rogue.received.empty()  # no hello reply, no frame
    rogue.close()
    assert not server.connected("n2") and server_rec.terms_from("n2") == []
    assert_good_peer_still_served(server, server_rec, good, good_rec, 20)


def test_silent_client_is_cut_after_the_handshake_timeout(fed: Federation, running: list[PeerLinks]) -> None:
    server = fed.links(SERVER, peers=("n2",), limits=LinkLimits(handshake_timeout_s=0.3))
    server.start()
    running.append(server)
    rogue = RawPeer(fed.address(SERVER), fed.ca.cert_pem, fed.nodes["n2"].tls)
    assert rogue.wait_end() is not grpc.StatusCode.OK
    rogue.close()


# ----- what closes one stream and nothing else -----

ABUSE = {
    "garbage bytes": ([b"\xff\xff\xff\xff"], "not a PeerFrame"),
    "empty frame": ([PeerFrame().SerializeToString()], "no known kind"),
    "second hello": ([PeerFrame(hello=PeerHello(node_id="n2")).SerializeToString()], "a second hello"),
    "frame over our limit": ([PeerFrame(append_entries=AppendEntries(
        entries=[WireEntry(command=b"\x00" * 70_000)])).SerializeToString()], "byte limit"),
    "frame over grpc's limit": ([b"\x00" * 1_000_000], ""),
    "rate above the limit": ([vote(t) for t in range(1, 400)], "frames per second"),
}


@pytest.mark.parametrize("abuse", list(ABUSE))
def test_abusive_stream_is_closed_while_the_node_keeps_serving(
        fed: Federation, running: list[PeerLinks], caplog: pytest.LogCaptureFixture, abuse: str) -> None:
    limits = LinkLimits(max_frame_bytes=64 * 1024, max_frames_per_second=100, burst_frames=100,
                        handshake_timeout_s=2.0)
    server, server_rec, good, good_rec = server_with_good_peer(fed, running, limits)
    n2 = fed.nodes["n2"]
    rogue = RawPeer(fed.address(SERVER), fed.ca.cert_pem, n2.tls)
    rogue.handshake(n2.identity, "n2", fed.cluster_id, fed.nodes[SERVER].voter)
    wait_for(lambda: server.connected("n2"), what="the rogue's stream")
    frames, reason = ABUSE[abuse]
    for raw in frames:
        rogue.send(raw)
    assert rogue.wait_end() != grpc.StatusCode.OK
    rogue.close()
    wait_for(lambda: not server.connected("n2"), what="the rogue's stream to be dropped")
    assert server_rec.events[-1] == ("down", "n2")
    if reason:
        assert "node n1, peer n2: stream closed: " in caplog.text and reason in caplog.text
    assert_good_peer_still_served(server, server_rec, good, good_rec, 1000)
    assert server.connected("n3")


# ----- a rogue server: the dialer must prove who it talks to -----

def test_dialer_refuses_a_server_that_cannot_sign_as_the_node(fed: Federation, running: list[PeerLinks],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    # Stolen CA key: the rogue serves a valid CA-signed certificate named n1, so TLS succeeds for the
    # dialer, but it does not hold n1's Ed25519 key.
    forged = issue_node_cert(fed.ca, SERVER, ["127.0.0.1"])
    rogue_key = Signer(Identity.generate())
    replied = threading.Event()

    def handler(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        hello = PeerFrame.FromString(next(request_iterator)).hello
        reply = sign_hello(rogue_key, fed.cluster_id, SERVER, hello.node_id, os.urandom(16), hello.nonce)
        yield PeerFrame(hello=reply).SerializeToString()
        replied.set()
        yield PeerFrame(next_node_idx=NextNodeIdx(next_node_idx=5, success=True)).SerializeToString()
        for _ in request_iterator:
            pass

    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "fedraft.v1.Peer", {"Stream": grpc.stream_stream_rpc_method_handler(handler)}),))
    server.add_secure_port(fed.address(SERVER), grpc.ssl_server_credentials(
        [(forged.key_pem, forged.cert_pem)], root_certificates=fed.ca.cert_pem, require_client_auth=True))
    server.start()
    try:
        dialer = fed.links("n2", peers=(SERVER,))
        rec = Recorder(dialer)
        dialer.start()
        running.append(dialer)
        assert replied.wait(5)
        wait_for(lambda: "hello signature does not verify" in caplog.text, what="the dialer's refusal")
        assert not dialer.connected(SERVER)
        assert rec.frames == [] and rec.events == []
    finally:
        server.stop(0)


# ----- a pickle bomb through a real pysyncobj node -----

def pickle_bomb(path: Path) -> bytes:
    class Bomb:
        def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
            return os.system, (f"touch {path}",)

    return pickle.dumps(Bomb())


class _StrictPickle:
    """Stand-in for the shim fedraft.consensus installs over pysyncobj.syncobj.pickle: a REGULAR command
    reaches the replicated method as the raw bytes it is, never unpickled."""

    @staticmethod
    def loads(data: bytes) -> tuple[int, tuple[bytes]]:
        return 0, (bytes(data),)

    @staticmethod
    def dumps(obj: object, protocol: object = None) -> bytes:
        raise TypeError("never pickle")


class _Probe(SyncObj):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.applied: list[bytes] = []
        super().__init__(*args, **kwargs)

    @replicated  # type: ignore[misc]
    def apply(self, data: bytes) -> None:
        self.applied.append(data)


def test_pickle_bomb_from_a_peer_runs_no_code(fed: Federation, running: list[PeerLinks], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    canary, target = tmp_path / "canary", tmp_path / "pwned"
    pickle.loads(pickle_bomb(canary))  # the payload is live: unpickled, it runs a command
    assert canary.exists()
    bomb = pickle_bomb(target)
    monkeypatch.setattr(ps, "pickle", _StrictPickle)

    rogue = fed.links("n2", peers=(SERVER,))  # n2's real keys: a compromised peer
    rogue_rec = Recorder(rogue)
    rogue.start()
    running.append(rogue)
    node_links = fed.links(SERVER, peers=("n2",))
    flushes: list[int] = []
    conf = SyncObjConf(autoTick=True, autoTickPeriod=0.01, raftMinTimeout=20, raftMaxTimeout=30, connectionTimeout=30,
                       appendEntriesBatchSizeBytes=8 * 1024 * 1024, dynamicMembershipChange=False, useFork=False)
    node = _Probe(Node(SERVER), [Node("n2")], conf=conf, transportClass=functools.partial(
        GrpcTransport, links=node_links, before_release=lambda: flushes.append(1), raft_min_timeout=20))
    try:
        wait_for(lambda: rogue.connected(SERVER), what="the rogue peer to connect")

        def append(command: bytes, **kw: int) -> PeerFrame:
            return PeerFrame(append_entries=AppendEntries(term=1, commit_index=2, regular=True, prev_log_idx=1,
                                                          prev_log_term=0, entries=[WireEntry(
                                                              command=command, index=2, term=1)], **kw))

        # MEMBERSHIP entry (pysyncobj unpickles these even with dynamic membership off): refused at the
        # codec, the stream is closed, the rogue redials.
        assert rogue.send(SERVER, append(b"\x02" + bomb))
        wait_for(lambda: ("down", SERVER) in rogue_rec.events, what="the membership entry to close the stream")
        assert "invalid append_entries frame" in caplog.text
        wait_for(lambda: rogue.connected(SERVER), what="the rogue to redial")

        # REGULAR entry: accepted by the codec, committed and applied, but as inert bytes.
        assert rogue.send(SERVER, append(b"\x00" + bomb))
        wait_for(lambda: node.applied == [bomb], what="the entry to be applied as bytes")
        acks = [f.next_node_idx for _, f in rogue_rec.frames if f.WhichOneof("kind") == "next_node_idx"]
        assert acks and acks[-1].success and acks[-1].next_node_idx == 3
        assert flushes, "every reply is released after a journal flush"
        assert not target.exists()

        # Still serving: a heartbeat is acknowledged.
        before = len(rogue_rec.frames)
        assert rogue.send(SERVER, PeerFrame(append_entries=AppendEntries(
            term=1, commit_index=2, regular=True, prev_log_idx=2, prev_log_term=1)))
        wait_for(lambda: len(rogue_rec.frames) > before, what="the heartbeat's acknowledgement")
        assert node.raftCurrentTerm == 1 and node.raftLastApplied == 2
        assert not target.exists()
    finally:
        node.destroy_synchronous()
