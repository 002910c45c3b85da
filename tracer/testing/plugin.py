"""The pytest plugin (registered as ``pytest11`` entry point ``spectrace``).

Ships inside the package, as Logfire ships ``capfire``: installing spectrace is enough for
``spectrace_trace`` to appear in ``pytest --fixtures``. When a test that uses it fails, the
captured span tree is attached to the report as a ``spectrace trace`` section.
"""

from __future__ import annotations

import pytest

from ._capture import capture_trace
from .trace import Trace

_SECTION_LINES = 120


@pytest.fixture
def spectrace_trace() -> Trace:
    """A live spectrace Trace of everything this test records.

    Recording is on for the test (``tracer.configure(enabled=True)``) and the previous settings
    come back afterwards, also when the test fails. Span ids are renumbered 1..n in start order.
    Query with ``.one(name, **attrs)`` / ``.all(...)``; assert with ``assert_within``,
    ``assert_before``, ``assert_no_overlap``, ``assert_count``, ``assert_attr``, ``assert_bytes``,
    ``assert_ms``. See ``tracer.testing``.
    """
    with capture_trace() as trace:
        yield trace


@pytest.fixture
def captrace(spectrace_trace: Trace) -> Trace:
    """Short alias of ``spectrace_trace``."""
    return spectrace_trace


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "call" and report.failed:
        trace = getattr(item, "funcargs", {}).get("spectrace_trace")
        if isinstance(trace, Trace):
            try:
                report.sections.append(("spectrace trace", trace.tree(max_lines=_SECTION_LINES)))
            except Exception as e:  # the report must never hide the real failure
                report.sections.append(("spectrace trace", f"(could not render the trace: {e!r})"))
    return report
