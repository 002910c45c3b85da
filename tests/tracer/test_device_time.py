"""Device time per span: busy/idle/top ops from XPlane events, on XSpaces with known events and on
a real ``jax.profiler`` run on this CPU."""

from __future__ import annotations

import time

import numpy as np
import pytest

from spectrace import tracer
from helpers import profiled_run
from spectrace.tracer import clock, device_time, xplane

T0 = 1_700_000_000_000_000_000


def _space(planes: dict) -> xplane.XSpace:
    """An XSpace whose event offsets count from T0; ``planes``: name -> {line: [(name, off, dur, stats)]}."""
    return xplane.XSpace("x.xplane.pb", T0, 0, "h", 1, {},
                         [xplane.Plane(name, {}, list(lines.items())) for name, lines in planes.items()])


def test_busy_is_the_union_of_ops_over_streams_clipped_to_the_span():
    space = _space({"/device:GPU:0": {
        "Stream #1": [("gemm", 100, 100, {}), ("fusion", 300, 50, {}), ("gemm", 400, 100, {})],
        "Stream #2": [("MemcpyD2H", 150, 100, {})],  # overlaps gemm on the other stream
    }})
    ops = device_time.device_ops([space])
    assert len(ops) == 4
    whole = ops.inside(T0, T0 + 1000)
    # union: [100, 250) + [300, 350) + [400, 500) = 150 + 50 + 100
    assert (whole.busy_ns, whole.ops, whole.idle_ns) == (300, 4, 700)
    assert whole.top[0] == ("gemm", 200, 2) and {t[0] for t in whole.top} == {"gemm", "fusion", "MemcpyD2H"}
    part = ops.inside(T0 + 200, T0 + 450)  # clips the copy, holds fusion, clips gemm#2
    assert part.busy_ns == 50 + 50 + 50
    assert part.ops == 2  # ops are attributed to the span they start in: fusion and gemm#2
    assert ops.inside(T0 + 260, T0 + 290).busy_ns == 0
    assert ops.inside(T0 + 600, T0 + 500).busy_ns == 0  # empty span


def test_gaps_say_where_the_device_waited_and_between_which_ops():
    space = _space({"/device:GPU:0": {
        "Stream #1": [("gemm", 100, 100, {}), ("fusion", 300, 50, {}), ("gemm", 400, 100, {})],
        "Stream #2": [("MemcpyD2H", 150, 120, {})],  # ends last in the first busy stretch
    }})
    ops = device_time.device_ops([space])
    d = ops.inside(T0, T0 + 1000)
    # idle: [0, 100) before anything, [270, 300), [350, 400), [500, 1000) to the span's end
    assert d.gaps == [(500, 500, "gemm", None, None), (0, 100, None, "gemm", None), (350, 50, "fusion", "gemm", None)]
    assert sum(g[1] for g in ops.gaps(T0, T0 + 1000, top=10)) == d.idle_ns
    assert ops.gaps(T0 + 120, T0 + 320) == [(150, 30, "MemcpyD2H", "fusion", None)]  # a span starting mid-op
    assert ops.gaps(T0 + 110, T0 + 190) == []                                      # busy throughout
    assert ops.gaps(T0 + 600, T0 + 700) == [(0, 100, None, None, None)]            # nothing at all
    table = [{"name": "ttft.baseline", "depth": 0, **d.as_dict()},
             {"name": "prefill.chunk", "depth": 1, "chunk.index": 0, **d.as_dict()}]
    text = device_time.format_gaps(table, min_ms=0.0)
    assert text.splitlines()[2].split() == ["prefill.chunk", "#0", "0.00", "0.00", "gemm", "->", "span", "end"]
    assert "ttft.baseline" not in text  # a window's gaps are its children's
    assert device_time.format_gaps(table) == ""  # nothing as long as 0.1 ms


def test_a_gap_names_the_innermost_host_event_covering_half_of_it():
    space = _space({"/device:GPU:0": {"Stream #1": [("gemm", 0, 100, {}), ("gemm", 1100, 100, {})]},
                    "/host:CPU": {"python3": [
                        ("PjitFunction(f)", 50, 1200, {}),                 # covers the whole gap, depth 0
                        ("command_buffer::initialize", 150, 900, {}),      # 90% of it, depth 1: named
                        ("cuGraphInstantiate", 600, 300, {}),              # depth 2 but only 30%
                        ("fusion.3", 200, 400, {"hlo_op": "fusion.3"}),    # an XLA op: busy time, not "host"
                    ], "other": [("sleep", 0, 2000, {})]}})
    ops = device_time.device_ops([space])
    (gap,) = [g for g in ops.gaps(T0, T0 + 1200) if g[1] > 100]
    # fusion.3 is a (host-thread) op, so the device-idle stretch is [600, 1100)
    assert gap[:4] == (600, 500, "fusion.3", "gemm") and gap[4] == "cuGraphInstantiate"
    assert ops.host.during(T0 + 100, T0 + 1100) == "command_buffer::initialize"
    assert ops.host.during(T0 + 1300, T0 + 1900) == "sleep"
    assert ops.host.during(T0 + 3000, T0 + 3100) is None


def test_offset_moves_ops_onto_the_spans_clock():
    space = _space({"/device:GPU:0": {"Stream #1": [("k", 1000, 100, {})]}})
    ops = device_time.device_ops([space], [400])  # the XPlane clock runs 400 ns ahead
    assert ops.inside(T0 + 600, T0 + 700).busy_ns == 100
    assert ops.inside(T0 + 1000, T0 + 1100).busy_ns == 0


def test_kernels_overlapping_on_one_stream_line_all_count():
    # A stream line may hold concurrent kernels; one inside another's time is not its child.
    space = _space({"/device:GPU:0": {"Stream #14": [("gemm", 0, 100_000, {}), ("small", 10_000, 40_000, {}),
                                                     ("instant", 100_000, 0, {})]}})
    d = device_time.device_ops([space]).inside(T0, T0 + 200_000)
    assert (d.busy_ns, d.ops) == (100_000, 3)


def test_a_zero_length_op_is_no_child():
    space = _space({"/host:CPU": {"t": [("fusion.1", 100, 400, {"hlo_op": "fusion.1"}),
                                        ("tiny", 100, 0, {"hlo_op": "tiny"})]}})
    d = device_time.device_ops([space]).inside(T0, T0 + 1000)
    assert d.busy_ns == 400 and {t[0] for t in d.top} == {"fusion.1", "tiny"}


def test_host_planes_count_only_xla_ops_and_only_the_innermost():
    space = _space({"/host:CPU": {"tf_XLAEigen/1": [
        ("ThunkExecutor::Execute", 0, 1000, {}),                # bookkeeping, no hlo_op
        ("while.1", 100, 800, {"hlo_op": "while.1"}),           # encloses its body
        ("fusion.1", 150, 200, {"hlo_op": "fusion.1"}),
        ("fusion.2", 400, 300, {"hlo_op": "fusion.2"}),
    ], "python": [("prefill.chunk", 0, 1000, {})]}})
    d = device_time.device_ops([space]).inside(T0, T0 + 1000)
    assert d.ops == 2 and d.busy_ns == 500
    assert [t[0] for t in d.top] == ["fusion.2", "fusion.1"]


def test_rows_nest_windows_and_children_and_carry_chunk_attributes():
    previous = tracer.configure(enabled=True)
    try:
        with tracer.capture() as rec:
            with tracer.window("ttft.spec_device", engine="spec"):
                for i in range(2):
                    with tracer.span("prefill.chunk", engine="spec", **{"chunk.index": i}):
                        with tracer.span("inner"):
                            pass
    finally:
        tracer.configure(**previous)
    times = device_time.span_device_time(rec.spans, device_time.device_ops([]))
    rows = device_time.rows(rec.spans, times)
    assert [(r["name"], r["depth"], r.get("chunk.index")) for r in rows] == [
        ("ttft.spec_device", 0, None), ("prefill.chunk", 1, 0), ("prefill.chunk", 1, 1)]
    assert all(r["device_busy_ms"] == 0 and r["device_ops"] == 0 and r["device_idle_ms"] == r["ms"] for r in rows)


def test_a_real_profile_puts_the_jitted_work_in_its_chunk_and_none_in_a_sleep(tmp_path):
    from spectrace.tracer.perfetto import write_pftrace

    def work(step):
        with tracer.window("ttft.baseline"):
            with tracer.span("prefill.chunk", **{"chunk.index": 0}):
                for _ in range(5):
                    step()
            with tracer.span("idle"):
                time.sleep(0.02)

    rec, prof = profiled_run(tmp_path / "prof", work, size=256)
    times = write_pftrace(tmp_path / "t.pftrace", rec.spans, xplanes=prof.paths)["device_time"]
    by_name = {s.name: times[s.span_id] for s in rec.spans}
    chunk, idle = by_name["prefill.chunk"], by_name["idle"]
    assert chunk.ops >= 5 and 0 < chunk.busy_ns <= chunk.span_ns
    assert chunk.top and chunk.top[0][1] > 0
    assert idle.ops == 0 and idle.busy_ns == 0 and idle.idle_ns == idle.span_ns
    assert idle.gaps == [(0, idle.span_ns, None, None, "idle")]  # the host: in the span itself
    window = by_name["ttft.baseline"]
    # The sleep is the window's longest gap: after the chunk's last op, to the window's end.
    at, ns, before, after, host = window.gaps[0]
    assert ns >= 15e6 and before is not None and after is None
    assert host == "idle"  # the host was inside the "idle" span (its TraceAnnotation)
    assert window.busy_ns == pytest.approx(chunk.busy_ns, abs=1000)  # the window holds nothing else


@pytest.fixture(scope="module")
def profiled_window(tmp_path_factory):
    """A real profile of one window holding one chunk of jitted work: (recording, profile)."""
    def work(step):
        with tracer.window("ttft.baseline"):
            with tracer.span("prefill.chunk", **{"chunk.index": 0}):
                y = step()
                with tracer.transfer("logits", "d2h", y.nbytes):  # a transfer slice in the trace
                    np.asarray(y)

    return profiled_run(tmp_path_factory.mktemp("prof"), work)


def test_the_trace_carries_device_time_on_every_span_slice(profiled_window, tmp_path):
    from spectrace.tracer.perfetto import read_pftrace, write_pftrace

    rec, prof = profiled_window
    summary = write_pftrace(tmp_path / "t.pftrace", rec.spans, xplanes=prof.paths)
    span = next(s for s in rec.spans if s.name == "prefill.chunk")
    want = summary["device_time"][span.span_id]
    (chunk,) = [s for s in read_pftrace(tmp_path / "t.pftrace").slices if s.name == "prefill.chunk"
                and "spectrace.span_id" in s.args]
    assert chunk.args["device.ops"] == want.ops >= 1
    assert chunk.args["device.busy_ms"] == pytest.approx(want.busy_ns / 1e6) and want.busy_ns > 0
    assert chunk.args["device.top_op"].startswith(want.top[0][0])
    assert chunk.args["device.idle_gap_ms"] == pytest.approx(want.gaps[0][1] / 1e6)
    assert chunk.args["device.idle_gap"].startswith(f"{want.gaps[0][1] / 1e6:.3f} ms at +")
    assert want.gaps[0][4] is None or f"(host: {want.gaps[0][4]})" in chunk.args["device.idle_gap"]
    assert write_pftrace(tmp_path / "plain.pftrace", rec.spans)["device_time"] == {}  # no XPlane, no claim


def test_merge_reports_device_time_for_the_spans_of_the_profiled_process(profiled_window, tmp_path):
    from spectrace.tracer.merge import merge
    from spectrace.tracer.perfetto import write_pftrace

    rec, prof = profiled_window
    direct = write_pftrace(tmp_path / "direct.pftrace", rec.spans, xplanes=prof.paths)["device_time"]
    write_pftrace(tmp_path / "spans.pftrace", rec.spans)
    rows = merge(tmp_path / "spans.pftrace", prof.paths, tmp_path / "merged.pftrace")["device_time"]
    assert [(r["name"], r["depth"]) for r in rows] == [("ttft.baseline", 0), ("prefill.chunk", 1)]
    # Spans read back from the file, not the records: the same rows up to rounding.
    want = device_time.rows(rec.spans, direct)
    assert [(r["name"], r["device_ops"]) for r in rows] == [(r["name"], r["device_ops"]) for r in want]
    for got, exp in zip(rows, want):
        assert got["device_busy_ms"] == pytest.approx(exp["device_busy_ms"], abs=0.005)
        assert got["ms"] == pytest.approx(exp["ms"], abs=0.005)
    assert rows[1]["device_ops"] >= 1


def test_an_xplane_of_another_process_is_not_attributed_to_our_spans(tmp_path):
    import os

    from spectrace.tracer.perfetto import write_pftrace

    previous = tracer.configure(enabled=True)
    try:
        with tracer.capture() as rec:
            with tracer.span("prefill.chunk"):
                time.sleep(0.01)
    finally:
        tracer.configure(**previous)
    (span,) = rec.spans
    start = clock.to_epoch_ns(span.start_ns)
    other = xplane.XSpace("other.xplane.pb", start, 0, "h", os.getpid() + 1, {},
                          [xplane.Plane("/device:GPU:0", {}, [("Stream #1", [("gemm", 1_000_000, 5_000_000, {})])])])
    summary = write_pftrace(tmp_path / "t.pftrace", rec.spans, xplanes=[other])
    assert summary["files"][0]["offset_us"] is None
    assert summary["device_time"][span.span_id].ops == 0  # its clock was never aligned to ours
