"""Certificate and CA rotation on running nodes (SIGHUP, decision 0015) while the cluster keeps committing."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedraft.cli.main import main as fedraft
from fedraft.crypto.tls import KeyAndCert, cert_summary, issue_node_cert
from tests.integration.cluster import wait_for
from tests.integration.multihost import NODES, MultiHost


class Writer:
    """Puts a counter in a loop on its own client; records each commit's latency."""

    def __init__(self, fed: MultiHost) -> None:
        self.client = fed.client()
        self.done: list[tuple[float, float]] = []  # (finished at, seconds)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                self.client.put("/settings/rotation", str(i).encode())
                self.done.append((time.monotonic(), time.monotonic() - start))
                i += 1
            except Exception as exc:  # recorded; the test asserts there are none
                self.errors.append(repr(exc))
            self._stop.wait(0.05)

    def committed_since(self, t: float) -> int:
        return sum(1 for at, _ in self.done if at > t)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture()
def fed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MultiHost]:
    fed = MultiHost(tmp_path)
    fed.start_all()
    try:
        fed.leader()
        yield fed
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(fed.logs())
        fed.close()


def _reload_all(fed: MultiHost, nodes: tuple[str, ...] = NODES) -> None:
    counts = {n: fed.log(n).count("TLS reloaded") for n in nodes}
    for n in nodes:
        fed.reload(n)
    for n in nodes:
        fed.wait_log(n, "TLS reloaded", count=counts[n] + 1)


def _install(fed: MultiHost, node: str, name: str, data: bytes) -> None:
    """Replace a file as an operator would: write beside it, then rename over it."""
    tmp = fed.hosts[node] / f".{name}.new"
    tmp.write_bytes(data)
    tmp.replace(fed.hosts[node] / name)


def _progress(writer: Writer, since: float) -> None:
    wait_for(lambda: writer.committed_since(since) >= 3, 30, 0.1, "writes committing")


def test_certificate_and_ca_rotation_without_downtime(fed: MultiHost, tmp_path: Path) -> None:
    ca_dir = fed.assembler / "out" / "ca"
    with Writer(fed) as writer:
        _progress(writer, 0)

        # 1. Renew gamma's certificate (same key, same CA). gamma dials alpha and beta: both see the new one.
        t = time.monotonic()
        renewed = tmp_path / "gamma-renewed.pem"
        assert fedraft(["tls", "reissue", "--cert", str(fed.hosts["gamma"] / "tls.pem"), "--ca-cert",
                        str(ca_dir / "ca.pem"), "--ca-key", str(ca_dir / "ca.key"), "--out", str(renewed)]) == 0
        _install(fed, "gamma", "tls.pem", renewed.read_bytes())
        assert fedraft(["tls", "check", "--config", str(fed.config("gamma"))]) == 0
        _reload_all(fed, ("gamma",))
        serial = cert_summary(renewed.read_bytes())
        for peer in ("alpha", "beta"):
            fed.wait_log(peer, f"peer gamma: handshake, their certificate {serial}")
        _progress(writer, t)

        # 2. A certificate whose key genesis does not pin is refused; the node keeps serving the old one.
        t = time.monotonic()
        good = {name: (fed.hosts["beta"] / name).read_bytes() for name in ("tls.pem", "tls.key")}
        current_ca = KeyAndCert((ca_dir / "ca.key").read_bytes(), (ca_dir / "ca.pem").read_bytes())
        foreign = issue_node_cert(current_ca, "beta", ["127.0.0.1"])  # CA-signed, but a key genesis does not pin
        _install(fed, "beta", "tls.pem", foreign.cert_pem)
        _install(fed, "beta", "tls.key", foreign.key_pem)
        assert fedraft(["tls", "check", "--config", str(fed.config("beta"))]) != 0
        fed.reload("beta")
        fed.wait_log("beta", "TLS not reloaded: the TLS certificate's key is not the one genesis pins")
        for name, data in good.items():
            _install(fed, "beta", name, data)
        _progress(writer, t)

        # 3. CA rotation: trust old + new everywhere, reissue every certificate under the new CA, drop the old.
        t = time.monotonic()
        new_ca = tmp_path / "ca-2"
        assert fedraft(["tls", "new-ca", "--out", str(new_ca), "--federation", "fed", "--label", "2"]) == 0
        both = tmp_path / "both.pem"
        assert fedraft(["tls", "bundle", str(ca_dir / "ca.pem"), str(new_ca / "ca.pem"), "--out", str(both)]) == 0
        for n in NODES:
            _install(fed, n, "ca.pem", both.read_bytes())
        _reload_all(fed)
        _progress(writer, t)
        t = time.monotonic()
        for n in NODES:
            out = tmp_path / f"{n}-ca2.pem"
            assert fedraft(["tls", "reissue", "--cert", str(fed.hosts[n] / "tls.pem"), "--ca-cert",
                            str(new_ca / "ca.pem"), "--ca-key", str(new_ca / "ca.key"), "--out", str(out)]) == 0
            _install(fed, n, "tls.pem", out.read_bytes())
            _reload_all(fed, (n,))
            _progress(writer, t)
        t = time.monotonic()
        for n in NODES:
            shutil.copy(new_ca / "ca.pem", fed.hosts[n] / "ca.pem")
        _reload_all(fed)
        # Every link was redialed with only the new CA trusted: the servers saw new-CA client certificates.
        for server, dialers in (("alpha", ("beta", "gamma")), ("beta", ("gamma",))):
            for dialer in dialers:
                fed.wait_log(server, f"peer {dialer}: handshake, their certificate "
                                     f"{cert_summary((tmp_path / f'{dialer}-ca2.pem').read_bytes())}")
        _progress(writer, t)
        latencies = sorted(s for _, s in writer.done)
        span = writer.done[-1][0] - writer.done[0][0]
    assert not writer.errors, writer.errors[:3]
    print(f"rotation: {len(latencies)} writes committed over {span:.1f} s, none failed; commit latency p50 "
          f"{latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")

    # A client that trusts only the new CA (its profile's ca.pem was replaced) commits too.
    fresh = fed.client()
    assert fresh.put("/settings/after-rotation", b"new CA").index > 0
    # A node certificate from the dropped CA is refused now: gamma's old certificate cannot reload.
    _install(fed, "gamma", "tls.pem", renewed.read_bytes())
    assert fedraft(["tls", "check", "--config", str(fed.config("gamma"))]) != 0
