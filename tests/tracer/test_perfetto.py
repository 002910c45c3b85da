"""The native Perfetto writer: tracks, slices, counters and clock, checked on the decoded file.

The file is decoded here with the perfetto package's own ``perfetto_trace_pb2.Trace`` and the
interning tables resolved by hand, independently of ``tracer._perfetto_read``, so a bug shared
by the writer and the reader cannot hide. Spans come from the real tracer, in two threads.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from spectrace import tracer
from spectrace.tracer import clock
from spectrace.tracer._perfetto_writer import nest_lanes
from spectrace.tracer.perfetto import export_chrome_json, read_pftrace, write_pftrace

QUERIES, KEYS, LOGITS = 3 * 4096, 2 * 8192, 1024
TE = pb.TrackEvent


def engine_pass(engine: str, chunks: int = 3) -> None:
    with tracer.window(f"ttft.{engine}", engine=engine):
        with tracer.span("tokenize", stage="bootstrap"):
            time.sleep(0.0002)
        for i in range(chunks):
            with tracer.span("prefill.chunk", engine=engine, **{"chunk.index": i, "chunk.tokens": 16}):
                with tracer.transfer("prefill_queries", "d2h", QUERIES):
                    time.sleep(0.0003)
                with tracer.transfer(f"past_key.{i}_RetainedState", "h2d", KEYS):
                    time.sleep(0.0001)
        tracer.record_transfer("logits", "d2h", LOGITS, ns=20_000)


@pytest.fixture
def rec():
    """A capture of two engine passes in two threads and a failing span in the main thread."""
    tracer.configure(enabled=True)
    with tracer.capture() as recording:
        threads = [threading.Thread(target=engine_pass, args=(e,), name=f"worker-{e}") for e in ("spec", "base")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(ValueError):
            with tracer.span("decode"):
                raise ValueError("bad token")
    return recording


@pytest.fixture
def written(rec, tmp_path):
    path = tmp_path / "trace.pftrace"
    alignment = write_pftrace(path, rec.spans, metadata={"run": "test", "config": {"chunks": 3}})
    return path, decode(path), alignment


def decode(path) -> dict:
    """Tracks, per-track events in file order, counters and interning checks of a .pftrace."""
    trace = pb.Trace.FromString(open(path, "rb").read())
    names, anns, cleared = {}, {}, set()
    out = {"tracks": {}, "events": {}, "counters": {}, "instants": [], "packets": list(trace.packet),
           "clock": None, "defaults": {}}
    for p in trace.packet:
        seq = p.trusted_packet_sequence_id
        assert seq, "every packet carries trusted_packet_sequence_id"
        if p.sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED:
            cleared.add(seq)
            names[seq], anns[seq] = {}, {}
            out["defaults"][seq] = p.trace_packet_defaults.timestamp_clock_id
        for e in p.interned_data.event_names:
            names[seq][e.iid] = e.name
        for e in p.interned_data.debug_annotation_names:
            anns[seq][e.iid] = e.name
        if p.HasField("clock_snapshot"):
            out["clock"] = p.clock_snapshot
        if p.HasField("track_descriptor"):
            out["tracks"][p.track_descriptor.uuid] = p.track_descriptor
        if p.HasField("track_event"):
            te = p.track_event
            assert seq in cleared and p.sequence_flags & pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
            assert not te.HasField("name"), "event names are interned"
            name = names[seq][te.name_iid] if te.name_iid else None
            args = {}
            for a in te.debug_annotations:
                assert not a.HasField("name"), "annotation names are interned"
                args[anns[seq][a.name_iid]] = getattr(a, a.WhichOneof("value"))
            if te.type == TE.TYPE_COUNTER:
                v = te.counter_value if te.HasField("counter_value") else te.double_counter_value
                out["counters"].setdefault(te.track_uuid, []).append((p.timestamp, v))
            elif te.type == TE.TYPE_INSTANT:
                out["instants"].append((te.track_uuid, p.timestamp, name, args))
            else:
                out["events"].setdefault(te.track_uuid, []).append((p.timestamp, te.type, name, args))
    return out


def slices_of(d) -> list[tuple]:
    """(track, name, start, end, args, depth): every begin paired with an end on its track."""
    out = []
    for track, evs in d["events"].items():
        stack = []
        for ts, kind, name, args in sorted(evs, key=lambda e: e[0]):  # stable: file order on ties
            if kind == TE.TYPE_SLICE_BEGIN:
                stack.append((track, name, ts, args, len(stack)))
            else:
                assert kind == TE.TYPE_SLICE_END and stack, f"an end without a begin on track {track}"
                t, n, start, args_, depth = stack.pop()
                assert start <= ts
                out.append((t, n, start, ts, args_, depth))
        assert not stack, f"begins without an end on track {track}: {stack}"
    return out


def test_every_slice_begin_has_its_end_on_the_same_track_and_nests(written, rec):
    path, d, _ = written
    slices = slices_of(d)
    for track in d["events"]:
        on = sorted((s for s in slices if s[0] == track), key=lambda s: (s[2], s[5]))
        stack = []
        for s in on:
            while stack and stack[-1][3] <= s[2]:
                stack.pop()
            if stack:  # a child lies inside its parent
                assert stack[-1][2] <= s[2] and s[3] <= stack[-1][3]
            assert s[5] == len(stack)
            stack.append(s)
    spans = [s for s in slices if "spectrace.span_id" in s[4] and "bytes" not in s[4]]
    assert sorted((s[1], s[2], s[3]) for s in spans) == sorted(
        (s.name, clock.to_epoch_ns(s.start_ns), clock.to_epoch_ns(s.end_ns)) for s in rec.spans)


def test_one_thread_track_per_thread_under_the_host_process(written, rec):
    _, d, _ = written
    procs = [t for t in d["tracks"].values() if t.HasField("process")]
    assert [p.process.pid for p in procs] == [os.getpid()]
    threads = {t.uuid: t for t in d["tracks"].values() if t.HasField("thread")}
    assert sorted(t.thread.thread_name for t in threads.values()) == ["MainThread", "worker-base", "worker-spec"]
    assert all(t.thread.pid == os.getpid() and 0 < t.thread.tid < 2**31 for t in threads.values())
    # the OS thread id each span was recorded on (what top, py-spy and the XPlane show)
    assert {t.thread.thread_name: t.thread.tid for t in threads.values()} == {
        s.thread_name: s.thread_id for s in rec.spans}
    by_name = {t.thread.thread_name: uuid for uuid, t in threads.items()}
    for track, name, _, _, args, _ in slices_of(d):
        if name == "prefill.chunk" and "spectrace.span_id" in args:
            assert track == by_name[f"worker-{args['engine']}"]
        if name == "decode":
            assert track == by_name["MainThread"]


def test_span_attributes_io_totals_and_errors_are_annotations(written, rec):
    _, d, _ = written
    by_id = {s[4]["spectrace.span_id"]: s for s in slices_of(d) if "spectrace.parent_id" in s[4]}
    for span in rec.spans:
        args = by_id[span.span_id][4]
        for k, v in span.attributes.items():
            assert args[k] == v
        for cat, tot in span.io.items():
            assert args[f"io.{cat}.bytes"] == tot.bytes and args[f"io.{cat}.count"] == tot.count
            assert args[f"io.{cat}.ms"] == pytest.approx(tot.ms)
            assert args[f"io.{cat}.direction"] == tot.direction
        assert args["spectrace.parent_id"] == span.parent_id
    (dec,) = [s for s in rec.spans if s.name == "decode"]
    assert by_id[dec.span_id][4]["error.type"] == "ValueError"
    assert by_id[dec.span_id][4]["error.message"] == "bad token"
    chunk = next(s for s in rec.spans if s.name == "prefill.chunk")
    assert by_id[chunk.span_id][4]["io.prefill_queries.bytes"] == QUERIES


def counter_tracks(d, unit_bytes: bool):
    out = {}
    for uuid, values in d["counters"].items():
        desc = d["tracks"][uuid]
        if (desc.counter.unit == pb.CounterDescriptor.UNIT_SIZE_BYTES) == unit_bytes:
            out[desc.name] = values
    return out


def test_byte_counters_never_decrease_and_total_the_spans_bytes(written, rec):
    _, d, _ = written
    counters = counter_tracks(d, unit_bytes=True)
    assert set(counters) == {f"io.{c}.bytes [{e}]" for c in ("prefill_queries", "past_key", "logits")
                             for e in ("spec", "base")}
    totals: dict[str, int] = {}
    for name, values in counters.items():
        assert values[0][1] == 0
        assert all(b[1] >= a[1] and b[0] >= a[0] for a, b in zip(values, values[1:])), name
        cat = name.split(".")[1]
        totals[cat] = totals.get(cat, 0) + values[-1][1]
    roots = [s for s in rec.spans if s.parent_id == 0]
    from_spans = {c: sum(s.io_bytes(c) for s in roots) for c in totals}
    assert totals == from_spans == {"prefill_queries": 6 * QUERIES, "past_key": 6 * KEYS, "logits": 2 * LOGITS}
    assert sum(totals.values()) == sum(t.nbytes for t in rec.transfers)


def test_chunk_ms_counters_hold_each_chunks_transfer_time(written, rec):
    _, d, _ = written
    counters = counter_tracks(d, unit_bytes=False)
    values = dict(counters["io.prefill_queries.ms per chunk [spec]"])
    chunks = [s for s in rec.spans if s.name == "prefill.chunk" and s.attributes["engine"] == "spec"]
    for c in chunks:
        assert values[clock.to_epoch_ns(c.start_ns)] == pytest.approx(c.io_ms("prefill_queries"))
        assert values[clock.to_epoch_ns(c.end_ns)] == 0.0
    assert all(d["tracks"][u].counter.unit_name == "ms" for u in d["counters"]
               if d["tracks"][u].name.endswith("per chunk [spec]"))


def test_every_timestamp_lies_inside_the_run(written, rec):
    _, d, _ = written
    t0 = min(clock.to_epoch_ns(s.start_ns) for s in rec.spans)
    t1 = max(clock.to_epoch_ns(s.end_ns) for s in rec.spans)
    stamps = [p.timestamp for p in d["packets"] if p.HasField("track_event")]
    assert stamps and all(t0 <= ts <= t1 for ts in stamps)


def test_realtime_clock_snapshot_and_sequence_defaults(written):
    _, d, _ = written
    snap = d["clock"]
    assert snap.primary_trace_clock == pb.BUILTIN_CLOCK_REALTIME
    readings = {c.clock_id: c.timestamp for c in snap.clocks}
    assert readings[pb.BUILTIN_CLOCK_REALTIME] == clock.ANCHOR[1]
    assert readings.get(pb.BUILTIN_CLOCK_MONOTONIC, clock.ANCHOR[0]) == clock.ANCHOR[0]
    assert d["defaults"] and set(d["defaults"].values()) == {pb.BUILTIN_CLOCK_REALTIME}
    first = d["packets"][0]
    assert first.sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED and first.first_packet_on_sequence


def test_metadata_event_carries_run_metadata_and_alignment(written):
    path, d, alignment = written
    assert alignment["pairs"] == 0 and alignment["median_us"] is None  # no XPlane: nothing measured
    (meta,) = [args for _, _, name, args in d["instants"] if name == "spectrace.metadata"]
    assert meta["run"] == "test" and json.loads(meta["config"]) == {"chunks": 3}
    assert meta["pid"] == os.getpid() and meta["schema"] == "spectrace.pftrace/1"
    assert json.loads(meta["alignment"])["pairs"] == 0
    assert read_pftrace(path).metadata() == [meta]


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(rec, tmp_path, monkeypatch):
    import spectrace.tracer.perfetto as perfetto

    path = tmp_path / "trace.pftrace"
    path.write_bytes(b"old")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(perfetto, "_emit_counters", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_pftrace(path, rec.spans)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["trace.pftrace"]
    with pytest.raises(RuntimeError):
        write_pftrace(tmp_path / "new.pftrace", rec.spans)
    assert not (tmp_path / "new.pftrace").exists()


@pytest.mark.parametrize("umask", [None, 0o002])  # None: the process's own umask
def test_written_files_get_the_mode_a_plain_open_gives(rec, tmp_path, umask):
    old = os.umask(umask) if umask is not None else None
    try:
        with open(tmp_path / "plain.txt", "w"):
            pass
        write_pftrace(tmp_path / "trace.pftrace", rec.spans)
        export_chrome_json(tmp_path / "trace.pftrace", tmp_path / "trace.json")
    finally:
        if old is not None:
            os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes["trace.pftrace"] == modes["trace.json"] == modes["plain.txt"], modes


def test_overlapping_spans_go_to_an_extra_lane_not_a_broken_track(tmp_path):
    from spectrace.tracer._record import Span

    def mk(i, name, a, b):
        s = Span(i, 0, i, name, {}, threading.get_ident(), "MainThread", False)
        s.start_ns, s.end_ns = a, b
        return s

    spans = [mk(1, "a", 100, 300), mk(2, "b", 200, 400), mk(3, "c", 210, 250)]  # b crosses a's end
    write_pftrace(tmp_path / "t.pftrace", spans)
    d = decode(tmp_path / "t.pftrace")
    slices = slices_of(d)
    assert sorted(s[1] for s in slices) == ["a", "b", "c"]
    track_of = {s[1]: s[0] for s in slices}
    assert track_of["a"] == track_of["c"] != track_of["b"]
    assert [s[4]["thread.name"] for s in slices if s[1] == "b"] == ["MainThread"]
    assert nest_lanes([(0, 10), (1, 5), (4, 12), (5, 6), (12, 13)]) == [0, 0, 1, 0, 0]


def test_chrome_json_export_has_slices_counters_and_names(written, rec, tmp_path):
    path, d, _ = written
    out = tmp_path / "trace.json"
    n = export_chrome_json(path, out)
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    assert len(events) == n
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == len(slices_of(d))
    chunk = next(s for s in rec.spans if s.name == "prefill.chunk")
    (x,) = [e for e in xs if e["args"].get("spectrace.span_id") == chunk.span_id and e["name"] == "prefill.chunk"]
    assert x["ts"] == pytest.approx(clock.to_epoch_ns(chunk.start_ns) / 1e3, abs=0.5)
    assert x["dur"] == pytest.approx(chunk.duration_ns / 1e3, abs=0.01)
    assert x["pid"] == os.getpid()
    counters = [e for e in events if e["ph"] == "C"]
    assert {e["name"] for e in counters} >= {"io.prefill_queries.bytes [spec]", "io.logits.bytes [base]"}
    last = {}
    for e in counters:
        last[e["name"]] = e["args"]["value"]
    assert last["io.prefill_queries.bytes [spec]"] == 3 * QUERIES
    thread_names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"worker-spec", "worker-base", "MainThread"} <= thread_names
    assert doc["otherData"]["run"] == "test"
    # Straight from spans gives the same events.
    n2 = export_chrome_json(rec.spans, tmp_path / "direct.json")
    assert n2 == n


def test_reading_a_missing_or_truncated_trace_names_the_file(written, tmp_path):
    path, _, _ = written
    with pytest.raises(FileNotFoundError, match="nope.pftrace"):
        read_pftrace(tmp_path / "nope.pftrace")
    cut = tmp_path / "cut.pftrace"
    cut.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"cut\.pftrace is truncated: packet \d+ at byte \d+ needs \d+ bytes"):
        read_pftrace(cut)
    other = tmp_path / "other.pftrace"
    other.write_bytes(b"\x08\x01 not a trace")
    with pytest.raises(ValueError, match=r"other\.pftrace is not a Perfetto trace"):
        read_pftrace(other)
