"""What Python gRPC itself costs (not a test): grpcio's sync API, which fedraft uses, against grpc.aio.

Two shapes of fedraft's write path, with no fedraft code in them (plaintext on loopback, 300-byte
messages, server and client in separate processes):

- unary: a call whose answer comes from another thread after ~0.5 ms of batching, like a Propose
  answered by the tick thread after the commit; 1 and 32 concurrent clients. Sync server: a thread
  pool handler waiting on a concurrent Future; aio server: a coroutine awaiting an asyncio future set
  with call_soon_threadsafe.
- stream: ping-pong over one bidirectional stream, like an append_entries and its acknowledgement.
  Sync: the request iterator fed from a queue (fedraft's peer links); aio: write/read on both ends.

Reports calls or round trips per second, p50 latency and CPU per call of each process, and the ratio
aio / sync in the same run. Run: python -m bench.grpc_floor [--seconds 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from bench.machine import proc_cpu_seconds
from bench.procs import free_ports

SERVICE = "bench.Floor"
PAYLOAD = b"x" * 300
BATCH_S = 0.0005


def _committer(inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
    """One 'tick thread': answers everything queued after a short batching pause."""
    while True:
        batch = [inbox.get()]
        time.sleep(BATCH_S)
        while True:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                break
        for answer in batch:
            answer()


def _handlers(unary: Any, stream: Any) -> tuple[grpc.GenericRpcHandler[Any, Any], ...]:
    return (grpc.method_handlers_generic_handler(SERVICE, {
        "Call": grpc.unary_unary_rpc_method_handler(unary),
        "Echo": grpc.stream_stream_rpc_method_handler(stream)}),)


def serve_sync(port: int, ready: Any) -> None:
    inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    threading.Thread(target=_committer, args=(inbox,), daemon=True).start()

    def call(_request: bytes, _context: Any) -> bytes:
        answer: cf.Future[bytes] = cf.Future()
        inbox.put(lambda: answer.set_result(PAYLOAD))
        return answer.result()

    def echo(requests: Iterator[bytes], _context: Any) -> Iterator[bytes]:
        yield from requests

    server = grpc.server(cf.ThreadPoolExecutor(64))
    server.add_generic_rpc_handlers(_handlers(call, echo))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    server.wait_for_termination()


def serve_aio(port: int, ready: Any) -> None:
    inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    threading.Thread(target=_committer, args=(inbox,), daemon=True).start()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def call(_request: bytes, _context: Any) -> bytes:
            answer: asyncio.Future[bytes] = loop.create_future()

            def resolve() -> None:
                loop.call_soon_threadsafe(answer.set_result, PAYLOAD)

            inbox.put(resolve)
            return await answer

        async def echo(requests: Any, _context: Any) -> Any:
            async for message in requests:
                yield message

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(_handlers(call, echo))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


def unary_clients(port: int, clients: int, seconds: float, out: Any) -> None:
    """Blocking clients (fedraft.client's kind) in threads; the server side is what is compared."""
    call: Any = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(f"/{SERVICE}/Call")  # type: ignore[call-arg]
    for _ in range(50):
        call(PAYLOAD)
    out.put("warm")
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            call(PAYLOAD)
            latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(sorted(latencies))


def stream_sync(port: int, _clients: int, seconds: float, out: Any) -> None:
    outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def requests() -> Iterator[bytes]:
        while (message := outbox.get()) is not None:
            yield message

    channel: Any = grpc.insecure_channel(f"127.0.0.1:{port}")  # bytes in, bytes out: no serializers
    replies: Any = channel.stream_stream(f"/{SERVICE}/Echo")(requests())

    def one() -> None:
        outbox.put(PAYLOAD)
        next(replies)

    for _ in range(50):
        one()
    out.put("warm")
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        one()
        latencies.append(time.perf_counter() - t0)
    outbox.put(None)
    out.put(sorted(latencies))


def stream_aio(port: int, _clients: int, seconds: float, out: Any) -> None:
    async def main() -> None:
        channel: Any = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        call = channel.stream_stream(f"/{SERVICE}/Echo")()
        for _ in range(50):
            await call.write(PAYLOAD)
            await call.read()
        out.put("warm")
        latencies: list[float] = []
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            await call.write(PAYLOAD)
            await call.read()
            latencies.append(time.perf_counter() - t0)
        await call.done_writing()
        out.put(sorted(latencies))

    asyncio.run(main())


def measure(api: str, shape: str, clients: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    port, ready, out = free_ports((0,)), ctx.Event(), ctx.Queue()
    server = ctx.Process(target=serve_sync if api == "sync" else serve_aio, args=(port, ready), daemon=True)
    server.start()
    ready.wait(30)
    target = unary_clients if shape == "unary" else (stream_sync if api == "sync" else stream_aio)
    client = ctx.Process(target=target, args=(port, clients, seconds, out), daemon=True)
    client.start()
    out.get(timeout=60)  # warmed up
    s0, c0, t0 = proc_cpu_seconds(server.pid or 0), proc_cpu_seconds(client.pid or 0), time.monotonic()
    latencies = out.get(timeout=seconds + 60)
    s1, c1, wall = proc_cpu_seconds(server.pid or 0), proc_cpu_seconds(client.pid or 0), time.monotonic() - t0
    client.join(10)
    server.kill()
    n = len(latencies)
    return {"api": api, "shape": shape, "clients": clients, "per_s": n / wall, "p50_us": latencies[n // 2] * 1e6,
            "server_us": (s1 - s0) / n * 1e6, "client_us": (c1 - c0) / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="measured window per row")
    ap.add_argument("--rounds", type=int, default=2, help="sync/aio pairs per shape, run alternately")
    args = ap.parse_args()
    print(f"grpcio {grpc.__version__}, {os.cpu_count()} cores; plaintext loopback, {len(PAYLOAD)}-byte messages")
    print("| shape | clients | round | api | calls/s | p50 µs | server CPU µs/call | client CPU µs/call |"
          " aio/sync server CPU | aio/sync p50 |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for shape, clients in (("unary", 1), ("unary", 32), ("stream", 1)):
        for r in range(1, args.rounds + 1):
            rows = {api: measure(api, shape, clients, args.seconds) for api in ("sync", "aio")}
            for api, row in rows.items():
                ratio = ("", "")
                if api == "aio":
                    ratio = (f"{row['server_us'] / rows['sync']['server_us']:.2f}x",
                             f"{row['p50_us'] / rows['sync']['p50_us']:.2f}x")
                print(f"| {shape} | {clients} | {r} | {api} | {row['per_s']:,.0f} | {row['p50_us']:,.0f} | "
                      f"{row['server_us']:,.0f} | {row['client_us']:,.0f} | {ratio[0]} | {ratio[1]} |", flush=True)


if __name__ == "__main__":
    main()
