"""PeerLinks over real gRPC with mutual TLS on 127.0.0.1: connect, ordered exchange, reconnect."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame, RequestVote
from fedraft.crypto.signing import Identity, Signer
from fedraft.errors import ConfigError, OperatorError
from fedraft.transport.links import NONCE_LEN, PeerLinks, check_hello, sign_hello

from .conftest import Federation, Recorder, wait_for

Start = Callable[[PeerLinks], PeerLinks]


def vote(term: int) -> PeerFrame:
    return PeerFrame(request_vote=RequestVote(term=term, last_log_index=term, last_log_term=0))


def test_two_nodes_connect_and_exchange_frames_in_order(federation: Federation, started: Start) -> None:
    a = started(federation.links("n1", peers=("n2",)))
    b = started(federation.links("n2", peers=("n1",)))
    rec_a, rec_b = Recorder(a), Recorder(b)
    wait_for(lambda: a.connected("n2") and b.connected("n1"), what="both sides connected")
    assert a.last_contact("n2") is not None

    for term in range(1, 501):
        assert b.send("n1", vote(term))  # dialer -> server
        assert a.send("n2", vote(1000 + term))  # server -> dialer
    wait_for(lambda: len(rec_a.frames) == 500 and len(rec_b.frames) == 500, what="all frames delivered")
    assert rec_a.terms_from("n2") == list(range(1, 501))
    assert rec_b.terms_from("n1") == list(range(1001, 1501))


def test_three_nodes_form_a_full_mesh(federation: Federation, started: Start) -> None:
    links = {n: started(federation.links(n)) for n in ("n1", "n2", "n3")}
    recorders = {n: Recorder(link) for n, link in links.items()}
    pairs = [(x, y) for x in links for y in links if x != y]
    wait_for(lambda: all(links[x].connected(y) for x, y in pairs), what="full mesh")
    for x, y in pairs:
        assert links[x].send(y, vote(7))
    wait_for(lambda: all(len(r.frames) == 2 for r in recorders.values()), what="one frame from each peer")
    for node, rec in recorders.items():
        assert sorted(p for p, _ in rec.frames) == sorted(p for p in links if p != node)


def test_send_without_stream_is_refused(federation: Federation, started: Start) -> None:
    a = started(federation.links("n1", peers=("n2",)))
    assert not a.connected("n2")
    assert not a.send("n2", vote(1))
    assert a.last_contact("n2") is None


def test_reconnect_after_server_restarts(federation: Federation, started: Start) -> None:
    a = started(federation.links("n1", peers=("n2",)))
    b = started(federation.links("n2", peers=("n1",)))
    rec_b = Recorder(b)
    wait_for(lambda: b.connected("n1"), what="first connection")

    a.stop(0)
    wait_for(lambda: not b.connected("n1"), what="the dialer noticing the server is gone")
    assert ("down", "n1") in rec_b.events

    a2 = started(federation.links("n1", peers=("n2",)))
    rec_a2 = Recorder(a2)
    wait_for(lambda: b.connected("n1") and a2.connected("n2"), what="reconnection")
    assert rec_b.events[-1] == ("up", "n1")
    assert b.send("n1", vote(42))
    wait_for(lambda: rec_a2.terms_from("n2") == [42], what="a frame on the new stream")


def test_reconnect_after_dialer_restarts(federation: Federation, started: Start) -> None:
    a = started(federation.links("n1", peers=("n2",)))
    rec_a = Recorder(a)
    b = started(federation.links("n2", peers=("n1",)))
    wait_for(lambda: a.connected("n2"), what="first connection")
    b.stop(0)
    wait_for(lambda: not a.connected("n2"), what="the server noticing the dialer is gone")
    b2 = started(federation.links("n2", peers=("n1",)))
    wait_for(lambda: a.connected("n2") and b2.connected("n1"), what="reconnection")
    assert a.send("n2", vote(9))
    rec_b2 = Recorder(b2)
    assert a.send("n2", vote(10))
    wait_for(lambda: 10 in rec_b2.terms_from("n1"), what="a frame on the new stream")
    assert rec_a.events == [("up", "n2"), ("down", "n2"), ("up", "n2")]


def test_closing_a_stream_reconnects(federation: Federation, started: Start) -> None:
    a = started(federation.links("n1", peers=("n2",)))
    b = started(federation.links("n2", peers=("n1",)))
    rec_a = Recorder(a)
    wait_for(lambda: a.connected("n2"), what="connection")
    a.close("n2", "test")
    wait_for(lambda: rec_a.events.count(("up", "n2")) == 1 and ("down", "n2") in rec_a.events,
             what="the close to be reported")
    wait_for(lambda: rec_a.events.count(("up", "n2")) == 2 and b.connected("n1"), what="the dialer to redial")


def test_binding_a_taken_port_fails(federation: Federation, started: Start) -> None:
    started(federation.links("n1", peers=("n2",)))
    with pytest.raises(OperatorError):
        federation.links("n1", peers=("n2",)).start()


def test_identity_must_match_genesis(federation: Federation) -> None:
    kit = federation.nodes["n1"]
    with pytest.raises(ConfigError):
        PeerLinks(node_id="n1", identity=Identity.generate(), cluster_id=federation.cluster_id,
                  voters=federation.voters, peer_addresses={}, listen_address="127.0.0.1:0",
                  tls_cert_pem=kit.tls.cert_pem, tls_key_pem=kit.tls.key_pem, ca_cert_pem=federation.ca.cert_pem)


def test_hello_checks(federation: Federation) -> None:
    n1, n2 = federation.nodes["n1"], federation.nodes["n2"]
    cid = federation.cluster_id
    nonce, echo = b"\x01" * NONCE_LEN, b"\x02" * NONCE_LEN
    hello = sign_hello(Signer(n2.identity), cid, "n2", "n1", nonce, echo)

    def check(h: object = hello, **kw: object) -> str | None:
        args: dict[str, object] = {"cluster_id": cid, "speaker": n2.voter, "listener": "n1", "echo_nonce": echo}
        args.update(kw)
        return check_hello(h, **args)  # type: ignore[arg-type]

    assert check() is None
    assert check(cluster_id=b"\x00" * 32) == "hello for another cluster"
    assert "claims to be" in (check(speaker=n1.voter) or "")
    assert "addressed to" in (check(listener="n3") or "")
    assert check(echo_nonce=b"") == "hello does not echo our nonce"
    forged = sign_hello(Signer(n1.identity), cid, "n2", "n1", nonce, echo)  # n1 signs as n2
    assert check(forged) == "hello signature does not verify with the genesis key"
    tampered = type(hello)()
    tampered.CopyFrom(hello)
    tampered.nonce = b"\x03" * NONCE_LEN
    assert check(tampered) == "hello signature does not verify with the genesis key"
