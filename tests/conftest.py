"""Shared fixtures: a clean tracer per test and a real OTLP receiver process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tracer
from tracer import _core

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_tracer():
    """Every test starts with recording off, no exporter, an empty buffer; restored after."""
    previous = tracer.configure(enabled=False, debug=False, exporter="none")
    _core.take_pending()
    _core.STATE.captures = ()
    _core.STATE.last_window = None
    dropped, warned = _core.STATE.dropped, _core.STATE.warned_drop
    yield
    tracer.configure(**previous)
    _core.take_pending()
    _core.STATE.captures = ()
    _core.STATE.dropped, _core.STATE.warned_drop = dropped, warned


class OtlpSink:
    """Handle on the receiver process: its ports and the OTLP JSON lines it wrote."""

    def __init__(self, directory: Path, grpc_port: int, http_port: int):
        self.directory = directory
        self.grpc_endpoint = f"http://127.0.0.1:{grpc_port}"
        self.http_endpoint = f"http://127.0.0.1:{http_port}/v1/traces"
        self.path = directory / "traces.jsonl"

    def spans(self) -> list[dict]:
        out = []
        for line in self.path.read_text().splitlines():
            for rs in json.loads(line).get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    out.extend(ss.get("spans", []))
        return out

    def wait_for(self, n: int, timeout_s: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            spans = self.spans()
            if len(spans) >= n:
                return spans
            time.sleep(0.05)
        raise AssertionError(f"the OTLP receiver got {len(self.spans())} spans, expected {n}")


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


def run_python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout importable (import-time behaviour)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("QEFF_", "OTEL_", "SPECTRACE_"))}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True,
                          timeout=timeout)
