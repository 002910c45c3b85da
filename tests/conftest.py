"""Shared fixtures: a clean tracer per test and a real OTLP receiver process."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from spectrace import tracer
from spectrace.tracer import _core

from helpers import ROOT, OtlpSink


@pytest.fixture(scope="session", autouse=True)
def _quiet_exit():
    """The suite's own process configures many failing exporters on purpose; its exit tally line
    would land after pytest's summary line, where CI reads the result. Tests of that line run
    spectrace in child processes."""
    yield
    from spectrace.tracer import _export

    tracer.shutdown(timeout_s=1)
    _export.EXPORT.ever_exported = False


@pytest.fixture(autouse=True)
def _clean_tracer():
    """Every test starts with recording off, no exporter, an empty buffer; restored after."""
    previous = tracer.configure(enabled=False, debug=False, exporter="none")  # stops (and counts) any buffer
    _core.STATE.captures = ()
    _core.STATE.last_window = None
    _core._last_window.set(None)
    _core.STATE.warned_drop = False  # each test may see the buffer-full line once; counters stay
    yield
    tracer.configure(**previous)
    _core.STATE.captures = ()


@pytest.fixture
def otlp_sink(tmp_path):
    """A real OTLP receiver process (gRPC and HTTP) on loopback, stopped after the test."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "otlp_sink.py"), str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ports = tmp_path / "ports.json"
    deadline = time.monotonic() + 30
    while not ports.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"OTLP receiver did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    p = json.loads(ports.read_text())
    yield OtlpSink(tmp_path, p["grpc"], p["http"])
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
