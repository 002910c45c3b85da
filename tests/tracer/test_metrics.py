"""OpenTelemetry metrics from requests and recorded windows, read back through the SDK's in-memory reader.

The real-collector and real-Prometheus versions of these checks are in test_otel_e2e.py and
tests/test_dashboards.py; here every number is compared with what was recorded.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from spectrace import tracer
from spectrace.tracer import _metrics

from helpers import run_python

REQUIRED = {"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "spectrace"}


def points(reader) -> dict[str, list]:
    """metric name -> its data points, after a flush of spectrace's worker."""
    tracer.flush(10)
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


@pytest.fixture
def reader():
    r = InMemoryMetricReader()
    tracer.configure(metrics=[r])
    yield r
    tracer.configure(metrics="none")


def test_request_metrics_have_the_semconv_buckets_and_attributes(reader):
    for i in range(3):
        tracer.record_request(model="m", ttft_s={"speculative": 0.03 + i / 100, "baseline": 0.3},
                              windows_s={"ttft.spec_device": 0.02, "ttft.base_pruned": 0.01},
                              input_tokens=3000, output_tokens=16, time_per_output_token_s=0.02, kept_ratio=0.1)
    p = points(reader)
    ttft = {dp.attributes["spectrace.pass"]: dp for dp in p["gen_ai.server.time_to_first_token"]}
    assert tuple(ttft["speculative"].explicit_bounds) == _metrics.TTFT_BUCKETS
    assert ttft["speculative"].count == 3 and ttft["speculative"].sum == pytest.approx(0.03 * 3 + 0.03)
    assert ttft["baseline"].count == 3
    for dp in ttft.values():
        assert {**REQUIRED, "gen_ai.request.model": "m"}.items() <= dp.attributes.items()
    (tpot,) = p["gen_ai.server.time_per_output_token"]
    assert tuple(tpot.explicit_bounds) == _metrics.TPOT_BUCKETS and tpot.count == 3
    usage = {dp.attributes["gen_ai.token.type"]: dp for dp in p["gen_ai.client.token.usage"]}
    assert tuple(usage["input"].explicit_bounds) == tuple(4 ** i for i in range(14))
    assert usage["input"].sum == 9000 and usage["output"].sum == 48
    windows = {dp.attributes["spectrace.window"]: dp.sum for dp in p["spectrace.window.duration"]}
    assert windows == pytest.approx({"ttft.spec_device": 0.06, "ttft.base_pruned": 0.03})
    (kept,) = p["spectrace.kept_token.ratio"]
    assert kept.sum == pytest.approx(0.3)


def test_recorded_windows_give_chunk_and_io_metrics(reader):
    tracer.configure(enabled=True)
    with tracer.span("text_completion m", **{"gen_ai.request.model": "m"}):
        with tracer.window("ttft.spec_device", engine="spec"):
            for i in range(4):
                with tracer.span("prefill.chunk", engine="spec", **{"chunk.index": i}):
                    tracer.record_transfer("prefill_queries", "d2h", 1000, ns=2_000_000)
                    tracer.record_transfer("other", "h2d", 10, ns=1_000)
    p = points(reader)
    (chunks,) = p["spectrace.prefill.chunk.duration"]
    assert chunks.count == 4 and chunks.attributes["spectrace.engine"] == "spec"
    assert chunks.attributes["gen_ai.request.model"] == "m"  # the request root's model
    io = {(dp.attributes["spectrace.io.category"], dp.attributes["spectrace.io.direction"]): dp.value
          for dp in p["spectrace.io.size"]}
    assert io == {("prefill_queries", "d2h"): 4000, ("other", "h2d"): 40}
    secs = {dp.attributes["spectrace.io.category"]: dp.value for dp in p["spectrace.io.duration"]}
    assert secs["prefill_queries"] == pytest.approx(0.008)
    counts = {dp.attributes["spectrace.io.category"]: dp.value for dp in p["spectrace.io.transfers"]}
    assert counts == {"prefill_queries": 4, "other": 4}


def test_dropped_and_recorded_spans_are_metrics(reader):
    tracer.configure(enabled=True)
    for _ in range(5):
        with tracer.span("s"):
            pass
    p = points(reader)
    st = tracer.stats()
    dropped = {dp.attributes["spectrace.reason"]: dp.value for dp in p["spectrace.spans.dropped"]}
    assert set(dropped) == set(_metrics.DROP_REASONS)
    assert dropped["no_exporter"] == st["spans_dropped_no_exporter"]
    assert p["spectrace.spans.recorded"][0].value == st["spans_recorded"]


def test_metrics_count_every_request_even_unsampled(reader):
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    tracer.configure(enabled=True, sampler=ALWAYS_OFF)
    try:
        with tracer.capture() as rec:
            for _ in range(10):
                with tracer.span("request"):
                    with tracer.window("ttft.spec_device"):
                        pass
                tracer.record_request(model="m", ttft_s={"speculative": 0.01})
    finally:
        tracer.configure(sampler=None)
    assert len(rec.spans) == 0  # nothing recorded
    (ttft,) = points(reader)["gen_ai.server.time_to_first_token"]
    assert ttft.count == 10  # every request counted


@pytest.mark.parametrize("env, needle", [
    ({"OTEL_METRICS_EXPORTER": "carrier-pigeon"}, "OTEL_METRICS_EXPORTER='carrier-pigeon'"),
    ({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "ninety"},
     "OTEL_EXPORTER_PROMETHEUS_PORT='ninety'"),
    ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:port"},
     "OTEL_EXPORTER_OTLP_ENDPOINT='http://127.0.0.1:port'"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[::1"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT='http://[::1'"),
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER='sometimes'"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG='2'"),
])
def test_bad_configuration_is_one_line_and_recording_goes_on(env, needle):
    r = run_python("from spectrace import tracer\n"
                   "with tracer.span('s'):\n"
                   "    pass\n"
                   "tracer.record_request(model='m', ttft_s={'speculative': 0.1})\n"
                   "print(tracer.stats()['spans_recorded'])\n", env={"QEFF_SPEC_IO_TIMING": "1", **env})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1"]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "disabled" in lines[0], r.stderr


def test_configure_takes_metric_exporter_names_and_refuses_others():
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import os

    os.environ["OTEL_EXPORTER_PROMETHEUS_HOST"], os.environ["OTEL_EXPORTER_PROMETHEUS_PORT"] = "127.0.0.1", str(port)
    try:
        tracer.configure(metrics="prometheus")
        tracer.record_request(model="m", ttft_s={"speculative": 0.05})
        tracer.flush(10)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'gen_ai_server_time_to_first_token_seconds_count{' in body and 'spectrace_pass="speculative"' in body
    finally:
        tracer.configure(metrics="none")
        del os.environ["OTEL_EXPORTER_PROMETHEUS_HOST"], os.environ["OTEL_EXPORTER_PROMETHEUS_PORT"]
    with pytest.raises(ValueError, match="metrics must be 'env', 'none', 'otlp', 'prometheus', 'console'"):
        tracer.configure(metrics="statsd")
