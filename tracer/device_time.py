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
  summed duration, grouped by op name.

XPlane times are moved onto the spans' clock by the measured offset of
:func:`tracer.xplane.align` (``offset_us`` is subtracted). Plain Python and numbers: no JAX.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from itertools import accumulate

from . import clock
from ._record import WINDOW
from .xplane import XSpace, event_epoch_ns

__all__ = ["DeviceOps", "DeviceTime", "aligned", "device_ops", "format_rows", "rows", "span_device_time"]


@dataclass
class DeviceTime:
    """Device activity inside one span (nanoseconds)."""

    span_ns: int
    busy_ns: int
    ops: int
    top: list[tuple[str, int, int]] = field(default_factory=list)  # (op name, summed ns, count)

    @property
    def idle_ns(self) -> int:
        return max(0, self.span_ns - self.busy_ns)

    def as_dict(self) -> dict:
        return {"ms": self.span_ns / 1e6, "device_busy_ms": self.busy_ns / 1e6,
                "device_idle_ms": self.idle_ns / 1e6, "device_ops": self.ops,
                "top_ops": [{"name": n, "ms": ns / 1e6, "count": c} for n, ns, c in self.top]}


class DeviceOps:
    """Leaf device ops on the epoch clock, indexed for per-span queries.

    ``starts``/``ends``/``names`` are sorted by start; the union of the op intervals is kept
    as disjoint sorted intervals with a running sum, so a span's busy time is two bisections.
    """

    def __init__(self, ops: list[tuple[int, int, str]]):
        ops.sort()
        self.starts = [o[0] for o in ops]
        self.ends = [o[1] for o in ops]
        self.names = [o[2] for o in ops]
        merged: list[list[int]] = []
        for s, e, _ in ops:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self._u_start = [m[0] for m in merged]
        self._u_end = [m[1] for m in merged]
        self._u_cum = [0, *accumulate(e - s for s, e in merged)]  # busy ns before interval i

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

    def inside(self, start: int, end: int, *, top: int = 5) -> DeviceTime:
        lo, hi = bisect.bisect_left(self.starts, start), bisect.bisect_left(self.starts, end)
        by_name: dict[str, list[int]] = {}
        for i in range(lo, hi):
            agg = by_name.setdefault(self.names[i], [0, 0])
            agg[0] += self.ends[i] - self.starts[i]
            agg[1] += 1
        heaviest = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
        return DeviceTime(span_ns=end - start, busy_ns=self.busy_ns(start, end), ops=hi - lo,
                          top=[(n, ns, c) for n, (ns, c) in heaviest])


def device_ops(spaces: list[XSpace], offsets_ns: list[int] | None = None) -> DeviceOps:
    """The device ops of ``spaces`` (each shifted by its ``offsets_ns``, default 0).

    On host lines only the innermost XLA ops count (a thunk around its body would count the
    body twice); on ``/device:*`` lines every event counts, since kernels of one stream line
    may overlap without one being the other's parent (the union absorbs the overlap).
    """
    ops: list[tuple[int, int, str]] = []
    for space, offset in zip(spaces, offsets_ns or [0] * len(spaces)):
        for plane in space.planes:
            device = plane.name.startswith("/device:")
            for _, events in plane.lines:
                line = sorted(((event_epoch_ns(space, st) - offset, round(dur), name)
                               for name, st, dur, stats in events if device or "hlo_op" in stats),
                              key=lambda o: (o[0], -o[1]))
                for i, (s, dur, name) in enumerate(line):
                    if not device and i + 1 < len(line) and _encloses((s, dur), line[i + 1]):
                        continue  # the children carry the time
                    ops.append((s, s + dur, name))
    return DeviceOps(ops)


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
    :meth:`DeviceTime.as_dict`'s fields. What ``ttft.json``'s ``device_time`` holds.
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
    """:func:`rows` as the text table ``spectrace run --xplane`` and ``spectrace merge`` print."""
    out = [f"{title} (XPlane; busy = any device op running)",
           f"  {'span':<34}{'ms':>10}{'busy ms':>10}{'idle ms':>10}{'ops':>7}  heaviest op (ms, count)"]
    for r in table:
        label = "  " * r["depth"] + r["name"]
        if "chunk.index" in r:
            label += f" #{r['chunk.index']}"
        if "engine" in r and r["depth"]:
            label += f" [{r['engine']}]"
        top = r["top_ops"][0] if r["top_ops"] else None
        heaviest = f"{top['name'][:40]} ({top['ms']:.2f}, {top['count']})" if top else "-"
        out.append(f"  {label:<34}{r['ms']:>10.2f}{r['device_busy_ms']:>10.2f}{r['device_idle_ms']:>10.2f}"
                   f"{r['device_ops']:>7}  {heaviest}")
    return "\n".join(out)
