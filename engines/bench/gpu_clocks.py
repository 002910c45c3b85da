"""The GPU's SM clock, power and power-cap flag while a benchmark runs: the kernels' difference or the clocks'?

A GPU at its power cap (700 W on an H100 SXM or H200) lowers its clocks for every kernel. Two
variants of a pipeline can then differ by the power they draw rather than the work they do: a
kernel that moves fewer bytes but keeps the tensor cores busier may save nothing (session 22's
SwiGLU epilogue, docs/performance.md). :class:`Sampler` runs ``nvidia-smi`` beside the benchmark,
every ``period_ms``, into a file; :func:`summarize` averages the samples that fall inside a
variant's request windows (wall-clock ``time.time()`` pairs), so a side-by-side table can say
which variant ran at lower clocks. ``scripts/bench_variants.py`` prints it under its ratios;
``scripts/probe_mlp_power.py`` per MLP form.

Without ``nvidia-smi`` (the CPU, CI) the sampler records nothing and :func:`summarize` returns None.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time


@dataclasses.dataclass(frozen=True)
class Sample:
    t: float          # unix time (s)
    sm_mhz: float
    watts: float      # instant power where the driver has it, else its one-second average
    capped: bool      # the software power cap is holding the clocks down
    celsius: float


#: Seconds a field probe may take before nvidia-smi counts as hung.
PROBE_TIMEOUT_S = 30.0


def _field(smi: str, *names: str) -> str | None:
    """The first of ``names`` this driver's nvidia-smi can query (``power.draw.instant`` needs
    driver 535 or later; older ones say ``clocks_throttle_reasons`` for ``clocks_event_reasons``),
    else the last; None when nvidia-smi hangs (the benchmark then goes on without samples)."""
    for name in names:
        try:
            if not subprocess.run([smi, f"--query-gpu={name}", "--format=csv"], capture_output=True,
                                  timeout=PROBE_TIMEOUT_S).returncode:
                return name
        except subprocess.TimeoutExpired:
            return None
    return names[-1]


def _popen_interruptible(argv: list[str], **kwargs) -> subprocess.Popen:
    """Popen whose child can be interrupted. A benchmark started in the background (``cmd &``)
    ignores SIGINT and a child inherits an ignored signal, so nvidia-smi would neither stop on
    SIGINT nor flush. A handled signal is reset at exec, so SIGINT is handled for the moment of
    the start (main thread only; a ``preexec_fn`` would fork a multithreaded JAX process)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        return subprocess.Popen(argv, **kwargs)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(argv, **kwargs)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class Sampler:
    """``nvidia-smi`` sampling GPU ``gpu`` every ``period_ms`` from :meth:`start` to :meth:`stop`."""

    def __init__(self, gpu: int = 0, period_ms: int = 20):
        self.gpu, self.period_ms = gpu, period_ms
        self._proc: subprocess.Popen | None = None
        self._path: str | None = None

    def start(self) -> Sampler:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return self
        power = _field(smi, "power.draw.instant", "power.draw")
        cap = power and _field(smi, "clocks_event_reasons.sw_power_cap", "clocks_throttle_reasons.sw_power_cap")
        if cap is None:
            return self
        fd, self._path = tempfile.mkstemp(prefix="spectrace_gpu_clocks_", suffix=".csv")
        os.close(fd)
        self._proc = _popen_interruptible(
            [smi, f"--id={self.gpu}", f"--query-gpu=timestamp,clocks.sm,{power},{cap},temperature.gpu",
             "--format=csv,noheader,nounits", "-lms", str(self.period_ms), "-f", self._path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def stop(self) -> list[Sample]:
        """The samples so far, and the sampler stopped (an interrupted nvidia-smi flushes its file)."""
        if self._proc is None:
            return []
        time.sleep(2 * self.period_ms / 1e3)  # the last window's closing sample
        for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            self._proc.send_signal(stop)
            try:
                self._proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        self._proc = None
        with open(self._path) as f:
            text = f.read()
        os.unlink(self._path)
        return parse(text)

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self.stop()


def parse(text: str) -> list[Sample]:
    """nvidia-smi's ``timestamp, SM MHz, W, Active|Not Active, deg C`` lines; others (``[N/A]``) skipped."""
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            t = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            rows.append(Sample(t, float(parts[1]), float(parts[2]), parts[3].lower() == "active", float(parts[4])))
        except (ValueError, IndexError):
            continue
    return rows


def summarize(samples: list[Sample], windows: list[tuple[float, float]]) -> dict | None:
    """Mean SM clock (and its minimum), mean power, the share of samples power-capped and the
    mean temperature over the samples inside any of ``windows`` ([start, end] unix times), with
    their count; None when none fall inside."""
    inside = [s for s in samples if any(a <= s.t <= b for a, b in windows)]
    if not inside:
        return None
    return {"sm_mhz": statistics.mean(s.sm_mhz for s in inside), "sm_mhz_min": min(s.sm_mhz for s in inside),
            "watts": statistics.mean(s.watts for s in inside),
            "capped": sum(s.capped for s in inside) / len(inside),
            "celsius": statistics.mean(s.celsius for s in inside), "n": len(inside)}


HEADER = f"{'SM MHz':>8} {'min':>6} {'W':>6} {'capped':>7} {'deg C':>6} {'samples':>8}"


def row(summary: dict | None) -> str:
    """:data:`HEADER`'s columns for one :func:`summarize` result (blank when None)."""
    if summary is None:
        return f"{'(no samples)':>45}"
    s = summary
    return (f"{s['sm_mhz']:8.0f} {s['sm_mhz_min']:6.0f} {s['watts']:6.0f} {s['capped']:7.2f} "
            f"{s['celsius']:6.1f} {s['n']:8d}")
