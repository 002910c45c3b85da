"""Run by tests/tracer/test_device_time_devices.py in a subprocess with 4 forced CPU devices (the
parent's JAX already has 1): a real ``jax.profiler`` trace of a program sharded over devices 0-1
and one on device 3, written and read back; prints JSON. Argument: a scratch directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from spectrace import tracer
from spectrace.tracer import ttft, xplane
from spectrace.tracer._perfetto_read import read_pftrace
from spectrace.tracer.device_time import format_rows, rows
from spectrace.tracer.perfetto import write_pftrace
from spectrace.tracer.report import render_report


def main(out: Path) -> dict:
    devs = jax.devices()
    assert len(devs) == 4, devs
    f = jax.jit(lambda x: jnp.tanh(x @ x.T) + 1.0)
    # (256, 256) f32 rows split over devices 0 and 1 (the x @ x.T needs an all-gather), and a copy on 3.
    sharded = jax.device_put(jnp.ones((256, 256), jnp.float32), NamedSharding(Mesh(np.array(devs[:2]), ("x",)),
                                                                             PartitionSpec("x", None)))
    single = jax.device_put(jnp.ones((256, 256), jnp.float32), devs[3])
    f(sharded).block_until_ready(), f(single).block_until_ready()  # compiled outside the profile
    previous = tracer.configure(enabled=True)
    try:
        with xplane.profile(out / "prof") as prof, tracer.capture() as rec, tracer.window("ttft.baseline"):
            with tracer.span("prefill.chunk", **{"chunk.index": 0}):
                for _ in range(3):
                    f(sharded).block_until_ready()
            with tracer.span("prefill.chunk", **{"chunk.index": 1}):
                for _ in range(3):
                    f(single).block_until_ready()
    finally:
        tracer.configure(**previous)
    summary = write_pftrace(out / "t.pftrace", rec.spans, xplanes=prof.paths)
    table = rows(rec.spans, summary["device_time"])
    ttft.check({"device_time": table}, "rows")  # what ttft.json stores passes its own check
    trace = read_pftrace(out / "t.pftrace")
    tracks: dict[str, list] = {}  # track name -> [(slice name, device_ordinal or None)]
    for s in trace.slices:
        tracks.setdefault(trace.tracks[s.track].name, []).append((s.name, s.args.get("hlo_op"),
                                                                   s.args.get("device_ordinal")))
    chunk_args = [s.args for s in trace.slices if s.name == "prefill.chunk"]
    return {"rows": table, "text": format_rows(table), "alignment": summary["pairs"],
            "html": render_report({"device_time": table}), "tracks": tracks,
            "chunk_args": [{k: v for k, v in a.items() if k.startswith("device.")} for a in chunk_args]}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
