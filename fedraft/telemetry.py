"""OpenTelemetry for fedraft (SPEC §8, docs/decisions/0014-telemetry.md): the node's providers and
exporters from node.toml `[telemetry]`, the propose → commit → apply spans, and the W3C trace
context (`traceparent`) that the client carries in gRPC metadata.

Optional: the `[otel]` extra (opentelemetry-api and -sdk). Without it, or with `exporter = "none"`
(the default), a node sets nothing up and its API gets no tracer: each request then pays one
`is None` test. The client injects the caller's current context only when the API package is
installed and the caller has a recording span; otherwise it adds nothing.

Spans of one Propose on the leader (children of the client's span when a traceparent came along):

    fedraft.propose   the API handler, from receipt to response
      fedraft.queue   envelope checked and queued → its entry built and handed to Raft (batching)
      fedraft.commit  handed to Raft → committed by a quorum (journal fsync on a majority)
      fedraft.apply   committed → applied and its result visible to the API (state transaction committed)

The engine marks the stage boundaries on a ProposeTrace (it never imports this module); the child
spans are written with those times when the request ends. Followers apply the same entries without a
span: the log entry carries no trace context, since the signed bytes must not depend on tracing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from fedraft.config import TelemetryConfig
from fedraft.errors import ConfigError

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
OTEL_HINT = "install the [otel] extra: pip install 'fedraft[otel]'"
OTLP_HINT = "install the [otlp] extra: pip install 'fedraft[otlp]'"
SCOPE = "fedraft"


def otel_api_available() -> bool:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


# ----- the node: providers and exporters -----
class NodeTelemetry:
    """A node's tracer and meter (its own providers, not the process-global ones: tests run several)."""

    def __init__(self, tracer_provider: Any, meter_provider: Any, node_id: str) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = tracer_provider.get_tracer(SCOPE)
        self.meter = meter_provider.get_meter(SCOPE)
        self.node_id = node_id

    def start_propose(self, metadata: Sequence[tuple[str, Any]], envelopes: int) -> ProposeTrace:
        return ProposeTrace(self.tracer, extract(metadata), self.node_id, envelopes)

    def shutdown(self) -> None:
        """Flush what is buffered (bounded by the exporters' own timeouts) and stop exporting."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def start_node_telemetry(cfg: TelemetryConfig, node_id: str, *, span_exporter: Any = None,
                         metric_reader: Any = None) -> NodeTelemetry | None:
    """The node's telemetry per its config, or None when off. `span_exporter` / `metric_reader`
    (tests: InMemorySpanExporter, InMemoryMetricReader) replace the configured exporters.

    Raises ConfigError, one line, when the exporter asked for is not installed."""
    if cfg.exporter == "none" and span_exporter is None and metric_reader is None:
        return None
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        raise ConfigError(f"telemetry exporter {cfg.exporter!r} needs OpenTelemetry", hint=OTEL_HINT) from None
    resource = Resource.create({"service.name": "fedraft", "service.instance.id": node_id})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if span_exporter is not None:  # in-memory: synchronous, so a test sees a span once its request ended
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    if metric_reader is not None:
        readers.append(metric_reader)
    interval = cfg.metrics_interval_ms
    if cfg.exporter == "console":
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=interval))
    elif cfg.exporter == "otlp":
        spans, metrics = _otlp_exporters(cfg.endpoint)
        tracer_provider.add_span_processor(BatchSpanProcessor(spans))
        readers.append(PeriodicExportingMetricReader(metrics, export_interval_millis=interval))
    return NodeTelemetry(tracer_provider, MeterProvider(resource=resource, metric_readers=readers), node_id)


def _otlp_exporters(endpoint: str) -> tuple[Any, Any]:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError("telemetry exporter 'otlp' needs the OTLP exporter package", hint=OTLP_HINT) from None
    kwargs = {"endpoint": endpoint} if endpoint else {}
    return OTLPSpanExporter(**kwargs), OTLPMetricExporter(**kwargs)


# ----- trace context in gRPC metadata (W3C Trace Context) -----
def extract(metadata: Sequence[tuple[str, Any]]) -> Any:
    """The remote parent context from a request's `traceparent`/`tracestate` metadata (None if absent)."""
    carrier = {k: v for k, v in metadata if k in (TRACEPARENT, TRACESTATE) and isinstance(v, str)}
    if TRACEPARENT not in carrier:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)


_client_api: Any = None  # (trace module, W3C propagator) once imported; False without OpenTelemetry


def _client_otel() -> Any:
    global _client_api
    if _client_api is None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            _client_api = False
        else:
            _client_api = (trace, TraceContextTextMapPropagator())
    return _client_api


def trace_headers() -> tuple[tuple[str, str], ...]:
    """The caller's current span as `traceparent` (and `tracestate`) metadata; () when there is none."""
    otel = _client_otel()
    if not otel:
        return ()
    trace, propagator = otel
    if not trace.get_current_span().get_span_context().is_valid:
        return ()
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    return tuple(carrier.items())


def client_span(method: str) -> contextlib.AbstractContextManager[Any]:
    """A CLIENT span around one client call (all its attempts), on the process's global tracer: an
    application that set up OpenTelemetry sees fedraft calls inside its own traces. Nothing (not even
    a no-op span) until the application installed a tracer provider."""
    otel = _client_otel()
    if not otel or isinstance(otel[0].get_tracer_provider(), otel[0].ProxyTracerProvider):
        return contextlib.nullcontext()
    trace = otel[0]
    return trace.get_tracer(SCOPE).start_as_current_span(  # type: ignore[no-any-return]
        f"fedraft.client/{method}", kind=trace.SpanKind.CLIENT)


# ----- one Propose on the leader -----
class ProposeTrace:
    """Stage marks of one Propose request. The engine calls `submitted` and `committed` (both on the
    tick thread); the API calls `finish` once the results are in (or the call failed).
    A request with several envelopes keeps the latest mark of each stage."""

    def __init__(self, tracer: Any, parent: Any, node_id: str, envelopes: int) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self.span = tracer.start_span("fedraft.propose", context=parent, kind=trace.SpanKind.SERVER,
                                      attributes={"fedraft.node_id": node_id, "fedraft.envelopes": envelopes})
        self.queued_ns = 0
        self.submitted_ns = 0
        self.committed_ns = 0
        self.entry_envelopes = 0

    def queued(self) -> None:
        if not self.queued_ns:
            self.queued_ns = time.time_ns()

    def submitted(self, entry_envelopes: int) -> None:
        self.submitted_ns = time.time_ns()
        self.entry_envelopes = max(self.entry_envelopes, entry_envelopes)

    def committed(self, at_ns: int) -> None:
        self.committed_ns = max(self.committed_ns, at_ns)

    def finish(self, *, index: int = 0, error: str = "") -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        parent = trace.set_span_in_context(self.span)
        stages = (("fedraft.queue", self.queued_ns, self.submitted_ns),
                  ("fedraft.commit", self.submitted_ns, self.committed_ns),
                  ("fedraft.apply", self.committed_ns, end if self.committed_ns else 0))
        for name, start, stop in stages:
            if start and stop >= start:
                self._tracer.start_span(name, context=parent, start_time=start).end(end_time=stop)
        if self.entry_envelopes:
            self.span.set_attribute("fedraft.entry_envelopes", self.entry_envelopes)
        if index:
            self.span.set_attribute("fedraft.index", index)
        if error:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end(end_time=end)
