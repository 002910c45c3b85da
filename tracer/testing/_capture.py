"""Recording on for one block, every finished span kept in memory, settings put back after.

The pytest fixture is a thin skin over :func:`capture_trace` (JAX profiler's habit: one core,
several entry points), so scripts and other test runners get the same behaviour.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from .trace import Trace


@contextlib.contextmanager
def capture_trace(*, max_spans: int | None = None) -> Iterator[Trace]:
    """``with capture_trace() as trace:`` records every span finished in the block.

    Turns recording on (``tracer.configure(enabled=True)``) and restores every setting the
    block changed when it ends, also when it raises. The yielded :class:`Trace` is live:
    each query reads the spans finished so far.
    """
    from spectrace import tracer

    previous = tracer.configure(enabled=True)
    try:
        with tracer.capture(max_spans=max_spans) as recording:
            yield Trace.live(recording)
    finally:
        _restore(tracer, previous)


def _restore(tracer, previous: dict) -> None:
    # Only settings that differ are passed back: re-applying an unchanged exporter would
    # restart the export pipeline for nothing.
    current = tracer.configure()
    changed = {k: v for k, v in previous.items() if k in current and current[k] is not v and current[k] != v}
    if changed:
        tracer.configure(**changed)
