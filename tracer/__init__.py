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

from . import _config, _core, _export, clock
from ._capture import Recording, capture
from ._core import NOOP, current_span, instrument, span, suppress
from ._core import window_ as window
from ._io import io_metrics, record_transfer, transfer
from ._record import CATEGORIES, DIRECTIONS, IoTotals, Span, Transfer, category_of
from ._sampling import use_traceparent

__all__ = [
    "CATEGORIES", "DIRECTIONS", "IoTotals", "NOOP", "Recording", "Span", "Transfer", "capture",
    "category_of", "clock", "configure", "current_span", "debug_enabled", "enabled", "flush",
    "instrument", "io_metrics", "record_request", "record_transfer", "shutdown", "span", "stats",
    "suppress", "transfer", "use_traceparent", "window",
]

_UNSET = _export._UNSET
EXPORT = _export.EXPORT


def enabled() -> bool:
    """Whether spans and transfers are being recorded."""
    return _core.STATE.enabled


def debug_enabled() -> bool:
    """Whether ``QEFF_SPEC_DEBUG`` lines are printed at the end of every window."""
    return _core.STATE.debug


def configure(*, enabled=_UNSET, debug=_UNSET, max_spans=_UNSET, exporter=_UNSET, metrics=_UNSET,
              sampler=_UNSET, export_timeout_s=_UNSET) -> dict:
    """Override the environment; returns the previous settings (pass them back to restore).

    ``enabled``/``debug``: bools. ``max_spans``: bound of the finished-span buffer (spans past
    it are dropped and counted). ``exporter``: ``"env"`` (the ``OTEL_*`` variables, default),
    ``"none"``, ``"console"``, ``"otlp"``, a list of these, or OpenTelemetry ``SpanExporter``
    objects (an ``InMemorySpanExporter`` for tests). ``metrics``: ``"env"``
    (``OTEL_METRICS_EXPORTER``), ``"none"``, ``"otlp"``, ``"prometheus"``, ``"console"``, or
    OpenTelemetry ``MetricReader`` objects (an ``InMemoryMetricReader`` for tests). ``sampler``: ``"env"`` (``OTEL_TRACES_SAMPLER``),
    ``None`` (record every request) or an OpenTelemetry ``Sampler``. ``export_timeout_s``: how
    long an export, a flush or the exit may wait (default 2 s, or ``OTEL_EXPORTER_OTLP_TIMEOUT``).
    Counters (:func:`stats`) survive every reconfiguration.
    """
    from . import _otel

    st = _core.STATE
    previous = {"enabled": st.enabled, "debug": st.debug, "max_spans": st.max_spans,
                "exporter": EXPORT.setting, "metrics": EXPORT.metrics_setting,
                "sampler": _sampler_setting[0], "export_timeout_s": _otel._timeout_override[0]}
    if enabled is not _UNSET:
        st.enabled = _bool("enabled", enabled)
    if debug is not _UNSET:
        st.debug = _bool("debug", debug)
        if st.debug and enabled is _UNSET:
            st.enabled = True
    if max_spans is not _UNSET:
        st.max_spans = _config.parse_max_spans(max_spans)
    if export_timeout_s is not _UNSET:
        _otel._timeout_override[0] = _timeout("export_timeout_s", export_timeout_s)
    if sampler is not _UNSET:
        _set_sampler(sampler)
    # Restoring a previous setting (``configure(**previous)``) must not rebuild what is running:
    # a Prometheus endpoint cannot be bound twice, and a new pipeline costs a flush.
    if exporter is not _UNSET and _same(exporter, EXPORT.setting) and EXPORT.pipeline is not None:
        exporter = _UNSET
    if metrics is not _UNSET and _same(metrics, EXPORT.metrics_setting) and EXPORT.env_tried:
        metrics = _UNSET
    if exporter is not _UNSET or metrics is not _UNSET:
        _set_export(EXPORT.setting if exporter is _UNSET else exporter,
                    EXPORT.metrics_setting if metrics is _UNSET else metrics,
                    metrics_changed=metrics is not _UNSET)
    elif st.enabled and EXPORT.pipeline is None and not EXPORT.env_tried:
        _export_from_environment()  # recording turned on by a program: honour the OTEL_* variables once
    return previous


def _same(a, b) -> bool:
    return a is b or (isinstance(a, str) and a == b)


def _export_from_environment() -> None:
    """Start export as the ``OTEL_*`` variables say; a problem there never stops recording."""
    EXPORT.env_tried = True
    for what, apply in (("sampling", lambda: _sampler_setting[0] == "env" and _set_sampler("env")),
                        ("export", lambda: _set_export(EXPORT.setting, EXPORT.metrics_setting,
                                                       metrics_changed=True))):
        try:
            apply()
        except Exception as e:  # a bad OTEL_* value or a missing exporter package: one line
            print(f"spectrace: warning: OpenTelemetry {what} disabled: {e}", file=sys.stderr)
            if what == "export":
                _set_export("none", "none", metrics_changed=True)


def _bool(name, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _timeout(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 3600:
        raise ValueError(f"{name} must be a number of seconds in (0, 3600), got {value!r}")
    return float(value)


_sampler_setting = ["env"]


def _set_sampler(setting) -> None:
    if setting == "env":
        from ._sampling import sampler_from_environment

        sampler = sampler_from_environment()
    elif setting is None or setting == "always_on":
        sampler = None
    elif hasattr(setting, "should_sample"):
        sampler = setting
    else:
        raise ValueError(f"sampler must be 'env', None or an OpenTelemetry Sampler, got {setting!r}")
    _sampler_setting[0] = setting
    _core.STATE.sampler = sampler
    _core.regate()
    _export.root_hook()


_metrics_obj = [None]  # tracer._metrics.Metrics: outlives span pipelines


def _set_export(setting, metrics_setting, *, metrics_changed: bool) -> None:
    exporters = _resolve_exporters(setting)
    metrics = _metrics_obj[0]
    if metrics_changed:
        readers, servers = _resolve_readers(metrics_setting)
        _export.stop(_export_timeout())
        if metrics is not None:
            metrics.shutdown(_export_timeout())
        metrics = None
        if readers:
            from ._metrics import Metrics
            from ._otel import resource

            metrics = Metrics(readers, resource=resource(), stats=stats)
            metrics.servers = servers
        _metrics_obj[0] = metrics
        EXPORT.metrics_setting = metrics_setting
    else:
        _export.stop(_export_timeout())
    EXPORT.setting = setting
    if exporters or metrics is not None:
        _export.start(exporters, metrics)
    _export.root_hook()


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
            from ._otel import named_exporters

            out.extend(named_exporters(item))
        elif hasattr(item, "export") and hasattr(item, "shutdown"):
            out.append(item)
        else:
            raise ValueError(f"exporter must be 'env', 'none', 'console', 'otlp' or a SpanExporter, got {item!r}")
    return out


def _resolve_readers(setting) -> tuple[list, list]:
    if setting is None or setting == "none":
        return [], []
    if setting == "env":
        from ._metrics import readers_from_environment
        from ._otel import quiet_sdk_loggers

        quiet_sdk_loggers()
        return readers_from_environment(_export_timeout())
    if isinstance(setting, str) and setting in ("otlp", "prometheus", "console"):
        import os

        from ._metrics import readers_from_environment

        return readers_from_environment(_export_timeout(), {**os.environ, "OTEL_METRICS_EXPORTER": setting})
    items = setting if isinstance(setting, (list, tuple)) else [setting]
    for item in items:
        if not hasattr(item, "collect"):
            raise ValueError("metrics must be 'env', 'none', 'otlp', 'prometheus', 'console' or OpenTelemetry "
                             f"MetricReader objects, got {item!r}")
    return list(items), []


def _export_timeout() -> float:
    from ._otel import export_timeout_s

    return export_timeout_s()


def record_request(*, model, ttft_s, windows_s=None, input_tokens=None, output_tokens=None,
                   time_per_output_token_s=None, kept_ratio=None) -> None:
    """One request's figures for the metrics (every request, sampled or not, recording on or off;
    not inside :func:`suppress`).

    ``ttft_s``: ``{pass: seconds}`` (``speculative``, ``baseline``); ``windows_s``:
    ``{window name: seconds}``. Costs a queue append; the export worker records it. A no-op
    unless metrics are configured (``OTEL_METRICS_EXPORTER`` or ``configure(metrics=...)``).
    """
    if not EXPORT.env_tried and EXPORT.metrics_setting == "env":
        _export_from_environment()
    p = EXPORT.pipeline
    if p is None or p.metrics is None or _core.suppressed():
        return
    try:
        from ._metrics import Request

        p.requests.append(Request(model, dict(ttft_s), dict(windows_s or {}), input_tokens, output_tokens,
                                  time_per_output_token_s, kept_ratio))
        p.wake()
    except Exception as e:
        _core._misuse(f"record_request: {e!r}")


def flush(timeout_s: float | None = None) -> bool:
    """Export every finished span (and metric) now; waits at most ``timeout_s`` (default: the export timeout).

    Returns False if the exporters did not finish in time. Without an exporter this is a no-op.
    """
    p = EXPORT.pipeline
    if p is None:
        return True
    return p.flush(_export_timeout() if timeout_s is None else timeout_s)


def shutdown(timeout_s: float | None = None) -> None:
    """Flush and stop export (spans and metrics); called at interpreter exit."""
    t = _export_timeout() if timeout_s is None else timeout_s
    _export.stop(t)
    m, _metrics_obj[0] = _metrics_obj[0], None
    if m is not None:
        m.shutdown(t)


def stats() -> dict:
    """Counters: ``spans_recorded == spans_exported + spans_dropped + spans_buffered``, always.

    ``spans_dropped`` is the sum of ``spans_dropped_buffer_full``, ``_export_failed``,
    ``_at_exit`` and ``_no_exporter``; ``exporters`` has each exporter's own exported/failed.
    """
    return _export.stats()


def _at_exit() -> None:
    try:
        t = _export_timeout()
        _export.at_exit(t)
        m, _metrics_obj[0] = _metrics_obj[0], None
        if m is not None:
            m.shutdown(t)
    except Exception:
        pass


atexit.register(_at_exit)
if _core.STATE.enabled:
    _export_from_environment()
