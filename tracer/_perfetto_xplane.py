"""XPlane planes as Perfetto process tracks, on the spans' clock.

Every kept plane (``/device:GPU:N``, ``/host:CPU``, ...) becomes a process of its own with a
synthetic pid, because a device is not an OS process and planes of several files (processes,
hosts) must never share a pid; each line (a GPU stream, an XLA thread, a Python thread) becomes
a child track. Events become slices with their stats as debug annotations; the alignment
offset measured by :func:`tracer.xplane.align` is subtracted from every timestamp.
"""

from __future__ import annotations

from ._perfetto_writer import PacketWriter, uuid_for
from .xplane import XSpace, event_epoch_ns

# Pids handed to XPlane processes start here: above Linux's pid_max (2**22), inside int32.
XPLANE_PID_BASE = 1 << 30


def emit_xspace(writer: PacketWriter, xspace: XSpace, *, offset_ns: int, first_pid: int,
                salt=0) -> tuple[int, int]:
    """Write one XSpace on a new sequence; returns ``(events written, next free pid)``.

    ``salt`` distinguishes the track uuids of the same file merged twice into one trace.
    Stats whose name starts with ``_`` (TraceMe bookkeeping: source file, context ids) are
    dropped: they double the size of a profile and say nothing about time.
    """
    seq = writer.sequence()
    pid = first_pid
    written = 0
    owner = f"{xspace.host} pid {xspace.pid}" if xspace.pid is not None else xspace.host
    for p_index, plane in enumerate(xspace.planes):
        key = ("xplane", xspace.path, p_index, plane.name, salt)
        proc = seq.track(uuid_for(*key), pid=pid, process_name=f"XPlane {plane.name} ({owner})")
        for l_index, (line_name, events) in enumerate(plane.lines):
            items = []
            for name, start, dur, stats in events:
                s = event_epoch_ns(xspace, start) - offset_ns
                args = [(k, v) for k, v in stats.items() if not k.startswith("_")]
                items.append((s, s + round(dur), name, args))
            items.sort(key=lambda it: (it[0], -it[1]))
            seq.lanes(items, lambda lane: seq.track(  # noqa: B023 (called before the loop moves on)
                uuid_for(*key, l_index, lane), line_name if lane == 0 else f"{line_name} ({lane + 1})",
                parent=proc, rank=l_index * 16 + min(lane, 15)))
            written += len(items)
        pid += 1
    return written, pid
