"""Helpers shared by the test modules (a module of its own: several conftest.py files exist)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def profiled_run(logdir, work, *, size: int = 128):
    """``work(step)`` under tracer recording and a real ``jax.profiler`` XPlane; ``step()`` runs one
    jitted matmul (compiled beforehand: no compilation in the profile) and returns its result.

    Returns ``(recording, profile)``; recording settings are restored even if ``work`` fails.
    """
    import jax
    import jax.numpy as jnp

    from spectrace import tracer
    from spectrace.tracer import xplane

    f = jax.jit(lambda x: jnp.tanh(x @ x) + 1.0)
    x = jnp.ones((size, size), jnp.float32)
    f(x).block_until_ready()
    previous = tracer.configure(enabled=True)
    try:
        with xplane.profile(logdir) as prof, tracer.capture() as rec:
            work(lambda: f(x).block_until_ready())
    finally:
        tracer.configure(**previous)
    return rec, prof

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


def run_python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout importable (import-time behaviour)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("QEFF_", "OTEL_", "SPECTRACE_"))}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def rel_err(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|: how parity tests against transformers references compare."""
    import numpy as np

    return float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))
