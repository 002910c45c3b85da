"""Join an existing ``.pftrace`` with XPlane files from any number of processes or hosts.

A Perfetto trace is a concatenation of packets, so merging keeps the original bytes as they
are and appends one new packet sequence per XPlane file (fresh sequence ids, so interning
tables cannot collide; fresh pids and track uuids, so planes of different processes never
share a track). Spans are decoded only to measure alignment and device time: an XPlane of
the process that recorded the spans is shifted onto their clock; XPlanes of other processes
keep their own ``profile_start_time`` clock, and the returned summary says that nothing was
paired for them. The merged slices keep their original arguments (the bytes are not
rewritten); the device time per span comes back in the summary (``spectrace merge`` prints it).
"""

from __future__ import annotations

import os

from ._perfetto_read import decode, parse_trace
from ._record import PARENT_ID, SPAN_ID
from ._perfetto_writer import PacketWriter, atomic_output
from .perfetto import SCHEMA, _emit_spaces, _read_spaces, align_file, emit_metadata, summarize_alignment

__all__ = ["merge"]


def merge(trace_path, xplane_paths, out_path, *, align: bool = True) -> dict:
    """Write ``out_path``: ``trace_path``'s packets plus every XPlane file's planes.

    ``out_path`` may equal ``trace_path`` (the file is replaced only once the merge succeeded).
    Every input is read and checked before anything is written; a missing, truncated or
    foreign file raises naming it. Returns the alignment summary (see
    :func:`tracer.perfetto.write_pftrace`), also appended to the trace's metadata, with
    ``device_time``: :func:`tracer.device_time.rows` of the trace's windows and their children.
    """
    from ._perfetto_xplane import XPLANE_PID_BASE

    trace_path = os.fspath(trace_path)
    if isinstance(xplane_paths, (str, os.PathLike)):
        xplane_paths = [xplane_paths]
    with open(trace_path, "rb") as f:
        data = f.read()
    info = decode(parse_trace(data, trace_path), trace_path)
    spaces = _read_spaces(list(xplane_paths))
    meta = next(iter(info.metadata()), {})
    pid, host = meta.get("pid"), meta.get("host")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None  # a foreign or edited trace
    host = host if isinstance(host, str) else None
    marks = [(s.name, s.start_ns, s.end_ns) for s in info.slices if PARENT_ID in s.args] if align else []
    files = [align_file(sp, marks, pid, host) for sp in spaces]
    summary = summarize_alignment(files)
    device = _device_rows(info, spaces, files)
    starts = [s.start_ns for s in info.slices] + [sp.start_ns for sp in spaces]
    ts = min(starts) if starts else 0
    first_seq = max(info.sequences, default=0) + 1
    first_pid = max(XPLANE_PID_BASE, max(info.pids, default=0) + 1)
    with atomic_output(out_path) as f, PacketWriter(f, first_sequence_id=first_seq) as w:
        w.raw(data)
        seq = w.sequence()
        emit_metadata(seq, ts, {"schema": SCHEMA, "merged_into": trace_path, "pid": pid, "host": host},
                      summary, spaces)
        _emit_spaces(w, spaces, files, first_pid=first_pid, salt=first_seq)
    return {**summary, "device_time": device}


class _SpanSlice:
    """A span read back from a trace, shaped like the records :mod:`tracer.device_time` takes."""

    def __init__(self, s):
        self.span_id, self.parent_id = s.args.get(SPAN_ID), s.args.get(PARENT_ID, 0)
        self.name, self.start_ns, self.end_ns = s.name, s.start_ns, s.end_ns
        self.attributes = s.args


def _device_rows(info, spaces, files) -> list[dict]:
    """Device time of the trace's windows and their children (epoch ns; aligned XPlanes only)."""
    from .device_time import aligned, device_ops, rows, span_device_time

    kept, offsets = aligned(spaces, files)
    if not kept:
        return []
    # Span slices carry a parent id; transfer slices only their owner's span id.
    spans = [_SpanSlice(s) for s in info.slices if PARENT_ID in s.args]
    return rows(spans, span_device_time(spans, device_ops(kept, offsets), epoch=True))
