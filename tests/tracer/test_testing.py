"""tracer.testing: the trace assertion API, its loaders and its pytest plugin.

Every assertion is checked twice: once where it holds, once where it fails with a message a
person can act on (the span tree, the values, the near matches).
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from spectrace import tracer
from spectrace.tracer.testing import Io, SpanLookupError, SpanView, Trace, capture_trace
# The fixtures, imported so this file runs whether or not spectrace is pip-installed (an
# installed spectrace registers them as the ``spectrace`` pytest11 plugin as well).
from spectrace.tracer.testing.plugin import captrace, spectrace_trace  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
L, H, D = 4, 8, 16
QUERIES = L * H * D * 4  # FP32 prefill_queries [L, H, D] per chunk, as in seed 000
PAST_KEY = 65536


def prefill(engine: str, window: str, n_chunks: int, *, queries: bool, past_key: bool) -> None:
    """A stand-in engine shaped like QEfficient's prefill passes (seed 000)."""
    with tracer.window(window, engine=engine):
        with tracer.span("tokenize", stage="bootstrap"):
            pass
        with tracer.span("tokenize", stage="max_length"):
            pass
        with tracer.span("bind"):
            pass
        for i in range(n_chunks):
            with tracer.span("prefill.chunk", engine=engine, **{"chunk.index": i, "chunk.tokens": 128}):
                tracer.record_transfer("logits", "d2h", 1024, ns=1_000)
                if queries:
                    tracer.record_transfer("prefill_queries", "d2h", QUERIES, ns=20_000)
                if past_key and i == n_chunks - 1:
                    tracer.record_transfer("past_key.0_RetainedState", "d2h", PAST_KEY, ns=50_000)


def run_both() -> None:
    prefill("spec", "ttft.spec_device", 3, queries=True, past_key=True)
    prefill("base", "ttft.baseline", 3, queries=False, past_key=False)


def view(name, start, end, raw_id, parent=None, io=None, **attrs) -> SpanView:
    return SpanView(name, start * 1_000_000, end * 1_000_000, attrs, io, raw_id=raw_id, raw_parent=parent)


@pytest.fixture
def made() -> Trace:
    """A hand-built trace with exact times (ms): a window, two chunks, a late straggler."""
    return Trace([
        view("ttft.spec_device", 0, 10, 1, io={"prefill_queries": Io(2048, 0.5, 2, "d2h")}),
        view("tokenize", 0, 1, 2, 1, stage="bootstrap"),
        view("prefill.chunk", 2, 5, 3, 1, io={"prefill_queries": Io(1024, 0.25, 1, "d2h")},
             engine="spec", **{"chunk.index": 0}),
        view("prefill.chunk", 4, 9, 4, 1, io={"prefill_queries": Io(1024, 0.25, 1, "d2h")},
             engine="spec", **{"chunk.index": 1}),
        view("score.select", 9.5, 12, 5),
    ])


# -- seed 000, as assertions -------------------------------------------------------------------
def test_seed_000_sentences_are_one_line_assertions(spectrace_trace):
    run_both()
    t = spectrace_trace
    spec = t.one("ttft.spec_device")
    # "tokenization runs inside the timed window"
    for tok in spec.all("tokenize"):
        tok.assert_within(spec)
    # "prefill_queries is bound on every chunk" (and only on the speculative engine)
    for chunk in t.all("prefill.chunk", engine="spec"):
        chunk.assert_bytes("prefill_queries", QUERIES)
    t.assert_bytes("prefill_queries", 0, span=t.one("ttft.baseline"))
    # "past_key only on the final chunk"
    *early, last = t.assert_count("prefill.chunk", 3, engine="spec")
    last.assert_bytes("past_key", PAST_KEY)
    assert [c.bytes("past_key") for c in early] == [0, 0]
    # "both engines run the same number of chunks"
    t.assert_count("prefill.chunk", 3, engine="base")
    t.assert_before(spec, t.one("ttft.baseline"))


# -- queries -----------------------------------------------------------------------------------
def test_one_and_all_match_names_globs_and_dotted_attributes(spectrace_trace):
    run_both()
    t = spectrace_trace
    assert [s.name for s in t.all("ttft.*")] == ["ttft.spec_device", "ttft.baseline"]
    a = t.one("prefill.chunk", engine="spec", chunk_index=1)
    assert a is t.one("prefill.chunk", attrs={"chunk.index": 1, "engine": "spec"})
    assert a["chunk.index"] == 1 and a.attr("chunk_tokens") == 128 and a.attr("nope", 7) == 7
    assert len(t.all("prefill.chunk", chunk_index=lambda i: i >= 1)) == 4
    assert t.all("missing") == []
    with pytest.raises(KeyError, match="has no attribute 'nope'"):
        a["nope"]


def test_one_failures_list_near_matches():
    t = Trace([view("prefill.chunk", 0, 1, 1, engine="spec", **{"chunk.index": 0}),
               view("prefill.chunk", 1, 2, 2, engine="base", **{"chunk.index": 0})])
    with pytest.raises(SpanLookupError, match=r"(?s)no span matches 'prefill.chunk' with engine='draft'.*"
                                              r"#1 prefill.chunk: engine='spec' \(wanted 'draft'\)"):
        t.one("prefill.chunk", engine="draft")
    with pytest.raises(AssertionError, match=r"(?s)chunk.index missing|chunk.index=0 \(wanted 5\)"):
        t.one("prefill.chunk", chunk_index=5)
    with pytest.raises(SpanLookupError, match=r"(?s)Did you mean 'prefill.chunk'\?.*Span names here"):
        t.one("prefill_chunk")
    with pytest.raises(SpanLookupError, match=r"(?s)2 spans match 'prefill.chunk'.*exactly one.*engine='base'"):
        t.one("prefill.chunk")
    with pytest.raises(SpanLookupError, match="the trace is empty. Is recording on"):
        Trace().one("ttft.baseline")


def test_tree_links_and_deterministic_ids(spectrace_trace):
    run_both()
    t = spectrace_trace
    assert [s.span_id for s in t.spans] == list(range(1, len(t) + 1))
    spec, base = t.roots
    assert (spec.trace_id, base.trace_id) == (1, 2) and spec.span_id == 1 and spec.parent is None
    chunk = t.one("prefill.chunk", engine="spec", chunk_index=2)
    assert chunk.parent is spec and chunk.parent_id == 1 and chunk.trace_id == 1
    assert chunk.ancestors == [spec] and chunk.root is spec and chunk in spec.children
    assert [c.name for c in spec.children] == ["tokenize", "tokenize", "bind"] + ["prefill.chunk"] * 3
    assert spec.descendants == spec.children and chunk.children == []
    assert chunk.thread and chunk.duration_ns > 0 and chunk.source.name == "prefill.chunk"
    assert "#1 ttft.spec_device" in str(t) and repr(t).startswith("<Trace 14 spans")


def test_ids_do_not_depend_on_input_order(made):
    spans = [(s.name, s.start_ns, s.end_ns, s.attributes, s._raw_id, s._raw_parent) for s in made.spans]
    shuffled = Trace([SpanView(n, a, b, at, raw_id=r, raw_parent=p) for n, a, b, at, r, p in reversed(spans)])
    assert [(s.span_id, s.name, s.parent_id) for s in shuffled] == [(s.span_id, s.name, s.parent_id) for s in made]


def test_live_trace_sees_spans_as_they_finish(spectrace_trace):
    with tracer.window("ttft.baseline"):
        with tracer.span("tokenize", stage="bootstrap"):
            pass
        tok = spectrace_trace.one("tokenize")
        assert tok.parent is None and tok.span_id == 1  # the window has not finished yet
    assert tok.parent is spectrace_trace.one("ttft.baseline") and tok.span_id == 2


def test_transfers_are_kept_for_in_memory_captures(spectrace_trace):
    prefill("spec", "ttft.spec_device", 2, queries=True, past_key=True)
    t = spectrace_trace
    last = t.one("prefill.chunk", chunk_index=1)
    assert [x.binding for x in last.transfers] == ["logits", "prefill_queries", "past_key.0_RetainedState"]
    assert len(t.transfers) == 5 and t.transfers[0].span.name == "prefill.chunk"
    assert last.io["past_key"] == Io(PAST_KEY, 0.05, 1, "d2h")


# -- bytes and ms per category -----------------------------------------------------------------
def test_io_sums_top_matching_spans_without_double_counting(spectrace_trace):
    run_both()
    t = spectrace_trace
    spec = t.one("ttft.spec_device")
    assert t.bytes("prefill_queries") == 3 * QUERIES  # roots: both windows
    assert t.bytes("prefill_queries", engine="spec") == 3 * QUERIES  # the window matches, not its chunks too
    assert t.bytes("logits", "prefill.chunk") == 6 * 1024
    assert t.bytes("logits", "prefill.chunk", span=spec) == 3 * 1024
    assert t.bytes(None, span=spec) == 3 * (1024 + QUERIES) + PAST_KEY
    assert t.io("past_key", engine="spec") == Io(PAST_KEY, 0.05, 1, "d2h")
    assert t.ms("prefill_queries", span=spec) == pytest.approx(0.06)
    assert spec.bytes("logits") == 3072 and spec.ms("past_key") == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"unknown binding category 'prefill_query'; did you mean 'prefill_queries'"):
        t.bytes("prefill_query")


def test_assert_bytes_and_ms(made):
    chunk = made.one("prefill.chunk", chunk_index=0)
    assert made.assert_bytes("prefill_queries", 2048, name="prefill.chunk") == 2048
    made.assert_bytes("prefill_queries", at_least=1, at_most=4096, engine="spec")
    chunk.assert_bytes("prefill_queries", 1024).assert_ms("prefill_queries", at_most=1.0)
    made.assert_ms("prefill_queries", at_least=0.4, name="prefill.chunk")
    with pytest.raises(AssertionError, match=r"(?s)assert_bytes: prefill_queries bytes of 'prefill.chunk' is "
                                             r"2048 B, expected 4096\nsummed over 2 span\(s\): #3 1024, #4 1024"
                                             r".*>   #3 prefill.chunk .*io: prefill_queries 1024 B/1x"):
        made.assert_bytes("prefill_queries", 4096, name="prefill.chunk")
    with pytest.raises(AssertionError, match=r"past_key bytes of #3 'prefill.chunk' \(.*\) \[2.000-5.000 ms\] "
                                             r"is 0 B, expected >= 1"):
        chunk.assert_bytes("past_key", at_least=1)
    with pytest.raises(AssertionError, match=r"assert_ms: prefill_queries ms of #3 .* is 0.250 ms, expected <= 0.1"):
        chunk.assert_ms("prefill_queries", at_most=0.1)
    with pytest.raises(AssertionError, match=r"is 0 B, expected 1 \(no span matched\)"):
        made.assert_bytes("logits", 1, name="decode")
    with pytest.raises(TypeError, match="expected value or at_least"):
        made.assert_bytes("logits")


# -- structure and time ------------------------------------------------------------------------
def test_assert_within(made):
    window = made.one("ttft.spec_device")
    made.assert_within("tokenize", window)
    made.assert_within(made.all("prefill.chunk"), "ttft.spec_device")
    made.one("tokenize").assert_within(window)
    with pytest.raises(AssertionError, match=r"(?s)assert_within: #5 'score.select' \[9.500-12.000 ms\] is not "
                                             r"within #1 'ttft.spec_device' \[0.000-10.000 ms\]: ends 2.000 ms after it"
                                             r".*> #5 score.select  9.500-12.000 ms \(2.500\)"):
        made.assert_within("score.select", window)
    first, second = made.all("prefill.chunk")
    with pytest.raises(AssertionError, match=r"#4 .* is not within #3 .*: ends 4.000 ms after it\n"):
        second.assert_within(first)
    with pytest.raises(AssertionError, match=r"starts 2.000 ms before it and ends 5.000 ms after it"):
        made.one("ttft.spec_device").assert_within(first)
    with pytest.raises(AssertionError, match="ends 1.000 ms before it starts"):
        made.one("tokenize").assert_within(first)


def test_assert_before(made):
    made.assert_before("tokenize", "prefill.chunk")
    made.one("tokenize").assert_before(made.one("score.select"))
    with pytest.raises(AssertionError, match=r"assert_before: #3 'prefill.chunk' \(engine='spec' chunk.index=0\) "
                                             r"\[2.000-5.000 ms\] ends 1.000 ms after #4 'prefill.chunk'"):
        made.assert_before(made.one("prefill.chunk", chunk_index=0), made.one("prefill.chunk", chunk_index=1))


def test_assert_no_overlap(made):
    made.assert_no_overlap("tokenize", made.one("prefill.chunk", chunk_index=0), "score.select")
    with pytest.raises(AssertionError, match=r"(?s)1 overlapping pair\(s\) among 2 spans:\n  #3 .* and #4 .* "
                                             r"overlap by 1.000 ms.*>   #4 prefill.chunk"):
        made.assert_no_overlap("prefill.chunk")
    with pytest.raises(AssertionError, match="among 3 spans"):  # a span repeated counts once
        made.assert_no_overlap("ttft.spec_device", "score.select", made.one("score.select"), "tokenize")


def test_assert_count(made):
    chunks = made.assert_count("prefill.chunk", 2, engine="spec")
    assert [c["chunk.index"] for c in chunks] == [0, 1]
    made.assert_count("prefill.chunk", 0, engine="base")
    made.assert_count("tokenize", 1, within=made.one("ttft.spec_device"))
    with pytest.raises(AssertionError, match=r"(?s)expected 3 spans 'prefill.chunk' with engine='spec', found 2: #3, #4"
                                             r".*>   #3 prefill.chunk"):
        made.assert_count("prefill.chunk", 3, engine="spec")
    with pytest.raises(AssertionError, match=r"(?s)found 0.*Did you mean 'tokenize'"):
        made.assert_count("tokenise", 1)


def test_assert_attr(made):
    made.assert_attr("prefill.chunk", engine="spec", chunk_index=lambda i: i in (0, 1))
    made.one("tokenize").assert_attr(stage="bootstrap")
    with pytest.raises(AssertionError, match=r"(?s)assert_attr: 1 span\(s\) .*\n  #4 'prefill.chunk' .*: "
                                             r"chunk.index=1 \(wanted 0\)"):
        made.assert_attr("prefill.chunk", attrs={"chunk.index": 0})
    with pytest.raises(AssertionError, match=r"stage missing \(wanted 'bootstrap'\)"):
        made.one("score.select").assert_attr(stage="bootstrap")
    with pytest.raises(SpanLookupError, match="no span matches 'decode'"):
        made.assert_attr("decode", engine="spec")


def test_long_failure_trees_are_pruned_around_the_spans_involved(spectrace_trace):
    prefill("spec", "ttft.spec_device", 60, queries=True, past_key=False)
    chunk = spectrace_trace.one("prefill.chunk", chunk_index=30)
    with pytest.raises(AssertionError) as info:
        chunk.assert_bytes("prefill_queries", 0)
    message = str(info.value)
    assert "> " in message and "chunk.index=30" in message and "chunk.index=28" in message
    assert "... 31 spans #2..#32 (tokenize x2, bind x1, prefill.chunk x28)" in message
    assert "... 27 spans #38..#64 (prefill.chunk x27)" in message
    assert len(message.splitlines()) < 20


# -- the fixture and the plugin ----------------------------------------------------------------
def _pytest(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess:
    """Run pytest on ``source`` in a fresh interpreter with the plugin loaded exactly once."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    installed = any(ep.name == "spectrace" for ep in importlib.metadata.entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "spectrace.tracer.testing.plugin"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["OTEL_TRACES_EXPORTER"] = "none"
    for var in ("QEFF_SPEC_IO_TIMING", "QEFF_SPEC_DEBUG"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugin, *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_pytest_fixtures_lists_the_fixture(tmp_path):
    out = _pytest(tmp_path, "", "--fixtures").stdout
    assert "spectrace_trace -- " in out and "A live spectrace Trace" in out and "captrace -- " in out


def test_fixture_restores_settings_and_reports_the_tree_on_failure(tmp_path):
    result = _pytest(tmp_path, """
        from spectrace import tracer

        def test_fails(spectrace_trace):
            assert tracer.enabled()
            tracer.configure(debug=False, max_spans=7)
            with tracer.window("ttft.baseline"):
                tracer.record_transfer("logits", "d2h", 10, ns=5)
            assert spectrace_trace.one("ttft.baseline").bytes("logits") == 11

        def test_after(captrace):
            assert len(captrace) == 0 and tracer.enabled()

        def test_restored():
            assert not tracer.enabled()
            assert tracer.configure()["max_spans"] != 7
    """, "-q")
    out = result.stdout
    assert "1 failed, 2 passed" in out, out + result.stderr
    assert "spectrace trace" in out and "#1 ttft.baseline" in out and "io: logits 10 B/1x" in out


def test_capture_trace_restores_settings_when_the_block_raises():
    before = tracer.enabled()
    with pytest.raises(RuntimeError):
        with capture_trace() as t:
            assert tracer.enabled()
            with tracer.span("tokenize"):
                raise RuntimeError("boom")
    assert tracer.enabled() == before
    assert t.one("tokenize").error_type == "RuntimeError" and t.one("tokenize").error_message == "boom"


# -- loaders: files from a GPU machine or a collector, asserted on in CI -----------------------
def record_everything() -> None:
    """Both passes on the main thread, a draft pass on a worker thread, one failing span."""
    import threading

    run_both()
    worker = threading.Thread(target=prefill, args=("draft", "ttft.spec_device", 2),
                              kwargs={"queries": True, "past_key": False}, name="draft-worker")
    worker.start()
    worker.join()
    with pytest.raises(ValueError):
        with tracer.span("decode", **{"gen_ai.usage.output_tokens": 4}):
            raise ValueError("bad token")


def shape(trace: Trace) -> list[tuple]:
    """Everything a loaded span must reproduce exactly (ms are compared apart, approximately)."""
    return [(s.span_id, s.name, s.parent_id, s.trace_id, dict(s.attributes), s.duration_ns, s.thread,
             s.error_type, {c: (io.bytes, io.count, io.direction) for c, io in s.io.items()})
            for s in trace.spans]


def assert_same(loaded: Trace, recorded: Trace, *, transfers: bool = True) -> None:
    assert shape(loaded) == shape(recorded)
    for a, b in zip(loaded.spans, recorded.spans):
        assert {c: io.ms for c, io in a.io.items()} == pytest.approx({c: io.ms for c, io in b.io.items()})
    if transfers:
        got = [(t.span.span_id, t.binding, t.category, t.direction, t.nbytes, t.end_ns - t.start_ns)
               for t in loaded.transfers]
        assert got == [(t.span.span_id, t.binding, t.category, t.direction, t.nbytes, t.end_ns - t.start_ns)
                       for t in recorded.transfers]


def test_pftrace_from_the_writer_loads_back_as_recorded(spectrace_trace, tmp_path):
    from spectrace.tracer.perfetto import write_pftrace

    record_everything()
    recorded = Trace.from_spans([s.source for s in spectrace_trace.spans])
    write_pftrace(tmp_path / "trace.pftrace", [s.source for s in spectrace_trace.spans])
    loaded = Trace.load(tmp_path / "trace.pftrace")
    assert_same(loaded, recorded)
    assert [s.window for s in loaded.spans] == [s.window for s in recorded.spans]
    assert loaded.one("decode").error_message == "bad token"
    assert loaded.one("ttft.spec_device", engine="draft").thread == "draft-worker"
    # The assertions read a loaded file as they read a capture.
    loaded.assert_bytes("prefill_queries", 3 * QUERIES, span=loaded.one("ttft.spec_device", engine="spec"))
    loaded.assert_count("prefill.chunk", 3, engine="base")


def pftrace_bytes() -> bytes:
    """A TrackEvent trace built by hand as another tool would write it: interned names,
    annotations with ``io.*`` totals, two thread tracks, a counter track, no spectrace ids."""
    trace = pb.Trace()

    def packet(ts=None):
        p = trace.packet.add()
        p.trusted_packet_sequence_id = 7
        if ts is not None:
            p.timestamp = 1_700_000_000_000_000_000 + ts * 1_000_000
        return p

    first = packet()
    first.sequence_flags = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    for uuid, tid, name in ((11, 100, "MainThread"), (12, 101, "worker")):
        d = packet().track_descriptor
        d.uuid, d.thread.pid, d.thread.tid, d.thread.thread_name = uuid, 1, tid, name
    counter = packet().track_descriptor
    counter.uuid, counter.name = 13, "io.prefill_queries.bytes [spec]"
    counter.counter.SetInParent()
    names, keys = {}, {}

    def begin(ts, track, name, **args):
        p = packet(ts)
        ev = p.track_event
        ev.type, ev.track_uuid = pb.TrackEvent.TYPE_SLICE_BEGIN, track
        if name not in names:
            names[name] = len(names) + 1
            p.interned_data.event_names.add(iid=names[name], name=name)
        ev.name_iid = names[name]
        for key, value in args.items():
            key = key.replace("__", ".")
            if key not in keys:
                keys[key] = len(keys) + 1
                p.interned_data.debug_annotation_names.add(iid=keys[key], name=key)
            a = ev.debug_annotations.add(name_iid=keys[key])
            if isinstance(value, str):
                a.string_value = value
            elif isinstance(value, float):
                a.double_value = value
            else:
                a.int_value = value

    def end(ts, track):
        ev = packet(ts).track_event
        ev.type, ev.track_uuid = pb.TrackEvent.TYPE_SLICE_END, track

    io = dict(io__prefill_queries__bytes=2048, io__prefill_queries__ms=0.5, io__prefill_queries__count=2,
              io__prefill_queries__direction="d2h")
    begin(0, 11, "ttft.spec_device", **io)
    begin(1, 11, "tokenize", stage="bootstrap")
    end(2, 11)
    begin(2, 12, "score.compute")
    for i in range(2):
        begin(3 + 2 * i, 11, "prefill.chunk", engine="spec", chunk__index=i,
              **{k: v // 2 if isinstance(v, int) else v for k, v in io.items()})
        end(4 + 2 * i, 11)
        c = packet(4 + 2 * i).track_event
        c.type, c.track_uuid, c.counter_value = pb.TrackEvent.TYPE_COUNTER, 13, 1024 * (i + 1)
    end(8, 12)
    end(10, 11)
    begin(11, 11, "unterminated")
    return trace.SerializeToString()


def test_pftrace_from_another_tool_nests_slices_per_track(tmp_path):
    path = tmp_path / "hand.pftrace"
    path.write_bytes(pftrace_bytes())
    t = Trace.load(path)
    assert [(s.span_id, s.name, s.parent_id, s.thread) for s in t.spans] == [
        (1, "ttft.spec_device", 0, "MainThread"), (2, "tokenize", 1, "MainThread"),
        (3, "score.compute", 0, "worker"), (4, "prefill.chunk", 1, "MainThread"),
        (5, "prefill.chunk", 1, "MainThread")]
    window = t.one("ttft.spec_device")
    assert window.start_ns == 1_700_000_000_000_000_000 and window.duration_ms == 10
    assert window.io["prefill_queries"] == Io(2048, 0.5, 2, "d2h") and window.attributes == {}
    assert t.one("prefill.chunk", chunk_index=1).io["prefill_queries"].bytes == 1024
    t.assert_bytes("prefill_queries", 2048, name="prefill.chunk")
    t.one("tokenize", stage="bootstrap").assert_within(window)
    t.assert_no_overlap("prefill.chunk", "tokenize")
    with pytest.raises(AssertionError, match=r"#3 'score.compute' \[2.000-8.000 ms\] ends 5.000 ms after #4"):
        t.assert_before("score.compute", "prefill.chunk")
    assert t.transfers == []


def test_load_rejects_a_file_that_is_no_trace(tmp_path):
    path = tmp_path / "junk.pftrace"
    path.write_bytes(b"\xff\xfe not a trace")
    with pytest.raises(ValueError, match=r"junk.pftrace is not a Perfetto trace"):
        Trace.load(path)


def otel_spans_of(fn) -> list:
    """Run ``fn`` with an in-memory OpenTelemetry exporter and return the SDK spans it got."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    previous = tracer.configure(exporter=exporter)
    try:
        fn()
        assert tracer.flush(10)
        return list(exporter.get_finished_spans())
    finally:
        tracer.configure(exporter=previous["exporter"])


def otlp_request(spans):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans)


def test_otlp_json_and_otel_spans_load_as_recorded(spectrace_trace, tmp_path):
    from google.protobuf.json_format import MessageToDict, MessageToJson

    sdk_spans = otel_spans_of(record_everything)
    recorded = Trace.from_spans([s.source for s in spectrace_trace.spans])
    assert_same(Trace.from_otel(sdk_spans), recorded)
    # protobuf's JSON mapping (base64 ids), pretty-printed, two documents in one file
    request = otlp_request(sdk_spans)
    half = len(sdk_spans) // 2
    pretty = tmp_path / "pretty.json"
    pretty.write_text(MessageToJson(otlp_request(sdk_spans[:half])) + "\n"
                      + MessageToJson(otlp_request(sdk_spans[half:])))
    assert_same(Trace.load(pretty), recorded)
    # the Collector's file exporter: one compact object per line, hex ids, intValue as strings
    doc = MessageToDict(request)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
    lines = tmp_path / "collector.jsonl"
    lines.write_text(json.dumps(doc) + "\n")
    assert '"intValue": "' in lines.read_text()
    loaded = Trace.load(lines)
    assert_same(loaded, recorded)
    loaded.assert_attr("decode", attrs={"gen_ai.usage.output_tokens": 4})
    assert loaded.one("decode").error_type == "ValueError"
