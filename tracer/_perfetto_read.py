"""Decode a ``.pftrace`` back into tracks, slices, counters and instants.

What reads spectrace traces (the merge step, the Chrome JSON export, ``tracer.testing``'s
``.pftrace`` loader) needs the same few things: which tracks exist (and which pids, uuids and
sequence ids are taken), the slices with their names and debug annotations resolved from the
interning tables, counter values. Decoding uses the ``perfetto`` package's own protobuf classes.
"""

from __future__ import annotations

import os

from google.protobuf.message import DecodeError
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from ._record import SPAN_ID

_BEGIN, _END = pb.TrackEvent.TYPE_SLICE_BEGIN, pb.TrackEvent.TYPE_SLICE_END
_INSTANT, _COUNTER = pb.TrackEvent.TYPE_INSTANT, pb.TrackEvent.TYPE_COUNTER
_CLEARED = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
_UNITS = {v.number: v.name for v in pb.CounterDescriptor.Unit.DESCRIPTOR.values}

# The name of the run-metadata instant the writer (tracer.perfetto) stamps and readers look
# for; a span slice's id keys are tracer._record's SPAN_ID, PARENT_ID, TRACE_ID, WINDOW.
METADATA_EVENT = "spectrace.metadata"


class Track:
    """A TrackDescriptor: process (``pid``), thread (``pid`` + ``tid``), counter or named child."""

    __slots__ = ("uuid", "name", "parent", "pid", "tid", "is_counter", "unit")

    def __init__(self, uuid, name, parent, pid, tid, is_counter, unit):
        self.uuid, self.name, self.parent, self.pid, self.tid = uuid, name, parent, pid, tid
        self.is_counter, self.unit = is_counter, unit

    def __repr__(self) -> str:
        return f"Track({self.name!r}, uuid={self.uuid}, pid={self.pid}, tid={self.tid})"


class Slice:
    """A begin/end pair on one track; ``args`` are its debug annotations."""

    __slots__ = ("track", "name", "start_ns", "end_ns", "args", "depth")

    def __init__(self, track, name, start_ns, end_ns, args, depth):
        self.track, self.name, self.start_ns, self.end_ns = track, name, start_ns, end_ns
        self.args, self.depth = args, depth

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def __repr__(self) -> str:
        return f"Slice({self.name!r}, {self.start_ns}..{self.end_ns}, track={self.track})"


class Pftrace:
    """A decoded trace. ``slices`` are in start order; ``counters[uuid]`` is ``[(ts, value)]``."""

    def __init__(self):
        self.tracks: dict[int, Track] = {}
        self.slices: list[Slice] = []
        self.instants: list[tuple] = []  # (track, ts, name, args)
        self.counters: dict[int, list] = {}
        self.sequences: set[int] = set()
        self.unclosed: list[Slice] = []  # begins without an end (a broken trace)
        self.unmatched_ends: list[tuple] = []  # (track, ts) ends without a begin

    @property
    def pids(self) -> set[int]:
        return {t.pid for t in self.tracks.values() if t.pid is not None}

    def process_of(self, uuid: int) -> int | None:
        """The pid owning a track (walking parents), or None for a global track."""
        seen = set()
        while uuid in self.tracks and uuid not in seen:
            seen.add(uuid)
            t = self.tracks[uuid]
            if t.pid is not None:
                return t.pid
            uuid = t.parent
        return None

    def metadata(self) -> list[dict]:
        """Args of every ``spectrace.metadata`` event (one per write, one per merge)."""
        return [args for _, _, name, args in self.instants if name == METADATA_EVENT]


def _value(a):
    field = a.WhichOneof("value")
    return getattr(a, field) if field else None


def parse_trace(data: bytes, path: str = "<bytes>") -> pb.Trace:
    """Parse bytes as a Perfetto Trace, with an error naming the file when they are not one
    (and saying where, when the file is a trace cut short)."""
    try:
        trace = pb.Trace.FromString(data)
    except (DecodeError, RecursionError) as e:
        cut = _truncation(data)
        if cut:
            raise ValueError(f"{path} is truncated: {cut} ({len(data)} bytes in all)") from None
        raise ValueError(f"{path} is not a Perfetto trace (protobuf Trace did not parse: "
                         f"truncated or another format; {len(data)} bytes)") from e
    if data and not len(trace.packet):
        raise ValueError(f"{path} is not a Perfetto trace (no TracePacket in {len(data)} bytes)")
    return trace


def _varint(data: bytes, i: int) -> tuple[int | None, int]:
    value = shift = 0
    while i < len(data) and shift < 70:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    return None, i


def _truncation(data: bytes) -> str | None:
    """Where whole top-level ``packet`` fields (field 1) stop short of the data's end; None when
    the bytes do not start as a trace (another format) or the damage is not a cut."""
    i, packets = 0, 0
    while i < len(data):
        tag, j = _varint(data, i)
        if tag is None and packets:
            return f"the tag of packet {packets + 1} at byte {i} is cut off"
        if tag != (1 << 3 | 2):  # not a length-delimited field 1: not the framing of a trace
            return None
        length, k = _varint(data, j)
        if length is None:
            return f"the length of packet {packets + 1} at byte {i} is cut off" if packets else None
        if k + length > len(data):
            return f"packet {packets + 1} at byte {i} needs {length} bytes, only {len(data) - k} are left"
        i, packets = k + length, packets + 1
    return None


def read_pftrace(path) -> Pftrace:
    """Decode ``path``. ``FileNotFoundError`` if missing; ``ValueError`` naming it if not a trace
    or truncated."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return decode(parse_trace(data, path), path)


def decode(trace: pb.Trace, path: str | None = None) -> Pftrace:
    """The tracks, slices, instants and counters of a parsed trace.

    Whatever the packets hold (a name whose interning entry is missing, an unknown enum value),
    names and annotation keys come out as strings. With ``path``, a spectrace trace whose span
    slices begin without ending raises ``ValueError``: it was cut short at a packet boundary.
    """
    out = Pftrace()
    names: dict[int, dict] = {}
    ann_names: dict[int, dict] = {}
    events: dict[int, list] = {}  # track -> [(ts, order, type, name, args)]
    for order, p in enumerate(trace.packet):
        seq = p.trusted_packet_sequence_id
        out.sequences.add(seq)
        if p.sequence_flags & _CLEARED or p.incremental_state_cleared:
            names[seq], ann_names[seq] = {}, {}
        if p.HasField("interned_data"):
            for e in p.interned_data.event_names:
                names.setdefault(seq, {})[e.iid] = e.name
            for e in p.interned_data.debug_annotation_names:
                ann_names.setdefault(seq, {})[e.iid] = e.name
        which = p.WhichOneof("data")
        if which == "track_descriptor":
            d = p.track_descriptor
            pid = tid = None
            name = d.name or None
            if d.HasField("thread"):
                pid, tid = d.thread.pid, d.thread.tid
                name = name or d.thread.thread_name
            elif d.HasField("process"):
                pid = d.process.pid
                name = name or d.process.process_name
            unit = (d.counter.unit_name or _UNITS.get(d.counter.unit, str(d.counter.unit))) \
                if d.HasField("counter") else None
            out.tracks[d.uuid] = Track(d.uuid, name, d.parent_uuid or None, pid, tid,
                                       d.HasField("counter"), unit)
        elif which == "track_event":
            te = p.track_event
            name = te.name if te.HasField("name") else names.get(seq, {}).get(te.name_iid)
            args = {}
            for a in te.debug_annotations:
                key = a.name if a.HasField("name") else ann_names.get(seq, {}).get(a.name_iid)
                args[key if key is not None else f"annotation#{a.name_iid}"] = _value(a)
            if te.type == _COUNTER:
                v = te.counter_value if te.HasField("counter_value") else te.double_counter_value
                out.counters.setdefault(te.track_uuid, []).append((p.timestamp, v))
            elif te.type == _INSTANT:
                out.instants.append((te.track_uuid, p.timestamp, name, args))
            else:
                events.setdefault(te.track_uuid, []).append((p.timestamp, order, te.type, name, args))
    for track, evs in events.items():
        evs.sort(key=lambda e: (e[0], e[1]))
        stack: list[Slice] = []
        for ts, _, kind, name, args in evs:
            if kind == _BEGIN:
                s = Slice(track, name, ts, None, args, len(stack))
                stack.append(s)
            elif kind == _END:
                if stack:
                    s = stack.pop()
                    s.end_ns = ts
                    out.slices.append(s)
                else:
                    out.unmatched_ends.append((track, ts))
        out.unclosed.extend(stack)
    out.slices.sort(key=lambda s: (s.start_ns, s.depth))
    open_spans = [s for s in out.unclosed if SPAN_ID in s.args]
    if path is not None and open_spans:
        raise ValueError(f"{path} is truncated: {len(open_spans)} span slice(s) begin but never end "
                         f"(first: {open_spans[0].name!r}); spectrace's writer closes every slice")
    return out
