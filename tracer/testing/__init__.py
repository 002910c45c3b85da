"""Assertions over spectrace traces: in memory, in ``.pftrace`` files and in OTLP JSON.

The sentences of an investigation ("tokenization runs inside the timed window",
"``prefill_queries`` moves on every chunk") become one-line test assertions::

    def test_spec_window(spectrace_trace):          # the pytest fixture (alias: captrace)
        run_my_engine(prompt)
        window = spectrace_trace.one("ttft.spec_device")
        spectrace_trace.one("tokenize", stage="bootstrap").assert_within(window)
        for chunk in window.all("prefill.chunk"):
            chunk.assert_bytes("prefill_queries", at_least=1)

Outside pytest: ``with capture_trace() as trace:``; for files: ``Trace.load(path)``.
"""

from ._capture import capture_trace
from ._view import Io, SpanLookupError, SpanView, TransferView
from .trace import Trace

__all__ = ["Io", "SpanLookupError", "SpanView", "Trace", "TransferView", "capture_trace"]
