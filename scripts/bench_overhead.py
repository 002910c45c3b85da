"""What one span costs: spectrace vs nullcontext, the OpenTelemetry SDK and jax's TraceAnnotation.

Run by hand (not a CI test): ``python scripts/bench_overhead.py [--n 200000] [--repeats 7]``.
All variants run in one process, interleaved per repeat, and the best repeat of each is
reported, so the ratios are taken side by side on the same (noisy, shared) machine. The
pure-Python fallback (``SPECTRACE_PURE_PYTHON=1``) is a second copy of the tracer package loaded
next to the accelerated one, so both paths are timed in the same process too ("[pure Python]").

Figures (2-core x86_64, CPython 3.11.7, n=100000, best of 7; docs/overhead.md has the table and
the reasons): enabled span 1358 ns (0.076x SDK) before issue 19's hot-path work, ~1000 ns on
the pure-Python path after it, ~300 ns (0.02x) with the C path (tracer/_speedups.c), 221-236 ns
(0.014x; 0.94-0.95x TraceAnnotation with no trace active) once the C path's own allocations
were kept off the allocator (bound methods, span objects, their dealloc);
TraceAnnotation ~235-250 ns with no trace active (it records nothing then), ~355 ns while tracing.
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


def _loops(tr) -> dict:
    """The span loops over one copy of the tracer (accelerated, or the pure-Python fallback)."""

    def span_noattrs(n):
        sp = tr.span
        for _ in range(n):
            with sp("prefill.chunk"):
                pass

    def span(n):
        sp = tr.span
        for i in range(n):
            with sp("prefill.chunk", engine="spec", index=i):
                pass

    def span_transfer(n):
        sp, rt = tr.span, tr.record_transfer
        for i in range(n):
            with sp("prefill.chunk", engine="spec", index=i):
                rt("prefill_queries", "d2h", 4096, ns=1000)

    def request(n):
        """A request: one root span over 9 chunk spans (per span: n counts every span)."""
        sp = tr.span
        for _ in range(n // 10):
            with sp("text_completion m", model="m"):
                for i in range(9):
                    with sp("prefill.chunk", engine="spec", index=i):
                        pass

    return {"noattrs": span_noattrs, "span": span, "transfer": span_transfer, "request": request}


def _load_pure_tracer():
    """A second copy of the tracer package, on its pure-Python path, next to the accelerated one."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    folder = Path(tracer.__file__).parent
    spec = importlib.util.spec_from_file_location("_spectrace_pure_tracer", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    pure = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pure
    before = os.environ.get("SPECTRACE_PURE_PYTHON")
    os.environ["SPECTRACE_PURE_PYTHON"] = "1"  # read once, at this copy's import (tracer/_accel.py)
    try:
        spec.loader.exec_module(pure)
    finally:
        if before is None:
            del os.environ["SPECTRACE_PURE_PYTHON"]
        else:
            os.environ["SPECTRACE_PURE_PYTHON"] = before
    assert not pure._accel.ACCELERATED
    return pure


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
    from spectrace.tracer import _accel

    pure = _load_pure_tracer()
    for tr in (tracer, pure):
        tr.configure(max_spans=10 * args.n, exporter="none", enabled=False)
    loop_otel = _make_otel()
    loop_jax, jax = _make_jax()

    def disabled(tr, f):
        def run(n):
            tr.configure(enabled=False)
            f(n)
        return run

    def enabled(tr, f):
        def run(n):
            tr.configure(enabled=True)
            f(n)
            tr.configure(enabled=False)
        return run

    def with_metrics(tr, f):
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        def run(n):
            tr.configure(enabled=True, metrics=[InMemoryMetricReader()])
            f(n)
            tr.configure(enabled=False, metrics="none")
        return run

    def unsampled(tr, f):
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        def run(n):
            tr.configure(enabled=True, sampler=ALWAYS_OFF)
            f(n)
            tr.configure(enabled=False, sampler=None)
        return run

    c, py = _loops(tracer), _loops(pure)
    label = "C" if _accel.ACCELERATED else "pure Python: the C path did not import"
    variants = {
        "contextlib.nullcontext()": _loop_null,
        f"tracer.span disabled (no attributes) [{label}]": disabled(tracer, c["noattrs"]),
        f"tracer.span disabled (2 attributes) [{label}]": disabled(tracer, c["span"]),
        "tracer.span disabled (2 attributes) [pure Python]": disabled(pure, py["span"]),
        f"tracer.span enabled (2 attributes) [{label}]": enabled(tracer, c["span"]),
        "tracer.span enabled (2 attributes) [pure Python]": enabled(pure, py["span"]),
        f"tracer.span enabled + 1 transfer [{label}]": enabled(tracer, c["transfer"]),
        "tracer.span enabled + 1 transfer [pure Python]": enabled(pure, py["transfer"]),
        f"tracer.span enabled, metrics on [{label}]": with_metrics(tracer, c["span"]),
        f"request of 10 spans, disabled [{label}]": disabled(tracer, c["request"]),
        f"request of 10 spans, sampled out [{label}]": unsampled(tracer, c["request"]),
        f"request of 10 spans, recorded [{label}]": enabled(tracer, c["request"]),
        "request of 10 spans, recorded [pure Python]": enabled(pure, py["request"]),
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
    ann = (best.get("jax.profiler.TraceAnnotation (no trace active)", float("nan")), jax_active)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}, "
          f"n={args.n}, best of {args.repeats}")
    w = max(len(k) for k in best)
    print(f"| {'variant':<{w}} | ns/span | × nullcontext | × OTel SDK | × TraceAnnotation (no trace / trace) |")
    print(f"|{'-' * (w + 2)}|--------:|--------------:|-----------:|------------------------------------:|")
    for name, ns in best.items():
        print(f"| {name:<{w}} | {ns:>7.0f} | {ns / null:>13.2f} | {ns / otel:>10.3f} | "
              f"{ns / ann[0]:>16.2f} / {ns / ann[1]:<17.2f} |")


if __name__ == "__main__":
    main()
