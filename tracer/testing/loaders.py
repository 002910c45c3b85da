"""Turn every place spans live into :class:`SpanView`s: recorder records, OTel SDK spans,
OTLP JSON (the OpenTelemetry Collector file exporter) and spectrace ``.pftrace`` files.

A trace produced on a GPU machine or pulled from a collector must be checkable in CI with the
same assertions as an in-memory capture, so each loader folds the flattened ``io.<category>.*``
attributes back into ``SpanView.io`` and ``thread.*``/error attributes back into fields; what
is left in ``attributes`` is what the engine set.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Iterable, Mapping

from .._record import WINDOW
from ._view import IO_KEY, Io, SpanView, TransferView


def load(path: str | os.PathLike) -> tuple[list[SpanView], list[TransferView]]:
    """Spans (and transfers, where the file keeps them) of a ``.pftrace`` or OTLP JSON file,
    told apart by content, not by name."""
    with open(path, "rb") as f:
        data = f.read()
    if data.lstrip()[:1] in (b"{", b"["):
        return from_otlp_json(data.decode("utf-8"))
    from ._pftrace import from_pftrace

    return from_pftrace(data, os.fspath(path))


def split_attributes(attributes: Mapping[str, Any]) -> tuple[dict, dict[str, Io], dict]:
    """``(own attributes, io per category, meta)``: undo the exporters' flattening.

    ``meta`` holds ``thread.id``, ``thread.name``, ``error.type`` and ``error.message``, which
    exporters add next to the engine's attributes but the recorder keeps in fields.
    """
    own, meta, parts = {}, {}, {}
    for key, value in attributes.items():
        m = IO_KEY.match(key)
        if m:
            parts.setdefault(m.group(1), {})[m.group(2)] = value
        elif key in _META:
            meta[key] = value
        else:
            own[key] = value
    io = {cat: Io(int(p.get("bytes", 0)), float(p.get("ms", 0.0)), int(p.get("count", 0)),
                  str(p.get("direction", ""))) for cat, p in parts.items()}
    return own, io, meta


_META = frozenset({"thread.id", "thread.name", "error.type", "error.message", WINDOW})


# -- in-memory records (tracer.Span) -----------------------------------------------------------
def from_records(spans: Iterable) -> tuple[list[SpanView], list[TransferView]]:
    """Views of finished ``tracer.Span`` records, and of the transfers recorded in them."""
    views, transfers = [], []
    for s in spans:
        io = {cat: Io(t.bytes, t.ms, t.count, t.direction) for cat, t in s.io.items()}
        v = SpanView(s.name, s.start_ns, s.end_ns, s.attributes, io, thread=s.thread_name,
                     thread_id=s.thread_id, error_type=s.error_type, error_message=s.error_message,
                     window=bool(s.window), source=s, raw_id=s.span_id, raw_parent=s.parent_id or None)
        views.append(v)
        transfers.extend(TransferView(t.category, t.direction, t.nbytes, t.start_ns, t.end_ns,
                                      t.binding, v) for t in s.transfers)
    return views, transfers


# -- OpenTelemetry SDK spans -------------------------------------------------------------------
def from_otel(spans: Iterable) -> tuple[list[SpanView], list[TransferView]]:
    """Views of OTel SDK ``ReadableSpan``s (``InMemorySpanExporter.get_finished_spans()``)."""
    views, transfers = [], []
    for s in spans:
        ctx = s.get_span_context()
        parent = (ctx.trace_id, s.parent.span_id) if s.parent is not None else None
        events = [(e.name, e.timestamp, dict(e.attributes or {})) for e in s.events]
        status = s.status
        error = None if status is None or status.status_code.name != "ERROR" else (status.description or "")
        view, moved = _make(s.name, s.start_time, s.end_time, dict(s.attributes or {}), events, error,
                            source=s, raw_id=(ctx.trace_id, ctx.span_id), raw_parent=parent)
        views.append(view)
        transfers.extend(moved)
    return views, transfers


def _make(name, start_ns, end_ns, attributes, events, error, **ids) -> tuple[SpanView, list[TransferView]]:
    """A view from exported attributes: shared by the OTel SDK and OTLP JSON loaders."""
    own, io, meta = split_attributes(attributes)
    error_type = meta.get("error.type")
    error_message = meta.get("error.message")
    for ev_name, _, ev_attrs in events:
        if ev_name == "exception":
            error_type = error_type or ev_attrs.get("exception.type")
            error_message = error_message or ev_attrs.get("exception.message")
    if error is None:
        error_type = error_message = None
    elif error_type is None:
        error_type = "error"
        error_message = error_message or error
    tid = meta.get("thread.id")
    view = SpanView(name, start_ns, end_ns, own, io, thread=str(meta.get("thread.name", "")),
                    thread_id=int(tid) if tid is not None else None, error_type=error_type,
                    error_message=error_message, window=bool(meta.get(WINDOW)), **ids)
    # tracer._otel exports each copy as a ``transfer`` event starting when the copy started.
    transfers = []
    for ev_name, ts, a in events:
        if ev_name == "transfer":
            ns = int(round(float(a.get("ms", 0.0)) * 1e6))
            transfers.append(TransferView(a.get("category", "other"), a.get("direction", ""),
                                          int(a.get("bytes", 0)), ts, ts + ns, a.get("binding", ""), view))
    return view, transfers


# -- OTLP JSON ---------------------------------------------------------------------------------
def from_otlp_json(text: str) -> tuple[list[SpanView], list[TransferView]]:
    """Spans of OTLP JSON: one ``{"resourceSpans": [...]}`` object per line (the Collector's
    file exporter), or any sequence of such objects, pretty-printed or not.

    Ids are opaque strings (hex in the Collector's output, base64 in protobuf's JSON mapping):
    they only link children to parents. ``intValue`` is a string in JSON; it becomes an int.
    """
    views, transfers = [], []
    for doc in _json_documents(text):
        for batch in doc if isinstance(doc, list) else [doc]:
            for rs in batch.get("resourceSpans", ()):
                for ss in rs.get("scopeSpans", rs.get("instrumentationLibrarySpans", ())):
                    for sp in ss.get("spans", ()):
                        view, moved = _otlp_span(sp)
                        views.append(view)
                        transfers.extend(moved)
    return views, transfers


def _json_documents(text: str):
    decoder = json.JSONDecoder()
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return
        doc, i = decoder.raw_decode(text, i)
        yield doc


def _otlp_span(sp: dict) -> tuple[SpanView, list[TransferView]]:
    trace_id = sp.get("traceId", "")
    parent = sp.get("parentSpanId") or None
    attrs = _kv(sp.get("attributes", ()))
    events = [(e.get("name", ""), int(e.get("timeUnixNano", 0)), _kv(e.get("attributes", ())))
              for e in sp.get("events", ())]
    status = sp.get("status") or {}
    code = status.get("code", 0)
    error = status.get("message", "") if code in (2, "STATUS_CODE_ERROR") else None
    return _make(sp.get("name", ""), int(sp.get("startTimeUnixNano", 0)), int(sp.get("endTimeUnixNano", 0)),
                 attrs, events, error, source=sp, raw_id=(trace_id, sp.get("spanId")),
                 raw_parent=(trace_id, parent) if parent else None)


def _kv(items) -> dict:
    return {kv["key"]: _any_value(kv.get("value") or {}) for kv in items}


def _any_value(v: dict) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_any_value(x) for x in v["arrayValue"].get("values", ())]
    if "kvlistValue" in v:
        return _kv(v["kvlistValue"].get("values", ()))
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"])
    return None
