"""Device time and Perfetto tracks per device: a real ``jax.profiler`` run sharded over CPU devices
0-1 plus a program on device 3 (``device_time_devices_check.py``, in a subprocess with 4 forced
host devices: this process's JAX has one), the one-device run of this process (output as before),
and GPU-shaped planes (one ``/device:GPU:N`` plane per device)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import profiled_run
from spectrace import tracer
from spectrace.tracer import device_time, xplane
from spectrace.tracer._perfetto_read import read_pftrace
from spectrace.tracer.perfetto import write_pftrace

CHECK = Path(__file__).with_name("device_time_devices_check.py")
RAN = ["CPU:0", "CPU:1", "CPU:3"]  # device 2 ran nothing


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(CHECK), str(tmp_path_factory.mktemp("four"))], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_every_row_splits_over_exactly_the_devices_that_ran(four):
    assert four["alignment"] >= 3  # the spans were paired with their annotations: times are measured
    window, sharded, single = four["rows"]
    for r in four["rows"]:
        assert list(r["devices"]) == RAN, r["name"]
        for key, d in r["devices"].items():
            assert 0 <= d["device_busy_ms"] <= r["ms"] + 1e-9, (r["name"], key)
            assert d["device_busy_ms"] + d["device_idle_ms"] == pytest.approx(r["ms"])
            assert d["device_busy_ms"] <= r["device_busy_ms"] + 1e-9, (r["name"], key)  # the union holds each
        assert sum(d["device_ops"] for d in r["devices"].values()) == r["device_ops"]
    assert [sharded["devices"][k]["device_ops"] > 0 for k in RAN] == [True, True, False]
    assert [single["devices"][k]["device_ops"] > 0 for k in RAN] == [False, False, True]
    assert single["devices"]["CPU:3"]["device_busy_ms"] == pytest.approx(single["device_busy_ms"])
    assert window["devices"]["CPU:3"]["device_ops"] == single["devices"]["CPU:3"]["device_ops"]


def test_the_printed_table_and_report_show_each_device(four):
    lines = four["text"].splitlines()
    assert "then each device alone" in lines[0]
    assert [ln.split()[1] for ln in lines if ln.strip().startswith("- ")] == RAN * 3
    assert all(f">{k}</span>" in four["html"] for k in RAN) and "one row per device" in four["html"]
    sharded = four["chunk_args"][1]  # the span slice in the trace carries each device's busy time
    assert sharded["device.CPU:3.busy_ms"] == 0 and sharded["device.CPU:0.busy_ms"] > 0


def test_the_trace_has_one_xla_op_track_per_device(four):
    tracks = four["tracks"]
    per_device = {}
    for name, slices in tracks.items():
        m = re.fullmatch(r"CPU device (\d+) \(XLA ops\)(?: \(\d+\))?", name)
        if m:
            per_device.setdefault(int(m.group(1)), []).extend(slices)
    assert sorted(per_device) == [0, 1, 3]
    for n, slices in per_device.items():
        ops = [(name, ordinal) for name, hlo_op, ordinal in slices if hlo_op is not None]
        assert ops and {o for _, o in ops} == {n}
        assert len(slices) > len(ops)  # what ran inside the ops (a collective's Rendezvous) came along
    left = [s for name, slices in tracks.items() if name.startswith("tf_XLA") for s in slices if s[1] is not None]
    assert left == []  # no XLA op stayed on a thread line
    assert any(name.startswith("tf_XLAPjRtCpuClient") for name in tracks)  # the launches did


def test_one_device_gives_the_output_of_before(tmp_path):
    def work(step):
        with tracer.window("ttft.baseline"), tracer.span("prefill.chunk", **{"chunk.index": 0}):
            step()

    rec, prof = profiled_run(tmp_path / "prof", work)
    summary = write_pftrace(tmp_path / "t.pftrace", rec.spans, xplanes=prof.paths)
    table = device_time.rows(rec.spans, summary["device_time"])
    assert table and all("devices" not in r for r in table) and table[-1]["device_ops"] > 0
    text = device_time.format_rows(table)
    assert "each device" not in text and len(text.split("\n\n")[0].splitlines()) == 2 + len(table)
    trace = read_pftrace(tmp_path / "t.pftrace")
    names = {t.name for t in trace.tracks.values()}
    assert not any(n and n.startswith("CPU device") for n in names)
    hlo = [s for s in trace.slices if "hlo_op" in s.args]
    assert hlo and all(trace.tracks[s.track].name.startswith("tf_XLA") for s in hlo)
    assert not any(k.startswith("device.CPU") for s in trace.slices for k in s.args)


def test_gpu_planes_are_devices_and_processes_of_their_own(tmp_path):
    t0 = 1_700_000_000_000_000_000
    planes = [xplane.Plane(f"/device:GPU:{n}", {}, [("Stream #7", [("gemm", 100 + n * 50, 100, {})])])
              for n in range(2)]
    space = xplane.XSpace("x.xplane.pb", t0, 0, "h", 1, {}, planes)
    d = device_time.device_ops([space]).inside(t0, t0 + 1000)
    assert d.busy_ns == 150 and list(d.devices) == ["GPU:0", "GPU:1"]
    assert [(x.busy_ns, x.ops, x.idle_ns) for x in d.devices.values()] == [(100, 1, 900), (100, 1, 900)]
    write_pftrace(tmp_path / "g.pftrace", [], xplanes=[space])
    trace = read_pftrace(tmp_path / "g.pftrace")
    procs = {t.pid: t.name for t in trace.tracks.values() if t.pid is not None and t.tid is None and t.parent is None}
    kernels = [s for s in trace.slices if s.name == "gemm"]
    assert {procs[trace.process_of(s.track)] for s in kernels} == {"XPlane /device:GPU:0 (h pid 1)",
                                                                    "XPlane /device:GPU:1 (h pid 1)"}
