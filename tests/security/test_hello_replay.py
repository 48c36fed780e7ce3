"""A captured peer hello cannot be replayed (docs/decisions/0013-hostile-input.md).

The attacker of decision 0002's residual risk: it holds the CA key and a node's pinned TLS key, but
not the node's Ed25519 key. Posing as a server (a CA-signed certificate for the dialed id), it
captures the node's first hello, then replays it to the real server. The server answers with a fresh
challenge the attacker cannot sign, so the stream is refused before any frame is accepted.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame, RequestVote
from fedraft.crypto.signing import Signer
from fedraft.crypto.tls import issue_node_cert
from fedraft.transport.links import NONCE_LEN, PeerLinks, check_hello, sign_hello
from tests.security.test_rogue_peer import SERVER, RawPeer, vote
from tests.transport.conftest import Federation, Recorder, free_port, make_federation, wait_for


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


def capture_hello(fed: Federation) -> bytes:
    """The first frame the real n2 sends to whoever answers as n1 (a server with a forged certificate)."""
    forged = issue_node_cert(fed.ca, SERVER, ["127.0.0.1"])
    captured: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def handler(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        captured.put(next(request_iterator))
        context.abort(grpc.StatusCode.UNAVAILABLE, "captured")
        yield b""  # never reached: makes this a generator like a real handler

    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "fedraft.v1.Peer", {"Stream": grpc.stream_stream_rpc_method_handler(handler)}),))
    server.add_secure_port(fed.address(SERVER), grpc.ssl_server_credentials(
        [(forged.key_pem, forged.cert_pem)], root_certificates=fed.ca.cert_pem, require_client_auth=True))
    server.start()
    dialer = fed.links("n2", peers=(SERVER,))
    dialer.start()
    try:
        raw = captured.get(timeout=10)
    finally:
        dialer.stop(0)
        server.stop(0).wait()
    hello = PeerFrame.FromString(raw).hello
    assert hello.node_id == "n2" and hello.peer_node_id == SERVER  # a genuine, validly signed hello
    assert check_hello(hello, cluster_id=fed.cluster_id, speaker=fed.nodes["n2"].voter, listener=SERVER,
                       echo_nonce=b"") is None
    return raw


def serve_n1(fed: Federation, running: list[PeerLinks]) -> tuple[PeerLinks, Recorder]:
    server = fed.links(SERVER, peers=("n2",))
    rec = Recorder(server)
    server.start()
    running.append(server)
    return server, rec


@pytest.mark.parametrize("second", ["nothing", "the hello again", "its own unsigned echo"])
def test_a_replayed_hello_is_refused(fed: Federation, running: list[PeerLinks], second: str,
                                     caplog: pytest.LogCaptureFixture) -> None:
    captured = capture_hello(fed)
    server, rec = serve_n1(fed, running)
    rogue = RawPeer(fed.address(SERVER), fed.ca.cert_pem, fed.nodes["n2"].tls)  # n2's stolen TLS key
    rogue.send(captured)
    reply = PeerFrame.FromString(rogue.received.get(timeout=5)).hello  # the server's fresh challenge
    assert len(reply.nonce) == NONCE_LEN
    if second == "the hello again":
        rogue.send(captured)
    elif second == "its own unsigned echo":
        forged = PeerFrame.FromString(captured)
        forged.hello.echo_nonce = reply.nonce  # the signature covers echo_nonce: it no longer verifies
        rogue.send(forged.SerializeToString())
    rogue.send(vote(7))
    assert rogue.wait_end() == grpc.StatusCode.PERMISSION_DENIED
    rogue.close()
    assert not server.connected("n2")
    assert rec.frames == [] and rec.events == []
    assert "handshake refused" in caplog.text


def test_a_confirmation_from_another_handshake_is_refused(fed: Federation, running: list[PeerLinks]) -> None:
    server, rec = serve_n1(fed, running)
    n2 = fed.nodes["n2"]
    signer = Signer(n2.identity)
    # Session A, completed by n2 itself: the attacker records both of n2's hellos.
    first = RawPeer(fed.address(SERVER), fed.ca.cert_pem, n2.tls)
    nonce = os.urandom(NONCE_LEN)
    hello = PeerFrame(hello=sign_hello(signer, fed.cluster_id, "n2", SERVER, nonce)).SerializeToString()
    first.send(hello)
    challenge = PeerFrame.FromString(first.received.get(timeout=5)).hello.nonce
    confirm = PeerFrame(hello=sign_hello(signer, fed.cluster_id, "n2", SERVER, nonce, echo_nonce=challenge))
    first.send(confirm.SerializeToString())
    wait_for(lambda: server.connected("n2"), what="session A")
    first.close()
    wait_for(lambda: not server.connected("n2"), what="session A to end")
    # Session B: both recorded hellos replayed; the server's new challenge differs from A's.
    rogue = RawPeer(fed.address(SERVER), fed.ca.cert_pem, n2.tls)
    rogue.send(hello)
    assert PeerFrame.FromString(rogue.received.get(timeout=5)).hello.nonce != challenge
    rogue.send(confirm.SerializeToString())
    rogue.send(PeerFrame(request_vote=RequestVote(term=99)).SerializeToString())
    assert rogue.wait_end() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not echo our nonce" in rogue.details
    rogue.close()
    assert not server.connected("n2") and rec.terms_from("n2") == []


def test_a_real_dialer_completes_the_three_message_handshake(fed: Federation, running: list[PeerLinks]) -> None:
    server, server_rec = serve_n1(fed, running)
    dialer = fed.links("n2", peers=(SERVER,))
    dialer_rec = Recorder(dialer)
    dialer.start()
    running.append(dialer)
    wait_for(lambda: server.connected("n2") and dialer.connected(SERVER), what="the link")
    assert dialer.send(SERVER, PeerFrame(request_vote=RequestVote(term=5)))
    assert server.send("n2", PeerFrame(request_vote=RequestVote(term=6)))
    wait_for(lambda: server_rec.terms_from("n2") == [5] and dialer_rec.terms_from(SERVER) == [6],
             what="frames both ways")
