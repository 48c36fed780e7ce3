"""The fault proxy on a plain TCP echo server: pass, delay, blackhole (held, then delivered), drop, flap."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.proxy import Proxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture()
def proxy() -> Iterator[tuple[Proxy, str]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = Proxy()
    link = p.add("a->b", f"127.0.0.1:{server.server_address[1]}")
    try:
        yield p, link.address
    finally:
        p.close()
        server.shutdown()
        server.server_close()


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def _echo(s: socket.socket, payload: bytes) -> bytes:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_pass_and_delay(proxy: tuple[Proxy, str]) -> None:
    p, address = proxy
    with _connect(address) as s:
        assert _echo(s, b"hello") == b"hello"
        p.set(["a->b"], "delay", 0.2)
        started = time.monotonic()
        assert _echo(s, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.35  # both directions delayed
    assert p.links["a->b"].stats.faults == 1


def test_blackhole_holds_bytes_until_healed(proxy: tuple[Proxy, str]) -> None:
    p, address = proxy
    with _connect(address) as s:
        assert _echo(s, b"1") == b"1"
        p.set(["a->b"], "blackhole")
        s.sendall(b"held")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(10)
        p.heal()
        s.settimeout(5)
        assert s.recv(10) == b"held"


def test_drop_resets_and_refuses(proxy: tuple[Proxy, str]) -> None:
    p, address = proxy
    s = _connect(address)
    assert _echo(s, b"x") == b"x"
    p.set(["a->b"], "drop")
    with pytest.raises(OSError):
        s.sendall(b"y")
        if not s.recv(10):
            raise ConnectionResetError("closed")
    s.close()
    with _connect(address) as s2, pytest.raises(OSError):
        s2.sendall(b"z")
        if not s2.recv(10):
            raise ConnectionResetError("closed")
    p.heal()
    with _connect(address) as s3:
        assert _echo(s3, b"back") == b"back"


def test_flap_alternates(proxy: tuple[Proxy, str]) -> None:
    p, _ = proxy
    p.flap(["a->b"], up_s=0.1, down_s=0.1, mode="drop")
    link = p.links["a->b"]
    deadline = time.monotonic() + 5
    while link.stats.faults < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link.stats.faults >= 3
    p.heal()
    assert link._flapper is None and link.mode == "pass"
