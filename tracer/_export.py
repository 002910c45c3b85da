"""The export side's life cycle: which exporters, one pipeline, books that balance, a bounded exit.

``tracer.configure(exporter=..., metrics=..., export_timeout_s=...)`` and the ``OTEL_*``
variables choose span exporters, metric readers and the sampler; this module owns the one
:class:`~tracer._otel.ExportPipeline` they feed and keeps the accounting across
reconfigurations, forks and exit:

    spans_recorded == spans_exported + spans_dropped + spans_buffered      (always)

where dropped = buffer_full + export_failed + at_exit + no_exporter (recorded while nothing
was configured to export them: not kept, so memory stays flat). At exit the pipeline gets at
most the export timeout (default 2 s) and a line on stderr says what was not exported.
"""

from __future__ import annotations

import os
import sys

from . import _core

_UNSET = object()


class _Books:
    """Totals of pipelines that are gone (replaced, shut down, or the parent's before a fork)."""

    def __init__(self) -> None:
        self.exported = 0
        self.failed = 0
        self.at_exit = 0
        self.exporters: dict[str, dict] = {}


class Exporting:
    """The current setting and pipeline (one per process)."""

    def __init__(self) -> None:
        self.pipeline = None  # tracer._otel.ExportPipeline
        self.setting = "env"
        self.metrics_setting = "env"
        self.env_tried = False
        self.books = _Books()
        self.ever_exported = False  # an exporter was configured at some point: report losses at exit


EXPORT = Exporting()


def _retire(p) -> None:
    """Fold a pipeline's counters into the books (call once, after it stopped)."""
    b = EXPORT.books
    b.exported += p.exported
    b.failed += p.failed
    for book in p.books:
        e = b.exporters.setdefault(book.name, {"exported": 0, "failed": 0})
        e["exported"] += book.exported
        e["failed"] += book.failed


def stop(timeout_s: float) -> None:
    """Flush and stop the pipeline; what it could not deliver in time is counted as dropped."""
    p, EXPORT.pipeline = EXPORT.pipeline, None
    if p is None:
        return
    st = _core.STATE
    st.exporting = False
    st.on_root_end = None
    st.windows_out = None
    p.shutdown(timeout_s)
    # Anything still buffered or in flight now will never be counted as exported by this pipeline.
    left = p.retire() + len(st.pending)
    st.pending.clear()
    _retire(p)
    EXPORT.books.at_exit += left


def start(exporters: list, metrics) -> None:
    from ._otel import ExportPipeline

    st = _core.STATE
    p = ExportPipeline(exporters, metrics)
    EXPORT.pipeline = p
    st.windows_out = p.windows
    st.on_root_end = p.wake
    st.exporting = bool(exporters)
    if exporters:
        EXPORT.ever_exported = True


def root_hook() -> None:
    """Install the root-span hook when export or sampling needs it (caller's parent, sampler)."""
    st = _core.STATE
    if EXPORT.pipeline is not None and EXPORT.pipeline.exporters or st.sampler is not None:
        from ._sampling import RootHook

        st.on_root_start = RootHook(st.sampler)
    else:
        st.on_root_start = None


def stats() -> dict:
    """Counters; they survive reconfiguration and always balance (see the module docstring)."""
    st = _core.STATE
    b = EXPORT.books
    p = EXPORT.pipeline
    exported = b.exported + (p.exported if p else 0)
    failed = b.failed + (p.failed if p else 0)
    buffered = len(st.pending) + (p.in_flight if p else 0)
    exporters = {k: dict(v) for k, v in b.exporters.items()}
    for book in (p.books if p else ()):
        e = exporters.setdefault(book.name, {"exported": 0, "failed": 0})
        e["exported"] += book.exported
        e["failed"] += book.failed
    dropped = st.dropped + failed + b.at_exit + st.unexported
    return {"spans_recorded": st.recorded, "spans_exported": exported, "spans_buffered": buffered,
            "spans_dropped": dropped, "spans_dropped_buffer_full": st.dropped,
            "spans_dropped_export_failed": failed, "spans_export_failed": failed,
            "spans_dropped_at_exit": b.at_exit, "spans_dropped_no_exporter": st.unexported,
            "exporters": exporters}


def loss_line(s: dict) -> str | None:
    """The exit line, when an exporter was configured and something it should have sent was not."""
    lost = s["spans_dropped_buffer_full"] + s["spans_dropped_export_failed"] + s["spans_dropped_at_exit"]
    if not EXPORT.ever_exported or not lost:
        return None
    return (f"spectrace: {s['spans_exported']} of {s['spans_recorded']} spans exported; {lost} not exported "
            f"({s['spans_dropped_export_failed']} export failed, {s['spans_dropped_at_exit']} still buffered "
            f"at exit, {s['spans_dropped_buffer_full']} buffer full"
            + (f", {s['spans_dropped_no_exporter']} recorded while no exporter was configured"
               if s["spans_dropped_no_exporter"] else "") + ")")


def after_fork_in_child() -> None:
    """A forked child: its own ids, its own (empty) books, and a fresh worker for the same setting.

    The parent's buffered spans are the parent's to export; the child starts empty, so no span
    is sent twice and no id repeats across the two processes.
    """
    from ._sampling import IDS, ROOTS

    IDS.reseed()
    ROOTS.clear()
    st = _core.STATE
    st.pending.clear()
    st.recorded = st.dropped = st.unexported = 0
    st.warned_drop = False
    old = EXPORT.pipeline
    EXPORT.pipeline = None
    EXPORT.books = _Books()
    st.exporting = False
    st.on_root_end = None
    st.windows_out = None
    if old is not None:
        # Exporter objects (gRPC channels, sockets) do not survive a fork, and a fork handler is
        # no place to start threads: the child builds its pipeline at its first root span's end.
        # Metrics stay with the parent (a Prometheus port cannot be bound twice).
        st.exporting = True  # buffer from now on; the lazy start below drains it
        st.on_root_end = _start_in_child


def _start_in_child() -> None:
    _core.STATE.on_root_end = None
    try:
        from . import configure

        configure(exporter=EXPORT.setting, metrics="none")
    except Exception as e:
        _core.STATE.exporting = False
        print(f"spectrace: warning: export disabled in the forked child: {e}", file=sys.stderr)


def at_exit(timeout_s: float) -> None:
    try:
        stop(timeout_s)
        line = loss_line(stats())
        if line:
            print(line, file=sys.stderr)
    except Exception:
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)
