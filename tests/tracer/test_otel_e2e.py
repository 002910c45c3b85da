"""spectrace's metrics, trace context and collector faults, against the real collector process (rotel).

Every test runs spectrace in a child process configured only through the standard ``OTEL_*``
variables, as a user's server would be, and asserts on what the collector decoded, on the
child's exit time and on ``tracer.stats()``'s books (recorded = exported + dropped + buffered).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from collector import BlackHole
from helpers import ROOT
from spectrace.tracer import _metrics

# A request as the engines record it: a root span over two windows with chunks and copies, then
# its request metrics. Prints one JSON line per phase; between phases it waits for a go file.
_SERVER = r"""
import json, os, sys, time
from spectrace import tracer

def request(i, phase):
    t0 = time.perf_counter()
    with tracer.span("text_completion m", **{"gen_ai.request.model": "m", "phase": phase}):
        with tracer.window("ttft.spec_device", engine="spec") as w:
            for c in range(2):
                with tracer.span("prefill.chunk", engine="spec", **{"chunk.index": c}):
                    tracer.record_transfer("prefill_queries", "d2h", 4096, ns=1000)
                    time.sleep(0.002)
        with tracer.window("ttft.base_pruned", engine="base"):
            time.sleep(0.001)
    tracer.record_request(model="m", ttft_s={"speculative": w.duration_ns / 1e9, "baseline": 0.3},
                          input_tokens=300, output_tokens=4, time_per_output_token_s=0.02, kept_ratio=0.1)
    return time.perf_counter() - t0

phases = os.environ["PHASES"].split(",")
go = os.environ.get("GO_DIR")
for k, phase in enumerate(phases):
    if k and go:  # wait for the test to change the collector
        while not os.path.exists(os.path.join(go, phase)):
            time.sleep(0.01)
    times = [request(i, phase) for i in range(int(os.environ.get("N", "10")))]
    ok = tracer.flush()
    print(json.dumps({"phase": phase, "flushed": ok, "max_request_s": max(times), **tracer.stats()}), flush=True)
"""


def _start(env: dict, phases=("run",), n: int = 10, go_dir=None) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("QEFF_", "OTEL_", "SPECTRACE_"))}
    full.update({"QEFF_SPEC_IO_TIMING": "1", "PHASES": ",".join(phases), "N": str(n),
                 "OTEL_SERVICE_NAME": f"spectrace-e2e-{uuid.uuid4().hex[:8]}", **env})
    if go_dir is not None:
        full["GO_DIR"] = str(go_dir)
    return subprocess.Popen([sys.executable, "-c", _SERVER], env=full, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[list[dict], str, float]:
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=timeout)
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    return lines, err, time.monotonic() - t0


def _balanced(s: dict) -> bool:
    return s["spans_recorded"] == s["spans_exported"] + s["spans_dropped"] + s["spans_buffered"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_metrics_reach_the_collector_with_semconv_buckets(collector, protocol):
    env = collector.otel_env(protocol, OTEL_METRICS_EXPORTER="otlp", OTEL_METRIC_EXPORT_INTERVAL="60000")
    lines, err, _ = _finish(_start(env, n=5))
    service = env_service = None  # the child's service name is random: read it from what arrived
    pts = collector.wait_for_metrics(until=lambda ps: any(p.name == "gen_ai.server.time_to_first_token" for p in ps))
    ttft = [p for p in pts if p.name == "gen_ai.server.time_to_first_token"]
    by_pass = {p.attributes["spectrace.pass"]: p for p in ttft}
    assert set(by_pass) == {"speculative", "baseline"}
    for p in by_pass.values():
        assert p.kind == "Histogram" and p.unit == "s" and p.count == 5
        assert tuple(p.bounds) == _metrics.TTFT_BUCKETS
        assert p.attributes["gen_ai.operation.name"] == "text_completion"
        assert p.attributes["gen_ai.provider.name"] == "spectrace"
        assert p.attributes["gen_ai.request.model"] == "m"
    assert sum(by_pass["baseline"].counts[:_metrics.TTFT_BUCKETS.index(0.5) + 1]) == 5  # 0.3 s <= 0.5
    usage = {p.attributes["gen_ai.token.type"]: p for p in pts if p.name == "gen_ai.client.token.usage"}
    assert usage["input"].sum == 1500 and tuple(usage["input"].bounds) == _metrics.TOKEN_BUCKETS
    io = [p for p in pts if p.name == "spectrace.io.size"]
    assert io and io[0].value == 5 * 2 * 4096 and io[0].attributes["spectrace.io.category"] == "prefill_queries"
    chunks = [p for p in pts if p.name == "spectrace.prefill.chunk.duration"]
    assert chunks[0].count == 10 and chunks[0].attributes["spectrace.engine"] == "spec"
    assert lines[-1]["flushed"] and _balanced(lines[-1]), (lines, err)
    del service, env_service


def test_collector_absent_from_the_start(collector):
    env = collector.otel_env("grpc")
    collector.stop()  # nothing listens on the port now
    t0 = time.monotonic()
    lines, err, _ = _finish(_start(env, n=10))
    wall = time.monotonic() - t0
    (s,) = lines
    assert _balanced(s) and s["spans_exported"] == 0
    assert s["spans_dropped_export_failed"] + s["spans_buffered"] == s["spans_recorded"] == 50
    assert s["max_request_s"] < 1.0  # a request is never held up by export (each is ~5 ms of work)
    assert "0 of 50 spans exported; 50 not exported" in err, err
    assert err.count("could not export") == 1  # reported once, not per batch
    assert "Traceback" not in err
    assert wall < 2 + 15, wall  # exit bounded by the 2 s export timeout (+ interpreter start-up)


def test_collector_killed_mid_run_and_started_again(collector, tmp_path):
    env = collector.otel_env("grpc")
    proc = _start(env, phases=("up", "down", "back"), n=10, go_dir=tmp_path)
    first = json.loads(proc.stdout.readline())
    assert first["phase"] == "up" and first["flushed"] and first["spans_exported"] == 50
    collector.kill()
    (tmp_path / "down").touch()
    second = json.loads(proc.stdout.readline())
    assert second["phase"] == "down" and _balanced(second)
    collector.restart()
    (tmp_path / "back").touch()
    lines, err, _ = _finish(proc)
    (third,) = lines
    assert third["phase"] == "back" and third["flushed"] and _balanced(third), (third, err)
    received = collector.wait_for_spans(until=lambda ss: sum(s.attributes.get("phase") == "back" for s in ss) >= 10)
    roots = [s for s in received if s.name == "text_completion m"]
    assert sum(s.attributes["phase"] == "back" for s in roots) == 10  # spans recorded after it is back arrive
    # Each of the down phase's batches is either delivered by a retry that outlived the restart
    # or counted as failed; never both, never neither: what arrived is exactly what the books
    # call exported.
    assert len(received) == third["spans_exported"] - first["spans_exported"] + 50, (len(received), third)
    lost = third["spans_recorded"] - third["spans_exported"]
    # Batches are whole requests (a root's end wakes the worker): 5 spans each.
    assert lost == third["spans_dropped_export_failed"] and lost % 5 == 0 and 0 <= lost <= 50, third
    assert err.count("could not export") == (1 if lost else 0), err  # reported once


def test_an_endpoint_that_never_answers_holds_up_neither_requests_nor_exit():
    with BlackHole() as hole:
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
               "OTEL_EXPORTER_OTLP_ENDPOINT": hole.endpoint}
        stuck = _start(env, n=20)
        free = _start({"OTEL_TRACES_EXPORTER": "none"}, n=20)  # same work, no export at all, side by side
        (s,), err, _ = _finish(stuck)
        (f,), _, _ = _finish(free)
    assert hole.connections >= 1
    assert _balanced(s) and s["spans_exported"] == 0 and not s["flushed"]
    # The worker is stuck in an export for 2 s at a time; the requests never notice. Generous
    # bound (not a benchmark): a request held up by even one export would take >= 2 s.
    assert s["max_request_s"] < max(1.0, 20 * f["max_request_s"]), (s, f)
    assert "not exported" in err and "still buffered at exit" in err


def test_exit_waits_at_most_the_configured_export_timeout():
    with BlackHole() as hole:
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": hole.endpoint,
               "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"}
        t0 = time.monotonic()
        lines, err, _ = _finish(_start(env, n=3))
        stuck_wall = time.monotonic() - t0
        t0 = time.monotonic()
        _finish(_start({"OTEL_TRACES_EXPORTER": "none"}, n=3))
        free_wall = time.monotonic() - t0
    # flush (0.5 s) + exit (0.5 s) + one export in flight: well under the SDK's 10 s default.
    assert stuck_wall - free_wall < 5, (stuck_wall, free_wall)
    assert "not exported" in err


def test_the_callers_trace_context_is_the_parent_of_the_windows(collector):
    code = r"""
import os
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from spectrace import tracer

# The serving framework's own tracing: its request span, exported by its own provider.
tp = TracerProvider(resource=Resource.create({"service.name": "server"}))
tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["EP"], insecure=True)))
with tp.get_tracer("server").start_as_current_span("POST /v1/completions"):
    with tracer.window("ttft.spec_device", engine="spec"):
        with tracer.span("prefill.chunk", engine="spec", **{"chunk.index": 0}):
            pass
# A request that arrived with only a W3C traceparent header.
with tracer.use_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
    with tracer.window("ttft.baseline", engine="base"):
        with tracer.span("prefill.chunk", engine="base", **{"chunk.index": 0}):
            pass
tracer.flush()
tp.shutdown()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QEFF_", "OTEL_"))}
    env.update(collector.otel_env("grpc", QEFF_SPEC_IO_TIMING="1", OTEL_SERVICE_NAME="spectrace-ctx",
                                  EP=collector.grpc_endpoint))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    spans = collector.wait_for_spans(5)
    by = {(s.name, s.attributes.get("engine")): s for s in spans}
    caller = by[("POST /v1/completions", None)]
    window, chunk = by[("ttft.spec_device", "spec")], by[("prefill.chunk", "spec")]
    assert caller.trace_id == window.trace_id == chunk.trace_id  # one trace, caller to chunk
    assert window.parent_span_id == caller.span_id and chunk.parent_span_id == window.span_id
    base, base_chunk = by[("ttft.baseline", "base")], by[("prefill.chunk", "base")]
    assert base.trace_id == base_chunk.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert base.parent_span_id == "b7ad6b7169203331"


def _run_code(collector, code: str, service: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QEFF_", "OTEL_"))}
    env.update(collector.otel_env("grpc", QEFF_SPEC_IO_TIMING="1", OTEL_SERVICE_NAME=service))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_an_attribute_that_raises_costs_nothing_at_the_collector(collector):
    code = r"""
import json
from spectrace import tracer
class Bad:
    def __str__(self):
        raise RuntimeError("no")
for i in range(2000):
    with tracer.span("s", i=i, **({"bad": Bad()} if i == 7 else {})):
        pass
print(json.dumps({"flushed": tracer.flush(), **tracer.stats()}))
"""
    service = f"spectrace-bad-{uuid.uuid4().hex[:8]}"
    r = _run_code(collector, code, service)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["flushed"] and s["spans_exported"] == 2000 and _balanced(s)
    got = collector.wait_for_spans(2000, service=service)
    assert len(got) == 2000  # the batch with the bad value arrived whole
    (bad,) = [g for g in got if "bad" in g.attributes]
    assert "str() raised RuntimeError" in bad.attributes["bad"] and bad.attributes["i"] == 7


def test_a_forked_child_exports_to_the_collector_with_its_own_ids(collector):
    code = r"""
import os
from spectrace import tracer
with tracer.span("before-fork"):
    pass
tracer.flush()
pid = os.fork()
who = "child" if pid == 0 else "parent"
for i in range(20):
    with tracer.span("after-fork", who=who, i=i):
        pass
ok = tracer.flush()
print(who, ok, flush=True)
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
"""
    service = f"spectrace-fork-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    r = _run_code(collector, code, service)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30  # the child's exit does not wait for a worker it lacks
    assert sorted(r.stdout.split()) == sorted(["child", "True", "parent", "True"])
    got = collector.wait_for_spans(41, service=service)
    assert len(got) == 41  # 1 before the fork, 20 from each process: nothing sent twice
    assert len({g.span_id for g in got}) == 41 and len({g.trace_id for g in got}) == 41
    assert sum(g.attributes.get("who") == "child" for g in got) == 20
