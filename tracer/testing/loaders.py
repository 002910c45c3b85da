"""Turn every place spans live into :class:`SpanView`s: recorder records, OTel SDK spans,
OTLP JSON (the OpenTelemetry Collector file exporter) and spectrace ``.pftrace`` files.

A trace produced on a GPU machine or pulled from a collector must be checkable in CI with the
same assertions as an in-memory capture, so each loader folds the flattened ``io.<category>.*``
attributes back into ``SpanView.io`` and ``thread.*``/error attributes back into fields; what
is left in ``attributes`` is what the engine set.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any, Iterable, Mapping

from .._record import WINDOW
from ._view import IO_KEY, Io, SpanView, TransferView


def load(path: str | os.PathLike) -> tuple[list[SpanView], list[TransferView]]:
    """Spans (and transfers, where the file keeps them) of a ``.pftrace`` or OTLP JSON file,
    told apart by content, not by name.

    ``FileNotFoundError`` for a missing file; any file that is not one of the two (truncated,
    damaged, another format) is a ``ValueError`` whose message names it.
    """
    where = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data.lstrip()[:1] in (b"{", b"["):
        try:
            return from_otlp_json(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: OTLP JSON must be UTF-8; byte {e.start} is not") from None
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    from ._pftrace import from_pftrace

    try:
        return from_pftrace(data, where)
    except ValueError as e:
        if where in str(e):
            raise
        raise ValueError(f"{where}: not a trace spectrace can read: {e}") from None
    except (TypeError, KeyError, AttributeError, OverflowError) as e:  # a value of the wrong kind in a slice
        raise ValueError(f"{where}: not a trace spectrace can read ({type(e).__name__}: {e})") from None


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
                                      t.binding, v, t.src, t.dst) for t in s.transfers)
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
                                          int(a.get("bytes", 0)), ts, ts + ns, a.get("binding", ""), view,
                                          str(a.get("src", "")), str(a.get("dst", ""))))
    return view, transfers


# -- OTLP JSON ---------------------------------------------------------------------------------
def from_otlp_json(text: str) -> tuple[list[SpanView], list[TransferView]]:
    """Spans of OTLP JSON: one ``{"resourceSpans": [...]}`` object per line (the Collector's
    file exporter), or any sequence of such objects, pretty-printed or not.

    Ids are opaque strings (hex in the Collector's output, base64 in protobuf's JSON mapping):
    they only link children to parents. ``intValue`` is a string in JSON; it becomes an int.
    A document of the wrong shape is a ``ValueError`` that says where (``resourceSpans[0].
    scopeSpans[0].spans[3].startTimeUnixNano``) and what was found.
    """
    views, transfers = [], []
    try:
        for d, doc in enumerate(_json_documents(text)):
            for b, batch in enumerate(doc if isinstance(doc, list) else [doc]):
                at = f"document {d + 1}" + (f"[{b}]" if isinstance(doc, list) else "")
                for r, rs in enumerate(_arr(_obj(batch, at).get("resourceSpans"), f"{at}.resourceSpans")):
                    rs = _obj(rs, f"resourceSpans[{r}]")
                    key = "scopeSpans" if "scopeSpans" in rs else "instrumentationLibrarySpans"
                    for i, ss in enumerate(_arr(rs.get(key), f"resourceSpans[{r}].{key}")):
                        where = f"resourceSpans[{r}].{key}[{i}].spans"
                        for j, sp in enumerate(_arr(_obj(ss, where[:-6]).get("spans"), where)):
                            view, moved = _otlp_span(_obj(sp, f"{where}[{j}]"), f"{where}[{j}]")
                            views.append(view)
                            transfers.extend(moved)
    except RecursionError:
        raise ValueError("OTLP JSON nested too deeply") from None
    return views, transfers


def _json_documents(text: str):
    decoder = json.JSONDecoder()
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise ValueError(f"not OTLP JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        yield doc


def _obj(v, where: str) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(v).__name__}")
    return v


def _arr(v, where: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"{where} must be a JSON array, got {type(v).__name__}")
    return v


def _int(v, where: str) -> int:
    """OTLP's 64-bit integers: JSON numbers or decimal strings."""
    if isinstance(v, bool) or not isinstance(v, (int, str, float)):
        raise ValueError(f"{where} must be an integer, got {type(v).__name__}")
    try:
        out = int(v)
    except (ValueError, OverflowError):
        raise ValueError(f"{where} must be an integer, got {str(v)[:40]!r}") from None
    if not -(1 << 63) <= out < (1 << 64):
        raise ValueError(f"{where} = {str(v)[:40]} is outside 64 bits")
    return out


def _str(v, where: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ValueError(f"{where} must be a string, got {type(v).__name__}")
    return v


def _otlp_span(sp: dict, at: str) -> tuple[SpanView, list[TransferView]]:
    trace_id = _str(sp.get("traceId"), f"{at}.traceId")
    parent = _str(sp.get("parentSpanId"), f"{at}.parentSpanId") or None
    attrs = _kv(sp.get("attributes"), f"{at}.attributes")
    events = []
    for i, e in enumerate(_arr(sp.get("events"), f"{at}.events")):
        e = _obj(e, f"{at}.events[{i}]")
        events.append((_str(e.get("name"), f"{at}.events[{i}].name"),
                       _int(e.get("timeUnixNano", 0), f"{at}.events[{i}].timeUnixNano"),
                       _kv(e.get("attributes"), f"{at}.events[{i}].attributes")))
    status = _obj(sp.get("status") or {}, f"{at}.status")
    code = status.get("code", 0)
    error = str(status.get("message", "")) if code in (2, "STATUS_CODE_ERROR") else None
    try:
        return _make(_str(sp.get("name"), f"{at}.name"), _int(sp.get("startTimeUnixNano", 0), f"{at}.startTimeUnixNano"),
                     _int(sp.get("endTimeUnixNano", 0), f"{at}.endTimeUnixNano"), attrs, events, error,
                     source=sp, raw_id=(trace_id, _str(sp.get("spanId"), f"{at}.spanId")),
                     raw_parent=(trace_id, parent) if parent else None)
    except (TypeError, ValueError, OverflowError) as e:  # io.* or thread.* attributes of the wrong kind
        raise ValueError(f"{at}: {e}") from None


def _kv(items, where: str) -> dict:
    out = {}
    for i, kv in enumerate(_arr(items, where)):
        kv = _obj(kv, f"{where}[{i}]")
        out[_str(kv.get("key"), f"{where}[{i}].key")] = _any_value(_obj(kv.get("value") or {}, f"{where}[{i}].value"),
                                                              f"{where}[{i}].value")
    return out


def _any_value(v: dict, where: str) -> Any:
    if "stringValue" in v:
        return v["stringValue"] if isinstance(v["stringValue"], str) else str(v["stringValue"])
    if "intValue" in v:
        return _int(v["intValue"], f"{where}.intValue")
    if "doubleValue" in v:
        x = v["doubleValue"]
        if isinstance(x, bool) or not isinstance(x, (int, float, str)):
            raise ValueError(f"{where}.doubleValue must be a number, got {type(x).__name__}")
        try:
            return float(x)  # "NaN", "Infinity" are how protobuf's JSON mapping writes those
        except (ValueError, OverflowError):
            raise ValueError(f"{where}.doubleValue must be a number, got {str(x)[:40]!r}") from None
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        values = _obj(v["arrayValue"], f"{where}.arrayValue").get("values")
        return [_any_value(_obj(x, f"{where}.arrayValue.values[{i}]"), f"{where}.arrayValue.values[{i}]")
                for i, x in enumerate(_arr(values, f"{where}.arrayValue.values"))]
    if "kvlistValue" in v:
        return _kv(_obj(v["kvlistValue"], f"{where}.kvlistValue").get("values"), f"{where}.kvlistValue.values")
    if "bytesValue" in v:
        try:
            return base64.b64decode(_str(v["bytesValue"], f"{where}.bytesValue"))
        except binascii.Error:
            raise ValueError(f"{where}.bytesValue is not base64") from None
    return None
