"""Native Perfetto traces (``.pftrace``) of finished spans, with the XPlane device profile.

One file an engineer opens in ui.perfetto.dev: the host process with one track per thread of
spans (every span a slice carrying its attributes, io totals and error), a transfer track per
thread, counter tracks per (engine, binding category) for cumulative bytes and per-chunk
transfer time, and, when XPlane files are given, every device/host plane of JAX's profile as
processes of their own, shifted onto the spans' clock by a *measured* offset
(:func:`tracer.xplane.align`). Timestamps are epoch ns (REALTIME, via :mod:`tracer.clock`).

Encoding is separate from transport (OpenTelemetry's habit): :mod:`tracer._perfetto_writer`
knows the wire conventions, this module only decides what goes on which track.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import zlib

from . import clock
from ._perfetto_chrome import export_chrome_json
from ._perfetto_read import METADATA_EVENT, read_pftrace
from ._perfetto_writer import PacketWriter, Sequence, atomic_output, text, uuid_for
from ._record import CATEGORIES, PARENT_ID, SPAN_ID, TRACE_ID, WINDOW

__all__ = ["export_chrome_json", "read_pftrace", "write_pftrace", "summarize_alignment"]

SCHEMA = "spectrace.pftrace/1"
_SYNTHETIC_TID = 0x60000000  # tids for threads whose OS id is unknown: far above pid_max


def write_pftrace(path, spans, *, xplanes=(), metadata: dict | None = None,
                  process_name: str | None = None) -> dict:
    """Write ``spans`` (finished ``tracer.Span`` records or a ``tracer.capture()`` recording)
    and the XPlane files ``xplanes`` (paths or :class:`tracer.xplane.XSpace`) to ``path`` (or
    to a binary file object, e.g. ``io.BytesIO``, written as is).

    Returns the alignment summary (also stored in the trace's metadata event):
    ``{"median_us", "max_us", "offset_us", "pairs", "files": [per XPlane file]}``, ``None``
    values when no XPlane span could be paired, plus ``device_time``: ``span_id ->``
    :class:`tracer.device_time.DeviceTime` (empty without XPlanes), also written on every span
    slice as ``device.busy_ms``, ``device.idle_ms``, ``device.ops``, ``device.top_op``, the
    longest idle gap as ``device.idle_gap_ms`` and ``device.idle_gap`` (its place and the ops
    around it), and ``device.<key>.busy_ms`` per device when several ran ops, e.g.
    ``device.CPU:1.busy_ms``. XPlane
    files are read before anything is written, so a bad file raises (naming it) and no trace
    appears.
    """
    spans = [s for s in getattr(spans, "spans", spans) if s.end_ns]
    spaces = _read_spaces(xplanes)
    pid, host = os.getpid(), socket.gethostname()
    to_epoch = clock.to_epoch_ns
    marks = [(text(s.name), to_epoch(s.start_ns), to_epoch(s.end_ns)) for s in spans]
    files = [align_file(sp, marks, pid, host) for sp in spaces]
    summary = summarize_alignment(files)
    times = _device_times(spans, spaces, files)
    t0 = min([m[1] for m in marks] or [sp.start_ns for sp in spaces] or [clock.ANCHOR[1]])
    out = contextlib.nullcontext(path) if hasattr(path, "write") else atomic_output(path)
    with out as f, PacketWriter(f) as w:
        seq = w.sequence()
        seq.clock_snapshot(_clock_readings())
        proc = seq.track(uuid_for("spectrace", host, pid), pid=pid,
                         process_name=process_name or f"spectrace host ({_program()})")
        _emit_spans(seq, spans, pid, proc, times)
        _emit_counters(seq, spans, proc, t0)
        meta = {"schema": SCHEMA, "host": host, "pid": pid, **(metadata or {})}
        emit_metadata(seq, t0, meta, summary, spaces)
        _emit_spaces(w, spaces, files, first_pid=None)
    return {**summary, "device_time": times}


def _device_times(spans, spaces, files) -> dict:
    """Device busy/idle/ops per span from the aligned XPlanes (:mod:`tracer.device_time`)."""
    if not spaces:
        return {}
    from .device_time import aligned, device_ops, span_device_time

    return span_device_time(spans, device_ops(*aligned(spaces, files)))


def _read_spaces(xplanes) -> list:
    if not xplanes:
        return []
    from .xplane import XSpace, read_xplane

    return [x if isinstance(x, XSpace) else read_xplane(x) for x in xplanes]


def align_file(space, marks, pid: int | None, host: str | None) -> dict:
    """Align one XSpace against span marks, only if it profiled the process that made them."""
    from .xplane import align, no_alignment

    info = {"path": space.path, "host": space.host, "pid": space.pid, "events": space.n_events}
    same = (space.pid is None or pid is None or space.pid == pid) and \
        (not host or space.host.split(".")[0] == host.split(".")[0])
    info.update(align(marks, space) if same and marks else no_alignment())
    return info


def summarize_alignment(files: list[dict]) -> dict:
    """One alignment for ``ttft.json``: over every file with paired spans."""
    from .xplane import no_alignment

    measured = [f for f in files if f["pairs"]]
    out = {**no_alignment(), "files": files}
    if measured:
        best = max(measured, key=lambda f: f["pairs"])
        out.update(median_us=max(f["median_us"] for f in measured),
                   max_us=max(f["max_us"] for f in measured),
                   offset_us=best["offset_us"], pairs=sum(f["pairs"] for f in measured))
    return out


def _emit_spaces(w: PacketWriter, spaces, files, *, first_pid, salt: int = 0) -> None:
    from ._perfetto_xplane import XPLANE_PID_BASE, emit_xspace

    pid = XPLANE_PID_BASE if first_pid is None else first_pid
    for i, (space, info) in enumerate(zip(spaces, files)):
        offset = round(info["offset_us"] * 1e3) if info["offset_us"] is not None else 0
        _, pid = emit_xspace(w, space, offset_ns=offset, first_pid=pid, salt=(salt, i))


def emit_metadata(seq: Sequence, ts: int, meta: dict, alignment: dict, spaces) -> None:
    """One instant on a global ``spectrace`` track: run metadata and the measured alignment."""
    track = seq.track(uuid_for("spectrace-metadata", seq.id, ts), "spectrace")
    args = [(k, v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str))
            for k, v in meta.items() if v is not None]
    for k in ("median_us", "max_us", "offset_us", "pairs"):
        args.append((f"alignment.{k}", alignment[k]))
    args.append(("alignment", json.dumps(alignment, default=str)))
    for i, sp in enumerate(spaces):
        args.append((f"xplane.{i}.path", sp.path))
        for k, v in sp.metadata.items():
            args.append((f"xplane.{i}.{k}", v))
    seq.instant(ts, track, METADATA_EVENT, args)


def _clock_readings() -> dict[int, int]:
    """REALTIME and, on Linux, MONOTONIC (= perf_counter) and BOOTTIME at the clock anchor."""
    from ._perfetto_writer import pb

    perf, epoch = clock.ANCHOR
    out = {pb.BUILTIN_CLOCK_REALTIME: epoch}
    if sys.platform.startswith("linux") and hasattr(time, "CLOCK_BOOTTIME"):
        mono_now = time.perf_counter_ns()
        boot_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        out[pb.BUILTIN_CLOCK_MONOTONIC] = perf
        out[pb.BUILTIN_CLOCK_BOOTTIME] = boot_now - (mono_now - perf)
    return out


def _program() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def _thread_ids(spans) -> dict[tuple, int]:
    """``(thread_id, thread_name)`` -> the int32 tid Perfetto shows.

    The recorder keeps OS thread ids (``threading.get_native_id``), so a span's ``thread_id``
    is its tid. The OS may reuse an id once a thread ended, so a thread is its (id, name); an
    id outside int32 (never on Linux) gets a stable synthetic tid above any real one.
    """
    out = {}
    for s in spans:
        key = (s.thread_id, s.thread_name)
        if key not in out:
            tid = s.thread_id
            out[key] = tid if 0 < tid < 2**31 else _SYNTHETIC_TID + zlib.crc32(repr(key).encode()) % (1 << 28)
    return out


def span_args(s, device=None) -> list:
    """A span's debug annotations: attributes, io totals, device time (``device``, a
    :class:`tracer.device_time.DeviceTime`), error, ids (what loaders read back)."""
    args = [(k, v) for k, v in s.attributes.items()]
    for cat in sorted(s.io, key=_cat_order):
        args += [(f"io.{cat}.{k}", v) for k, v in s.io[cat].as_dict().items()]
    if device is not None:
        args += [("device.busy_ms", device.busy_ns / 1e6), ("device.idle_ms", device.idle_ns / 1e6),
                 ("device.ops", device.ops)]
        if device.top:
            name, ns, count = device.top[0]
            args.append(("device.top_op", f"{name} ({ns / 1e6:.3f} ms, {count}x)"))
        if device.gaps:
            from .device_time import gap_between

            at, ns, after_op, before_op, host = device.gaps[0]
            args += [("device.idle_gap_ms", ns / 1e6),
                     ("device.idle_gap", f"{ns / 1e6:.3f} ms at +{at / 1e6:.3f} ms: "
                                         f"{gap_between(after_op, before_op)}" + (f" (host: {host})" if host else ""))]
        args += [(f"device.{key}.busy_ms", d.busy_ns / 1e6) for key, d in device.devices.items()]
    if s.error_type is not None:
        args += [("error.type", s.error_type), ("error.message", s.error_message)]
    args += [(SPAN_ID, s.span_id), (PARENT_ID, s.parent_id), (TRACE_ID, s.trace_id)]
    if s.window:
        args.append((WINDOW, True))
    return args


def _cat_order(cat: str):
    return (CATEGORIES.index(cat), cat) if cat in CATEGORIES else (len(CATEGORIES), cat)


def _emit_spans(seq: Sequence, spans, pid: int, proc: int, device_times: dict) -> None:
    to_epoch = clock.to_epoch_ns
    tids = _thread_ids(spans)
    by_thread: dict[tuple, list] = {}
    for s in spans:
        by_thread.setdefault((s.thread_id, s.thread_name), []).append(s)
    order = sorted(by_thread, key=lambda t: min(s.start_ns for s in by_thread[t]))
    for rank, thread in enumerate(order):
        tid, tname = tids[thread], thread[1] or f"thread {thread[0]}"
        group = sorted(by_thread[thread], key=lambda s: (s.start_ns, -s.end_ns, s.span_id))
        items = [(to_epoch(s.start_ns), to_epoch(s.end_ns), s.name, span_args(s, device_times.get(s.span_id)))
                 for s in group]
        track = seq.track(uuid_for("thread", pid, thread), pid=pid, tid=tid, thread_name=tname)
        seq.lanes(items, _overflow(seq, track, ("thread", pid, thread), f"{tname} (overlapping)", proc, rank),
                  [("thread.name", tname), ("thread.id", tid)])
        transfers = sorted((t for s in group for t in s.transfers), key=lambda t: (t.start_ns, -t.end_ns))
        if transfers:
            titems = [(to_epoch(t.start_ns), to_epoch(t.end_ns), f"{t.category} {t.direction}",
                       [("binding", t.binding), ("bytes", t.nbytes), ("ms", t.ns / 1e6), (SPAN_ID, t.span_id)]
                       + ([("src", t.src), ("dst", t.dst)] if t.src or t.dst else [])) for t in transfers]
            io_track = seq.track(uuid_for("io", pid, thread), f"{tname} transfers", parent=proc,
                                 rank=1000 + rank)
            seq.lanes(titems, _overflow(seq, io_track, ("io", pid, thread), f"{tname} transfers", proc, rank))


def _overflow(seq: Sequence, track: int, key: tuple, label: str, proc: int, rank: int):
    """Lane tracks for :meth:`Sequence.lanes`: ``track`` first, then ``"<label> N"`` under the process."""
    return lambda lane: track if lane == 0 else \
        seq.track(uuid_for(*key, lane), f"{label} {lane + 1}", parent=proc, rank=2000 + rank)


def _emit_counters(seq: Sequence, spans, proc: int, t0: int) -> None:
    """Cumulative bytes per (engine, category) at each transfer's end; per-chunk transfer ms."""
    to_epoch = clock.to_epoch_ns
    by_id = {s.span_id: s for s in spans}
    engines: dict[int, str] = {}

    def engine_of(span_id: int) -> str:
        chain, sid, found = [], span_id, "-"
        while sid in by_id:
            if sid in engines:
                found = engines[sid]
                break
            chain.append(sid)
            value = by_id[sid].attributes.get("engine")
            if value is not None:
                found = str(value)
                break
            sid = by_id[sid].parent_id
        for c in chain:
            engines[c] = found
        return found

    totals: dict[tuple[str, str], list] = {}
    for s in spans:
        for t in s.transfers:
            totals.setdefault((engine_of(s.span_id), t.category), []).append(t)
    for (engine, cat), ts in sorted(totals.items(), key=lambda kv: (kv[0][0], _cat_order(kv[0][1]))):
        track = seq.track(uuid_for("bytes", proc, engine, cat), f"io.{cat}.bytes [{engine}]",
                          parent=proc, counter_unit="bytes", rank=3000)
        seq.counter(t0, track, 0)
        total = 0
        for t in sorted(ts, key=lambda t: t.end_ns):
            total += t.nbytes
            seq.counter(to_epoch(t.end_ns), track, total)
    chunks: dict[str, list] = {}
    for s in spans:
        if s.name == "prefill.chunk":
            chunks.setdefault(engine_of(s.span_id), []).append(s)
    for engine, group in sorted(chunks.items()):
        group.sort(key=lambda s: s.start_ns)
        cats = sorted({c for s in group for c, t in s.io.items() if t.count}, key=_cat_order)
        for cat in cats:
            track = seq.track(uuid_for("chunk-ms", proc, engine, cat), f"io.{cat}.ms per chunk [{engine}]",
                              parent=proc, counter_unit="ms", rank=3001)
            seq.counter(t0, track, 0.0)
            for s in group:
                seq.counter(to_epoch(s.start_ns), track, s.io_ms(cat))
                seq.counter(to_epoch(s.end_ns), track, 0.0)
