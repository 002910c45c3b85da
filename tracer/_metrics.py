"""OpenTelemetry metrics: TTFT histograms, bytes per binding category, chunk latency, drops.

Nothing here runs on the engine's hot path. Two inputs reach the export worker as plain
objects, and the worker records them into the SDK's instruments:

* a **request** (:func:`tracer.record_request`, called once per request by the engine, also
  when recording is off or the request was not sampled, so the request-level metrics count
  every request): TTFT per pass, window durations, token counts, time per output token,
  kept-token ratio;
* a finished, recorded **window** (queued by the recorder when it ends): its chunks' durations
  and its transfers' bytes, time and count per engine, binding category and direction.

Names and buckets follow the GenAI semantic conventions where they exist
(``gen_ai.server.time_to_first_token``, ``gen_ai.server.time_per_output_token``,
``gen_ai.client.token.usage``); spectrace's own live under ``spectrace.*``. The contract, with
the Prometheus names the exporter makes of them, is in ``docs/CONTRACTS.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._record import Span

# GenAI semantic conventions' recommended explicit bucket boundaries (the Python semconv helpers set none).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = tuple(4 ** i for i in range(14))  # 1, 4, ..., 67108864
# spectrace's own: windows and chunks span 0.1 ms (a CPU chunk of a tiny model) to 10 s.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
RATIO_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)

OPERATION = "text_completion"
PROVIDER = "spectrace"

METRICS_VAR = "OTEL_METRICS_EXPORTER"


@dataclass(frozen=True, slots=True)
class Request:
    """One request's figures, as the engine measured them (seconds, tokens); None: not measured."""

    model: str
    ttft_s: Mapping  # pass -> seconds
    windows_s: Mapping  # window name -> seconds
    input_tokens: int | None = None
    output_tokens: int | None = None
    tpot_s: float | None = None
    kept_ratio: float | None = None


def _base(model) -> dict:
    return {"gen_ai.operation.name": OPERATION, "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": str(model or "unknown")}


def window_model(w: Span) -> str:
    """The request model a window belongs to: its own attribute, else its nearest ancestor's."""
    s = w
    while s is not None:
        m = s.attributes.get("gen_ai.request.model")
        if m is not None:
            return str(m)
        s = s._parent
    return "unknown"


class Metrics:
    """The meter provider, its readers and spectrace's instruments."""

    def __init__(self, readers: list, *, resource=None, stats=None):
        from opentelemetry.sdk.metrics import MeterProvider

        # spectrace shuts the provider down itself (bounded, at exit or reconfiguration); the
        # SDK's own exit hook would do it a second time and log "shutdown can only be called once".
        self.provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
        m = self.provider.get_meter("spectrace")
        h = m.create_histogram
        self.ttft = h("gen_ai.server.time_to_first_token", unit="s", description="Time to generate the first token",
                      explicit_bucket_boundaries_advisory=list(TTFT_BUCKETS))
        self.tpot = h("gen_ai.server.time_per_output_token", unit="s",
                      description="Time per output token after the first",
                      explicit_bucket_boundaries_advisory=list(TPOT_BUCKETS))
        self.tokens = h("gen_ai.client.token.usage", unit="{token}", description="Input and output tokens per request",
                        explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS))
        self.window = h("spectrace.window.duration", unit="s", description="TTFT window duration per request",
                        explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self.chunk = h("spectrace.prefill.chunk.duration", unit="s", description="One prefill chunk",
                       explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self.kept = h("spectrace.kept_token.ratio", unit="1", description="Kept / prompt tokens (speculative)",
                      explicit_bucket_boundaries_advisory=list(RATIO_BUCKETS))
        self.io_bytes = m.create_counter("spectrace.io.size", unit="By", description="Bytes copied host<->device")
        self.io_time = m.create_counter("spectrace.io.duration", unit="s", description="Time spent in copies")
        self.io_count = m.create_counter("spectrace.io.transfers", unit="{transfer}", description="Copies")
        if stats is not None:
            from opentelemetry.metrics import Observation

            def dropped(_options):
                s = stats()
                return [Observation(s[f"spans_dropped_{r}"], {"spectrace.reason": r}) for r in DROP_REASONS]

            def recorded(_options):
                return [Observation(stats()["spans_recorded"])]

            m.create_observable_counter("spectrace.spans.dropped", [dropped], unit="{span}",
                                        description="Recorded spans that were not exported, by reason")
            m.create_observable_counter("spectrace.spans.recorded", [recorded], unit="{span}",
                                        description="Spans recorded")

    def record_request(self, r: Request) -> None:
        base = _base(r.model)
        for p, s in r.ttft_s.items():
            if s is not None:
                self.ttft.record(s, {**base, "spectrace.pass": p})
        for name, s in (r.windows_s or {}).items():
            if s is not None:
                self.window.record(s, {**base, "spectrace.window": name})
        for kind, n in (("input", r.input_tokens), ("output", r.output_tokens)):
            if n is not None:
                self.tokens.record(n, {**base, "gen_ai.token.type": kind})
        if r.tpot_s is not None:
            self.tpot.record(r.tpot_s, base)
        if r.kept_ratio is not None:
            self.kept.record(r.kept_ratio, base)

    def record_window(self, w: Span) -> None:
        base = _base(window_model(w))
        for c in w.window_data.chunks:
            self.chunk.record(c.duration_ns / 1e9, {**base, "spectrace.engine": str(c.attributes.get("engine", ""))})
        totals: dict[tuple, list] = {}
        engine = str(w.attributes.get("engine", ""))
        for t in w.window_data.transfers:
            k = (t.category, t.direction)
            tot = totals.get(k)
            if tot is None:
                tot = totals[k] = [0, 0, 0]
            tot[0] += t.nbytes
            tot[1] += t.ns
            tot[2] += 1
        for (cat, direction), (nbytes, ns, count) in totals.items():
            a = {**base, "spectrace.engine": engine, "spectrace.io.category": cat, "spectrace.io.direction": direction}
            self.io_bytes.add(nbytes, a)
            self.io_time.add(ns / 1e9, a)
            self.io_count.add(count, a)

    def flush(self, timeout_s: float) -> bool:
        try:
            return bool(self.provider.force_flush(timeout_millis=timeout_s * 1000))
        except Exception:
            return False

    def shutdown(self, timeout_s: float) -> None:
        try:
            self.provider.shutdown(timeout_millis=timeout_s * 1000)
        except Exception:
            pass
        for server in getattr(self, "servers", ()):
            try:
                server.shutdown()
                server.server_close()
            except Exception:
                pass


DROP_REASONS = ("buffer_full", "export_failed", "at_exit", "no_exporter")


def readers_from_environment(timeout_s: float, environ=os.environ) -> tuple[list, list]:
    """``(readers, servers)`` as ``OTEL_METRICS_EXPORTER`` names them (otlp, prometheus, console, none).

    Unset or ``none``: no readers, no thread, no port. A bad value raises ``ValueError`` naming
    the variable and the value (the caller prints it as one line and records without export).
    """
    raw = environ.get(METRICS_VAR, "")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    readers, servers = [], []
    for name in names:
        if name == "none":
            continue
        if name == "otlp":
            readers.append(_periodic(_otlp_exporter(timeout_s, environ), timeout_s, environ))
        elif name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            readers.append(_periodic(ConsoleMetricExporter(), timeout_s, environ))
        elif name == "prometheus":
            reader, server = _prometheus(environ)
            readers.append(reader)
            servers.append(server)
        else:
            raise ValueError(f"{METRICS_VAR}={raw!r}: unknown exporter {name!r} "
                             "(use otlp, prometheus, console or none)")
    return readers, servers


def _periodic(exporter, timeout_s: float, environ):
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    raw = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "")
    try:
        interval_ms = float(raw) if raw.strip() else 60000.0
        if interval_ms <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL={raw!r} is not a positive number of milliseconds") from None
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms,
                                         export_timeout_millis=timeout_s * 1000)


def _otlp_exporter(timeout_s: float, environ):
    proto = (environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
             or "grpc").strip()
    check_endpoints(environ, "METRICS")
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    elif proto == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={proto!r}: use 'grpc' or 'http/protobuf'")
    return OTLPMetricExporter(timeout=timeout_s)


def check_endpoints(environ, signal: str) -> None:
    """A malformed ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_ENDPOINT`` raises ``ValueError`` naming it."""
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"):
        raw = environ.get(var)
        if not raw:
            continue
        url = raw.strip()
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            parts.port  # noqa: B018 (raises ValueError on a bad port)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError
        except ValueError:
            raise ValueError(f"{var}={raw!r} is not an endpoint URL like http://127.0.0.1:4317") from None


def _prometheus(environ):
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    host = (environ.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "localhost").strip()
    raw = environ.get("OTEL_EXPORTER_PROMETHEUS_PORT") or "9464"
    try:
        port = int(raw)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"OTEL_EXPORTER_PROMETHEUS_PORT={raw!r} is not a port number (0-65535)") from None
    reader = PrometheusMetricReader()
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as e:
        reader.shutdown()
        raise ValueError(f"OTEL_EXPORTER_PROMETHEUS_HOST/PORT={host}:{port}: cannot listen ({e.strerror or e})") from None
    return reader, server
