"""Sampling per request with the standard OpenTelemetry samplers, decided at the root span.

An unsampled request records nothing under its root (every span inside is the shared no-op);
the metrics still count it (test_metrics.py). The ratio is checked over many requests, and a
parent's decision (from a W3C ``traceparent``) wins over the ratio under ``parentbased_*``.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spectrace import tracer
from spectrace.tracer import _sampling

from helpers import run_python


def _requests(n: int) -> None:
    for i in range(n):
        with tracer.span("text_completion m", i=i):
            with tracer.window("ttft.spec_device"):
                with tracer.span("prefill.chunk"):
                    tracer.record_transfer("logits", "d2h", 8, ns=1)


@pytest.fixture
def exported():
    mem = InMemorySpanExporter()
    tracer.configure(enabled=True, exporter=mem)
    yield mem
    tracer.configure(sampler=None, exporter="none")


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_traceidratio_samples_that_share_of_requests(exported, ratio):
    tracer.configure(sampler=_sampling.sampler_from_environment(
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(ratio)}))
    n = 2000
    _requests(n)
    tracer.flush(10)
    spans = exported.get_finished_spans()
    roots = [s for s in spans if s.name == "text_completion m"]
    sd = (n * ratio * (1 - ratio)) ** 0.5
    assert abs(len(roots) - n * ratio) < 5 * sd, (len(roots), n * ratio)
    assert len(spans) == 3 * len(roots)  # whole requests: never a root without its windows
    # What the sampler saw are the exported trace ids: the ratio holds on those ids' low bits.
    bound = round(ratio * 2 ** 64)
    assert all(s.context.trace_id & (2 ** 64 - 1) < bound for s in roots)


def test_always_off_records_nothing_and_always_on_everything(exported):
    tracer.configure(sampler=_sampling.sampler_from_environment({"OTEL_TRACES_SAMPLER": "always_off"}))
    with tracer.capture() as rec:
        _requests(100)
    assert len(rec.spans) == 0
    tracer.configure(sampler=_sampling.sampler_from_environment({"OTEL_TRACES_SAMPLER": "always_on"}))
    with tracer.capture() as rec:
        _requests(100)
    assert len(rec.spans) == 300


@pytest.mark.parametrize("flags, arg, expect", [("01", "0.0", 3), ("00", "1.0", 0)])
def test_the_parents_decision_wins(exported, flags, arg, expect):
    tracer.configure(sampler=_sampling.sampler_from_environment(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": arg}))
    with tracer.use_traceparent(f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"):
        _requests(1)
    tracer.flush(10)
    spans = exported.get_finished_spans()
    assert len(spans) == expect
    if expect:
        assert {s.context.trace_id for s in spans} == {0x0AF7651916CD43DD8448EB211C80319C}


def test_an_unsampled_request_records_no_transfer_and_no_window():
    tracer.configure(enabled=True, sampler=_sampling.sampler_from_environment({"OTEL_TRACES_SAMPLER": "always_off"}))
    try:
        with tracer.span("request") as root:
            with tracer.window("ttft.spec_device") as w:
                with tracer.span("prefill.chunk") as c:
                    with tracer.transfer("logits", "d2h", 8):
                        pass
        assert root is tracer.NOOP and w is tracer.NOOP and c is tracer.NOOP
        assert tracer.io_metrics()["total_bytes"] == 0
    finally:
        tracer.configure(sampler=None)


def test_the_sampler_comes_from_the_environment():
    r = run_python("from spectrace import tracer\n"
                   "for i in range(1000):\n"
                   "    with tracer.span('request'):\n"
                   "        pass\n"
                   "print(tracer.stats()['spans_recorded'])\n",
                   env={"QEFF_SPEC_IO_TIMING": "1", "OTEL_TRACES_SAMPLER": "traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG": "0.2"})
    assert r.returncode == 0, r.stderr
    assert 120 < int(r.stdout) < 280  # 200 expected; 5 sd is ~63


def test_suppress_records_nothing_inside_and_nests(exported):
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    tracer.configure(metrics=[reader])
    try:
        with tracer.capture() as rec:
            with tracer.suppress():
                with tracer.suppress():
                    _requests(5)
                _requests(5)
                tracer.record_request(model="m", ttft_s={"speculative": 9.0})  # a warm-up's TTFT
            _requests(1)
            tracer.record_request(model="m", ttft_s={"speculative": 0.1})
        tracer.flush(10)
    finally:
        tracer.configure(metrics="none")
    assert len(rec.spans) == 3  # only the request after the block
    data = reader.get_metrics_data()
    (ttft,) = [dp for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
               if m.name == "gen_ai.server.time_to_first_token" for dp in m.data.data_points]
    assert ttft.count == 1 and ttft.sum == pytest.approx(0.1)
