"""Root spans meet OpenTelemetry: the caller's trace context and the sampling decision.

When a root span starts (a request, or a window with nothing above it) and export or sampling
is configured, :func:`on_root_start` runs once for it, off the per-chunk path:

* the current OpenTelemetry context (a serving framework's request span, or a W3C
  ``traceparent`` attached with :func:`use_traceparent`) becomes the root's parent, so
  spectrace's windows and chunks join the caller's trace (same trace id);
* the standard sampler (``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: ``always_on``,
  ``always_off``, ``traceidratio``, ``parentbased_*``) decides whether the request is recorded.
  An unsampled root records nothing under it: every span inside gets the shared no-op.

Trace ids are 128-bit, their low 64 bits well mixed (``traceidratio`` compares exactly those
bits), so the ratio holds over sequential recorder ids and agrees with downstream samplers.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections import OrderedDict

_MASK64 = 0xFFFF_FFFF_FFFF_FFFF


def _mix64(x: int) -> int:
    """splitmix64's finalizer: sequential ints -> well-spread 64-bit values (a bijection)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Ids:
    """Per-process salts: recorder ids -> OpenTelemetry ids (re-drawn in a forked child)."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.span_salt = random.getrandbits(64)
        self.trace_hi = random.getrandbits(64) | 1  # never an all-zero (invalid) trace id
        self.trace_salt = random.getrandbits(64)


IDS = Ids()


def otel_span_id(span_id: int) -> int:
    """The 64-bit OpenTelemetry span id of a recorder span id (never 0)."""
    return _mix64(span_id ^ IDS.span_salt) or 1


def otel_trace_id(trace_id: int) -> int:
    """The 128-bit OpenTelemetry trace id of a recorder trace (root span) id."""
    return (IDS.trace_hi << 64) | _mix64(trace_id ^ IDS.trace_salt)


# Root recorder id -> (otel trace id, remote parent span id or 0, remote trace flags). Bounded:
# a root's children are exported before or with it; old entries are evicted first.
ROOTS: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
_MAX_ROOTS = 8192


def sampler_from_environment(environ=os.environ):
    """The SDK sampler ``OTEL_TRACES_SAMPLER`` names, or None for ``always_on`` (the default).

    A bad name or argument raises ``ValueError`` naming the variable and the value.
    """
    name = (environ.get("OTEL_TRACES_SAMPLER") or "").strip().lower()
    if name in ("", "always_on"):
        return None
    from opentelemetry.sdk.trace import sampling

    arg = environ.get("OTEL_TRACES_SAMPLER_ARG")
    if "traceidratio" in name:
        try:
            ratio = 1.0 if arg is None or not arg.strip() else float(arg)
            if not 0.0 <= ratio <= 1.0:
                raise ValueError
        except ValueError:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a ratio in [0, 1]") from None
    else:
        ratio = None
    table = {
        "always_off": lambda: sampling.ALWAYS_OFF,
        "traceidratio": lambda: sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": lambda: sampling.ParentBased(sampling.TraceIdRatioBased(ratio)),
    }
    if name not in table:
        raise ValueError(f"OTEL_TRACES_SAMPLER={name!r} is not one of always_on, always_off, "
                         "traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio")
    return table[name]()


class RootHook:
    """``STATE.on_root_start``: remembers the caller's parent and applies the sampler."""

    def __init__(self, sampler) -> None:
        from opentelemetry import trace as otel_trace

        self.sampler = sampler
        self._current = otel_trace.get_current_span
        self._context = None
        if sampler is not None:
            from opentelemetry import context as otel_context

            self._context = otel_context.get_current

    def __call__(self, root) -> bool:
        parent = self._current().get_span_context()
        remote = parent.is_valid
        trace_id = parent.trace_id if remote else otel_trace_id(root.trace_id)
        sampled = True
        if self.sampler is not None:
            from opentelemetry.sdk.trace.sampling import Decision

            result = self.sampler.should_sample(self._context(), trace_id, root.name)
            sampled = result.decision == Decision.RECORD_AND_SAMPLE
        if remote and sampled:
            ROOTS[root.span_id] = (trace_id, parent.span_id, int(parent.trace_flags))
            if len(ROOTS) > _MAX_ROOTS:
                ROOTS.popitem(last=False)
        return sampled


@contextlib.contextmanager
def use_traceparent(traceparent: str | None, tracestate: str | None = None):
    """``with tracer.use_traceparent(request.headers["traceparent"]):`` — spans inside join that trace.

    The header is parsed by OpenTelemetry's W3C propagator; a missing or malformed header
    leaves the context as it was (a new trace starts), as the W3C spec asks.
    """
    from opentelemetry import context as otel_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent} if traceparent else {}
    if tracestate:
        carrier["tracestate"] = tracestate
    token = otel_context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)
