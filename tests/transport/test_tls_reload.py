"""PeerLinks.reload_tls (decision 0015): new credentials without dropping a link; a rotation the peer does not
accept yet leaves the old stream running; a trust bundle accepts old and new certificates."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame, RequestVote
from fedraft.crypto.tls import cert_summary, make_ca, reissue_node_cert
from fedraft.transport.links import PeerLinks

from .conftest import Federation, Recorder, wait_for

Start = Callable[[PeerLinks], PeerLinks]


def vote(term: int) -> PeerFrame:
    return PeerFrame(request_vote=RequestVote(term=term, last_log_index=0, last_log_term=0))


def delivered(sender: PeerLinks, receiver: Recorder, peer: str, term: int) -> None:
    """The frame arrives (resent while no stream takes it; Raft resends the same way)."""
    def arrived() -> bool:
        sender.send(peer, vote(term))
        return term in receiver.terms_from(sender.node_id)

    wait_for(arrived, what=f"frame {term}")


def handshakes(caplog: pytest.LogCaptureFixture, server: str, dialer: str, cert_pem: bytes) -> int:
    text = f"node {server}, peer {dialer}: handshake, their certificate {cert_summary(cert_pem)}"
    return sum(text in r.getMessage() for r in caplog.records)


def test_renewed_certificate_replaces_the_link_make_before_break(federation: Federation, started: Start,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fedraft.transport.links")
    n1, n2 = started(federation.links("n1", ("n2",))), started(federation.links("n2", ("n1",)))
    r1 = Recorder(n1)
    wait_for(lambda: n1.connected("n2") and n2.connected("n1"), what="connected")
    delivered(n2, r1, "n1", 1)
    kit = federation.nodes["n2"]
    renewed = reissue_node_cert(federation.ca, kit.tls.cert_pem)
    n2.reload_tls(renewed, kit.tls.key_pem, federation.ca.cert_pem)
    wait_for(lambda: handshakes(caplog, "n1", "n2", renewed) == 1, what="n1 sees n2's renewed certificate")
    wait_for(lambda: n1.connected("n2") and n2.connected("n1"), what="still connected")
    delivered(n2, r1, "n1", 2)


def test_an_untrusted_rotation_keeps_the_old_link_until_the_peer_trusts_both(federation: Federation, started: Start,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fedraft.transport.links")
    n1, n2 = started(federation.links("n1", ("n2",))), started(federation.links("n2", ("n1",)))
    r1 = Recorder(n1)
    wait_for(lambda: n1.connected("n2") and n2.connected("n1"), what="connected")
    new_ca = make_ca("test", label="2")
    bundle = federation.ca.cert_pem + new_ca.cert_pem
    kit = federation.nodes["n2"]
    under_new_ca = reissue_node_cert(new_ca, kit.tls.cert_pem)
    # n2 moves to the new CA before n1 trusts it: n1 refuses the new handshakes, the old stream carries on.
    n2.reload_tls(under_new_ca, kit.tls.key_pem, bundle)
    delivered(n2, r1, "n1", 1)
    assert n1.connected("n2") and handshakes(caplog, "n1", "n2", under_new_ca) == 0
    # Once n1 trusts both CAs, n2's pending redial gets through and replaces the old stream.
    n1_kit = federation.nodes["n1"]
    n1.reload_tls(n1_kit.tls.cert_pem, n1_kit.tls.key_pem, bundle)
    wait_for(lambda: handshakes(caplog, "n1", "n2", under_new_ca) == 1, timeout=10, what="the new-CA handshake")
    wait_for(lambda: n1.connected("n2"), what="connected")
    delivered(n2, r1, "n1", 2)
