"""XPlane planes as Perfetto process tracks, on the spans' clock.

Every kept plane (``/device:GPU:N``, ``/host:CPU``, ...) becomes a process of its own with a
synthetic pid, because a device is not an OS process and planes of several files (processes,
hosts) must never share a pid; each line (a GPU stream, an XLA thread, a Python thread) becomes
a child track. Events become slices with their stats as debug annotations; the alignment
offset measured by :func:`tracer.xplane.align` is subtracted from every timestamp.

On GPU every device is a plane, hence a process of its own. On CPU the forced host devices
(``--xla_force_host_platform_device_count``) share one ``/host:CPU`` plane, and the client runs
any device's program on whichever of its threads is free, so a thread line mixes devices. When
a host plane's XLA ops (events with an ``hlo_op`` stat) carry more than one ``device_ordinal``,
those ops, with the events nested inside them on their line (a collective's ``Rendezvous``),
move to one track per device, ``CPU device N (XLA ops)``, listed first; each moved slice keeps
its thread as the ``xplane.line`` annotation. Everything else stays on its thread's track; a
single-device plane is written as before.
"""

from __future__ import annotations

from ._perfetto_writer import PacketWriter, uuid_for
from .xplane import XSpace, event_epoch_ns, op_ordinal

# Pids handed to XPlane processes start here: above Linux's pid_max (2**22), inside int32.
XPLANE_PID_BASE = 1 << 30
_DEVICE_RANK = -(1 << 20)  # per-device tracks sort before the plane's lines (ranks >= 0)


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
        split = not plane.name.startswith("/device:") and len(_ordinals(plane)) > 1
        per_device: dict[int, list] = {}  # device ordinal -> slices moved off the thread lines
        for l_index, (line_name, events) in enumerate(plane.lines):
            items = []
            for name, start, dur, stats in events:
                s = event_epoch_ns(xspace, start) - offset_ns
                args = [(k, v) for k, v in stats.items() if not k.startswith("_")]
                items.append((s, s + round(dur), name, args, stats))
            items.sort(key=lambda it: (it[0], -it[1]))
            owners = _op_devices(items) if split else [None] * len(items)
            for it, ordinal in zip(items, owners):
                if ordinal is not None:
                    per_device.setdefault(ordinal, []).append((*it[:3], [*it[3], ("xplane.line", line_name)]))
            kept = [it[:4] for it, ordinal in zip(items, owners) if ordinal is None]
            seq.lanes(kept, _lane_tracks(seq, (*key, l_index), line_name, proc, l_index * 16))
            written += len(items)
        for ordinal in sorted(per_device):
            items = sorted(per_device[ordinal], key=lambda it: (it[0], -it[1]))
            seq.lanes(items, _lane_tracks(seq, (*key, "device", ordinal), f"CPU device {ordinal} (XLA ops)",
                                          proc, _DEVICE_RANK + ordinal * 16))
        pid += 1
    return written, pid


def _lane_tracks(seq, key: tuple, label: str, proc: int, rank: int):
    """``lane -> track`` for :meth:`Sequence.lanes`: ``label``, then ``"label (N)"`` for overlaps."""
    return lambda lane: seq.track(uuid_for(*key, lane), label if lane == 0 else f"{label} ({lane + 1})",
                                  parent=proc, rank=rank + min(lane, 15))


def _ordinals(plane) -> set[int]:
    return {n for _, events in plane.lines for *_, stats in events if (n := op_ordinal(stats)) is not None}


def _op_devices(items) -> list[int | None]:
    """Per item of one line (sorted by start, longest first): the ordinal of the XLA op it is or
    lies inside (the innermost one), else None. ``items``: ``(start, end, name, args, stats)``."""
    out: list[int | None] = []
    stack: list[tuple[int, int]] = []  # (end ns, ordinal) of the XLA ops enclosing the sweep point
    for start, end, _, _, stats in items:
        while stack and stack[-1][0] <= start:  # ops that ended before this item
            stack.pop()
        ordinal = op_ordinal(stats)
        if ordinal is None:  # the innermost op still open that holds the whole item
            ordinal = next((n for op_end, n in reversed(stack) if end <= op_end), None)
        else:
            stack.append((end, ordinal))
        out.append(ordinal)
    return out
