"""Run by tests/tracer/test_speedups.py once per span path (the C accelerator, and
``SPECTRACE_PURE_PYTHON=1``): core and reliability cases in one fresh process each, every
observation as plain JSON on stdout. The two outputs must be identical, ids included (both
paths number spans from 1 in the same order), so this file records nothing that differs
between two runs of the same path (no durations, no OS thread ids: only relations between them).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import json
import os
import sys
import threading
from time import perf_counter_ns

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from spectrace import tracer
from spectrace.tracer import _accel, _core, _sampling


def plain(spans) -> list:
    """What an exporter reads of each span, as JSON values."""
    return [{"id": s.span_id, "parent": s.parent_id, "trace": s.trace_id, "name": repr(s.name),
             "attributes": {k: repr(v) for k, v in s.attributes.items()},
             "io": {c: [t.bytes, t.count, t.h2d_bytes, t.d2h_bytes, t.d2d_bytes] for c, t in sorted(s.io.items())},
             "transfers": [[t.binding, t.category, t.direction, t.nbytes, t.span_id] for t in s.transfers],
             "error": [s.error_type, s.error_message], "window": bool(s.window), "class": type(s).__name__,
             "chunks": [c.span_id for c in s.window_data.chunks] if s.window_data is not None else None,
             "timed": 0 < s.start_ns <= s.end_ns, "thread": s.thread_name} for s in spans]


@contextlib.contextmanager
def stderr_lines(out: list):
    """The misuse reports (stderr) of the block, line by line."""
    buf, old = io.StringIO(), sys.stderr
    sys.stderr = buf
    try:
        yield
    finally:
        sys.stderr = old
        out.extend(buf.getvalue().splitlines())


def books() -> dict:
    st = tracer.stats()
    return {k: st[k] for k in ("spans_recorded", "spans_exported", "spans_dropped", "spans_buffered",
                               "spans_dropped_buffer_full", "spans_dropped_no_exporter")}


def nesting() -> dict:
    @tracer.span("score.compute", mode="host")  # decorated while off: named by this span() call
    def compute(x):
        return x * 2

    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.window("ttft.spec_device", engine="spec"):
            for i in range(3):
                with tracer.span("prefill.chunk", engine="spec", **{"chunk.index": i}) as c:
                    tracer.record_transfer("prefill_queries", "d2h", 4096, ns=2_000)
                    with tracer.transfer("past_key.3_RetainedState", "h2d", 1000 * i):
                        pass
                    c.set("chunk.tokens", 128)
            with tracer.span("no.attributes"), tracer.span("many", a=1, b=2, c=3, d=4, e=5, f=6):
                pass
            try:
                with tracer.span("bind"):
                    raise KeyError("past_key")
            except KeyError:
                pass
            compute(3)
        current_after = repr(tracer.current_span())
    m = tracer.io_metrics()  # without times: tracer.transfer() timed real (empty) blocks
    io = {"total_bytes": m["total_bytes"], "details": {k: {f: v for f, v in d.items() if f != "ms"}
                                                       for k, d in m["details"].items()}}
    return {"spans": plain(rec.spans), "io_metrics": io, "current_after": current_after, "books": books()}


def misuse() -> dict:
    err, raised = [], []
    tracer.configure(enabled=True)
    with stderr_lines(err), tracer.capture() as rec:
        with tracer.span("root") as root:
            a, b = tracer.span("a"), tracer.span("b")
            a.__enter__()
            b.__enter__()
            a.__exit__(None, None, None)  # the parent ends first
            b.__exit__(None, None, None)
            with tracer.span("after"):
                pass
            current = tracer.current_span() is root
        s = tracer.span("s")
        with s:
            with s:  # re-entry
                pass
        s.__exit__(None, None, None)  # a third exit
        tracer.span("never.entered").__exit__(None, None, None)
        s.set("late", 1)
        for call in (lambda: tracer.record_transfer("logits", "d2h", -5, ns=1),
                     lambda: tracer.record_transfer("logits", "up", 5, ns=1),
                     lambda: tracer.record_transfer("logits", "d2h", 1.5, ns=1),
                     lambda: tracer.transfer("logits", "d2h", -1), tracer.span,
                     lambda: tracer.span("a", "b"), lambda: tracer.span(name="x")):
            try:
                call()
            except (ValueError, TypeError) as e:
                raised.append(f"{type(e).__name__}: {e}")
    return {"spans": plain(rec.spans), "stderr": err, "raised": raised, "root_current": current, "books": books()}


def buffer_and_exporter() -> dict:
    err = []
    tracer.configure(enabled=True, max_spans=5)
    st = _core.STATE
    with stderr_lines(err):
        st.exporting = True  # a buffer with no worker draining it: drops are deterministic
        for i in range(8):
            with tracer.span("buffered", i=i):
                pass
        full = books()
        buffered = [s.attributes["i"] for s in st.pending]
        st.exporting = False
        st.pending.clear()
        st.offered -= 8  # undo this test's private buffer in the books
        st.dropped -= 3
        mem = InMemorySpanExporter()
        tracer.configure(max_spans=1000, exporter=mem)
        with tracer.capture() as rec:
            with tracer.span("request", model="m"):  # a root with an exporter: the root hook (Python)
                for i in range(4):
                    with tracer.span("prefill.chunk", index=i):
                        pass
        tracer.flush(10)
        otel_ids = {s.context.span_id for s in mem.get_finished_spans()}
        after = books()
        tracer.configure(exporter="none")
    return {"full": full, "buffered": buffered, "stderr": err, "recorded": plain(rec.spans),
            "exported": sorted(s.name for s in mem.get_finished_spans()),
            "otel_ids": otel_ids == {_sampling.otel_span_id(r.span_id) for r in rec.spans} and len(otel_ids) == 5,
            "after": after, "balanced": after["spans_recorded"] == after["spans_exported"] + after["spans_dropped"]
            + after["spans_buffered"]}


def gated() -> dict:
    tracer.configure(enabled=True, sampler=ALWAYS_OFF)
    with tracer.capture() as rec:
        with tracer.span("request") as req:
            inner = tracer.span("prefill.chunk")
            with inner:
                tracer.record_transfer("logits", "d2h", 10, ns=1)
    tracer.configure(sampler=None)
    mirrored = []

    class Mirror:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            mirrored.append("enter " + self.name)

        def __exit__(self, *exc):
            mirrored.append("exit " + self.name)

    with tracer.capture() as rec2:
        with tracer.suppress():
            with tracer.span("suppressed"):
                pass
        _core.STATE.mirror = Mirror
        try:
            with tracer.window("ttft.baseline"), tracer.span("prefill.chunk"):
                pass
        finally:
            _core.STATE.mirror = None
    return {"unsampled": [repr(req), repr(inner), len(rec.spans)], "spans": plain(rec2.spans),
            "mirrored": mirrored, "books": books()}


def threads_and_tasks() -> dict:
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.span("request"):
            def work(name):
                with tracer.span(name), tracer.span(name + ".inner"):
                    pass

            ts = [threading.Thread(target=contextvars.copy_context().run, args=(work, f"t{i}"), name=f"worker-{i}")
                  for i in range(2)]
            for t in ts:
                t.start()
                t.join()  # one after the other: the same ids on both paths

            async def task(name):
                with tracer.span(name):
                    await asyncio.sleep(0.01)
                    with tracer.span(name + ".inner"):
                        await asyncio.sleep(0.01)

            async def main():
                await asyncio.gather(task("a0"), task("a1"))

            asyncio.run(main())
    by = {s.name: s for s in rec.spans}
    return {"parents": sorted((s.name, by[s.name].parent_id and next(p.name for p in rec.spans
                                                                      if p.span_id == s.parent_id))
                              for s in rec.spans if s.name != "request"),
            "threads": sorted({s.name: s.thread_name for s in rec.spans}.items()),
            "main_thread_id": by["request"].thread_id == threading.get_native_id(),
            "workers_have_their_own_ids": by["request"].thread_id not in (by["t0"].thread_id, by["t1"].thread_id)}


def internal_error() -> dict:
    class Broken:
        def _add(self, s):
            raise RuntimeError("boom")

    err = []
    tracer.configure(enabled=True)
    before = books()
    with stderr_lines(err):
        _core.STATE.captures = (Broken(),)
        try:
            for _ in range(2):
                with tracer.span("x"):
                    pass
            ok = True
        finally:
            _core.STATE.captures = ()
    after = books()
    return {"stderr": err, "ended_without_raising": ok,
            "recorded": after["spans_recorded"] - before["spans_recorded"]}


def clock() -> dict:
    """C and Python timestamps on one clock: every span's times lie between the readings around it."""
    tracer.configure(enabled=True)
    ordered = True
    for _ in range(2000):
        a = perf_counter_ns()
        with tracer.span("tick") as s:
            b = perf_counter_ns()
        c = perf_counter_ns()
        ordered = ordered and a <= s.start_ns <= b <= s.end_ns <= c
    return {"ordered": ordered}


def fork() -> dict:
    """A forked child: its own thread cache (the OS id is the child's), its own OTel ids."""
    tracer.configure(enabled=True)
    with tracer.span("before.fork"):
        pass
    r, w = os.pipe()
    pid = os.fork()
    with tracer.span("after.fork") as s:  # the same recorder id in parent and child
        pass
    if pid == 0:
        doc = {"thread_is_own": s.thread_id == threading.get_native_id() == os.getpid(),
               "id": s.span_id, "otel_id": _sampling.otel_span_id(s.span_id)}
        os.write(w, json.dumps(doc).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = json.loads(f.read())
    os.waitpid(pid, 0)
    return {"child_thread_is_own": child["thread_is_own"], "same_recorder_id": child["id"] == s.span_id,
            "otel_ids_differ": child["otel_id"] != _sampling.otel_span_id(s.span_id),
            "parent_thread_is_own": s.thread_id == threading.get_native_id() == os.getpid()}


def main() -> None:
    # Not via pytest: this process's tracer is fresh, so span ids start at 1 on either path.
    out = {"accelerated": _accel.ACCELERATED}
    for case in (nesting, misuse, buffer_and_exporter, gated, threads_and_tasks, internal_error, clock, fork):
        out[case.__name__] = case()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
