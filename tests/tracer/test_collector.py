"""OpenTelemetry end to end: spectrace's OTLP export read back from a real collector (rotel).

The ``collector`` fixture (tests/tracer/conftest.py, machinery in tests/collector.py) runs
``rotel-agent`` once per module on free loopback ports; every assertion here is on what rotel
decoded off the wire and printed. Timestamps are compared with the ``.pftrace`` the same process
wrote, exactly: both are ``tracer.clock.to_epoch_ns`` of the same recorded instants, carried as
integer unix ns by OTLP and by Perfetto, so the tolerance is 0 ns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest

from collector import BlackHole, parse, parse_value
from helpers import ROOT, run_python
from spectrace.tracer.testing import Trace

# A pass as the engines record it: a window, chunk spans, one timed d2h copy per chunk; the same
# recording is written to a .pftrace and exported (QEFF_SPEC_IO_TIMING + OTEL_* from the test).
_SPEC_SCRIPT = """
import json, os, time
from spectrace import tracer
from spectrace.tracer.perfetto import write_pftrace

with tracer.capture() as rec:
    with tracer.window("ttft.spec_device", engine="spec"):
        for i in range(3):
            with tracer.span("prefill.chunk", engine="spec", **{"chunk.index": i}):
                with tracer.transfer("prefill_queries", "d2h", 4096):
                    time.sleep(0.002)  # stands for the copy
write_pftrace(os.environ["PFTRACE"], rec.spans)
ok = tracer.flush(timeout_s=30)
print(json.dumps({"flushed": ok, **tracer.stats()}))
"""


def _service(tag: str) -> str:
    return f"spectrace-{tag}-{uuid.uuid4().hex[:8]}"


def _sdk_span_exporter(protocol: str, collector, timeout_s: float = 10):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=timeout_s)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=collector.traces_url, timeout=timeout_s)


def _sdk_metric_exporter(protocol: str, collector):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=collector.grpc_endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=collector.metrics_url)


def _provider(service: str, exporter):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


# ---- spectrace's traces ------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spectrace_spans_reach_the_collector_as_the_pftrace_has_them(collector, tmp_path, protocol):
    service = _service(protocol.replace("/", "-"))
    pftrace = tmp_path / "spec.pftrace"
    r = run_python(_SPEC_SCRIPT, env={
        "QEFF_SPEC_IO_TIMING": "1", "PFTRACE": str(pftrace),
        **collector.otel_env(protocol, OTEL_SERVICE_NAME=service,
                             OTEL_RESOURCE_ATTRIBUTES="deployment.environment=ci,spectrace.test=collector")})
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.splitlines()[-1])
    assert stats["flushed"] and stats["spans_exported"] == 4 and stats["spans_dropped"] == 0, stats

    got = collector.wait_for_spans(4, service=service)
    assert len(got) == 4 and Counter(s.name for s in got) == {"prefill.chunk": 3, "ttft.spec_device": 1}
    (window,) = [s for s in got if s.name == "ttft.spec_device"]
    chunks = sorted((s for s in got if s.name == "prefill.chunk"), key=lambda s: s.attributes["chunk.index"])

    # One trace; every chunk's parent is the window; the window is a root.
    assert {s.trace_id for s in got} == {window.trace_id} and len(window.trace_id) == 32
    assert window.parent_span_id is None
    assert [c.parent_span_id for c in chunks] == [window.span_id] * 3
    assert len({s.span_id for s in got}) == 4
    assert {s.kind for s in got} == {"SPAN_KIND_INTERNAL"} and {s.scope for s in got} == {"spectrace"}

    # Attributes, with bytes rolled up onto the window.
    assert [c.attributes["chunk.index"] for c in chunks] == [0, 1, 2]
    for c in chunks:
        assert c.attributes["engine"] == "spec"
        assert c.attributes["io.prefill_queries.bytes"] == 4096
        assert c.attributes["io.prefill_queries.count"] == 1
        assert c.attributes["io.prefill_queries.direction"] == "d2h"
        assert c.attributes["io.prefill_queries.ms"] >= 2.0  # the 2 ms sleep inside the copy
    assert window.attributes["io.prefill_queries.bytes"] == 3 * 4096
    assert window.attributes["io.prefill_queries.count"] == 3
    assert window.attributes["spectrace.window"] is True

    # Resource: the service name and the custom attributes of OTEL_RESOURCE_ATTRIBUTES.
    for s in got:
        assert s.resource["service.name"] == service
        assert s.resource["deployment.environment"] == "ci"
        assert s.resource["spectrace.test"] == "collector"
        assert s.resource["telemetry.sdk.language"] == "python"

    # The same instants as the .pftrace, to the nanosecond (tolerance 0 ns).
    t = Trace.load(pftrace)
    w = t.one("ttft.spec_device")
    assert (window.start_ns, window.end_ns) == (w.start_ns, w.end_ns)
    file_chunks = sorted(t.all("prefill.chunk"), key=lambda v: v["chunk.index"])
    assert [(c.start_ns, c.end_ns) for c in chunks] == [(v.start_ns, v.end_ns) for v in file_chunks]
    assert all(window.start_ns <= c.start_ns and c.end_ns <= window.end_ns for c in chunks)

    # One transfer event per chunk, inside it, with the copy's bytes and time, stamped at the
    # instant the .pftrace's transfer slice starts (0 ns) and as long as it (to 1 ns).
    assert len(t.transfers) == 3
    for c, x in zip(chunks, t.transfers):
        (e,) = c.events
        assert e.name == "transfer"
        assert e.attributes == {"binding": "prefill_queries", "category": "prefill_queries", "direction": "d2h",
                                "bytes": 4096, "ms": c.attributes["io.prefill_queries.ms"]}
        assert c.start_ns <= e.time_ns <= c.end_ns
        assert e.time_ns == x.start_ns and x.nbytes == 4096 and x.direction == "d2h"
        assert e.attributes["ms"] == pytest.approx(x.ms, abs=1e-6)
    assert window.events == ()


def test_spectrace_run_exports_the_spans_of_its_trace(collector, tmp_path):
    """The real command, default tiny models on CPU, exporting over gRPC. The compile warm-up
    is not a request (``tracer.suppress()``): the collector gets exactly the file's spans, in one
    trace per request (the request root over its windows), times included."""
    service = _service("run")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QEFF_", "OTEL_"))}
    env.update(collector.otel_env("grpc", OTEL_SERVICE_NAME=service))
    r = subprocess.run([sys.executable, "-m", "spectrace.tracer.cli", "run", "--prompt-len", "300", "--quiet",
                        "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "could not export" not in r.stderr and "not exported" not in r.stderr, r.stderr[-3000:]

    t = Trace.load(out / "trace.pftrace")
    n = len(t.spans)
    got = collector.wait_for_spans(n, service=service)
    assert len(got) == n
    assert len({s.trace_id for s in got}) == 1, Counter(s.trace_id for s in got)  # one request, one trace

    def key(spans):
        return Counter((s.name, s.start_ns, s.end_ns) for s in spans)

    assert key(got) == key(t.spans), "the collector's spans are not exactly the .pftrace's spans and times"
    measured = [got]
    for name in ("ttft.spec_device", "ttft.baseline", "prefill.chunk"):
        in_file = len(t.all(name))
        assert in_file >= 1, name
        assert sum(s.name == name for s in got) == in_file, name

    # Parent links survive: each span's parent has the name and start its .pftrace parent has.
    by_id = {s.span_id: s for s in measured[0]}
    by_time = {(v.name, v.start_ns, v.end_ns): v for v in t.spans}
    for s in measured[0]:
        v = by_time[(s.name, s.start_ns, s.end_ns)]
        p = by_id.get(s.parent_span_id) if s.parent_span_id else None
        assert (p is None) == (v.parent is None), s
        if p is not None:
            assert (p.name, p.start_ns) == (v.parent.name, v.parent.start_ns), s
    chunks = [s for s in measured[0] if s.name == "prefill.chunk"]
    assert {c.attributes["engine"] for c in chunks} >= {"spec", "base"}
    # Every recorded copy is a transfer event, at the start of its .pftrace slice.
    events = sorted(e.time_ns for s in measured[0] for e in s.events if e.name == "transfer")
    assert events == [x.start_ns for x in t.transfers] and events


# ---- metrics (the SDK's, straight through) -------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_sdk_metrics_arrive_with_bucket_bounds_and_counts(collector, protocol):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    service = _service("metrics")
    reader = PeriodicExportingMetricReader(_sdk_metric_exporter(protocol, collector), export_interval_millis=3_600_000)
    mp = MeterProvider(resource=Resource.create({"service.name": service, "spectrace.test": "metrics"}),
                       metric_readers=[reader])
    meter = mp.get_meter("spectrace.test.meter", "0.1")
    hist = meter.create_histogram("spectrace.ttft", unit="ms", description="time to first token",
                                  explicit_bucket_boundaries_advisory=[1.0, 10.0, 100.0, 1000.0])
    for v in (0.5, 5.0, 7.5, 50.0, 5000.0):
        hist.record(v, {"engine": "spec"})
    hist.record(20.0, {"engine": "base"})
    counter = meter.create_counter("spectrace.io.bytes", unit="By")
    counter.add(4096, {"category": "prefill_queries"})
    counter.add(4096, {"category": "prefill_queries"})
    counter.add(512, {"category": "logits"})
    mp.shutdown()  # collects and exports once

    points = collector.wait_for_metrics(4, service=service)
    assert len(points) == 4
    hists = {p.attributes["engine"]: p for p in points if p.name == "spectrace.ttft"}
    spec, base = hists["spec"], hists["base"]
    assert spec.kind == "Histogram" and spec.unit == "ms" and spec.description == "time to first token"
    assert spec.temporality == "AGGREGATION_TEMPORALITY_CUMULATIVE"
    assert spec.bounds == (1.0, 10.0, 100.0, 1000.0)
    assert spec.counts == (1, 2, 1, 0, 1)  # (-inf,1] (1,10] (10,100] (100,1000] (1000,inf)
    assert spec.count == 5 and spec.sum == 5063.0 and (spec.min, spec.max) == (0.5, 5000.0)
    assert base.bounds == spec.bounds and base.counts == (0, 0, 1, 0, 0) and base.sum == 20.0
    assert spec.time_ns >= spec.start_ns > 0
    bytes_ = {p.attributes["category"]: p for p in points if p.name == "spectrace.io.bytes"}
    assert bytes_["prefill_queries"].value == 8192 and bytes_["logits"].value == 512
    assert bytes_["logits"].kind == "Sum" and bytes_["logits"].is_monotonic is True
    assert bytes_["logits"].unit == "By"
    assert {p.scope for p in points} == {"spectrace.test.meter"}
    assert all(p.resource["spectrace.test"] == "metrics" for p in points)


# ---- the parser against what rotel really prints ----------------------------------------------------
def test_awkward_values_links_exemplars_and_exponential_buckets_parse(collector):
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    service = _service("awkward")
    tp = _provider(service, _sdk_span_exporter("grpc", collector))
    tr = tp.get_tracer("awkward.scope", "2.0")
    attrs = {"multi": "line one\n\nline three", "parens": "f(x) = (y)", "empty": "", "colon": "a: b",
             "neg": -1.25, "tiny": 1e-7, "whole": 3.0, "flag": False, "ints": [1, -2], "strs": ["a", "b"]}
    with tr.start_as_current_span("first") as first:
        pass
    with tr.start_as_current_span("name: with (parens)", attributes=attrs,
                                  links=[otel_trace.Link(first.get_span_context(), {"link.n": 7})]) as s:
        s.add_event("bare")
        with tr.start_as_current_span("") as child:
            child.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, "it broke:\nbadly"))
    reader = PeriodicExportingMetricReader(_sdk_metric_exporter("grpc", collector), export_interval_millis=3_600_000)
    mp = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader],
                       views=[View(instrument_name="exp", aggregation=ExponentialBucketHistogramAggregation())])
    meter = mp.get_meter("m")
    exp = meter.create_histogram("exp")
    for v in (0.0, 1.0, 4.0, 4.0):
        exp.record(v)
    with tr.start_as_current_span("sampled") as sampled:
        meter.create_histogram("with.exemplar", explicit_bucket_boundaries_advisory=[0.5]).record(2.0)
    mp.shutdown()
    tp.shutdown()

    spans = {x.name: x for x in collector.wait_for_spans(4, service=service)}
    odd = spans["name: with (parens)"]
    assert odd.attributes == {**attrs, "ints": [1, -2], "strs": ["a", "b"]}
    assert odd.parent_span_id is None and odd.scope == "awkward.scope" and odd.scope_version == "2.0"
    (link,) = odd.links
    assert (link.trace_id, link.span_id, link.attributes) == (spans["first"].trace_id, spans["first"].span_id,
                                                             {"link.n": 7})
    assert [(e.name, e.attributes) for e in odd.events] == [("bare", {})]
    assert spans[""].parent_span_id == odd.span_id
    assert (spans[""].status_code, spans[""].status_message) == ("STATUS_CODE_ERROR", "it broke:\nbadly")

    points = {p.name: p for p in collector.wait_for_metrics(2, service=service)}
    e = points["exp"]
    assert e.kind == "ExponentialHistogram" and e.count == 4 and e.sum == 9.0
    assert sum(c for _, _, c in e.buckets) == 4
    assert [c for lo, hi, c in e.buckets if lo == hi == 0.0] == [1]  # the zero bucket
    assert sum(c for lo, hi, c in e.buckets if lo < 4.0 <= hi) == 2
    (ex,) = points["with.exemplar"].exemplars
    assert ex.trace_id == format(sampled.get_span_context().trace_id, "032x")
    assert ex.span_id == format(sampled.get_span_context().span_id, "016x")
    assert ex.value == 2
    # Read incrementally (as the fixture does while waiting) or in one go: the same.
    assert (collector.spans(), collector.metrics()) == parse(collector.output())


def test_parse_value_reads_every_printed_kind():
    assert parse_value("Str(a, b) c)") == "a, b) c"  # top level: exact however odd the string
    assert parse_value("Str()") == ""
    assert parse_value("Int(-42)") == -42 and parse_value("Double(1)") == 1.0
    assert parse_value("Double(0.0000001)") == 1e-7 and parse_value("Double(-inf)") == float("-inf")
    assert parse_value("Bool(true)") is True and parse_value("Empty") is None
    assert parse_value("Slice()") == [] and parse_value("Slice(Int(1), Str(x, y), Empty)") == [1, "x, y", None]
    assert parse_value("Map(k:Str(v), n:Map(m:Int(1)))") == {"k": "v", "n": {"m": 1}}
    assert parse_value("Bytes([0, 255])") == b"\x00\xff"
    assert parse_value("Unknown(1)") == "Unknown(1)"  # unreadable: kept as printed


def test_parse_skips_log_lines_and_a_block_cut_at_the_start():
    text = ("    ID             : 00000000000000aa\nEnd time: 5\n"  # the tail of a block before the offset
            "2026-01-01T00:00:00.000001Z  INFO Starting Rotel. grpc_endpoint=\"127.0.0.1:1\"\n"
            "ResourceSpans #0\nResource SchemaURL: \nResource attributes:\n     -> service.name: Str(s)\n"
            "ScopeSpans #0\nScopeSpans SchemaURL: \nInstrumentationScope sc \nSpan #0\n"
            "    Trace ID       : " + "ab" * 16 + "\n    Parent ID      : \n    ID             : " + "cd" * 8 + "\n"
            "    Name           : n\n    Kind           : SPAN_KIND_INTERNAL\nStart time: 10\nEnd time: 20\n"
            "    Status code    : STATUS_CODE_UNSET\n    Status message : \n"
            "\x1b[2m2026-01-01T00:00:01Z\x1b[0m \x1b[32m INFO\x1b[0m Shutdown signal received.\n")
    spans, points = parse(text)
    assert points == []
    (s,) = spans
    assert (s.name, s.start_ns, s.end_ns, s.parent_span_id, s.resource, s.scope) == ("n", 10, 20, None,
                                                                                  {"service.name": "s"}, "sc")
    assert s.status_message == ""


# ---- the fixture's fault controls ------------------------------------------------------------------------
def test_a_restarted_collector_keeps_its_ports_and_receives_again(collector):
    service = _service("restart")
    ports, pid = (collector.grpc_port, collector.http_port), collector.pid
    exporter = _sdk_span_exporter("grpc", collector, timeout_s=2)
    tp = _provider(service, exporter)
    tr = tp.get_tracer("t")
    with tr.start_as_current_span("before"):
        pass
    collector.wait_for_spans(1, service=service)
    collector.kill()
    assert not collector.running
    t0 = time.monotonic()
    with tr.start_as_current_span("while-down"):  # SimpleSpanProcessor: exported (and lost) here
        pass
    assert time.monotonic() - t0 < 10
    collector.restart()
    assert (collector.grpc_port, collector.http_port) == ports and collector.pid != pid
    with tr.start_as_current_span("after"):
        pass
    tp.shutdown()
    names = [s.name for s in collector.wait_for_spans(2, service=service)]
    assert names == ["before", "after"]


def test_a_paused_collector_or_a_black_hole_times_the_exporter_out(collector):
    from opentelemetry.sdk.trace.export import SpanExportResult

    service = _service("hang")
    tp = _provider(service, _sdk_span_exporter("http/protobuf", collector, timeout_s=1))
    tr = tp.get_tracer("t")
    with tr.start_as_current_span("warm"):
        pass
    collector.wait_for_spans(1, service=service)
    with collector.paused():
        t0 = time.monotonic()
        with tr.start_as_current_span("hung"):
            pass
        waited = time.monotonic() - t0
    assert 0.5 < waited < 8, waited
    with tr.start_as_current_span("resumed"):
        pass
    tp.shutdown()
    # A request that was accepted while paused may still be answered after SIGCONT.
    names = {s.name for s in collector.wait_for_spans(2, service=service, until=lambda g: "resumed" in
                                                       {s.name for s in g})}
    assert {"warm", "resumed"} <= names

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    with BlackHole() as hole:
        from opentelemetry.sdk.trace import TracerProvider

        exporter = OTLPSpanExporter(endpoint=hole.endpoint, insecure=True, timeout=1)
        bare = TracerProvider()  # no processor: the one export below is the test's
        span = bare.get_tracer("t").start_span("into the hole")
        span.end()
        t0 = time.monotonic()
        assert exporter.export([span]) == SpanExportResult.FAILURE
        assert time.monotonic() - t0 < 10
        assert hole.connections >= 1 and hole.bytes_received > 0
        bare.shutdown()
