"""Export to OpenTelemetry: exact parents and timestamps, real OTLP receivers, failures that cost nothing."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spectrace import tracer
from spectrace.tracer import _otel, clock

from helpers import run_python


def _record_tree():
    """A request span with children in two threads and two asyncio tasks; returns the records."""
    with tracer.capture() as rec:
        with tracer.span("request", **{"gen_ai.request.model": "tiny"}):
            def work(name):
                with tracer.span(name, worker=name):
                    with tracer.span(name + ".inner"):
                        tracer.record_transfer("logits", "d2h", 512, ns=1000)

            threads = [threading.Thread(target=contextvars.copy_context().run, args=(work, f"thread{i}"))
                       for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

            async def task(name):
                with tracer.span(name):
                    await asyncio.sleep(0.005)
                    with tracer.span(name + ".inner"):
                        await asyncio.sleep(0.005)

            async def main():
                await asyncio.gather(task("task0"), task("task1"))

            asyncio.run(main())
    return rec.spans


def test_tree_across_threads_and_tasks_exports_with_parents_and_exact_times():
    mem = InMemorySpanExporter()
    tracer.configure(enabled=True, exporter=mem)
    records = _record_tree()
    assert tracer.flush(timeout_s=30)
    exported = {s.name: s for s in mem.get_finished_spans()}
    assert set(exported) == {r.name for r in records} and len(exported) == 9
    by_id = {r.span_id: r for r in records}
    for r in records:
        o = exported[r.name]
        assert o.context.span_id == _otel.otel_span_id(r.span_id)
        if r.parent_id:
            assert o.parent.span_id == exported[by_id[r.parent_id].name].context.span_id
            assert o.context.trace_id == exported["request"].context.trace_id
        else:
            assert o.parent is None
        # The same instants, to the microsecond, on the epoch clock.
        assert abs(o.start_time - clock.to_epoch_ns(r.start_ns)) < 1000
        assert abs(o.end_time - clock.to_epoch_ns(r.end_ns)) < 1000
    assert exported["thread0.inner"].attributes["io.logits.bytes"] == 512
    assert exported["thread0"].attributes["io.logits.bytes"] == 512  # rolled up
    assert exported["request"].attributes["io.logits.bytes"] == 1024
    assert exported["request"].attributes["gen_ai.request.model"] == "tiny"
    assert exported["thread0"].attributes["worker"] == "thread0"
    assert [e.name for e in exported["thread0.inner"].events] == ["transfer"]
    assert exported["request"].resource.attributes["service.name"] == "spectrace"


def test_error_status_is_exported():
    mem = InMemorySpanExporter()
    tracer.configure(enabled=True, exporter=mem)
    with pytest.raises(RuntimeError):
        with tracer.span("bind"):
            raise RuntimeError("no device memory")
    tracer.flush(timeout_s=30)
    (s,) = mem.get_finished_spans()
    assert s.status.status_code.name == "ERROR"
    assert "RuntimeError: no device memory" in s.status.description
    assert s.events[0].attributes["exception.type"] == "RuntimeError"


class _BlockedExporter(SpanExporter):
    """An exporter that hangs until released: stands for a collector that stopped answering."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.spans = []

    def export(self, spans):
        self.entered.set()
        self.release.wait(30)
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.release.set()


def test_a_hung_exporter_never_blocks_the_engine():
    slow = _BlockedExporter()
    tracer.configure(enabled=True, exporter=slow)
    with tracer.span("request"):
        pass
    assert slow.entered.wait(10)  # the worker is now stuck inside export()
    for _ in range(100):  # the engine keeps recording whole requests meanwhile
        with tracer.span("request"):
            with tracer.span("prefill.chunk"):
                pass
    assert slow.spans == []  # nothing finished exporting, yet every request above returned
    slow.release.set()
    assert tracer.flush(timeout_s=30)
    assert len(slow.spans) == 201


class _FailingExporter(SpanExporter):
    def export(self, spans):
        raise ConnectionError("collector went away")

    def shutdown(self):
        pass


def test_exporter_failures_are_counted_and_reported_once(capsys):
    tracer.configure(enabled=True, exporter=_FailingExporter())
    for _ in range(3):
        with tracer.span("request"):
            pass
        tracer.flush(timeout_s=30)
    assert tracer.stats()["spans_export_failed"] >= 3
    err = capsys.readouterr().err
    assert err.count("_FailingExporter could not export") == 1
    assert "collector went away" in err


def test_dead_otlp_endpoint_does_not_raise_and_reports_the_drop():
    # Port 9 (discard) on loopback: nothing listens. The exporter's own timeout is 2 s.
    code = (
        "from spectrace import tracer\n"
        "for i in range(20):\n"
        "    with tracer.span('request', i=i):\n"
        "        with tracer.span('prefill.chunk'):\n"
        "            tracer.record_transfer('logits', 'd2h', 8, ns=1)\n"
        "print('engine-done', flush=True)\n"
        "tracer.flush()\n"
        "print(tracer.stats()['spans_export_failed'])\n")
    for proto, endpoint in (("grpc", "http://127.0.0.1:9"), ("http/protobuf", "http://127.0.0.1:9/v1/traces")):
        r = run_python(code, env={"QEFF_SPEC_IO_TIMING": "1", "OTEL_TRACES_EXPORTER": "otlp",
                                  "OTEL_EXPORTER_OTLP_PROTOCOL": proto, "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
                                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint})
        assert r.returncode == 0, r.stderr
        lines = r.stdout.split()
        assert lines[0] == "engine-done"
        assert int(lines[1]) == 40, (proto, r.stdout, r.stderr)
        assert r.stderr.count("could not export") == 1, r.stderr
        assert "0 of 40 spans exported; 40 not exported (40 export failed" in r.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_export_to_a_real_otlp_receiver(otlp_sink, protocol):
    endpoint = otlp_sink.grpc_endpoint if protocol == "grpc" else otlp_sink.http_endpoint
    code = (
        "from spectrace import tracer\n"
        "with tracer.window('ttft.baseline', engine='base'):\n"
        "    for i in range(3):\n"
        "        with tracer.span('prefill.chunk', engine='base', **{'chunk.index': i}):\n"
        "            tracer.record_transfer('past_key.0_RetainedState', 'd2h', 1000, ns=5000)\n")
    r = run_python(code, env={"QEFF_SPEC_IO_TIMING": "1", "OTEL_TRACES_EXPORTER": "otlp",
                              "OTEL_SERVICE_NAME": "engine-under-test",
                              "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint})
    assert r.returncode == 0, r.stderr
    spans = otlp_sink.wait_for(4)
    by_name = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    (window,) = by_name["ttft.baseline"]
    assert len(by_name["prefill.chunk"]) == 3
    assert all(c["parentSpanId"] == window["spanId"] for c in by_name["prefill.chunk"])
    attrs = {a["key"]: a["value"] for a in window["attributes"]}
    assert attrs["io.past_key.bytes"] == {"intValue": "3000"}
    assert attrs["engine"] == {"stringValue": "base"}
    first = json.loads(otlp_sink.path.read_text().splitlines()[0])
    res = {a["key"]: a["value"] for a in first["resourceSpans"][0]["resource"]["attributes"]}
    assert res["service.name"] == {"stringValue": "engine-under-test"}


def test_what_a_receiver_wrote_loads_back_for_assertions(otlp_sink):
    from spectrace.tracer.testing import Trace

    code = (
        "from spectrace import tracer\n"
        "with tracer.window('ttft.spec_device', engine='spec'):\n"
        "    for i in range(2):\n"
        "        with tracer.span('prefill.chunk', engine='spec', **{'chunk.index': i}):\n"
        "            tracer.record_transfer('prefill_queries', 'd2h', 4096, ns=5000)\n")
    r = run_python(code, env={"QEFF_SPEC_IO_TIMING": "1", "OTEL_TRACES_EXPORTER": "otlp",
                              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_sink.grpc_endpoint})
    assert r.returncode == 0, r.stderr
    otlp_sink.wait_for(3)
    t = Trace.load(otlp_sink.path)
    w = t.one("ttft.spec_device")
    assert w.window
    t.assert_count("prefill.chunk", 2, engine="spec")
    t.assert_within("prefill.chunk", w)
    t.assert_bytes("prefill_queries", 8192, span=w)
    for c in t.all("prefill.chunk"):
        c.assert_bytes("prefill_queries", 4096)


def test_a_bad_otel_setting_warns_and_recording_goes_on():
    r = run_python("from spectrace import tracer\n"
                   "tracer.configure(enabled=True)\n"
                   "with tracer.span('s'):\n"
                   "    pass\n"
                   "print(tracer.stats()['spans_recorded'])\n",
                   env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1"]
    assert "OpenTelemetry export disabled" in r.stderr and "carrier-pigeon" in r.stderr
