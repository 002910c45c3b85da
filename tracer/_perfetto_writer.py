"""Streaming TracePacket writer: the one place that knows Perfetto's wire conventions.

A ``.pftrace`` file is a ``perfetto.protos.Trace`` message, i.e. a run of length-delimited
``packet`` fields (field 1). Writing packets out in small batches as they are built keeps
memory flat for XPlane profiles of millions of events, and concatenating two trace files is a
valid trace, which is what :mod:`tracer.merge` relies on.

Conventions every sequence here follows (Perfetto's TrackEvent SDK does the same):

* one ``trusted_packet_sequence_id`` per source (our spans, each XPlane file), so interning
  tables never collide after a merge;
* the first packet clears incremental state and sets ``timestamp_clock_id = REALTIME`` as the
  sequence default: every timestamp in a spectrace trace is epoch ns;
* event and debug-annotation names are interned (``name_iid``), declared in the packet that
  first uses them.

Files are written under a temporary name in the destination folder and renamed at the end, so
a crash or an error never leaves a half-written trace behind.
"""

from __future__ import annotations

import hashlib

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from ._atomic import atomic_output  # noqa: F401  (re-exported: the trace writers' one way to a file)

REALTIME = pb.BUILTIN_CLOCK_REALTIME
_CLEARED = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
_NEEDS = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
_BEGIN = pb.TrackEvent.TYPE_SLICE_BEGIN
_END = pb.TrackEvent.TYPE_SLICE_END
_INSTANT = pb.TrackEvent.TYPE_INSTANT
_COUNTER = pb.TrackEvent.TYPE_COUNTER
_INT64 = (-(1 << 63), (1 << 63) - 1)


def uuid_for(*parts) -> int:
    """A stable non-zero 63-bit track uuid for a key (same input, same uuid, across runs)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return (int.from_bytes(h, "little") & ((1 << 63) - 1)) or 1


def text(value) -> str:
    """``value`` as a string protobuf accepts: valid UTF-8, whatever the value.

    Span names and attribute values come from user code; the OTel export stringifies what it
    cannot store, and so does this writer. A lone surrogate (``"\\ud800"``, from a bad decode)
    is not UTF-8 and would make protobuf raise: it is written as its escape, ``\\ud800``.
    """
    s = value if isinstance(value, str) else str(value)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def set_value(ann, value) -> None:
    """Store a Python value in a DebugAnnotation, choosing the field by type; never raises.

    Ints outside int64 and everything that is not a bool, number or string (arrays, dicts,
    None, objects) become strings, as OpenTelemetry's export does; NaN and inf stay doubles.
    """
    if isinstance(value, bool):
        ann.bool_value = value
    elif isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            ann.int_value = value
        else:
            ann.string_value = str(value)
    elif isinstance(value, float):
        ann.double_value = value
    elif isinstance(value, bytes):
        ann.string_value = value.decode("utf-8", "backslashreplace")
    elif getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        set_value(ann, value.item())  # numpy scalars and 0-d arrays; bigger arrays: str()
    else:
        try:
            ann.string_value = text(value)
        except Exception as e:  # a __str__ that raises: the annotation says so instead
            ann.string_value = f"<unprintable {type(value).__name__}: {type(e).__name__}>"


def nest_lanes(intervals) -> list[int]:
    """Assign each ``(start, end)`` (sorted by start, longest first) to a lane where it nests.

    A Perfetto track needs properly nested slices; XPlane lines and recorded spans usually are,
    but nothing guarantees it (overlapping async copies, clock quirks). Events that would cross
    a slice boundary go to the next lane instead of being clipped or dropped.
    """
    lanes: list[list[int]] = []  # per lane: stack of open end times
    out = []
    for start, end in intervals:
        for i, stack in enumerate(lanes):
            while stack and stack[-1] <= start:
                stack.pop()
            if not stack or end <= stack[-1]:
                stack.append(end)
                out.append(i)
                break
        else:
            lanes.append([end])
            out.append(len(lanes) - 1)
    return out


class PacketWriter:
    """Writes TracePackets to a binary file; hands out sequences with their own interning.

    Packets are built inside a small ``Trace`` batch and the batch is serialized every
    ``batch`` packets: the protobuf runtime then frames them in C, and memory stays bounded
    however long the trace. Call :meth:`close` (or use ``with``) to write the last batch.
    """

    def __init__(self, f, *, first_sequence_id: int = 1, batch: int = 4096):
        self._f = f
        self._next_seq = first_sequence_id
        self._batch = pb.Trace()
        self._limit = batch
        self.packets = 0

    def raw(self, data: bytes) -> None:
        """Append already-serialized Trace bytes (packets of another trace file)."""
        self.flush()
        self._f.write(data)

    def add(self) -> pb.TracePacket:
        """A new packet, in file order after every packet added before it."""
        if len(self._batch.packet) >= self._limit:
            self.flush()
        self.packets += 1
        return self._batch.packet.add()

    def flush(self) -> None:
        if len(self._batch.packet):
            self._f.write(self._batch.SerializeToString())
            self._batch.Clear()

    close = flush

    def __enter__(self) -> PacketWriter:
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.flush()
        return False

    def sequence(self) -> Sequence:
        seq = Sequence(self, self._next_seq)
        self._next_seq += 1
        return seq


class Sequence:
    """One ``trusted_packet_sequence_id``: track descriptors and interned TrackEvents."""

    def __init__(self, writer: PacketWriter, seq_id: int):
        self.writer = writer
        self.id = seq_id
        self._names: dict[str, int] = {}
        self._ann_names: dict[str, int] = {}
        p = writer.add()
        p.trusted_packet_sequence_id = seq_id
        p.sequence_flags = _CLEARED
        p.first_packet_on_sequence = True
        p.trace_packet_defaults.timestamp_clock_id = REALTIME

    def _packet(self, ts: int | None = None) -> pb.TracePacket:
        p = self.writer.add()
        if ts is not None:
            p.timestamp = ts
        p.trusted_packet_sequence_id = self.id
        return p

    def clock_snapshot(self, clocks: dict[int, int]) -> None:
        """Readings of several clocks at one instant; REALTIME is the trace's primary clock."""
        p = self._packet()
        p.clock_snapshot.primary_trace_clock = REALTIME
        for clock_id, ts in clocks.items():
            c = p.clock_snapshot.clocks.add()
            c.clock_id = clock_id
            c.timestamp = ts

    def track(self, uuid: int, name: str | None = None, *, parent: int | None = None,
              pid: int | None = None, process_name: str | None = None, tid: int | None = None,
              thread_name: str | None = None, counter_unit: str | None = None,
              rank: int | None = None) -> int:
        """Describe a track: a process (pid), a thread (pid+tid), a counter or a named child."""
        p = self._packet()
        d = p.track_descriptor
        d.uuid = uuid
        if parent is not None:
            d.parent_uuid = parent
        if name is not None:
            d.name = text(name)
        if tid is not None:
            d.thread.pid = pid
            d.thread.tid = tid
            if thread_name is not None:
                d.thread.thread_name = text(thread_name)
        elif pid is not None:
            d.process.pid = pid
            if process_name is not None:
                d.process.process_name = text(process_name)
        if counter_unit is not None:
            if counter_unit == "bytes":
                d.counter.unit = pb.CounterDescriptor.UNIT_SIZE_BYTES
            else:
                d.counter.unit_name = counter_unit
        if rank is not None:
            d.sibling_order_rank = rank
        return uuid

    def _event(self, ts: int, track: int, kind: int, name: str | None, args) -> pb.TracePacket:
        p = self._packet(ts)
        p.sequence_flags = _NEEDS
        te = p.track_event
        te.type = kind
        te.track_uuid = track
        if name is not None:
            if not isinstance(name, str):  # a span named 123 or ("a",): its str(), as OTel shows it
                name = text(name)
            iid = self._names.get(name)
            if iid is None:
                iid = self._names[name] = len(self._names) + 1
                e = p.interned_data.event_names.add()
                e.iid = iid
                e.name = text(name)
            te.name_iid = iid
        if args:
            anns = self._ann_names
            for key, value in args:
                if value is None:
                    continue
                if not isinstance(key, str):
                    key = text(key)
                iid = anns.get(key)
                if iid is None:
                    iid = anns[key] = len(anns) + 1
                    e = p.interned_data.debug_annotation_names.add()
                    e.iid = iid
                    e.name = text(key)
                a = te.debug_annotations.add()
                a.name_iid = iid
                set_value(a, value)
        return p

    def begin(self, ts: int, track: int, name: str, args=()) -> None:
        """Open a slice; ``args`` is an iterable of ``(key, value)`` debug annotations."""
        self._event(ts, track, _BEGIN, name, args)

    def end(self, ts: int, track: int) -> None:
        self._event(ts, track, _END, None, ())

    def instant(self, ts: int, track: int, name: str, args=()) -> None:
        self._event(ts, track, _INSTANT, name, args)

    def counter(self, ts: int, track: int, value) -> None:
        p = self._event(ts, track, _COUNTER, None, ())
        if isinstance(value, int):
            p.track_event.counter_value = value
        else:
            p.track_event.double_counter_value = float(value)

    def slices(self, track: int, items) -> None:
        """Write properly nested slices ``(start, end, name, args)`` sorted by (start, -end).

        Ends are written before a later begin, so the packets of one track come out in time
        order and zero-length or back-to-back slices keep their nesting.
        """
        stack: list[int] = []
        for start, end, name, args in items:
            while stack and stack[-1] <= start:
                self.end(stack.pop(), track)
            self.begin(start, track, name, args)
            stack.append(end)
        while stack:
            self.end(stack.pop(), track)

    def lanes(self, items, lane_track, overflow_args=()) -> None:
        """Write ``items`` as :meth:`slices` does, on as many tracks as :func:`nest_lanes` needs.

        ``lane_track(lane)`` declares (or returns) lane ``lane``'s track just before its slices;
        lane 0 holds everything that nests. Slices on later lanes also get ``overflow_args``:
        what lane 0's track says about them (a thread's name) and an extra track no longer does.
        """
        lanes = nest_lanes([(it[0], it[1]) for it in items])
        for lane in range(max(lanes, default=0) + 1):
            mine = (it for it, ln in zip(items, lanes) if ln == lane)
            if lane and overflow_args:
                mine = ((a, b, n, [*args, *overflow_args]) for a, b, n, args in mine)
            self.slices(lane_track(lane), mine)
