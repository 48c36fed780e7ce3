"""OpenTelemetry: a real one-voter node in this process (real gRPC, LMDB and engine) exporting to the
in-memory span exporter and metric reader; the [telemetry] config; and fedraft without OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fedraft.cli.common import EXIT_USAGE
from fedraft.config import TelemetryConfig, load_node_config
from fedraft.errors import ConfigError
from fedraft.federation_files import create_federation
from fedraft.telemetry import TRACEPARENT, start_node_telemetry, trace_headers
from tests.integration.cluster import free_base_port, wait_for

# Blocks the named packages as if they were not installed, then runs the rest of the program.
WITHOUT = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None
    sys.meta_path.insert(0, Block())
""")


@pytest.fixture()
def traced_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, InMemorySpanExporter,
                                                                                      InMemoryMetricReader]]:
    import fedraft.app as app
    from fedraft.app import FedraftNode

    layout = create_federation(tmp_path / "fed", nodes=1, base_port=free_base_port())
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    monkeypatch.setattr(app, "start_node_telemetry", lambda cfg, node_id: start_node_telemetry(
        cfg, node_id, span_exporter=spans, metric_reader=reader))
    cfg = load_node_config(layout.node_configs["hq"])
    node = FedraftNode(cfg)
    node.start()
    try:
        yield layout, spans, reader
    finally:
        node.stop()


def _metrics(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def test_propose_commit_apply_spans_continue_the_callers_trace(traced_node: Any) -> None:
    from fedraft.client import Client

    layout, spans, reader = traced_node
    caller = TracerProvider()
    caller_spans = InMemorySpanExporter()
    caller.add_span_processor(SimpleSpanProcessor(caller_spans))
    with Client.from_profile(layout.profiles["hq"]) as client:
        wait_for(lambda: client.status(client.endpoints[0], timeout=1.0).role == "leader", what="a leader")
        with caller.get_tracer("app").start_as_current_span("app.request") as app_span:
            result = client.put("/routes/traced", b"10.0.0.1:80")
        app_ctx = app_span.get_span_context()

    def propose_spans() -> list[Any]:
        return [s for s in spans.get_finished_spans()
                if s.name == "fedraft.propose" and s.context.trace_id == app_ctx.trace_id]

    (propose,) = wait_for(propose_spans, timeout=10, what="the traced propose span")
    assert propose.parent is not None and propose.parent.span_id == app_ctx.span_id and propose.parent.is_remote
    assert propose.kind == trace.SpanKind.SERVER
    assert propose.attributes["fedraft.index"] == result.index
    assert propose.attributes["fedraft.node_id"] == "hq" and propose.attributes["fedraft.envelopes"] == 1
    children = {s.name: s for s in spans.get_finished_spans()
                if s.parent is not None and s.parent.span_id == propose.context.span_id}
    assert sorted(children) == ["fedraft.apply", "fedraft.commit", "fedraft.queue"]
    queue, commit, apply = children["fedraft.queue"], children["fedraft.commit"], children["fedraft.apply"]
    # the stages follow each other inside the request
    assert propose.start_time <= queue.start_time <= queue.end_time == commit.start_time
    assert commit.start_time <= commit.end_time == apply.start_time <= apply.end_time <= propose.end_time
    assert propose.status.is_ok

    points = wait_for(lambda: (m := _metrics(reader)) and "fedraft_fsync_seconds" in m and m,
                      timeout=10, what="fsync samples in the OpenTelemetry metrics")
    assert sum(p.count for p in points["fedraft_commit_latency_seconds"]) >= 1
    assert sum(p.count for p in points["fedraft_fsync_seconds"]) >= 1
    assert points["fedraft_raft_term"][0].value >= 1
    assert points["fedraft_apply_lag_entries"][0].attributes == {"node": "hq"}


def test_a_refused_propose_is_an_error_span_and_counted(traced_node: Any) -> None:
    import grpc

    from fedraft._proto.fedraft.v1 import api_pb2 as api
    from fedraft.client import Client

    layout, spans, reader = traced_node
    with Client.from_profile(layout.profiles["hq"]) as client:
        wait_for(lambda: client.status(client.endpoints[0], timeout=1.0).role == "leader", what="a leader")
        with pytest.raises(grpc.RpcError) as refused:
            client.call(client.endpoints[0], "Propose", api.ProposeRequest().SerializeToString())
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # the node's own agent and cosigner propose too
    (span,) = [s for s in spans.get_finished_spans()
               if s.name == "fedraft.propose" and s.status.description == "INVALID_ARGUMENT: no envelopes"]
    assert not span.status.is_ok and "fedraft.index" not in span.attributes
    rejected = _metrics(reader)["fedraft_requests_rejected"]
    assert any(p.attributes == {"reason": "INVALID_ARGUMENT"} and p.value == 1 for p in rejected)


def test_no_traceparent_without_a_current_span() -> None:
    assert trace_headers() == ()
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("outer") as span:
        headers = dict(trace_headers())
    ctx = span.get_span_context()
    assert headers[TRACEPARENT].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")


def test_exporter_none_sets_nothing_up() -> None:
    assert start_node_telemetry(TelemetryConfig(), "hq") is None


def test_console_exporter_starts_and_shuts_down() -> None:
    telemetry = start_node_telemetry(TelemetryConfig(exporter="console", metrics_interval_ms=60_000), "hq")
    assert telemetry is not None
    telemetry.shutdown()


@pytest.mark.parametrize(("table", "message"), [
    ('exporter = "jaeger"', "exporter must be one of none, console, otlp, got 'jaeger'"),
    ('exporter = "console"\nendpoint = "http://x:4317"', "endpoint is for the otlp exporter only"),
    ('exporter = "otlp"\nsampling = 1', "unknown setting(s) sampling"),
    ("metrics_interval_ms = 5", "metrics_interval_ms must be at least 100"),
])
def test_bad_telemetry_tables_are_one_line_errors(tmp_path: Path, table: str, message: str) -> None:
    layout = create_federation(tmp_path / "fed", nodes=1, base_port=free_base_port())
    config = layout.node_configs["hq"]
    config.write_text(config.read_text() + f"\n[telemetry]\n{table}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_node_config(config)


def test_otlp_endpoint_is_read(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "fed", nodes=1, base_port=free_base_port())
    config = layout.node_configs["hq"]
    config.write_text(config.read_text() + '\n[telemetry]\nexporter = "otlp"\nendpoint = "http://127.0.0.1:4317"\n')
    assert load_node_config(config).telemetry == TelemetryConfig("otlp", "http://127.0.0.1:4317", 10_000)


def _run_without(blocked: list[str], body: str) -> subprocess.CompletedProcess[str]:
    program = f"BLOCKED = {blocked!r}\n{WITHOUT}\n{textwrap.dedent(body)}"
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])


def test_everything_works_without_opentelemetry() -> None:
    done = _run_without(["opentelemetry"], """
        import fedraft.app
        from fedraft.client import Client
        from fedraft.config import TelemetryConfig
        from fedraft.errors import ConfigError
        from fedraft.service.api import FederationService
        from fedraft.telemetry import client_span, start_node_telemetry, trace_headers
        assert trace_headers() == ()
        with client_span("Propose"):
            pass
        assert start_node_telemetry(TelemetryConfig(), "hq") is None
        try:
            start_node_telemetry(TelemetryConfig(exporter="console"), "hq")
        except ConfigError as exc:
            print(exc)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("telemetry exporter 'console' needs OpenTelemetry "
                                   "(install the [otel] extra: pip install 'fedraft[otel]')")


def test_a_node_asking_for_a_missing_exporter_stops_at_start_with_one_line(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "fed", nodes=1, base_port=free_base_port())
    config = layout.node_configs["hq"]
    config.write_text(config.read_text() + '\n[telemetry]\nexporter = "otlp"\n')
    done = _run_without(["opentelemetry.exporter"], f"""
        import sys
        from fedraft.cli.main import main
        sys.exit(main(["node", "--config", {str(config)!r}]))
    """)
    assert done.returncode == EXIT_USAGE  # a configuration error
    assert done.stderr.splitlines() == ["error: telemetry exporter 'otlp' needs the OTLP exporter package",
                                        "hint: install the [otlp] extra: pip install 'fedraft[otlp]'"]
    assert not (config.parent / "data" / "state").exists()  # nothing was started


def test_client_calls_are_client_spans_once_the_application_installed_a_provider() -> None:
    done = _run_without([], """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from fedraft.telemetry import client_span, trace_headers
        with client_span("Propose"):  # no provider yet: no span at all
            assert trace_headers() == ()
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)
        with trace.get_tracer("app").start_as_current_span("app") as app:
            with client_span("Propose"):
                headers = dict(trace_headers())
        (client,) = [s for s in spans.get_finished_spans() if s.name == "fedraft.client/Propose"]
        assert client.kind == trace.SpanKind.CLIENT and client.parent.span_id == app.get_span_context().span_id
        assert headers["traceparent"].split("-")[2] == f"{client.context.span_id:016x}"
        print("ok")
    """)
    assert done.stdout.strip() == "ok", done.stderr


def test_a_malformed_traceparent_starts_a_new_trace_and_the_write_goes_through(
        traced_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedraft.client as client_module
    from fedraft.client import Client

    layout, spans, _ = traced_node
    monkeypatch.setattr(client_module, "trace_headers", lambda: ((TRACEPARENT, "00-zz-not-a-trace-01"),))
    with Client.from_profile(layout.profiles["hq"]) as client:
        wait_for(lambda: client.status(client.endpoints[0], timeout=1.0).role == "leader", what="a leader")
        result = client.put("/routes/untraced", b"x")
    # the node's agent may share the entry (and its index): nothing here sends a valid traceparent
    mine = wait_for(lambda: [s for s in spans.get_finished_spans() if s.name == "fedraft.propose"
                             and s.attributes.get("fedraft.index") == result.index], what="the propose span")
    assert all(s.parent is None and s.status.is_ok for s in mine)
