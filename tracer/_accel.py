"""Which implementation of the span hot path runs: the C accelerator or the pure-Python fallback.

``tracer/_speedups.c`` (built by ``pip install`` where a C compiler is found; the extension is
optional, so an install without one still works) makes ``with tracer.span(...)`` C calls. The
pure-Python path in :mod:`tracer._core` is the fallback and also the one implementation of every
rare case, which the C code calls back. The choice is made once, at import, because it decides
the base classes of :class:`tracer._record.Span` and :class:`tracer._state._State`:

* ``SPECTRACE_PURE_PYTHON=1`` (1/true/yes/on) forces the fallback;
* otherwise the compiled module is used when it imports, the fallback when it does not (not
  built, or built for another Python).
"""

from __future__ import annotations

import os
import time
import types

from ._config import PURE_PYTHON_VAR, parse_switch

speedups = None
if not parse_switch(PURE_PYTHON_VAR, os.environ.get(PURE_PYTHON_VAR)):
    try:
        from . import _speedups as speedups
    except ImportError:
        speedups = None

#: Whether the C hot path is in use in this process.
ACCELERATED: bool = speedups is not None


def wire(core) -> bool:
    """Give the C path what it shares with :mod:`tracer._core` (the objects it reads and the
    Python code of every rare case) and make it follow that module's clock; returns whether C
    reads the clock itself."""
    speedups.install({
        "state": core.STATE, "current": core._current, "unsampled": core.UNSAMPLED, "noop": core.NOOP,
        "span_type": core.ActiveSpan, "mirrored_type": core.MirroredSpan, "empty_io": core.EMPTY_IO,
        "empty_transfers": core.EMPTY_TRANSFERS, "enter_py": core.ActiveSpan._enter_py,
        "exit_py": core.ActiveSpan._exit_py, "finish_py": core.ActiveSpan._finish, "roll_up": core._roll_up,
        "count_drop": core._count_drop, "internal_error": core._internal_error,
        "thread_pair": core._thread_pair, "perf_counter_ns": core.perf_counter_ns})
    core.__class__ = _ClockFollowingModule
    return use_clock(core.perf_counter_ns)


def use_clock(fn) -> bool:
    """Make ``fn`` the C path's clock. Where it is ``time.perf_counter_ns`` and that is
    ``CLOCK_MONOTONIC`` (Linux), C reads ``CLOCK_MONOTONIC`` itself (no Python call; one clock
    with Python's, tests/tracer/test_speedups.py); anything else (another OS, a test's fake
    clock) C calls."""
    native = (fn is time.perf_counter_ns
              and time.get_clock_info("perf_counter").implementation == "clock_gettime(CLOCK_MONOTONIC)")
    return speedups.set_clock(fn, native)


class _ClockFollowingModule(types.ModuleType):
    """:mod:`tracer._core` while the C path is used: assigning its ``perf_counter_ns`` (a test's
    fake clock, tests/tracer/test_diff.py) switches the C path's clock with the Python path's."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "perf_counter_ns":
            use_clock(value)
