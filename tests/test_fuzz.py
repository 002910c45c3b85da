"""Property-based fuzzing of everything that reads a file or an argv a user hands spectrace.

The property is always the same: a loader returns, or raises ``ValueError`` naming the file;
a command returns 0 or 2 (one line on stderr), never a traceback and never a hang. Inputs are
random bytes, random JSON documents, and mutations (cuts, byte flips, insertions, splices,
a value replaced anywhere in the JSON tree) of real files written by spectrace itself: the
pftrace writer, a real ``jax.profiler`` XPlane, the OpenTelemetry SDK's OTLP encoding, and
``tracer.ttft``. Hypothesis runs derandomized and without an example database, so CI sees the
same examples every time; sizes stay small (a few KiB), so memory stays bounded and the file
runs in well under a minute on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from spectrace import tracer
from spectrace.tracer import cli, ttft
from spectrace.tracer.testing import Trace

# Hypothesis caches constants (and, on a failure, writes patches) under .hypothesis/: not in the checkout.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "spectrace-hypothesis"))
FUZZ = settings(derandomize=True, database=None, deadline=5000, max_examples=200, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- real inputs, made once
def _record() -> list:
    previous = tracer.configure(enabled=True)
    try:
        with tracer.capture() as rec:
            for window, engine in (("ttft.spec_device", "spec"), ("ttft.baseline", "base")):
                with tracer.window(window, engine=engine):
                    for i in range(2):
                        with tracer.span("prefill.chunk", engine=engine, **{"chunk.index": i, "chunk.tokens": 8}):
                            with tracer.transfer("prefill_queries", "d2h", 4096):
                                time.sleep(0.0001)
                    tracer.record_transfer("logits", "d2h", 512, ns=10_000)
    finally:
        tracer.configure(**previous)
    return rec.spans


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Real files: a .pftrace, an XPlane, an OTLP JSON line and a ttft.json (paths and bytes)."""
    from helpers import profiled_run
    from spectrace.tracer.perfetto import write_pftrace

    d = tmp_path_factory.mktemp("real")
    spans = _record()
    write_pftrace(d / "trace.pftrace", spans)
    rec, prof = profiled_run(d / "xplane", lambda step: [step() for _ in range(2)], size=16)
    entry = ttft.run_entry({f: 0.01 * (i + 1) for i, f in enumerate(ttft.TTFT_FIELDS)}, spans)
    doc = ttft.build([entry, entry], config={"keep": 0.1}, versions={"spectrace": "0"}, devices={"base": "cpu"})
    ttft.write(d / "ttft.json", doc)
    return {"dir": d, "pftrace": (d / "trace.pftrace").read_bytes(), "xplane_path": prof.paths[0],
            "xplane": open(prof.paths[0], "rb").read(), "otlp": _otlp_json(spans), "ttft": doc}


def _otlp_json(spans) -> dict:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    previous = tracer.configure(enabled=True, exporter=exporter)
    try:
        with tracer.capture():
            with tracer.window("ttft.baseline", engine="base"):
                with tracer.span("prefill.chunk", engine="base", **{"chunk.index": 0}):
                    tracer.record_transfer("logits", "d2h", 512, ns=10_000)
        assert tracer.flush(10)
    finally:
        tracer.configure(**previous)
    return MessageToDict(encode_spans(list(exporter.get_finished_spans())))


# ---------------------------------------------------------------- strategies
@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` after one to four cuts, byte flips, insertions, deletions or duplicated runs."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["cut", "flip", "insert", "delete", "dup"]))
        i = draw(st.integers(0, len(b)))
        if op == "cut":
            del b[i:]
        elif op == "flip" and i < len(b):
            b[i] = draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = draw(st.binary(max_size=16))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 64))]
        elif op == "dup":
            b[i:i] = b[i:i + draw(st.integers(1, 256))]
    return bytes(b)


_KEYS = ["resourceSpans", "scopeSpans", "spans", "name", "traceId", "spanId", "parentSpanId",
         "startTimeUnixNano", "endTimeUnixNano", "attributes", "key", "value", "stringValue", "intValue",
         "doubleValue", "boolValue", "arrayValue", "values", "kvlistValue", "bytesValue", "events",
         "timeUnixNano", "status", "code", "message", "schema", "runs", "io", "chunks", "slowest_chunks",
         "config", "device_time", "alignment", "index", "ms", "bytes", "count", "direction", "pass",
         "top_ops", "depth", "io.logits.bytes", "thread.id", "idle_gaps", "at_ms", "after", "before", "host",
         *ttft.TTFT_FIELDS[:4]]
_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63 - 2) | st.floats()
            | st.text(max_size=12) | st.sampled_from(["spectrace.ttft/1", "STATUS_CODE_ERROR", "", "NaN", "1e400"]))
JSON = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), c, max_size=5),
                    max_leaves=40)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def json_mutated(draw, doc):
    """``doc`` (a JSON tree) with one to three values, anywhere in it, replaced by random JSON."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        value = draw(JSON)
        if not path:
            doc = value
            continue
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return doc


def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _names_file(exc: ValueError, path) -> None:
    assert os.fspath(path) in str(exc), f"the error does not name {path}: {exc}"


# ---------------------------------------------------------------- .pftrace
@FUZZ
@given(data=st.data())
def test_pftrace_loader_and_merge_on_random_and_mutated_traces(real, tmp_path, data):
    from spectrace.tracer.merge import merge
    from spectrace.tracer.perfetto import export_chrome_json

    raw = data.draw(st.binary(max_size=512) | mutated(real["pftrace"]), label="trace bytes")
    path = _write(tmp_path / "fuzz.pftrace", raw)
    try:
        Trace.load(path)
    except ValueError as e:
        _names_file(e, path)
    for step in (lambda: merge(path, [real["xplane_path"]], tmp_path / "merged.pftrace"),
                 lambda: export_chrome_json(path, tmp_path / "chrome.json")):
        try:
            step()
        except ValueError as e:
            _names_file(e, path)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# ---------------------------------------------------------------- XPlane
@FUZZ
@given(data=st.data())
def test_xplane_reader_and_merge_on_random_and_mutated_profiles(real, tmp_path, data):
    from spectrace.tracer.merge import merge
    from spectrace.tracer.xplane import read_xplane

    raw = data.draw(st.binary(max_size=512) | mutated(real["xplane"]), label="xplane bytes")
    path = _write(tmp_path / "host.xplane.pb", raw)
    trace = _write(tmp_path / "trace.pftrace", real["pftrace"])
    try:
        read_xplane(path)
    except ValueError as e:
        _names_file(e, path)
        return
    try:
        merge(trace, [path], tmp_path / "merged.pftrace")  # a profile that parses must merge, or name itself
    except ValueError as e:
        _names_file(e, path)


# ---------------------------------------------------------------- OTLP JSON
@FUZZ
@given(data=st.data())
def test_otlp_json_loader_on_random_and_mutated_documents(real, tmp_path, data):
    text = json.dumps(real["otlp"])
    raw = data.draw(st.one_of(JSON.map(lambda d: json.dumps(d).encode()),
                              json_mutated(real["otlp"]).map(lambda d: json.dumps(d).encode()),
                              mutated(text.encode())), label="otlp json")
    path = _write(tmp_path / "spans.json", b"{" + raw if not raw.lstrip()[:1] in (b"{", b"[") else raw)
    try:
        Trace.load(path)
    except ValueError as e:
        _names_file(e, path)


# ---------------------------------------------------------------- ttft.json through `spectrace report`
def _run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(argv)
    return rc, err.getvalue()


@FUZZ
@given(data=st.data())
def test_report_on_random_and_mutated_ttft_json(real, tmp_path, data):
    text = json.dumps(real["ttft"], indent=1)
    raw = data.draw(st.one_of(JSON.map(lambda d: json.dumps(d).encode()),
                              json_mutated(real["ttft"]).map(lambda d: json.dumps(d).encode()),
                              mutated(text.encode()), st.binary(max_size=64)), label="ttft.json")
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    _write(run / "ttft.json", raw)
    rc, err = _run_cli(["report", str(run)])
    assert rc in (0, 2), err
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(run) in lines[0], err
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


# ---------------------------------------------------------------- argv
_WORDS = ["run", "bench", "merge", "report", "--help", "-h", "-o", "--output", "--chrome-json", "--out",
          "--prompt-len", "--ctx-len", "--gen-len", "--look-ahead", "--prefill-seq-len", "--keep", "--runs",
          "--warmup", "--scoring", "--layers", "--dtype", "--base", "--draft", "--prompt-file", "--set",
          "--format", "--base-devices", "--draft-devices", "--xplane", "--quiet", "0", "-1", "1", "1e9",
          "99999999999999999999", "nan", "0.5", "host", "all", "float32", "a,b", "0,1", ".", "..", "/",
          "/dev/null", "/dev/zero", "no/such", "x.pftrace", "ttft.json", "", "-", "--", "\x00", "é", "--prompt"]


_OPTIONS = [w for w in _WORDS if w.startswith("-") and len(w) > 2]
_VALUES = st.sampled_from([w for w in _WORDS if not w.startswith("--")]) | st.text(max_size=6)
ARGV = st.one_of(
    st.lists(st.sampled_from(_WORDS) | st.text(max_size=6), max_size=7),  # anything
    st.tuples(st.sampled_from(["run", "bench", "merge", "report"]),  # a command, options with values
              st.lists(st.tuples(st.sampled_from(_OPTIONS), _VALUES), max_size=4),
              st.lists(_VALUES, max_size=3)).map(lambda t: [t[0], *[x for kv in t[1] for x in kv], *t[2]]))


@FUZZ
@given(argv=ARGV)
def test_argv_parsing_gives_exit_2_or_help_never_a_traceback(argv, tmp_path):
    """Random command lines: parse errors are one line and exit 2; run/bench stop before models."""
    parser = cli.build_parser()
    with contextlib.chdir(tmp_path):  # merge/report of relative junk paths touch nothing real
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                args = parser.parse_args(argv)
        except cli.UserError as e:
            assert str(e).startswith("spectrace"), e
            rc, err = _run_cli(argv)  # the same through main: one line, exit 2
            assert rc == 2 and len(err.strip().splitlines()) == 1, err
            return
        except SystemExit as e:  # --help
            assert e.code == 0
            return
        if args.command in ("run", "bench"):
            try:
                cli._check_model_args(args)  # the checks before any model is loaded
            except cli.UserError as e:
                assert len(cli._one_line(str(e)).splitlines()) == 1
            return
        rc, err = _run_cli(argv)
        assert rc in (0, 2), err
        if rc == 2:
            assert len(err.strip().splitlines()) == 1, err
