"""``tracer.capture()``: an in-memory copy of every span finished inside a block.

The CLI and the test fixtures read their spans from here, not from the export buffer: a
capture holds what it needs for as long as it lives, and nothing else keeps spans when no
exporter is configured (memory stays flat in a long-running process).
"""

from __future__ import annotations

import sys
from time import perf_counter_ns

from ._core import STATE
from ._record import Span, Transfer


class Recording:
    """Finished spans of a :func:`capture` block, in end order (bounded like the buffer)."""

    def __init__(self, max_spans: int, since_ns: int):
        self.spans: list[Span] = []
        self.dropped = 0
        self._max = max_spans
        self._since = since_ns

    def _add(self, s: Span) -> None:
        if s.end_ns < self._since:
            return
        if len(self.spans) < self._max:
            self.spans.append(s)
        else:
            self.dropped += 1

    @property
    def transfers(self) -> list[Transfer]:
        return [t for s in self.spans for t in s.transfers]

    def __iter__(self):
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)


class capture:
    """``with tracer.capture() as rec:`` keeps every span finished inside the block in memory.

    Captures do not turn recording on; combine with ``tracer.configure(enabled=True)``.
    """

    def __init__(self, *, max_spans: int | None = None):
        self.recording = Recording(max_spans or STATE.max_spans, 0)

    def __enter__(self) -> Recording:
        self.recording._since = perf_counter_ns()
        STATE.captures = STATE.captures + (self.recording,)
        return self.recording

    def __exit__(self, exc_type, exc, tb):
        STATE.captures = tuple(c for c in STATE.captures if c is not self.recording)
        if self.recording.dropped:
            print(f"spectrace: warning: capture dropped {self.recording.dropped} spans "
                  f"(max_spans={self.recording._max})", file=sys.stderr)
        return False


