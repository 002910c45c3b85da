"""The recording core: spans, windows, transfers, switches, bounded buffer."""

from __future__ import annotations

import asyncio
import sys

import pytest

from spectrace import tracer
from spectrace.tracer import _config

from helpers import run_python


def test_disabled_span_is_the_shared_noop_and_allocates_nothing():
    assert tracer.span("a") is tracer.NOOP
    assert tracer.window("ttft.baseline") is tracer.NOOP
    with tracer.span("a") as s:
        s.set("k", 1)
    sp = tracer.span
    for _ in range(1000):  # warm up caches before counting
        with sp("prefill.chunk"):
            pass
    before = sys.getallocatedblocks()
    for _ in range(10000):
        with sp("prefill.chunk"):
            pass
    assert sys.getallocatedblocks() - before < 50  # a leak would be >= 10000 blocks


def test_span_records_parent_attributes_and_time():
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.span("outer", engine="spec") as outer:
            with tracer.span("inner", **{"chunk.index": 3}) as inner:
                inner.set("chunk.tokens", 128)
    assert [s.name for s in rec.spans] == ["inner", "outer"]
    assert inner.parent_id == outer.span_id and outer.parent_id == 0
    assert inner.trace_id == outer.trace_id == outer.span_id
    assert inner.attributes == {"chunk.index": 3, "chunk.tokens": 128}
    assert outer.start_ns <= inner.start_ns <= inner.end_ns <= outer.end_ns
    assert tracer.current_span() is tracer.NOOP


def test_exception_marks_the_span_and_propagates():
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with pytest.raises(KeyError):
            with tracer.span("bind"):
                raise KeyError("past_key")
    (s,) = rec.spans
    assert s.error_type == "KeyError" and "past_key" in s.error_message


def test_decorator_traces_each_call_even_when_decorated_while_disabled():
    @tracer.span("score.compute", mode="host")
    def compute(x):
        return x * 2

    assert compute(2) == 4  # disabled: runs, records nothing
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        assert compute(3) == 6
        assert compute(4) == 8
    assert [(s.name, s.attributes) for s in rec.spans] == [("score.compute", {"mode": "host"})] * 2


def test_transfers_roll_up_onto_chunk_and_window_and_io_metrics():
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.window("ttft.spec_device", engine="spec") as w:
            for i in range(3):
                with tracer.span("prefill.chunk", engine="spec", **{"chunk.index": i}) as c:
                    tracer.record_transfer("prefill_queries", "d2h", 4096, ns=2_000)
                    if i == 2:
                        with tracer.transfer("past_key.3_RetainedState", "d2h", 1000):
                            pass
            tracer.record_transfer("input_ids", "h2d", 64, ns=1_000)
    chunks = [s for s in rec.spans if s.name == "prefill.chunk"]
    assert [c.io_bytes("prefill_queries") for c in chunks] == [4096] * 3
    assert [c.io_bytes("past_key") for c in chunks] == [0, 0, 1000]
    assert w.io["prefill_queries"].bytes == 3 * 4096 and w.io["prefill_queries"].count == 3
    assert w.io["prefill_queries"].ns == 3 * 2_000 and w.io["prefill_queries"].direction == "d2h"
    assert w.io["other"].bytes == 64 and w.io["other"].direction == "h2d"
    m = tracer.io_metrics()
    assert set(m) == {"total_bytes", "total_ms", "details", "categories"}
    assert m["total_bytes"] == 3 * 4096 + 1000 + 64
    assert set(m["categories"]) == set(tracer.CATEGORIES)
    assert m["categories"]["past_key"]["bytes"] == 1000
    assert m["details"]["past_key.3_RetainedState"] == pytest.approx(
        {"category": "past_key", "direction": "d2h", "bytes": 1000, "ms": m["details"]["past_key.3_RetainedState"]["ms"], "count": 1})
    assert m["details"]["input_ids"]["category"] == "other"


@pytest.mark.parametrize("binding,category", [
    ("prefill_queries", "prefill_queries"), ("past_key.3_RetainedState", "past_key"),
    ("past_value.0", "past_value"), ("past_value.31_RetainedState", "past_value"), ("logits", "logits"),
    ("other", "other"), ("input_ids", "other"), ("position_ids", "other"), ("", "other"), (None, "other"),
    ("past_keys.0", "other"),
])
def test_binding_names_map_to_categories(binding, category):
    assert tracer.category_of(binding) == category


def test_bad_transfer_values_are_rejected_with_the_value():
    tracer.configure(enabled=True)
    with tracer.span("x"):
        with pytest.raises(ValueError, match=r"nbytes must be a non-negative integer, got -5"):
            tracer.record_transfer("logits", "d2h", -5, ns=1)
        with pytest.raises(ValueError, match=r"direction must be 'h2d', 'd2h' or 'd2d', got 'up'"):
            tracer.record_transfer("logits", "up", 5, ns=1)
        with pytest.raises(ValueError, match=r"nbytes must be a non-negative integer, got -1"):
            tracer.transfer("logits", "d2h", -1)
        with pytest.raises(ValueError, match="got 1.5"):
            tracer.record_transfer("logits", "d2h", 1.5, ns=1)


@pytest.mark.parametrize("value,expected", [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("false", False), ("no", False), ("off", False), ("", False), (None, False),
])
def test_switch_values(value, expected):
    assert _config.parse_switch("QEFF_SPEC_IO_TIMING", value) is expected


def test_bad_switch_value_warns_once_and_counts_as_off(capsys):
    assert _config.parse_switch("QEFF_SPEC_DEBUG", "maybe") is False
    assert _config.parse_switch("QEFF_SPEC_DEBUG", "maybe") is False
    err = capsys.readouterr().err
    assert err.count("QEFF_SPEC_DEBUG='maybe' is not a valid switch value") == 1


def test_environment_switches_at_import_and_configure_overrides():
    r = run_python("from spectrace import tracer; print(tracer.enabled(), tracer.debug_enabled()); "
                   "tracer.configure(enabled=False); print(tracer.enabled())",
                   env={"QEFF_SPEC_IO_TIMING": "1"})
    assert r.stdout.split() == ["True", "False", "False"], r.stderr
    r = run_python("from spectrace import tracer; print(tracer.enabled(), tracer.debug_enabled())",
                   env={"QEFF_SPEC_DEBUG": "yes"})
    assert r.stdout.split() == ["True", "True"], r.stderr  # debug lines need recording
    r = run_python("from spectrace import tracer; print(tracer.enabled())", env={"QEFF_SPEC_IO_TIMING": "2"})
    assert r.stdout.split() == ["False"]
    assert r.stderr.count("QEFF_SPEC_IO_TIMING='2' is not a valid switch value") == 1


def test_configure_rejects_bad_values():
    with pytest.raises(ValueError, match="enabled must be True or False, got 'yes'"):
        tracer.configure(enabled="yes")
    with pytest.raises(ValueError, match="max_spans must be a positive integer, got 0"):
        tracer.configure(max_spans=0)
    with pytest.raises(ValueError, match="exporter must be .* got 'zipkin'"):
        tracer.configure(exporter="zipkin")


def test_debug_prints_chunk_line_and_io_table(capsys):
    tracer.configure(enabled=True, debug=True)
    with tracer.window("ttft.spec_device", engine="spec"):
        for i in range(4):
            with tracer.span("prefill.chunk", **{"chunk.index": i}):
                tracer.record_transfer("prefill_queries", "d2h", 100, ns=10)
    err = capsys.readouterr().err
    assert "[spec:prefill] chunks=4 total=" in err
    line = next(ln for ln in err.splitlines() if ln.startswith("[spec:prefill]"))
    assert line.count("(") == 3  # the three slowest chunks
    assert "[spec:io] ttft.spec_device engine=spec" in err
    assert any(ln.split()[:2] == ["prefill_queries", "400"] for ln in err.splitlines())


class _StuckExporter:
    """A span exporter that blocks until released: spans pile up in the bounded buffer."""

    def __init__(self):
        import threading

        self.release = threading.Event()
        self.spans = 0

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.release.wait(30)
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.release.set()


def _balanced(st):
    return st["spans_recorded"] == st["spans_exported"] + st["spans_dropped"] + st["spans_buffered"]


def test_bounded_buffer_counts_drops_and_says_so(capsys):
    stuck = _StuckExporter()
    start = tracer.stats()
    tracer.configure(enabled=True, max_spans=100, exporter=stuck)
    for _ in range(1000):
        with tracer.span("s"):
            pass
        assert _balanced(tracer.stats())
    st = tracer.stats()
    full = st["spans_dropped_buffer_full"] - start["spans_dropped_buffer_full"]
    assert 100 <= st["spans_buffered"] <= 100 + 512  # the buffer, plus at most one batch in flight
    assert full == 1000 - st["spans_buffered"]
    assert capsys.readouterr().err.count("span buffer full (max_spans=100)") == 1
    stuck.release.set()
    assert tracer.flush(10)
    end = tracer.stats()
    assert end["spans_exported"] - start["spans_exported"] == stuck.spans == 1000 - full
    assert end["spans_buffered"] == 0 and _balanced(end)


def test_millions_of_spans_keep_memory_bounded():
    # No exporter configured: nothing reads a buffer, so nothing is kept (captures hold their own).
    r = run_python(
        "import tracemalloc\nfrom spectrace import tracer\n"
        "def rss():\n"
        "    return int(next(ln for ln in open('/proc/self/status') if ln.startswith('VmRSS')).split()[1]) * 1024\n"
        "tracer.configure(enabled=True)\n"
        "for _ in range(1000):\n"
        "    with tracer.span('s', i=1):\n"
        "        pass\n"
        "before = rss()\n"
        "tracemalloc.start()\n"
        "for _ in range(1_000_000):\n"
        "    with tracer.span('s', i=1):\n"
        "        pass\n"
        "cur, peak = tracemalloc.get_traced_memory()\n"
        "tracemalloc.stop()\n"
        "s = tracer.stats()\n"
        "print(peak, rss() - before, s['spans_recorded'], s['spans_dropped_no_exporter'], s['spans_buffered'])\n",
        timeout=300)
    peak, grown, recorded, unexported, buffered = map(int, r.stdout.split())
    assert (recorded, unexported, buffered) == (1_001_000, 1_001_000, 0)
    assert peak < 5e6, peak  # flat: not a million kept spans (~550 MB before)
    assert grown < 20e6, grown  # RSS after 10^6 spans: within 20 MB of before (tracemalloc's own tables included)
    assert r.stderr == ""  # recording without an exporter is not a loss worth a line


def test_a_stuck_exporter_keeps_memory_bounded_and_says_what_it_lost():
    r = run_python(
        "import tracemalloc, threading\nfrom spectrace import tracer\n"
        "from opentelemetry.sdk.trace.export import SpanExportResult\n"
        "class Stuck:\n"
        "    def export(self, spans): threading.Event().wait(60); return SpanExportResult.SUCCESS\n"
        "    def shutdown(self): pass\n"
        "tracer.configure(enabled=True, max_spans=1000, exporter=Stuck(), export_timeout_s=0.5)\n"
        "tracemalloc.start()\n"
        "for _ in range(1_000_000):\n"
        "    with tracer.span('s', i=1):\n"
        "        pass\n"
        "cur, peak = tracemalloc.get_traced_memory()\n"
        "print(peak, tracer.stats()['spans_dropped_buffer_full'], flush=True)\n", timeout=300)
    peak, full = map(int, r.stdout.split())
    assert 1_000_000 - 1000 - 512 <= full <= 1_000_000 - 1000
    assert peak < 20e6, peak  # 1000 kept spans and one batch in flight, not a million
    # The exit waits at most the export timeout and states the whole tally.
    assert f"0 of 1000000 spans exported; 1000000 not exported" in r.stderr, r.stderr
    assert f"{full} buffer full" in r.stderr


def test_threads_and_tasks_never_cross():
    import contextvars
    import threading

    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.span("request") as root:
            def work(name):
                with tracer.span(name):
                    with tracer.span(name + ".inner"):
                        pass

            ts = [threading.Thread(target=contextvars.copy_context().run, args=(work, f"t{i}")) for i in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

            async def main():
                async def task(name):
                    with tracer.span(name):
                        await asyncio.sleep(0.01)
                        with tracer.span(name + ".inner"):
                            await asyncio.sleep(0.01)

                await asyncio.gather(task("a0"), task("a1"))

            asyncio.run(main())
    by = {s.name: s for s in rec.spans}
    for n in ("t0", "t1", "a0", "a1"):
        assert by[n].parent_id == root.span_id
        assert by[n + ".inner"].parent_id == by[n].span_id
    # Thread idents may be reused once a thread ended; names are not.
    assert len({by["t0"].thread_name, by["t1"].thread_name, root.thread_name}) == 3
