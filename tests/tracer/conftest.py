"""Fixtures of the tracer tests: a real OpenTelemetry collector (rotel), shared per module."""

from __future__ import annotations

import pytest

from collector import Collector


@pytest.fixture(scope="module")
def collector_process(tmp_path_factory):
    """One rotel-agent per test module (STYLE rule 11), stopped by PID at the module's end."""
    c = Collector(tmp_path_factory.mktemp("rotel"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def collector(collector_process):
    """The module's collector, cleared for this test: ``spans()``/``metrics()`` read only what
    arrived after the test started. A test that stopped or killed it gets it started again
    (same ports) for the next."""
    c = collector_process
    if not c.running:
        c.restart()
    c.clear()
    yield c
    if not c.running:
        c.restart()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used the collector shows what rotel printed (and whether it is alive)."""
    outcome = yield
    rep = outcome.get_result()
    c = getattr(item, "funcargs", {}).get("collector")
    if c is not None and rep.failed and rep.when == "call":
        rep.sections.append(("rotel collector", c.describe()))
