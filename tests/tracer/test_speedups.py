"""The C span path (``tracer/_speedups.c``): built and in use where the suite runs, on the same
clock as Python, and recording exactly what the pure-Python fallback records.

The parity cases run in fresh processes (``speedups_scenario.py``), once per path: the path is
chosen at import (it decides the record classes' bases), and a fresh process numbers its spans
from 1, so the two outputs can be compared whole, ids included.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
from pathlib import Path
from time import perf_counter_ns

import pytest

from spectrace import tracer
from spectrace.tracer import _accel, _config, _core

from helpers import run_python

SCENARIO = Path(__file__).with_name("speedups_scenario.py")


def _pure_asked() -> bool:
    return _config.parse_switch(_config.PURE_PYTHON_VAR, os.environ.get(_config.PURE_PYTHON_VAR))


def test_the_c_path_is_built_and_used_unless_the_fallback_is_asked_for():
    # `pip install -e '.[test]'` compiles it: importable whichever path this process chose.
    speedups = importlib.import_module("spectrace.tracer._speedups")
    assert _accel.ACCELERATED is not _pure_asked()  # the suite is run both ways
    if _accel.ACCELERATED:
        assert tracer.span is speedups.span
        assert issubclass(tracer.Span, speedups.SpanCore) and isinstance(_core.STATE, speedups.StateCore)
        assert _core.ActiveSpan.__dict__["__enter__"] is speedups.SpanCore.__dict__["_enter"]
    else:
        assert tracer.span is _core._span_py and not issubclass(tracer.Span, speedups.SpanCore)
    code = "from spectrace.tracer import _accel, _core; print(_accel.ACCELERATED, _core._c_clock)"
    on_linux = str(sys.platform.startswith("linux"))  # where perf_counter_ns is CLOCK_MONOTONIC
    assert run_python(code).stdout.split() == ["True", on_linux]
    assert run_python(code, env={"SPECTRACE_PURE_PYTHON": "1"}).stdout.split() == ["False", "False"]


def test_c_and_python_timestamps_are_on_one_clock():
    tracer.configure(enabled=True)
    for _ in range(1000):
        a = perf_counter_ns()
        with tracer.span("tick") as s:
            b = perf_counter_ns()
        c = perf_counter_ns()
        assert a <= s.start_ns <= b <= s.end_ns <= c


def test_a_clock_put_in_place_of_perf_counter_ns_times_the_spans(monkeypatch):
    # tests/tracer/test_diff.py's fake clock: the C path follows _core's clock, as Python does.
    ticks = iter(range(1000, 10**6, 1000))
    monkeypatch.setattr(_core, "perf_counter_ns", lambda: next(ticks))
    tracer.configure(enabled=True)
    with tracer.span("a") as a, tracer.span("b") as b:
        pass
    assert (a.start_ns, b.start_ns, b.end_ns, a.end_ns) == (1000, 2000, 3000, 4000)
    monkeypatch.undo()
    before = perf_counter_ns()
    with tracer.span("c") as c:
        pass
    assert before <= c.start_ns <= c.end_ns <= perf_counter_ns()


def test_a_disabled_span_with_attributes_allocates_nothing():
    sp = tracer.span
    for i in range(1000):
        with sp("prefill.chunk", engine="spec", index=i):
            pass
    before = sys.getallocatedblocks()
    for i in range(10000):
        with sp("prefill.chunk", engine="spec", index=i):
            pass
    assert sys.getallocatedblocks() - before < 50


def test_attributes_read_late_are_the_call_s_and_stay_one_dict():
    tracer.configure(enabled=True)
    with tracer.span("s", a=1, b="x") as s:
        s.set("c", 3)
    assert s.attributes == {"a": 1, "b": "x", "c": 3} and s.attributes is s.attributes
    with tracer.span("many", **{f"k{i}": i for i in range(9)}) as m:
        pass
    assert m.attributes == {f"k{i}": i for i in range(9)}


def test_enter_and_exit_called_by_hand_bound_or_not():
    # `with` binds both methods of the span (the C path hands it one bound method for both,
    # from a free list); a method bound on its own takes only its own arguments.
    tracer.configure(enabled=True)
    s = tracer.span("by.hand", k=1)
    with pytest.raises(TypeError):
        s.__enter__(None, None, None)
    with pytest.raises(TypeError):
        s.__exit__()
    enter, exit_ = s.__enter__, s.__exit__
    assert enter.__self__ is s and exit_.__self__ is s
    assert enter() is s and tracer.current_span() is s and s.start_ns > 0
    inner = tracer.span("inner")
    assert _core.ActiveSpan.__enter__(inner) is inner and inner.parent_id == s.span_id
    assert _core.ActiveSpan.__exit__(inner, None, None, None) is False and inner.end_ns > 0
    assert tracer.current_span() is s
    assert exit_(None, None, None) is False and s.end_ns >= s.start_ns > 0
    assert tracer.current_span() is tracer.NOOP
    with tracer.span("w") as w:
        pass
    assert w.attributes == {} and w.end_ns


@pytest.mark.skipif(not _accel.ACCELERATED, reason="the C path's span methods")
def test_the_c_span_methods_bind_like_methods():
    speedups = importlib.import_module("spectrace.tracer._speedups")
    tracer.configure(enabled=True)
    d = speedups.SpanCore.__dict__["_enter"]
    assert d.__get__(None, speedups.SpanCore) is d and d.__name__ == "_enter"
    s = tracer.span("b")
    e, x = s.__enter__, s.__exit__  # a `with` looks them up in this order: one object for both
    assert e is x and e.__self__ is s and "_enter" in repr(e)
    assert e() is s and x(None, None, None) is False and s.end_ns
    t = tracer.span("c")
    assert t.__enter__ is not t.__enter__  # otherwise one binding each
    with pytest.raises(TypeError):
        t.__enter__(1)
    with pytest.raises(TypeError):
        t.__exit__(None, None, None, k=1)
    with pytest.raises(TypeError):
        d.__get__(3)
    with pytest.raises(TypeError):
        _core.ActiveSpan.__enter__(object())


def _blocks_after(fn, n=3000) -> int:
    fn(200)  # warm: free lists, caches, the thread's pair
    gc.collect()
    before = sys.getallocatedblocks()
    fn(n)
    gc.collect()
    return sys.getallocatedblocks() - before


def test_ended_spans_leave_nothing_behind_whatever_they_held():
    # The C path keeps ended spans on a free list and gives ActiveSpan its own dealloc: a span
    # with a __dict__ (an error), a window (its class changed), a cycle through its attributes
    # (or through its own bound __exit__), one made by object.__new__ must all be freed whole,
    # and reused spans start empty.
    tracer.configure(enabled=True, exporter="none")

    def spans(n):
        sp = tracer.span
        for i in range(n):
            with sp("prefill.chunk", engine="spec", index=i) as s:
                s.set("extra", [i])
            try:
                with sp("fails", i=i):
                    raise KeyError("k")
            except KeyError:
                pass
            with tracer.window("ttft.w", i=i) as w:
                with sp("prefill.chunk", index=i):
                    pass
            assert len(w.window_data.chunks) == 1
            with sp("cycle") as c:
                c.set("self", c)
            with sp("cycle.through.a.bound.method") as b:
                b.set("exit", b.__exit__)
            bare = _core.ActiveSpan.__new__(_core.ActiveSpan)
            bare.error_type = "x"
            del bare

    assert _blocks_after(spans) < 200
    with tracer.span("fresh", a=1) as f:
        pass
    assert f.attributes == {"a": 1} and f.error_type is None and f.window_data is None
    assert f.parent_id == 0 and f.io == {} and f.transfers == () and f.span_id > 0


def test_a_long_chain_of_spans_is_freed_without_deep_recursion():
    # Each span holds its parent: freeing the innermost of 300 000 nested spans frees them all,
    # one after another (the trashcan, as CPython's own dealloc does), not 300 000 C frames deep.
    code = (
        "from spectrace import tracer\n"
        "tracer.configure(enabled=True, exporter='none')\n"
        "spans = []\n"
        "for i in range(300000):\n"
        "    s = tracer.span('nested'); s.__enter__(); spans.append(s)\n"
        "for s in reversed(spans):\n"
        "    s.__exit__(None, None, None)\n"
        "last = spans[-1]; del spans, s\n"
        "del last\n"
        "print('freed')\n")
    r = run_python(code)
    assert r.returncode == 0 and r.stdout.split() == ["freed"], r.stderr[-2000:]


def _run(pure: bool) -> dict:
    r = run_python(f"import runpy; runpy.run_path({str(SCENARIO)!r}, run_name='__main__')",
                   env={"SPECTRACE_PURE_PYTHON": "1"} if pure else {}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def both() -> tuple[dict, dict]:
    return _run(pure=False), _run(pure=True)


def test_both_paths_record_the_same_trace_books_and_messages(both):
    c, py = both
    assert (c.pop("accelerated"), py.pop("accelerated")) == (True, False)
    for case in c:
        assert c[case] == py[case], case


def test_the_parity_cases_hold_what_they_claim(both):
    c = both[0]  # equal to the fallback's (above); here: equal to what is right
    spans = {(s["name"], s["attributes"].get("chunk.index")): s for s in c["nesting"]["spans"]}
    window, chunk2 = spans[("'ttft.spec_device'", None)], spans[("'prefill.chunk'", "2")]
    ids = [s["id"] for s in c["nesting"]["spans"]]
    assert len(set(ids)) == len(ids) == 8 and chunk2["parent"] == window["id"] == chunk2["trace"]
    assert window["chunks"] == [spans[("'prefill.chunk'", str(i))]["id"] for i in range(3)]
    assert window["io"] == {"past_key": [3000, 3, 3000, 0, 0], "prefill_queries": [3 * 4096, 3, 0, 3 * 4096, 0]}
    assert spans[("'bind'", None)]["error"] == ["KeyError", "'past_key'"]
    assert spans[("'score.compute'", None)]["attributes"] == {"mode": "'host'"}
    assert chunk2["attributes"] == {"chunk.index": "2", "chunk.tokens": "128", "engine": "'spec'"}
    m = c["misuse"]
    assert m["root_current"] and any("ended after its parent" in ln for ln in m["stderr"])
    assert any("entered twice" in ln for ln in m["stderr"]) and any("exited twice" in ln for ln in m["stderr"])
    assert "TypeError: span() missing 1 required positional argument: 'name'" in m["raised"]
    assert "ValueError: nbytes must be a non-negative integer, got -5" in m["raised"]
    b = c["buffer_and_exporter"]
    assert b["buffered"] == [0, 1, 2, 3, 4] and b["full"]["spans_dropped_buffer_full"] == 3
    assert sum("span buffer full (max_spans=5)" in ln for ln in b["stderr"]) == 1
    assert b["balanced"] and b["otel_ids"] and len(b["exported"]) == 5
    # The request root took Python's path (the root hook), its chunks C's: one id sequence.
    root_id = b["recorded"][-1]["id"]
    assert [s["id"] for s in b["recorded"]] == [root_id + 1, root_id + 2, root_id + 3, root_id + 4, root_id]
    g = c["gated"]
    assert g["unsampled"] == ["NOOP", "NOOP", 0]
    assert [s["class"] for s in g["spans"]] == ["MirroredSpan", "ActiveWindow"]
    assert g["mirrored"] == ["enter ttft.baseline", "enter prefill.chunk", "exit prefill.chunk", "exit ttft.baseline"]
    t = c["threads_and_tasks"]
    assert t["main_thread_id"] and t["workers_have_their_own_ids"]
    assert dict(t["parents"])["t1.inner"] == "t1" and dict(t["threads"])["t1"] == "worker-1"
    e = c["internal_error"]
    assert e["ended_without_raising"] and e["recorded"] == 0
    assert e["stderr"] == ["spectrace: warning: internal error while ending span 'x': RuntimeError('boom')"]
    assert c["clock"] == {"ordered": True}
    assert c["fork"] == {"child_thread_is_own": True, "same_recorder_id": True, "otel_ids_differ": True,
                         "parent_thread_is_own": True}
