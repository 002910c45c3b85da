"""Copies between device groups: a ``d2d`` direction and the ``src``/``dst`` of every transfer.

Engines on disjoint device groups (issue 15) say which group a copy left and which it reached;
those fields must survive every way a trace leaves the process: the in-memory capture, the
Perfetto file and the OpenTelemetry span events.
"""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spectrace import tracer
from spectrace.tracer.perfetto import write_pftrace
from spectrace.tracer.testing import Trace


def _crossing():
    with tracer.capture() as rec:
        with tracer.window("ttft.spec_device", engine="spec"):
            with tracer.span("score.select"):
                tracer.record_transfer("other", "d2h", 4096, ns=2000, src="cuda:0")
                tracer.record_transfer("other", "d2d", 4096, ns=3000, src="cuda:0", dst="cuda:1,2")
                with tracer.transfer("other", "h2d", 128, dst="cuda:1,2"):
                    pass
    return rec


def test_d2d_rolls_up_with_its_own_direction_and_both_for_a_mix():
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.window("w"):
            with tracer.span("inner"):
                tracer.record_transfer("past_key.0", "d2d", 1000, ns=10, src="cuda:0", dst="cuda:1")
            with tracer.span("mixed"):
                tracer.record_transfer("past_key.0", "d2d", 10, ns=10, src="cuda:0", dst="cuda:1")
                tracer.record_transfer("past_key.1", "h2d", 10, ns=10, dst="cuda:1")
    by = {s.name: s for s in rec.spans}
    assert by["inner"].io["past_key"].direction == "d2d"
    assert by["mixed"].io["past_key"].direction == "both"
    assert by["w"].io["past_key"].bytes == 1020 and by["w"].io["past_key"].count == 3
    m = tracer.io_metrics()
    assert m["categories"]["past_key"]["bytes"] == 1020 and m["categories"]["past_key"]["direction"] == "both"


def test_src_and_dst_survive_capture_perfetto_and_otel(tmp_path):
    mem = InMemorySpanExporter()
    tracer.configure(enabled=True, exporter=mem)
    rec = _crossing()
    assert tracer.flush(timeout_s=30)
    want = [("d2h", "cuda:0", ""), ("d2d", "cuda:0", "cuda:1,2"), ("h2d", "", "cuda:1,2")]

    def moves(trace):
        return sorted(((t.direction, t.src, t.dst) for t in trace.transfers), key=want.index)

    assert moves(Trace.from_spans(rec.spans)) == want
    path = tmp_path / "t.pftrace"
    write_pftrace(str(path), rec.spans)
    assert moves(Trace.load(str(path))) == want
    assert moves(Trace.from_otel(mem.get_finished_spans())) == want


def test_a_plain_copy_carries_no_device_fields_in_otel():
    mem = InMemorySpanExporter()
    tracer.configure(enabled=True, exporter=mem)
    with tracer.span("bind"):
        tracer.record_transfer("other", "h2d", 8, ns=1)
    assert tracer.flush(timeout_s=30)
    (s,) = mem.get_finished_spans()
    assert set(s.events[0].attributes) == {"binding", "category", "direction", "bytes", "ms"}
