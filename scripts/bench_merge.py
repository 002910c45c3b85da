"""Benchmark: merge an XPlane of >= 100k events into a spectrace trace (goal: <= 5 s).

By default the XPlane is synthesized (a GPU-like device plane with kernel streams, a host
plane with XLA op threads and the mirrored ``prefill.chunk`` annotations of real tracer
spans), serialized through jaxlib's own ``ProfileData.text_proto_to_serialized_xspace`` so
it is exactly what ``read_xplane`` sees from ``jax.profiler``. ``--capture N`` instead
profiles N calls of a tiny jitted function on this machine.

    python scripts/bench_merge.py [--events 120000] [--capture N] [--json]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time


from spectrace import tracer  # noqa: E402
from spectrace.tracer import clock, xplane  # noqa: E402
from spectrace.tracer.merge import merge  # noqa: E402
from spectrace.tracer.perfetto import export_chrome_json, write_pftrace  # noqa: E402

CHUNKS = 16


def record_spans():
    """A window of CHUNKS prefill chunks with transfers, through the real tracer."""
    tracer.configure(enabled=True, exporter="none")
    with tracer.capture() as rec:
        with tracer.window("ttft.baseline"):
            for i in range(CHUNKS):
                with tracer.span("prefill.chunk", engine="base", **{"chunk.index": i}):
                    with tracer.transfer("past_key.0", "d2h", 4096):
                        time.sleep(0.0002)
    return rec.spans


def synth_xspace(path: str, n_events: int, spans) -> None:
    """Write an XSpace with ``n_events`` events whose annotations mirror ``spans``."""
    from jax.profiler import ProfileData

    chunks = sorted((s for s in spans if s.name == "prefill.chunk"), key=lambda s: s.start_ns)
    t0 = clock.to_epoch_ns(chunks[0].start_ns) - 1_000_000  # profile started 1 ms earlier
    span_ns = clock.to_epoch_ns(chunks[-1].end_ns) - t0
    out = []
    names = [f"fusion.{i}" for i in range(64)]
    n_dev = n_events * 3 // 4
    n_host = n_events - n_dev
    # Device plane: 4 streams of back-to-back kernels.
    out.append('planes { id: 1 name: "/device:GPU:0"')
    for stream in range(4):
        k = n_dev // 4
        step = max(1, span_ns * 1000 // k)  # ps
        out += _line(stream + 7, stream, f"Stream #{stream + 7}", names, k, step, step * 3 // 4,
                     lambda i: f"int64_value: {i // 64}")
    out += [f'event_metadata {{ key: {i + 1} value {{ id: {i + 1} name: "{n}" }} }}' for i, n in enumerate(names)]
    out.append('stat_metadata { key: 1 value { id: 1 name: "hlo_op" } } '
               'stat_metadata { key: 2 value { id: 2 name: "run_id" } } }')
    # Host plane: the mirrored annotations plus XLA op events on two threads.
    out.append('planes { id: 2 name: "/host:CPU" stats { metadata_id: 3 int64_value: %d }' % os.getpid())
    out.append('lines { id: 1 display_id: 1 name: "python" timestamp_ns: 0')
    for s in chunks:
        a, b = clock.to_epoch_ns(s.start_ns) - t0, clock.to_epoch_ns(s.end_ns) - t0
        out.append(f"events {{ metadata_id: 100 offset_ps: {(a - 1000) * 1000} duration_ps: {(b - a + 2000) * 1000} }}")
    out.append("}")
    for th in range(2):
        k = n_host // 2
        step = max(1, span_ns * 1000 // k)
        out += _line(th + 2, th + 2, f"tf_XLAPjRtCpuClient/{th}", names, k, step, step // 2,
                     lambda i: 'str_value: "thunk.cc"')
    out += [f'event_metadata {{ key: {i + 1} value {{ id: {i + 1} name: "{n}" }} }}' for i, n in enumerate(names)]
    out.append('event_metadata { key: 100 value { id: 100 name: "prefill.chunk" } }')
    out.append('stat_metadata { key: 1 value { id: 1 name: "hlo_op" } } '
               'stat_metadata { key: 2 value { id: 2 name: "_src" } } '
               'stat_metadata { key: 3 value { id: 3 name: "process_id" } } }')
    out.append(f'planes {{ id: 3 name: "Task Environment" stats {{ metadata_id: 1 uint64_value: {t0} }} '
               'stat_metadata { key: 1 value { id: 1 name: "profile_start_time" } } }')
    with open(path, "wb") as f:
        f.write(ProfileData.text_proto_to_serialized_xspace("\n".join(out)))


def _line(line_id: int, display_id: int, name: str, names: list[str], k: int, step: int, duration: int,
          stat2) -> list[str]:
    """One XPlane line of ``k`` back-to-back events, as text-proto lines; ``stat2(i)`` is stat 2's value."""
    out = [f'lines {{ id: {line_id} display_id: {display_id} name: "{name}" timestamp_ns: 0']
    for i in range(k):
        out.append(f"events {{ metadata_id: {i % 64 + 1} offset_ps: {i * step} duration_ps: {duration} "
                   f"stats {{ metadata_id: 1 str_value: \"{names[i % 64]}\" }} "
                   f"stats {{ metadata_id: 2 {stat2(i)} }} }}")
    out.append("}")
    return out


def capture_xspace(logdir: str, calls: int):
    """Profile ``calls`` tiny jitted calls inside tracer spans; returns (spans, xplane paths)."""
    import jax
    import jax.numpy as jnp

    tracer.configure(enabled=True, exporter="none")
    f = jax.jit(lambda x: x * 2 + 1)
    x = jnp.ones(8)
    f(x).block_until_ready()
    with xplane.profile(logdir) as prof, tracer.capture() as rec:
        per = max(1, calls // CHUNKS)
        for i in range(CHUNKS):
            with tracer.span("prefill.chunk", engine="base", **{"chunk.index": i}):
                for _ in range(per):
                    f(x).block_until_ready()
    return rec.spans, prof.paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=120_000, help="synthesized XPlane events")
    ap.add_argument("--capture", type=int, default=0, help="profile N jitted calls instead")
    ap.add_argument("--json", action="store_true", help="also time the Chrome JSON export")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.capture:
            spans, paths = capture_xspace(os.path.join(tmp, "prof"), args.capture)
        else:
            spans = record_spans()
            paths = [os.path.join(tmp, f"{socket.gethostname()}.xplane.pb")]
            synth_xspace(paths[0], args.events, spans)
        base = os.path.join(tmp, "trace.pftrace")
        write_pftrace(base, spans)
        n_events = sum(xplane.read_xplane(p).n_events for p in paths)
        xsize = sum(os.path.getsize(p) for p in paths)
        out = os.path.join(tmp, "merged.pftrace")
        t = time.perf_counter()
        alignment = merge(base, paths, out)
        dt = time.perf_counter() - t
        size = os.path.getsize(out)
        print(f"xplane: {n_events} events, {xsize / 1e6:.1f} MB in {len(paths)} file(s)")
        print(f"merge: {dt:.2f} s, trace {size / 1e6:.1f} MB ({size / max(n_events, 1):.0f} B/event), "
              f"alignment median {alignment['median_us']} us max {alignment['max_us']} us "
              f"({alignment['pairs']} pairs)")
        if args.json:
            t = time.perf_counter()
            n = export_chrome_json(out, os.path.join(tmp, "trace.json"))
            print(f"chrome json: {time.perf_counter() - t:.2f} s, {n} events, "
                  f"{os.path.getsize(os.path.join(tmp, 'trace.json')) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
