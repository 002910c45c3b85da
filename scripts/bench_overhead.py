"""What one span costs: spectrace vs nullcontext, the OpenTelemetry SDK and jax's TraceAnnotation.

Run by hand (not a CI test): ``python scripts/bench_overhead.py [--n 200000] [--repeats 7]``.
All variants run in one process, interleaved per repeat, and the best repeat of each is
reported, so the ratios are taken side by side on the same (noisy, shared) machine.

Figures (2-core x86_64, CPython 3.11.7, n=100000, best of 7; docs/overhead.md has the table and
the reasons): enabled span 1358 ns (0.076x SDK) before issue 19's hot-path work, 976-1108 ns
(0.054-0.061x) after; the pure-Python floor (name, attrs, two clocks, a context variable) is
~600-700 ns (0.033x); TraceAnnotation, a C++ object, ~250 ns: below that floor.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time

from spectrace import tracer


def _loop_null(n):
    nc = contextlib.nullcontext
    for _ in range(n):
        with nc():
            pass


def _loop_span_noattrs(n):
    sp = tracer.span
    for _ in range(n):
        with sp("prefill.chunk"):
            pass


def _loop_span(n):
    sp = tracer.span
    for i in range(n):
        with sp("prefill.chunk", engine="spec", index=i):
            pass


def _loop_span_transfer(n):
    sp, rt = tracer.span, tracer.record_transfer
    for i in range(n):
        with sp("prefill.chunk", engine="spec", index=i):
            rt("prefill_queries", "d2h", 4096, ns=1000)


def _loop_request(n):
    """A request: one root span over 9 chunk spans (per span: n counts every span)."""
    sp = tracer.span
    for _ in range(n // 10):
        with sp("text_completion m", model="m"):
            for i in range(9):
                with sp("prefill.chunk", engine="spec", index=i):
                    pass


def _make_floor():
    """The floor of any pure-Python span with this API: name, attributes, two timestamps and a
    context variable set/reset (no ids, no thread, no parent, no books)."""
    import contextvars

    cv = contextvars.ContextVar("bench_floor", default=None)
    now = time.perf_counter_ns

    class Floor:
        __slots__ = ("name", "attributes", "start_ns", "end_ns", "_token")

        def __enter__(self):
            self._token = cv.set(self)
            self.start_ns = now()
            return self

        def __exit__(self, exc_type, exc, tb):
            self.end_ns = now()
            cv.reset(self._token)
            return False

    new = Floor.__new__

    def floor_span(name, /, **attributes):
        s = new(Floor)
        s.name = name
        s.attributes = attributes
        return s

    def _loop_floor(n):
        sp = floor_span
        for i in range(n):
            with sp("prefill.chunk", engine="spec", index=i):
                pass

    return _loop_floor


def _make_otel():
    from opentelemetry.sdk.trace import TracerProvider

    otel = TracerProvider().get_tracer("bench")  # no span processor

    def _loop_otel(n):
        start = otel.start_as_current_span
        for i in range(n):
            with start("prefill.chunk", attributes={"engine": "spec", "index": i}):
                pass

    return _loop_otel


def _make_jax():
    try:
        import jax
    except ImportError:
        return None, None
    ann = jax.profiler.TraceAnnotation

    def _loop_jax(n):
        for _ in range(n):
            with ann("prefill.chunk"):
                pass

    return _loop_jax, jax


def _time(fn, n):
    t0 = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - t0) / n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="spans per repeat (default 200000)")
    ap.add_argument("--repeats", type=int, default=7, help="repeats; the best is kept (default 7)")
    args = ap.parse_args(argv)
    tracer.configure(max_spans=10 * args.n, exporter="none")
    loop_otel = _make_otel()
    loop_jax, jax = _make_jax()

    def disabled(f):
        def run(n):
            tracer.configure(enabled=False)
            f(n)
        return run

    def enabled(f):
        def run(n):
            tracer.configure(enabled=True)
            f(n)
            tracer.configure(enabled=False)
        return run

    def with_metrics(f):
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        def run(n):
            tracer.configure(enabled=True, metrics=[InMemoryMetricReader()])
            f(n)
            tracer.configure(enabled=False, metrics="none")
        return run

    def unsampled(f):
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        def run(n):
            tracer.configure(enabled=True, sampler=ALWAYS_OFF)
            f(n)
            tracer.configure(enabled=False, sampler=None)
        return run

    variants = {
        "contextlib.nullcontext()": _loop_null,
        "tracer.span disabled (no attributes)": disabled(_loop_span_noattrs),
        "tracer.span disabled (2 attributes)": disabled(_loop_span),
        "tracer.span enabled (2 attributes)": enabled(_loop_span),
        "tracer.span enabled + 1 transfer": enabled(_loop_span_transfer),
        "tracer.span enabled, metrics on (2 attributes)": with_metrics(_loop_span),
        "request of 10 spans, disabled": disabled(_loop_request),
        "request of 10 spans, sampled out (always_off)": unsampled(_loop_request),
        "request of 10 spans, recorded": enabled(_loop_request),
        "pure-Python floor (name, attrs, 2 clocks, ctxvar)": _make_floor(),
        "OTel SDK start_as_current_span (2 attributes)": loop_otel,
    }
    if loop_jax is not None:
        variants["jax.profiler.TraceAnnotation (no trace active)"] = loop_jax
    best = {k: float("inf") for k in variants}
    jax_active = float("inf")
    for _ in range(args.repeats):
        for name, fn in variants.items():
            best[name] = min(best[name], _time(fn, args.n))
        if jax is not None:
            with tempfile.TemporaryDirectory() as d, jax.profiler.trace(d):
                jax_active = min(jax_active, _time(loop_jax, args.n // 4))
    if jax is not None:
        best["jax.profiler.TraceAnnotation (trace active)"] = jax_active

    null = best["contextlib.nullcontext()"]
    otel = best["OTel SDK start_as_current_span (2 attributes)"]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}, "
          f"n={args.n}, best of {args.repeats}")
    print(f"| {'variant':<50} | {'ns/span':>9} | {'× nullcontext':>13} | {'× OTel SDK':>10} |")
    print(f"|{'-' * 52}|{'-' * 11}|{'-' * 15}|{'-' * 12}|")
    for name, ns in best.items():
        print(f"| {name:<50} | {ns:>9.0f} | {ns / null:>13.2f} | {ns / otel:>10.3f} |")


if __name__ == "__main__":
    main()
