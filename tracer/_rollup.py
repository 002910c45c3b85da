"""What a finished span hands on: its IO totals to its parent, and, for a window, itself to
``io_metrics()`` (per context), the metrics worker and the debug lines.

Called from the span's ``__exit__`` (:mod:`tracer._core`); one concept, its own module.
"""

from __future__ import annotations

import contextvars

from ._record import EMPTY_IO, IoTotals, Span
from ._state import STATE

def _roll_up(s: Span, parent: Span) -> None:
    if parent.thread_id == s.thread_id:
        _merge_io(parent, s.io)
    else:  # a child on another thread: its parent may be merging its own children right now
        with STATE.lock:
            _merge_io(parent, s.io)


def _end_window(s: Span) -> None:
    STATE.last_window = s
    _last_window.set(s)
    q = STATE.windows_out
    if q is not None:
        q.append(s)  # the metrics worker reads windows off the hot path
    if STATE.debug:
        from ._debug import print_window  # imported lazily: only with QEFF_SPEC_DEBUG on

        print_window(s)


# The last window finished in *this* context (thread or asyncio task): io_metrics() reads it.
_last_window: contextvars.ContextVar[Span | None] = contextvars.ContextVar("spectrace_last_window",
                                                                              default=None)


def _merge_io(parent: Span, src) -> None:
    into = parent.io
    if into is EMPTY_IO:
        into = parent.io = {}
    for cat, tot in src.items():
        mine = into.get(cat)
        if mine is None:
            mine = into[cat] = IoTotals()
        mine.add(tot)


