"""engines.bench.gpu_clocks: nvidia-smi's samples parsed, attributed to request windows, summarized.

No GPU here, so ``nvidia-smi`` is the conftest's stand-in (a shell script writing samples in the
real tool's CSV form); without one on PATH the sampler records nothing.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time

import pytest

from spectrace.engines.bench import gpu_clocks


def _line(t: float, mhz: int, watts: float, capped: bool) -> str:
    stamp = datetime.datetime.fromtimestamp(t).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    return f"{stamp}, {mhz}, {watts}, {'Active' if capped else 'Not Active'}, 60"


def test_samples_are_parsed_and_summarized_per_window():
    t = 1_800_000_000.0
    text = "\n".join([_line(t, 1980, 300.0, False), _line(t + 1, 1500, 700.0, True), "[N/A], [N/A], [N/A]",
                      _line(t + 2, 1700, 690.0, True), _line(t + 5, 1980, 100.0, False)])
    samples = gpu_clocks.parse(text)
    assert [s.sm_mhz for s in samples] == [1980, 1500, 1700, 1980]  # the N/A line skipped
    assert abs(samples[1].t - (t + 1)) < 1e-3 and samples[1].capped and not samples[0].capped
    s = gpu_clocks.summarize(samples, [(t + 0.5, t + 2.5)])
    assert s == {"sm_mhz": 1600, "sm_mhz_min": 1500, "watts": 695, "capped": 1.0, "celsius": 60, "n": 2}
    both = gpu_clocks.summarize(samples, [(t - 0.1, t + 0.1), (t + 4.9, t + 5.1)])
    assert both["n"] == 2 and both["capped"] == 0.0 and both["watts"] == 200
    assert gpu_clocks.summarize(samples, [(t + 10, t + 11)]) is None
    assert "(no samples)" in gpu_clocks.row(None) and "1600" in gpu_clocks.row(s)


def test_the_sampler_records_while_running(fake_nvidia_smi):
    sampler = gpu_clocks.Sampler(period_ms=20).start()
    t0 = time.time()
    time.sleep(0.4)
    t1 = time.time()
    samples = sampler.stop()
    assert len(samples) >= 5 and all(s.sm_mhz == 1755 and s.capped for s in samples[:-1])
    assert samples[-1].sm_mhz == 1005  # interrupted, so the tool could flush (not killed)
    s = gpu_clocks.summarize(samples, [(t0, t1)])
    assert s is not None and s["n"] >= 3 and s["watts"] == pytest.approx(612.5)
    assert sampler.stop() == [] and not os.path.exists(sampler._path)  # stopped once; its file is gone


def test_the_sampler_is_interrupted_under_a_parent_that_ignores_sigint(fake_nvidia_smi):
    """A benchmark started as ``cmd &`` ignores SIGINT and its children inherit that: the sampler
    still interrupts nvidia-smi (its last sample is the stand-in's interrupt sample)."""
    code = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "from spectrace.engines.bench import gpu_clocks\n"
            "s = gpu_clocks.Sampler().start(); time.sleep(0.2); print(s.stop()[-1].sm_mhz)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["1005.0"]


def test_older_drivers_field_names_are_taken(fake_nvidia_smi, monkeypatch):
    monkeypatch.setenv("FIELD_MISSING", "power.draw.instant")
    assert gpu_clocks._field("nvidia-smi", "power.draw.instant", "power.draw") == "power.draw"
    monkeypatch.setenv("FIELD_MISSING", "clocks_event_reasons")
    assert gpu_clocks._field("nvidia-smi", "clocks_event_reasons.sw_power_cap",
                             "clocks_throttle_reasons.sw_power_cap") == "clocks_throttle_reasons.sw_power_cap"


def test_a_hung_nvidia_smi_records_nothing_and_starts_no_sampler(fake_nvidia_smi, monkeypatch):
    monkeypatch.setenv("HANG", "1")
    monkeypatch.setattr(gpu_clocks, "PROBE_TIMEOUT_S", 0.3)
    sampler = gpu_clocks.Sampler().start()
    assert sampler._proc is None and sampler.stop() == []


def test_without_nvidia_smi_nothing_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with gpu_clocks.Sampler() as sampler:
        time.sleep(0.05)
    assert sampler.stop() == []
