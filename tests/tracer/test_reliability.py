"""The recorder under misuse and concurrency: it never raises, never corrupts its tree, and its books balance.

Issue 18's cases, each reproduced as it was reported: spans ended out of order, a double exit,
re-entry, a decorator made while recording was off, a byte count made negative inside a
transfer block, an attribute whose ``str()`` raises, a fork, and ``io_metrics()`` read by many
threads and tasks at once.
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spectrace import tracer

from helpers import run_python


def balanced(st: dict) -> bool:
    return st["spans_recorded"] == st["spans_exported"] + st["spans_dropped"] + st["spans_buffered"]


def test_spans_ended_out_of_order_leave_the_open_ancestor_current(capsys):
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        with tracer.span("root") as root:
            a = tracer.span("a")
            a.__enter__()
            b = tracer.span("b")
            b.__enter__()
            a.__exit__(None, None, None)  # the parent ends first
            b.__exit__(None, None, None)
            with tracer.span("after") as after:  # must not become a child of finished a or b
                pass
            assert tracer.current_span() is root
    assert after.parent_id == root.span_id
    assert "ended after its parent" in capsys.readouterr().err
    assert {s.name for s in rec.spans} == {"root", "a", "b", "after"}


def test_double_exit_and_reentry_are_tolerated_and_recorded_once(capsys):
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        s = tracer.span("s")
        with s:
            with s:  # re-entry: one span, one record
                pass
        s.__exit__(None, None, None)  # a third exit
        with tracer.span("next") as nxt:
            pass
    assert [x.name for x in rec.spans] == ["s", "next"]
    assert nxt.parent_id == 0
    err = capsys.readouterr().err
    assert "entered twice" in err and "exited twice" in err


def test_a_finished_span_is_immutable(capsys):
    tracer.configure(enabled=True)
    with tracer.span("s") as s:
        s.set("a", 1)
    s.set("b", 2)
    s.set_attributes({"c": 3})
    assert s.attributes == {"a": 1}
    assert "finished span" in capsys.readouterr().err


def test_a_decorator_made_while_off_keeps_its_own_name():
    tracer.configure(enabled=False)
    deco = tracer.span("wanted")
    traced = deco(lambda: 1)  # applied at once: the name is this span()'s
    other = tracer.instrument("also.wanted")(lambda: 2)  # never depends on the state
    tracer.span("something.else")  # a later call must not rename the decorators above
    tracer.configure(enabled=True)
    with tracer.capture() as rec:
        traced()
        other()
    assert [s.name for s in rec.spans] == ["wanted", "also.wanted"]


def test_negative_bytes_fail_at_the_call_in_every_form():
    tracer.configure(enabled=True)
    with tracer.span("s"):
        with pytest.raises(ValueError, match="nbytes must be a non-negative integer, got -1"):
            tracer.transfer("logits", "d2h", -1)
        with pytest.raises(ValueError, match="got -5"):
            tracer.record_transfer("logits", "d2h", -5)
        with pytest.raises(ValueError, match="got -7"):
            with tracer.transfer("logits", "d2h", 0) as t:
                t.nbytes = -7  # known only after the copy, and wrong
        with pytest.raises(ValueError, match="direction must be 'h2d', 'd2h' or 'd2d'"):
            tracer.transfer("logits", "sideways", 1)
        assert tracer.current_span().io == {}  # nothing half-recorded


def test_odd_names_and_attribute_values_are_exported_not_raised():
    class Bad:
        def __str__(self):
            raise RuntimeError("no str for you")

    import numpy as np

    mem = InMemorySpanExporter()
    before = tracer.stats()
    tracer.configure(enabled=True, exporter=mem)
    for i in range(2000):
        attrs = {"bad": Bad()} if i == 7 else {"arr": np.arange(3), "big": 2 ** 70, "s": "\ud800"}
        with tracer.span("s" if i % 2 else 12345, **attrs):
            pass
    assert tracer.flush(10)
    st = tracer.stats()
    assert len(mem.get_finished_spans()) == 2000  # one bad value costs nothing
    assert st["spans_dropped_export_failed"] == before["spans_dropped_export_failed"]
    assert balanced(st)
    bad = [s for s in mem.get_finished_spans() if "bad" in s.attributes]
    assert "str() raised RuntimeError" in bad[0].attributes["bad"]


def test_an_exporter_that_raises_is_counted_per_span():
    class Raises:
        def export(self, spans):
            raise OSError("disk on fire")

        def shutdown(self):
            pass

    class Other(InMemorySpanExporter):
        pass

    mem = Other()
    before = tracer.stats()
    tracer.configure(enabled=True, exporter=[mem, Raises()])
    for _ in range(300):
        with tracer.span("s"):
            pass
    tracer.flush(10)
    st = tracer.stats()
    assert st["spans_dropped_export_failed"] - before["spans_dropped_export_failed"] == 300
    assert st["spans_exported"] == before["spans_exported"] and balanced(st)
    assert st["exporters"]["Other"] == {"exported": 300, "failed": 0} == {"exported": len(mem.get_finished_spans()),
                                                                          "failed": 0}
    assert st["exporters"]["Raises"]["failed"] - before["exporters"].get("Raises", {"failed": 0})["failed"] == 300


def test_counters_survive_reconfiguration():
    class Fails:
        def export(self, spans):
            return SpanExportResult.FAILURE

        def shutdown(self):
            pass

    tracer.configure(enabled=True, exporter=Fails())
    before = tracer.stats()
    for _ in range(10):
        with tracer.span("s"):
            pass
    tracer.flush(5)
    tracer.configure(exporter="none")  # used to reset the drop counters
    after = tracer.stats()
    assert after["spans_dropped_export_failed"] - before["spans_dropped_export_failed"] == 10
    assert balanced(after)


def test_io_metrics_belong_to_the_callers_window_under_threads_and_tasks():
    tracer.configure(enabled=True)
    wrong = []

    def request(n):
        with tracer.window("ttft.spec_device"):
            with tracer.span("prefill.chunk"):
                tracer.record_transfer("logits", "d2h", n, ns=1)
        if tracer.io_metrics()["total_bytes"] != n:
            wrong.append(n)

    def worker(k):
        for i in range(100):
            request(1000 * k + i + 1)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(1, 9)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    async def task(n):
        with tracer.window("ttft.spec_device") as w:
            await asyncio.sleep(0)
            tracer.record_transfer("logits", "d2h", n, ns=1)
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return tracer.io_metrics()["total_bytes"], w.io_metrics()["total_bytes"]

    async def main():
        return await asyncio.gather(*(task(n) for n in range(1, 200)))

    got = asyncio.run(main())
    assert wrong == []
    assert got == [(n, n) for n in range(1, 200)]


def test_a_task_that_outlives_its_window_cannot_change_it():
    tracer.configure(enabled=True)

    async def main():
        async def late(started):
            started.set()
            await asyncio.sleep(0.05)
            tracer.record_transfer("past_key", "d2h", 999, ns=1)  # the window has ended by now
            with tracer.span("prefill.chunk"):
                pass

        started = asyncio.Event()
        with tracer.window("ttft.spec_device") as w:
            t = asyncio.create_task(late(started))
            await started.wait()
        snapshot = (w.io_metrics(), len(w.window_data.chunks))
        await t
        return w, snapshot

    w, (io_before, chunks_before) = asyncio.run(main())
    assert w.io_metrics() == io_before and io_before["total_bytes"] == 0
    assert len(w.window_data.chunks) == chunks_before == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_forked_child_exports_with_its_own_ids_and_worker(tmp_path):
    # Parent and child each export to their own file through a console exporter; both exit fast.
    code = f"""
import json, os, sys
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from spectrace import tracer
out = open({str(tmp_path)!r} + "/spans." + str(os.getpid()), "w")
exp = ConsoleSpanExporter(out=out, formatter=lambda s: json.dumps({{"id": s.context.span_id, "trace": s.context.trace_id}}) + "\\n")
tracer.configure(enabled=True, exporter=exp)
with tracer.span("before-fork"):
    pass
tracer.flush()
out.flush()  # the child must not inherit buffered lines
pid = os.fork()
for i in range(50):
    with tracer.span("after-fork", i=i):
        pass
ok = tracer.flush(5)
s = tracer.stats()
# One write per line: two processes' print() calls can interleave on the shared pipe.
os.write(1, " ".join(map(str, (("child" if pid == 0 else "parent"), ok, s["spans_recorded"],
                                s["spans_exported"]))).encode() + b"\\n")
out.flush()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
"""
    r = run_python(code, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.split("\n")[:2])
    assert lines[0].split() == ["child", "True", "50", "50"]  # its own books, its own worker
    assert lines[1].split() == ["parent", "True", "51", "51"]
    files = list(tmp_path.glob("spans.*"))
    import json

    ids = [json.loads(ln)["id"] for f in files for ln in f.read_text().splitlines()]
    assert len(ids) == 51 + 50  # the parent's 51, the child's 50: nothing sent twice
    assert len(set(ids)) == len(ids), "parent and child produced the same span ids"
