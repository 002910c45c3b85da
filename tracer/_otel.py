"""Finished records become OpenTelemetry SDK spans, off the hot path, in one background thread.

The engine thread only appends records and, at the end of a root span, wakes the worker. The
worker builds real SDK spans (same names, parents, attributes, exact start/end converted to
epoch through :mod:`tracer.clock`) and hands them to the configured exporters. Ids are derived
from the recorder's ids (a random per-process salt keeps them unique across processes), so a
child can be exported before or without its parent and still point at it.

An exporter that fails, raises or hangs costs the caller nothing: failures are counted as
dropped spans and reported once on stderr (and in :func:`tracer.stats`); the worker waits at
most the exporter's own timeout.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import _core, clock
from ._core import _safe_str
from ._record import WINDOW, Span
from ._sampling import ROOTS, otel_span_id, otel_trace_id

_BATCH = 512
_METRICS_QUEUE = 65536
DEFAULT_EXPORT_TIMEOUT_S = 2.0


class _GivenIds(IdGenerator):
    """Hands the SDK the ids the worker chose for the span it is about to start."""

    def __init__(self) -> None:
        self.span_id = 1
        self.trace_id = 1

    def generate_span_id(self) -> int:
        return self.span_id

    def generate_trace_id(self) -> int:
        return self.trace_id


class _Collect(SpanProcessor):
    """Collects ended SDK spans so the worker can export them in one call per batch."""

    def __init__(self) -> None:
        self.spans: list = []

    def on_end(self, span) -> None:
        self.spans.append(span)


def otel_attributes(s: Span) -> dict:
    """A record's attributes as OpenTelemetry values, plus its io and thread."""
    attrs = {}
    for k, v in s.attributes.items():
        k = k if type(k) is str else _safe_str(k)
        if type(v) is int and not -2**63 <= v < 2**63:
            v = str(v)  # OTLP ints are 64-bit
        attrs[k] = v if isinstance(v, (str, bool, int, float)) else _safe_str(v)
    for cat, tot in s.io.items():
        attrs[f"io.{cat}.bytes"] = tot.bytes
        attrs[f"io.{cat}.ms"] = tot.ms
        attrs[f"io.{cat}.count"] = tot.count
        attrs[f"io.{cat}.direction"] = tot.direction
    attrs["thread.id"] = s.thread_id
    attrs["thread.name"] = s.thread_name
    if s.window:
        attrs[WINDOW] = True  # a pass: lets tracer.testing loaders tell windows apart
    return attrs


def exporters_from_environment() -> list[SpanExporter]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (``otlp``, ``console``, ``none``, comma-separated).

    Unset or ``none`` gives no exporter: recording alone never opens a network connection.
    A bad name raises ``ValueError`` naming the variable and the value.
    """
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "")
    out = []
    for name in (n.strip().lower() for n in raw.split(",") if n.strip()):
        if name not in ("otlp", "console", "none"):
            raise ValueError(f"OTEL_TRACES_EXPORTER={raw!r}: unknown exporter {name!r} (use otlp, console or none)")
        out.extend(named_exporters(name))
    return out


def named_exporters(name: str) -> list[SpanExporter]:
    """``none``, ``console``, or ``otlp`` over ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (grpc,
    http/protobuf) with spectrace's export timeout; the exporter reads its own endpoint and
    header variables, checked here first so a malformed one is one line, not a late failure."""
    if name == "none":
        return []
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return [ConsoleSpanExporter()]
    if name != "otlp":
        raise ValueError(f"exporter must be 'env', 'none', 'console', 'otlp' or a SpanExporter, got {name!r}")
    from ._metrics import check_endpoints

    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        proto = os.environ.get(var)
        if proto:
            proto = proto.strip()
            if proto not in ("grpc", "http/protobuf"):
                raise ValueError(f"{var}={proto!r}: use 'grpc' or 'http/protobuf'")
            break
    else:
        proto = "grpc"
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    check_endpoints(os.environ, "TRACES")
    quiet_sdk_loggers()
    return [OTLPSpanExporter(timeout=export_timeout_s())]


def quiet_sdk_loggers() -> None:
    """spectrace reports export failures itself, once and counted; the OTLP exporters' own
    logger would print a traceback-like error per failed batch. Silenced only where the user
    left the logger's level unset."""
    for name in ("opentelemetry.exporter.otlp.proto.grpc.exporter", "opentelemetry.exporter.otlp.proto.http",
                 "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                 "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                 "opentelemetry.sdk.metrics._internal.export", "opentelemetry.sdk._shared_internal"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(logging.CRITICAL)


_resource_cache: list = []


def resource() -> Resource:
    """The process's resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), detected once:
    detection runs a thread pool, which must not run again inside a forked child."""
    if not _resource_cache:
        r = Resource.create()
        if str(r.attributes.get("service.name", "")).startswith("unknown_service"):
            r = r.merge(Resource({"service.name": "spectrace"}))
        _resource_cache.append(r)
    return _resource_cache[0]


_timeout_override: list = [None]  # tracer.configure(export_timeout_s=...)


def export_timeout_s() -> float:
    """How long one export, a flush and the exit may wait: ``tracer.configure(export_timeout_s=)``,
    else ``OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT`` (seconds, as the SDK reads it; values above
    1000 are taken as the spec's milliseconds), else 2 s (the SDK's own 10 s is too long to
    hold a process's exit for a collector that is down)."""
    if _timeout_override[0] is not None:
        return _timeout_override[0]
    for var in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = os.environ.get(var)
        if raw:
            try:
                v = float(raw)
                if v > 0:
                    return v / 1000 if v > 1000 else v
            except ValueError:
                pass
            _core._misuse(f"{var}={raw!r} is not a positive number of seconds; "
                          f"using {DEFAULT_EXPORT_TIMEOUT_S:g}")
            break
    return DEFAULT_EXPORT_TIMEOUT_S


class ExporterBook:
    """One exporter's tally: every span handed to it is exported or failed."""

    __slots__ = ("name", "exported", "failed")

    def __init__(self, name: str) -> None:
        self.name = name
        self.exported = 0
        self.failed = 0


class ExportPipeline:
    """One TracerProvider, its exporters, the metrics, and the worker thread that feeds them.

    Books: every span the recorder buffered is, at any moment, still buffered (``pending`` or
    taken by the worker: ``in_flight``), exported (every exporter took it) or failed (one
    refused it, raised, or it could not be encoded). ``failed`` spans are dropped, counted and
    reported once.
    """

    def __init__(self, exporters: list[SpanExporter], metrics=None):
        self.exporters = list(exporters)
        self.books = [ExporterBook(type(e).__name__) for e in self.exporters]
        self.metrics = metrics  # tracer._metrics.Metrics or None
        # What the metrics read, between the engine and this worker. Bounded: a worker held up
        # by a stuck span exporter (one export waits up to the export timeout) must not let
        # finished windows, and the spans they reference, pile up without limit.
        self.requests = collections.deque(maxlen=_METRICS_QUEUE)  # tracer._metrics.Request
        self.windows = collections.deque(maxlen=_METRICS_QUEUE) if metrics is not None else None
        self._ids = _GivenIds()
        self._collect = _Collect()
        self.provider = TracerProvider(resource=resource(), id_generator=self._ids)
        self.provider.add_span_processor(self._collect)
        self._tracer = self.provider.get_tracer("spectrace")
        self.exported = 0
        self.failed = 0
        self.in_flight = 0  # taken from the buffer, not yet settled (counted as buffered)
        self.retired = False
        self._warned = False
        self._cond = threading.Condition()
        self._wake = False
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="spectrace-export", daemon=True)
        self._thread.start()

    # -- engine side ---------------------------------------------------------------------
    def wake(self) -> None:
        with self._cond:
            self._wake = True
            self._cond.notify()

    def _idle(self) -> bool:
        return (not self._wake and not self._busy and not _core.STATE.pending and not self.requests
                and not self.windows)

    def flush(self, timeout_s: float) -> bool:
        """Wake the worker and wait until everything pending is exported (or the timeout)."""
        with self._cond:
            self._wake = True
            self._cond.notify()
            done = self._cond.wait_for(self._idle, timeout=timeout_s)
        if done and self.metrics is not None:
            done = self.metrics.flush(timeout_s)
        return done

    def shutdown(self, timeout_s: float) -> bool:
        """Flush within ``timeout_s``, then stop: exporters are shut down whatever the worker is doing.

        Returns whether everything was delivered. A worker stuck in an export is a daemon
        thread: the process does not wait for it past the timeout. The metrics outlive a
        pipeline (``tracer._export`` shuts them down at exit or when their setting changes).
        """
        done = self.flush(timeout_s)
        with self._cond:
            self._stop = True
            self._cond.notify()
        for e in self.exporters:
            try:
                e.shutdown()
            except Exception:
                pass
        return done

    # -- worker side ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wake or self._stop, timeout=1.0)
                if self._stop:
                    return
                self._wake = False
                self._busy = True
            try:
                self._drain_metrics()
                while True:
                    batch = self._take()
                    if not batch:
                        break
                    for i in range(0, len(batch), _BATCH):
                        part = batch[i:i + _BATCH]
                        try:
                            ok, failed, books = self._export(part)
                        except Exception as e:  # never let the worker die, never lose count
                            ok, failed, books = 0, len(part), []
                            self._report(f"export worker error: {e!r}")
                        self._settle(len(part), ok, failed, books)
                    self._drain_metrics()
            except Exception as e:
                self._report(f"export worker error: {e!r}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _take(self) -> list[Span]:
        with self._cond:
            if self.retired:
                return []
            batch = _core.take_pending()
            self.in_flight += len(batch)
            return batch

    def _settle(self, n: int, exported: int, failed: int, books: list) -> None:
        """Count a finished batch, unless the pipeline was retired meanwhile (its in-flight spans
        were then counted as dropped, and a late success must not count them twice)."""
        with self._cond:
            if self.retired:
                return
            self.in_flight -= n
            self.exported += exported
            self.failed += failed
            for book, (e, f) in zip(self.books, books):
                book.exported += e
                book.failed += f

    def retire(self) -> int:
        """Stop counting; returns the spans still in flight (to be counted as dropped)."""
        with self._cond:
            self.retired = True
            left, self.in_flight = self.in_flight, 0
            return left

    def _drain_metrics(self) -> None:
        m = self.metrics
        if m is None:
            return
        for q, record in ((self.requests, m.record_request), (self.windows, m.record_window)):
            while q:
                try:
                    record(q.popleft())
                except Exception as e:
                    self._report(f"metrics error: {e!r}", spans=False)

    def _export(self, records: list[Span]) -> tuple[int, int, list]:
        """Encode and export one batch: ``(exported, failed, [(exported, failed) per exporter])``."""
        self._collect.spans = []
        unencodable = 0
        for s in records:
            try:
                self._to_sdk(s)
            except Exception as e:  # one bad record costs one span, counted, not the batch
                unencodable += 1
                self._report(f"a span could not be encoded ({e!r})")
        spans = self._collect.spans
        self._collect.spans = []
        if not spans:
            return 0, unencodable, []
        all_ok, books = True, []
        for exporter, book in zip(self.exporters, self.books):
            try:
                ok = exporter.export(spans) == SpanExportResult.SUCCESS
                err = "the exporter returned FAILURE"
            except Exception as e:
                ok, err = False, repr(e)
            books.append((len(spans), 0) if ok else (0, len(spans)))
            if not ok:
                all_ok = False
                self._report(f"{book.name} could not export {len(spans)} spans ({err})")
        if all_ok:
            return len(spans), unencodable, books
        return 0, unencodable + len(spans), books

    def _to_sdk(self, s: Span) -> None:
        root = ROOTS.get(s.trace_id)
        trace_id = root[0] if root is not None else otel_trace_id(s.trace_id)
        ctx = None
        if s.parent_id:
            parent = SpanContext(trace_id, otel_span_id(s.parent_id), is_remote=False,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
            ctx = otel_trace.set_span_in_context(NonRecordingSpan(parent))
        elif root is not None and root[1]:  # the caller's span (traceparent / OTel context)
            parent = SpanContext(trace_id, root[1], is_remote=True, trace_flags=TraceFlags(root[2]))
            ctx = otel_trace.set_span_in_context(NonRecordingSpan(parent))
        self._ids.span_id = otel_span_id(s.span_id)
        self._ids.trace_id = trace_id
        sp = self._tracer.start_span(_safe_str(s.name) if type(s.name) is not str else s.name, context=ctx,
                                     kind=SpanKind.INTERNAL, attributes=otel_attributes(s),
                                     start_time=clock.to_epoch_ns(s.start_ns),
                                     record_exception=False, set_status_on_exception=False)
        for t in s.transfers:
            ev = {"binding": _safe_str(t.binding), "category": t.category, "direction": t.direction,
                  "bytes": t.nbytes, "ms": t.ns / 1e6}
            if t.src or t.dst:  # which device groups the copy joined (engines on disjoint groups)
                ev["src"], ev["dst"] = t.src, t.dst
            sp.add_event("transfer", ev, timestamp=clock.to_epoch_ns(t.start_ns))
        if s.error_type is not None:
            sp.add_event("exception", {"exception.type": s.error_type,
                                       "exception.message": s.error_message or ""},
                         timestamp=clock.to_epoch_ns(s.end_ns))
            sp.set_status(Status(StatusCode.ERROR, f"{s.error_type}: {s.error_message}"))
        sp.end(end_time=clock.to_epoch_ns(s.end_ns))

    def _report(self, message: str, *, spans: bool = True) -> None:
        if not self._warned:
            self._warned = True
            tail = ("; these spans are dropped and counted (tracer.stats()['spans_dropped']); "
                    "further failures are not printed") if spans else "; further failures are not printed"
            try:
                print(f"spectrace: warning: {message}{tail}", file=sys.stderr)
            except Exception:
                pass
