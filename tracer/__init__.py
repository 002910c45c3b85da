"""spectrace's tracer: where time-to-first-token goes, per span and per binding category.

The whole surface is a handful of functions (Logfire's habit)::

    from spectrace import tracer
    with tracer.window("ttft.baseline"):
        with tracer.span("prefill.chunk", engine="base", **{"chunk.index": 0}):
            with tracer.transfer("logits", "d2h", logits.nbytes):
                host = np.asarray(logits)
    tracer.io_metrics()   # QEfficient's get_last_io_metrics() shape

Recording is off unless ``QEFF_SPEC_IO_TIMING=1`` (or ``QEFF_SPEC_DEBUG=1``) is set or
:func:`configure` turns it on. Export to OpenTelemetry follows the standard ``OTEL_*`` variables
(``OTEL_TRACES_EXPORTER=otlp|console|none``) and runs in a background thread. This package never
imports JAX; :mod:`tracer.xplane` does, lazily.
"""

from __future__ import annotations

import atexit
import sys

from . import _config, _core, clock
from ._core import NOOP, Recording, capture, current_span, io_metrics, record_transfer, span, transfer
from ._core import window_ as window
from ._record import CATEGORIES, DIRECTIONS, IoTotals, Span, Transfer, category_of

__all__ = [
    "CATEGORIES", "DIRECTIONS", "IoTotals", "NOOP", "Recording", "Span", "Transfer", "capture",
    "category_of", "clock", "configure", "current_span", "debug_enabled", "enabled", "flush",
    "io_metrics", "record_transfer", "shutdown", "span", "stats", "transfer", "window",
]

_UNSET = object()
_pipeline = None  # tracer._otel.ExportPipeline while exporting
_exporter_setting = "env"


def enabled() -> bool:
    """Whether spans and transfers are being recorded."""
    return _core.STATE.enabled


def debug_enabled() -> bool:
    """Whether ``QEFF_SPEC_DEBUG`` lines are printed at the end of every window."""
    return _core.STATE.debug


def configure(*, enabled=_UNSET, debug=_UNSET, max_spans=_UNSET, exporter=_UNSET) -> dict:
    """Override the environment; returns the previous settings (pass them back to restore).

    ``enabled``/``debug``: bools. ``max_spans``: bound of the finished-span buffer (spans past
    it are dropped and counted). ``exporter``: ``"env"`` (the ``OTEL_*`` variables, default),
    ``"none"``, ``"console"``, ``"otlp"``, a list of these, or OpenTelemetry ``SpanExporter``
    objects (an ``InMemorySpanExporter`` for tests).
    """
    st = _core.STATE
    previous = {"enabled": st.enabled, "debug": st.debug, "max_spans": st.max_spans,
                "exporter": _exporter_setting}
    if enabled is not _UNSET:
        st.enabled = _bool("enabled", enabled)
    if debug is not _UNSET:
        st.debug = _bool("debug", debug)
        if st.debug and enabled is _UNSET:
            st.enabled = True
    if max_spans is not _UNSET:
        st.max_spans = _config.parse_max_spans(max_spans)
    if exporter is not _UNSET:
        _set_exporter(exporter)
    elif st.enabled and _pipeline is None and _exporter_setting == "env" and not _env_tried[0]:
        _env_tried[0] = True  # recording turned on by a program: honour the OTEL_* variables once
        _export_from_environment()
    return previous


def _export_from_environment() -> None:
    """Start export as the ``OTEL_*`` variables say; a problem there never stops recording."""
    try:
        _set_exporter("env")
    except Exception as e:  # a bad OTEL_* value or a missing exporter package
        print(f"spectrace: warning: OpenTelemetry export disabled: {e}", file=sys.stderr)


_env_tried = [False]


def _bool(name, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _set_exporter(setting) -> None:
    global _pipeline, _exporter_setting
    exporters = _resolve_exporters(setting)
    old, _pipeline = _pipeline, None
    st = _core.STATE
    if old is not None:
        st.exporting = False
        st.on_root_end = None
        old.shutdown(timeout_s=_export_timeout())
    _exporter_setting = setting
    if exporters:
        from ._otel import ExportPipeline

        _pipeline = ExportPipeline(exporters)
        st.on_root_end = _pipeline.wake
        st.exporting = True


def _resolve_exporters(setting) -> list:
    if setting is None or setting == "none":
        return []
    if setting == "env":
        from ._otel import exporters_from_environment

        return exporters_from_environment()
    items = setting if isinstance(setting, (list, tuple)) else [setting]
    out = []
    for item in items:
        if isinstance(item, str):
            out.extend(_named_exporter(item))
        elif hasattr(item, "export") and hasattr(item, "shutdown"):
            out.append(item)
        else:
            raise ValueError(f"exporter must be 'env', 'none', 'console', 'otlp' or a SpanExporter, got {item!r}")
    return out


def _named_exporter(name: str) -> list:
    if name == "none":
        return []
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return [ConsoleSpanExporter()]
    if name == "otlp":
        import os

        proto = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                 or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
        if proto == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif proto == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        else:
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be 'grpc' or 'http/protobuf', got {proto!r}")
        return [OTLPSpanExporter()]
    raise ValueError(f"exporter must be 'env', 'none', 'console', 'otlp' or a SpanExporter, got {name!r}")


def _export_timeout() -> float:
    from ._otel import export_timeout_s

    return export_timeout_s()


def flush(timeout_s: float | None = None) -> bool:
    """Export every finished span now; waits at most ``timeout_s`` (default: the exporter's timeout).

    Returns False if the exporter did not finish in time. Without an exporter this is a no-op:
    finished spans stay in the bounded buffer.
    """
    if _pipeline is None:
        return True
    return _pipeline.flush(_export_timeout() if timeout_s is None else timeout_s)


def shutdown(timeout_s: float | None = None) -> None:
    """Flush and stop the export thread (called at interpreter exit)."""
    global _pipeline
    if _pipeline is not None:
        p, _pipeline = _pipeline, None
        _core.STATE.exporting = False
        _core.STATE.on_root_end = None
        p.shutdown(_export_timeout() if timeout_s is None else timeout_s)
        _pipeline_stats.update(exported=p.exported, failed=p.failed)


_pipeline_stats = {"exported": 0, "failed": 0}


def stats() -> dict:
    """Counters: spans recorded, buffered, dropped (buffer full or export failed), exported."""
    st = _core.STATE
    exported = _pipeline_stats["exported"] + (_pipeline.exported if _pipeline else 0)
    failed = _pipeline_stats["failed"] + (_pipeline.failed if _pipeline else 0)
    return {"spans_recorded": st.recorded, "spans_buffered": len(st.pending),
            "spans_dropped": st.dropped + failed, "spans_dropped_buffer_full": st.dropped,
            "spans_export_failed": failed, "spans_exported": exported}


def _at_exit() -> None:
    try:
        shutdown()
        s = stats()
        if s["spans_dropped"]:
            print(f"spectrace: {s['spans_dropped']} of {s['spans_recorded']} spans were dropped "
                  f"({s['spans_dropped_buffer_full']} buffer full, {s['spans_export_failed']} "
                  "export failed)", file=sys.stderr)
    except Exception:
        pass


atexit.register(_at_exit)
if _core.STATE.enabled:
    _env_tried[0] = True
    _export_from_environment()
