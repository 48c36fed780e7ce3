"""An in-test TCP proxy for the links between node processes (SPEC §9): drop, delay, blackhole, flap.

Each `Link` listens on its own loopback port and forwards every connection to one target address
(a node's peer_listen). Bytes pass through untouched, so the nodes' mutual TLS runs end to end.
Modes, set from any thread:

- pass        forward as is
- delay       deliver every chunk `delay_s` later (latency; order kept, throughput not limited)
- blackhole   connections stay open and new ones are accepted, but nothing is delivered: bytes
              are held (TCP flow control then stalls the sender) until the mode changes, as on a
              path that silently loses every packet; keepalives time out on both ends
- drop        reset every connection now and refuse new ones (connection refused / reset)

`flap(up_s, down_s)` alternates pass and a fault mode in the proxy's own loop until the mode is
set again. The proxy runs an asyncio loop in one daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

MODES = ("pass", "delay", "blackhole", "drop")


@dataclass
class LinkStats:
    connections: int = 0
    refused: int = 0
    resets: int = 0
    bytes: int = 0
    faults: int = 0  # times the link entered a fault mode (flaps count each down phase)


@dataclass(eq=False)
class _Conn:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()  # RST, not FIN
        for t in self.tasks:
            t.cancel()


class Link:
    def __init__(self, proxy: Proxy, name: str, target: tuple[str, int]) -> None:
        self.proxy = proxy
        self.name = name
        self.target = target
        self.port = 0
        self.mode = "pass"
        self.delay_s = 0.0
        self.stats = LinkStats()
        self._conns: set[_Conn] = set()
        self._changed = asyncio.Event()
        self._flapper: asyncio.Task[None] | None = None
        self._server: asyncio.AbstractServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ----- loop side -----
    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _set(self, mode: str, delay_s: float = 0.0, *, from_flap: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if not from_flap and self._flapper is not None:
            self._flapper.cancel()
            self._flapper = None
        if mode != "pass" and self.mode == "pass":
            self.stats.faults += 1
        self.mode, self.delay_s = mode, delay_s
        if mode == "drop":
            for conn in list(self._conns):
                conn.abort()
                self.stats.resets += 1
            self._conns.clear()
        self._changed.set()
        self._changed = asyncio.Event()

    def _flap(self, up_s: float, down_s: float, mode: str) -> None:
        if self._flapper is not None:
            self._flapper.cancel()

        async def run() -> None:
            while True:
                self._set(mode, from_flap=True)
                await asyncio.sleep(down_s)
                self._set("pass", from_flap=True)
                await asyncio.sleep(up_s)

        self._flapper = asyncio.get_running_loop().create_task(run())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "drop":
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.stats.connections += 1
        conn = _Conn([writer, up_writer])
        self._conns.add(conn)
        loop = asyncio.get_running_loop()
        conn.tasks = [loop.create_task(self._pipe(conn, reader, up_writer)),
                      loop.create_task(self._pipe(conn, up_reader, writer))]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._conns.discard(conn)
        for w in conn.writers:
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    break
                due, data = item
                while self.mode == "blackhole":
                    await self._changed.wait()
                wait = due + (self.delay_s if self.mode == "delay" else 0.0) - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                self.stats.bytes += len(data)
            with contextlib.suppress(Exception):
                writer.write_eof()

        sender = asyncio.get_running_loop().create_task(deliver())
        conn.tasks.append(sender)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await queue.put((time.monotonic(), data))
        except (ConnectionError, OSError):
            pass
        finally:
            await queue.put(None)
        with contextlib.suppress(Exception):
            await sender

    async def _close(self) -> None:
        if self._flapper is not None:
            self._flapper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()


class Proxy:
    """Links by name, served by one asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.links: dict[str, Link] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def _call(self, fn: object, *args: object, **kwargs: object) -> None:
        async def run() -> None:
            fn(*args, **kwargs)  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def add(self, name: str, target: str) -> Link:
        host, _, port = target.rpartition(":")
        link = Link(self, name, (host, int(port)))
        asyncio.run_coroutine_threadsafe(link._start(), self.loop).result(10)
        self.links[name] = link
        return link

    def set(self, names: Iterable[str], mode: str, delay_s: float = 0.0) -> None:
        for name in names:
            self._call(self.links[name]._set, mode, delay_s)

    def flap(self, names: Iterable[str], up_s: float, down_s: float, mode: str = "blackhole") -> None:
        for name in names:
            self._call(self.links[name]._flap, up_s, down_s, mode)

    def heal(self) -> None:
        self.set(list(self.links), "pass")

    def faults(self) -> int:
        return sum(link.stats.faults for link in self.links.values())

    def close(self) -> None:
        async def close_all() -> None:
            for link in self.links.values():
                await link._close()

        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(10)
            asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
