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

import os
import random
import sys
import threading

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import _core, clock
from ._record import WINDOW, Span

_BATCH = 512
_SALT_SPAN = random.getrandbits(63) | 1
_SALT_TRACE = random.getrandbits(64) << 64


def otel_span_id(span_id: int) -> int:
    """The 64-bit OpenTelemetry span id of a recorder span id (never 0)."""
    return ((_SALT_SPAN + span_id) & 0xFFFF_FFFF_FFFF_FFFF) or 1


def otel_trace_id(trace_id: int) -> int:
    """The 128-bit OpenTelemetry trace id of a recorder trace (root span) id."""
    return _SALT_TRACE | (trace_id & 0xFFFF_FFFF_FFFF_FFFF)


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
        attrs[k] = v if isinstance(v, (str, bool, int, float)) else str(v)
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
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (otlp, console, none), as the SDK builds them.

    Unset or ``none`` gives no exporter: recording alone never opens a network connection.
    ``otlp`` honours ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (grpc, http/protobuf) and the
    exporters read their own endpoint, header and timeout variables.
    """
    from opentelemetry.sdk._configuration import _get_exporter_names, _import_exporters

    names = _get_exporter_names("traces")
    if not names:
        return []
    classes, _, _ = _import_exporters(names, [], [])
    return [cls() for cls in classes.values()]


def _resource() -> Resource:
    r = Resource.create()
    if str(r.attributes.get("service.name", "")).startswith("unknown_service"):
        r = r.merge(Resource({"service.name": "spectrace"}))
    return r


def export_timeout_s() -> float:
    """The exporter's own timeout (``OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT``, seconds; default 10)."""
    for var in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = os.environ.get(var)
        if raw:
            try:
                v = float(raw)
                # The SDK reads these as seconds; values above 1000 are milliseconds in the spec.
                return v / 1000 if v > 1000 else v
            except ValueError:
                pass
    return 10.0


class ExportPipeline:
    """One TracerProvider, its exporters and the worker thread that feeds them."""

    def __init__(self, exporters: list[SpanExporter]):
        self.exporters = list(exporters)
        self._ids = _GivenIds()
        self._collect = _Collect()
        self.provider = TracerProvider(resource=_resource(), id_generator=self._ids)
        self.provider.add_span_processor(self._collect)
        self._tracer = self.provider.get_tracer("spectrace")
        self.exported = 0
        self.failed = 0
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

    def flush(self, timeout_s: float) -> bool:
        """Wake the worker and wait until everything pending is exported (or the timeout)."""
        with self._cond:
            self._wake = True
            self._cond.notify()
            return self._cond.wait_for(lambda: not self._wake and not self._busy and not _core.STATE.pending,
                                       timeout=timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._stop = True
            self._cond.notify()
        for e in self.exporters:
            try:
                e.shutdown()
            except Exception:
                pass

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
                while True:
                    batch = _core.take_pending()
                    if not batch:
                        break
                    for i in range(0, len(batch), _BATCH):
                        self._export(batch[i:i + _BATCH])
            except Exception as e:  # never let the worker die silently
                self._report(f"export worker error: {e!r}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _export(self, records: list[Span]) -> None:
        self._collect.spans = []
        for s in records:
            self._to_sdk(s)
        spans = self._collect.spans
        for exporter in self.exporters:
            try:
                ok = exporter.export(spans) == SpanExportResult.SUCCESS
                err = "the exporter returned FAILURE"
            except Exception as e:
                ok, err = False, repr(e)
            if ok:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
                self._report(f"{type(exporter).__name__} could not export {len(spans)} spans ({err})")

    def _to_sdk(self, s: Span) -> None:
        ctx = None
        if s.parent_id:
            parent = SpanContext(otel_trace_id(s.trace_id), otel_span_id(s.parent_id), is_remote=False,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
            ctx = otel_trace.set_span_in_context(NonRecordingSpan(parent))
        self._ids.span_id = otel_span_id(s.span_id)
        self._ids.trace_id = otel_trace_id(s.trace_id)
        sp = self._tracer.start_span(s.name, context=ctx, kind=SpanKind.INTERNAL,
                                     attributes=otel_attributes(s),
                                     start_time=clock.to_epoch_ns(s.start_ns),
                                     record_exception=False, set_status_on_exception=False)
        for t in s.transfers:
            sp.add_event("transfer", {"binding": t.binding, "category": t.category,
                                      "direction": t.direction, "bytes": t.nbytes, "ms": t.ns / 1e6},
                         timestamp=clock.to_epoch_ns(t.start_ns))
        if s.error_type is not None:
            sp.add_event("exception", {"exception.type": s.error_type,
                                       "exception.message": s.error_message or ""},
                         timestamp=clock.to_epoch_ns(s.end_ns))
            sp.set_status(Status(StatusCode.ERROR, f"{s.error_type}: {s.error_message}"))
        sp.end(end_time=clock.to_epoch_ns(s.end_ns))

    def _report(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"spectrace: warning: {message}; these spans are dropped and counted "
                  "(tracer.stats()['spans_dropped']); further failures are not printed",
                  file=sys.stderr)
