"""Chrome trace-event JSON from a ``.pftrace``, for tools that read only JSON.

The native trace stays the source of truth; this is a lossy view of it in the trace event
format: slices as complete events (``ph: X``), counters as ``ph: C``, the metadata event as an
instant, process/thread names as ``ph: M``. ``ts``/``dur`` are epoch µs (a double keeps about
0.25 µs of precision at today's epoch), so JSON and native traces share one clock.
"""

from __future__ import annotations

import io
import json
import math
import os

from ._perfetto_read import decode, parse_trace, read_pftrace
from ._perfetto_writer import atomic_output

_CHILD_TID_BASE = 1 << 31  # tids for tracks that are not OS threads (XPlane lines, io, overflow)


def export_chrome_json(source, out_json, *, xplanes=(), metadata: dict | None = None) -> int:
    """Write ``out_json`` from a ``.pftrace`` path, or from spans (+ ``xplanes``) directly.

    Returns the number of trace events written.
    """
    if isinstance(source, (str, os.PathLike)):
        data = read_pftrace(source)
    else:
        from .perfetto import write_pftrace

        buf = io.BytesIO()
        write_pftrace(buf, source, xplanes=xplanes, metadata=metadata)
        data = decode(parse_trace(buf.getvalue()))
    events = []
    place: dict[int, tuple[int, int]] = {}
    named_procs: set[int] = set()
    next_child = [_CHILD_TID_BASE]

    def where(uuid: int) -> tuple[int, int]:
        got = place.get(uuid)
        if got is not None:
            return got
        t = data.tracks.get(uuid)
        pid = data.process_of(uuid)
        if t is not None and t.tid is not None:
            got = (t.pid, t.tid)
        elif t is not None and t.pid is not None and not t.parent:
            got = (t.pid, 0)
        else:
            got = (pid if pid is not None else 0, next_child[0])
            next_child[0] += 1
        if t is not None and t.name and got[1] != 0:
            events.append({"ph": "M", "name": "thread_name", "pid": got[0], "tid": got[1],
                           "args": {"name": t.name}})
        place[uuid] = got
        return got

    for t in data.tracks.values():
        if t.pid is not None and t.tid is None and t.pid not in named_procs and t.name:
            named_procs.add(t.pid)
            events.append({"ph": "M", "name": "process_name", "pid": t.pid, "tid": 0,
                           "args": {"name": t.name}})
    for s in data.slices:
        pid, tid = where(s.track)
        events.append({"ph": "X", "name": s.name, "pid": pid, "tid": tid, "ts": _us(s.start_ns),
                       "dur": _us(s.end_ns - s.start_ns), "args": _json_args(s.args)})
    for track, ts, name, args in data.instants:
        pid, tid = where(track)
        events.append({"ph": "i", "s": "t", "name": name, "pid": pid, "tid": tid, "ts": _us(ts),
                       "args": _json_args(args)})
    for uuid, values in data.counters.items():
        t = data.tracks.get(uuid)
        pid = data.process_of(uuid) or 0
        name = t.name if t is not None and t.name else f"counter {uuid}"
        for ts, v in values:
            events.append({"ph": "C", "name": name, "pid": pid, "ts": _us(ts), "args": {"value": _json_value(v)}})
    meta = data.metadata()
    doc = {"traceEvents": events, "displayTimeUnit": "ns",
           "otherData": _json_args(meta[0] if meta else {})}
    with atomic_output(out_json) as f:
        f.write(json.dumps(doc, separators=(",", ":"), default=str, allow_nan=False).encode())
    return len(events)


def _us(ns: int) -> float:
    return round(ns / 1e3, 3)


def _json_args(args: dict) -> dict:
    return {str(k): _json_value(v) for k, v in args.items() if v is not None}


def _json_value(v):
    """NaN and inf (a span attribute may hold one) as strings: JSON has no such numbers, and
    Chrome's trace viewer (``JSON.parse``) rejects a file that writes them bare."""
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v
