"""The switches: ``QEFF_SPEC_IO_TIMING``, ``QEFF_SPEC_DEBUG`` (and ``SPECTRACE_PURE_PYTHON``,
read by :mod:`tracer._accel`), and their parsing.

Names and accepted values are a contract (DESIGN.md): 1/true/yes/on turn a switch on;
0/false/no/off/empty turn it off; anything else warns once and counts as off.
``QEFF_SPEC_DEBUG=1`` implies recording, since its lines are made from the recorded spans.
"""

from __future__ import annotations

import os
import sys

TIMING_VAR = "QEFF_SPEC_IO_TIMING"
DEBUG_VAR = "QEFF_SPEC_DEBUG"
MAX_SPANS_VAR = "SPECTRACE_MAX_SPANS"
PURE_PYTHON_VAR = "SPECTRACE_PURE_PYTHON"  # on: the pure-Python span path even where the C one is built
DEFAULT_MAX_SPANS = 1_000_000

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_warned: set[tuple[str, str]] = set()


def parse_switch(name: str, value: str | None) -> bool:
    """Parse one switch value; a bad value warns once on stderr and counts as off."""
    if value is None:
        return False
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    if (name, value) not in _warned:
        _warned.add((name, value))
        print(f"spectrace: warning: {name}={value!r} is not a valid switch value "
              "(use 1/true/yes/on or 0/false/no/off); treating it as off", file=sys.stderr)
    return False


def parse_max_spans(value) -> int:
    """``max_spans`` must be a positive integer; say so with the value otherwise."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1:
        raise ValueError(f"max_spans must be a positive integer, got {value!r}")
    return n


def from_environment(environ=os.environ) -> dict:
    """``{enabled, debug, max_spans}`` as the environment sets them."""
    debug = parse_switch(DEBUG_VAR, environ.get(DEBUG_VAR))
    enabled = parse_switch(TIMING_VAR, environ.get(TIMING_VAR)) or debug
    raw = environ.get(MAX_SPANS_VAR)
    try:
        max_spans = parse_max_spans(raw) if raw else DEFAULT_MAX_SPANS
    except ValueError:
        print(f"spectrace: warning: {MAX_SPANS_VAR}={raw!r} is not a positive integer; "
              f"using {DEFAULT_MAX_SPANS}", file=sys.stderr)
        max_spans = DEFAULT_MAX_SPANS
    return {"enabled": enabled, "debug": debug, "max_spans": max_spans}
