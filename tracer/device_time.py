"""What the device did inside each span: ops, busy time, idle time, the heaviest ops (XPlane).

A chunk span says how long the host waited; the XPlane says what ran meanwhile. Joining the
two answers the question an engineer asks of a slow chunk or decode loop: was the device busy
(then which kernels cost it), or idle (then the time went to launches, host work or copies)?

Device ops are every event on a ``/device:*`` plane (GPU kernels, memcpy, memset) and every
event carrying an ``hlo_op`` stat elsewhere (XLA CPU thunks on host threads). Of XLA ops
nested on one host line (a ``while`` thunk around its body), only the innermost count. Only
XPlanes whose clock offset was measured against the spans are used (:func:`aligned`). For a
span ``[start, end)``:

* ``busy``: the length of the union of all op intervals clipped to the span: time during
  which at least one op ran on any plane (several streams or threads may overlap);
* ``idle``: the span's duration less ``busy``;
* ``ops`` and ``top``: the ops that *start* inside the span, and the heaviest of them by
  summed duration, grouped by op name;
* ``gaps``: the longest stretches inside the span when no op ran, each with where it starts
  (from the span's start), how long it is, the op it follows and the op it precedes (None: the
  span's start or end). Idle time says *how much* the device waited; the gaps say *where*: a
  gap from the span's start to the first kernel is the host dispatching, one between two
  kernels is a host sync or a copy waiting, one before the span's end is the read-back. Each
  gap also names what the host was doing meanwhile, when the XPlane's host lines say: the
  innermost host event (a ``TraceMe`` of the runtime, e.g. ``command_buffer::initialize``
  while CUDA graphs are rebuilt, or ``PjitFunction(...)`` while a call dispatches) that covers
  at least half the gap.

Per device. Every op also has a device key (:func:`device_key`): ``/device:GPU:1``'s events
are ``"GPU:1"``; an XLA op on a host line with a ``device_ordinal`` stat (the CPU client runs
every forced host device's program on host threads of one ``/host:CPU`` plane) is
``"CPU:<ordinal>"``; an op with neither is its plane's kind (``"CPU"``). The busy/idle above
is "any device busy": for a 4-way tensor-parallel prefill it hides a device that waits on the
others. So when ops ran on more than one device in the profile, every :class:`DeviceTime`
also holds ``devices``: key -> the same busy/idle/ops/top for that device alone, for *every*
device of the profile (a device with nothing in the span shows all-idle: that is the
imbalance to see), in device order. ``ttft.json``'s ``device_time`` rows then carry
``devices: {"CPU:0": {device_busy_ms, device_idle_ms, device_ops, top_ops}, ...}`` and
:func:`format_rows` prints one indented row per device below each span that had device
activity. With one device nothing changes: no ``devices`` key, no extra rows. Only the
XSpaces of the spans' own process are kept (:func:`aligned`), so a key names one device.

XPlane times are moved onto the spans' clock by the measured offset of
:func:`tracer.xplane.align` (``offset_us`` is subtracted). Plain Python and numbers: no JAX.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field
from itertools import accumulate

from . import clock
from ._record import WINDOW
from .xplane import XSpace, event_epoch_ns, op_ordinal

__all__ = ["DeviceOps", "DeviceTime", "HostEvents", "aligned", "device_key", "device_ops", "format_gaps", "format_rows", "gap_between",
           "longest_gaps", "rows",
           "span_device_time"]


@dataclass
class DeviceTime:
    """Device activity inside one span (nanoseconds)."""

    span_ns: int
    busy_ns: int
    ops: int
    top: list[tuple[str, int, int]] = field(default_factory=list)  # (op name, summed ns, count)
    # device key -> that device alone; empty when the profile ran ops on one device only
    devices: dict[str, DeviceTime] = field(default_factory=dict)
    # the longest idle stretches: (offset from the span's start, length, op before, op after,
    # the host event covering it) ns; None for "the span's start/end" and "nothing known"
    gaps: list[tuple[int, int, str | None, str | None, str | None]] = field(default_factory=list)

    @property
    def idle_ns(self) -> int:
        return max(0, self.span_ns - self.busy_ns)

    def as_dict(self) -> dict:
        out = {"ms": self.span_ns / 1e6, **self._fields()}
        if self.devices:
            out["devices"] = {k: d._fields() for k, d in self.devices.items()}
        return out

    def _fields(self) -> dict:
        """Busy/idle/ops/top in ms: a row's fields, and each device's (whose span ms is the row's)."""
        return {"device_busy_ms": self.busy_ns / 1e6, "device_idle_ms": self.idle_ns / 1e6,
                "device_ops": self.ops,
                "top_ops": [{"name": n, "ms": ns / 1e6, "count": c} for n, ns, c in self.top],
                "idle_gaps": [{"at_ms": at / 1e6, "ms": ns / 1e6, "after": a, "before": b, "host": h}
                              for at, ns, a, b, h in self.gaps]}


class DeviceOps:
    """Leaf device ops on the epoch clock, indexed for per-span queries.

    ``starts``/``ends``/``names`` are sorted by start; the union of the op intervals is kept
    as disjoint sorted intervals with a running sum, so a span's busy time is two bisections.
    ``devices``: device key -> the ops of that device alone (:func:`device_ops` fills it);
    :meth:`inside` splits per device only when it holds more than one. ``host``: the profile's
    :class:`HostEvents` (one for every device's ops), what :meth:`gaps` names as the host's doing.
    """

    def __init__(self, ops: list[tuple[int, int, str]], devices: dict[str, DeviceOps] | None = None,
                 host: HostEvents | None = None):
        self.devices = devices or {}
        self.host = host or HostEvents([])
        ops.sort()
        self.starts = [o[0] for o in ops]
        self.ends = [o[1] for o in ops]
        self.names = [o[2] for o in ops]
        merged: list[list] = []  # [start, end, first op, the op that ends last]
        for s, e, name in ops:
            if merged and s <= merged[-1][1]:
                if e > merged[-1][1]:
                    merged[-1][1], merged[-1][3] = e, name
            else:
                merged.append([s, e, name, name])
        self._u_start = [m[0] for m in merged]
        self._u_end = [m[1] for m in merged]
        self._u_first = [m[2] for m in merged]
        self._u_last = [m[3] for m in merged]
        self._u_cum = [0, *accumulate(m[1] - m[0] for m in merged)]  # busy ns before interval i

    def __len__(self) -> int:
        return len(self.starts)

    def busy_ns(self, start: int, end: int) -> int:
        """Length of the union of op intervals inside ``[start, end)``."""
        if end <= start or not self._u_start:
            return 0
        return max(0, self._busy_before(end) - self._busy_before(start))

    def _busy_before(self, t: int) -> int:
        i = bisect.bisect_right(self._u_start, t)  # intervals starting at or before t
        if i == 0:
            return 0
        return self._u_cum[i - 1] + min(self._u_end[i - 1], t) - self._u_start[i - 1]

    def gaps(self, start: int, end: int, *, top: int = 3) -> list[tuple]:
        """The ``top`` longest idle stretches of ``[start, end)``, longest first: (offset from
        ``start``, length, the op that ended at its start or None for the span's start, the op
        that began at its end or None for the span's end, :meth:`HostEvents.during` the gap), ns."""
        if end <= start:
            return []
        out = []
        cursor, prev = start, None
        i = bisect.bisect_right(self._u_end, start)  # the first busy interval still running after start
        while i < len(self._u_start) and self._u_start[i] < end:
            if self._u_start[i] > cursor:
                out.append((cursor - start, self._u_start[i] - cursor, prev, self._u_first[i]))
            cursor, prev = max(cursor, self._u_end[i]), self._u_last[i]
            i += 1
        if cursor < end:
            out.append((cursor - start, end - cursor, prev, None))
        return [(*g, self.host.during(start + g[0], start + g[0] + g[1]))
                for g in heapq.nlargest(top, out, key=lambda g: g[1])]

    def inside(self, start: int, end: int, *, top: int = 5) -> DeviceTime:
        lo, hi = bisect.bisect_left(self.starts, start), bisect.bisect_left(self.starts, end)
        by_name: dict[str, list[int]] = {}
        for i in range(lo, hi):
            agg = by_name.setdefault(self.names[i], [0, 0])
            agg[0] += self.ends[i] - self.starts[i]
            agg[1] += 1
        heaviest = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
        split = {k: d.inside(start, end, top=top) for k, d in self.devices.items()} if len(self.devices) > 1 else {}
        return DeviceTime(span_ns=end - start, busy_ns=self.busy_ns(start, end), ops=hi - lo,
                          top=[(n, ns, c) for n, (ns, c) in heaviest], devices=split,
                          gaps=self.gaps(start, end))


class HostEvents:
    """Host events that are no XLA op (runtime ``TraceMe``s, the spans' annotations), each
    ``(start, end, name, depth on its line)``, sorted by start: what the host was doing."""

    def __init__(self, events: list[tuple[int, int, str, int]]):
        self.events = sorted(events)
        self._starts = [e[0] for e in self.events]

    def during(self, start: int, end: int) -> str | None:
        """The innermost event covering at least half of ``[start, end)`` (None: none).

        Such an event holds the interval's midpoint, so only events starting before it can."""
        best, need, events = None, (end - start) / 2, self.events
        for i in range(bisect.bisect_right(self._starts, (start + end) // 2)):
            s, e, name, depth = events[i]
            if min(e, end) - max(s, start) >= need and (best is None or depth > best[0]):
                best = (depth, name)
        return best and best[1]


def device_key(plane_name: str, stats: dict) -> str:
    """The device an op ran on: ``"GPU:1"`` for ``/device:GPU:1``, ``"CPU:<n>"`` for a host-line
    XLA op with ``device_ordinal`` n, else the plane's kind (``"/host:CPU"`` -> ``"CPU"``)."""
    if plane_name.startswith("/device:"):
        return plane_name[len("/device:"):]
    ordinal = op_ordinal(stats)
    return f"CPU:{ordinal}" if ordinal is not None else plane_name.rsplit(":", 1)[-1]


def _device_order(key: str):
    """``CPU:2`` before ``CPU:10``: kind, then the ordinal as a number."""
    kind, _, n = key.rpartition(":")
    return (kind, int(n), "") if n.isdigit() else (key, -1, key)


def device_ops(spaces: list[XSpace], offsets_ns: list[int] | None = None) -> DeviceOps:
    """The device ops of ``spaces`` (each shifted by its ``offsets_ns``, default 0).

    On host lines only the innermost XLA ops count (a thunk around its body would count the
    body twice); on ``/device:*`` lines every event counts, since kernels of one stream line
    may overlap without one being the other's parent (the union absorbs the overlap). Host
    events that are no XLA op are kept with their nesting depth, to name the host's doing in
    an idle gap (:class:`HostEvents`).
    """
    ops: list[tuple[int, int, str]] = []  # (start, end) epoch ns, op name
    by_device: dict[str, list[tuple[int, int, str]]] = {}
    host: list[tuple[int, int, str, int]] = []
    for space, offset in zip(spaces, offsets_ns or [0] * len(spaces)):
        for plane in space.planes:
            device = plane.name.startswith("/device:")
            for _, events in plane.lines:
                line = sorted(((event_epoch_ns(space, st) - offset, round(dur), name, device_key(plane.name, stats))
                               for name, st, dur, stats in events if device or "hlo_op" in stats),
                              key=lambda o: (o[0], -o[1]))
                for i, (s, dur, name, key) in enumerate(line):
                    if not device and i + 1 < len(line) and _encloses((s, dur), line[i + 1]):
                        continue  # the children carry the time
                    ops.append((s, s + dur, name))
                    by_device.setdefault(key, []).append((s, s + dur, name))
                if not device:
                    host += _nested((event_epoch_ns(space, st) - offset, round(dur), name)
                                    for name, st, dur, stats in events if "hlo_op" not in stats)
    events = HostEvents(host)
    return DeviceOps(ops, {k: DeviceOps(by_device[k], host=events) for k in sorted(by_device, key=_device_order)},
                     host=events)


def _nested(events) -> list[tuple[int, int, str, int]]:
    """One line's events (start, duration, name) as (start, end, name, depth): how many enclose it."""
    out, open_ends = [], []
    for s, dur, name in sorted(events, key=lambda o: (o[0], -o[1])):
        while open_ends and open_ends[-1] <= s:
            open_ends.pop()
        out.append((s, s + dur, name, len(open_ends)))
        open_ends.append(s + dur)
    return out


def _encloses(outer, inner) -> bool:
    """Whether ``inner`` (start, duration) is a child of ``outer``: it lies inside and has length."""
    return inner[1] > 0 and outer[0] <= inner[0] and inner[0] + inner[1] <= outer[0] + outer[1]


def aligned(spaces: list[XSpace], files: list[dict]) -> tuple[list[XSpace], list[int]]:
    """The XSpaces whose clock offset to the spans was measured (``files``: the per-file results
    of :func:`tracer.perfetto.align_file`), with that offset in ns. An XPlane of another process
    or host, or one nothing could be paired in, has no offset to trust: it is left out."""
    kept = [(sp, round(f["offset_us"] * 1e3)) for sp, f in zip(spaces, files) if f["offset_us"] is not None]
    return [k[0] for k in kept], [k[1] for k in kept]


def span_device_time(spans, ops: DeviceOps, *, top: int = 5, epoch: bool = False) -> dict[int, DeviceTime]:
    """``span_id -> DeviceTime`` for finished tracer spans (``perf_counter_ns`` times, or epoch
    ns with ``epoch=True``: spans read back from a trace file)."""
    to_epoch = (lambda t: t) if epoch else clock.to_epoch_ns
    return {s.span_id: ops.inside(to_epoch(s.start_ns), to_epoch(s.end_ns), top=top)
            for s in spans if s.end_ns}


def _is_window(s) -> bool:
    """A recorded window, or a loaded span that was one (the exporters stamp ``spectrace.window``)."""
    return bool(getattr(s, "window", False) or s.attributes.get(WINDOW))


def rows(spans, times: dict[int, DeviceTime], *, max_depth: int = 1) -> list[dict]:
    """One row per span down to ``max_depth`` (0 = roots: the windows), in start order.

    Each row: ``name``, ``depth``, ``engine`` and ``chunk.index`` where the span has them, and
    :meth:`DeviceTime.as_dict`'s fields (``devices`` too when several devices ran ops). What
    ``ttft.json``'s ``device_time`` holds.
    """
    spans = [s for s in spans if s.end_ns and s.span_id in times]
    ids = {s.span_id: s for s in spans}

    def depth(s) -> int:
        """Steps up to the outermost window above (a request root over the windows is not a level)."""
        d, top = 0, 0 if _is_window(s) else None
        while s.parent_id in ids:
            s, d = ids[s.parent_id], d + 1
            if _is_window(s):
                top = d
        return d if top is None else top

    above = set()  # spans that hold windows (the request root): not rows of their own
    for s in spans:
        if _is_window(s):
            p = s.parent_id
            while p in ids:
                above.add(p)
                p = ids[p].parent_id
    out = []
    for s in sorted(spans, key=lambda s: (s.start_ns, -s.end_ns)):
        d = depth(s)
        if d > max_depth or s.span_id in above:
            continue
        row = {"name": s.name, "depth": d}
        row.update({k: s.attributes[k] for k in ("engine", "chunk.index") if k in s.attributes})
        row.update(times[s.span_id].as_dict())
        out.append(row)
    return out


def format_rows(table: list[dict], title: str = "Device time per span") -> str:
    """:func:`rows` as the text table ``spectrace run --xplane`` and ``spectrace merge`` print.

    Rows with a ``devices`` split (several devices ran ops) are followed by one indented row
    per device, when the span had device activity at all (an all-idle span has nothing to split).
    Then, after a blank line, :func:`format_gaps` (when any gap is long enough to list).
    """
    split = any(r.get("devices") for r in table)
    out = [f"{title} (XPlane; busy = any device op running{'; then each device alone' if split else ''})",
           f"  {'span':<34}{'ms':>10}{'busy ms':>10}{'idle ms':>10}{'ops':>7}  heaviest op (ms, count)"]
    for r in table:
        out.append(_format_row(_label(r), f"{r['ms']:>10.2f}", r))
        if r.get("devices") and (r.get("device_ops") or r.get("device_busy_ms")):
            for key, d in r["devices"].items():
                out.append(_format_row("  " * (r["depth"] + 1) + f"- {key}", " " * 10, d))
    gaps = format_gaps(table)
    return "\n".join(out) + (f"\n\n{gaps}" if gaps else "")


def longest_gaps(table: list[dict], *, top: int = 8, min_ms: float = 0.1) -> list[tuple[dict, dict]]:
    """``(row, gap)`` for the ``top`` longest device idle gaps of the table's innermost rows (a
    window's gaps are its children's, or between them), at least ``min_ms`` long, in spans where
    the device ran something (an all-idle span is host work, and the table says so)."""
    found = []
    for i, r in enumerate(table):
        if i + 1 < len(table) and (table[i + 1].get("depth") or 0) > (r.get("depth") or 0):
            continue  # rows below it list the same time
        found += [(r, g) for g in r.get("idle_gaps") or [] if isinstance(g, dict)
                  and (g.get("ms") or 0.0) >= min_ms and (g.get("after") or g.get("before"))]
    found.sort(key=lambda f: -(f[1].get("ms") or 0.0))
    return found[:top]


def gap_between(after, before, *, width: int | None = None) -> str:
    """``"op -> op"`` for a gap after op ``after`` and before op ``before``, with the span's start
    and end where no op bounds it (None); each name cut to ``width`` characters if given."""
    return f"{str(after or 'span start')[:width]} -> {str(before or 'span end')[:width]}"


def format_gaps(table: list[dict], *, top: int = 8, min_ms: float = 0.1) -> str:
    """:func:`longest_gaps` as text, "" when there are none."""
    found = longest_gaps(table, top=top, min_ms=min_ms)
    if not found:
        return ""
    out = ["Longest device idle gaps (no op ran on any device; at: ms from the span's start; host: its doing)",
           f"  {'span':<34}{'gap ms':>10}{'at ms':>10}  between"]
    for r, g in found:
        host = f"; host in {str(g['host'])[:60]}" if g.get("host") else ""
        between = gap_between(g.get("after"), g.get("before"), width=40)
        out.append(f"  {_label(r):<34}{g.get('ms') or 0.0:>10.2f}{g.get('at_ms') or 0.0:>10.2f}  {between}{host}")
    return "\n".join(out)


def _label(r: dict) -> str:
    label = "  " * r["depth"] + r["name"]
    if "chunk.index" in r:
        label += f" #{r['chunk.index']}"
    if "engine" in r and r["depth"]:
        label += f" [{r['engine']}]"
    return label


def _format_row(label: str, ms: str, r: dict) -> str:
    top = r["top_ops"][0] if r.get("top_ops") else None
    heaviest = f"{top.get('name', '?')[:40]} ({top.get('ms', 0):.2f}, {top.get('count', 0)})" if top else "-"
    return (f"  {label:<34}{ms}{r.get('device_busy_ms') or 0:>10.2f}{r.get('device_idle_ms') or 0:>10.2f}"
            f"{r.get('device_ops') or 0:>7}  {heaviest}")
