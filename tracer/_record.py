"""The records the hot path writes and every exporter reads.

One class per concept, all ``__slots__`` and plain Python values: no OpenTelemetry object is
built while the engine runs (VizTracer's habit: fixed-size entries on the hot path, formatting
only at export). Times are ``time.perf_counter_ns()`` integers; they become epoch time once, at
export, through :mod:`tracer.clock`.

A :class:`Span` is both the live span and, once ``end_ns`` is set, the finished record.
Its ``io`` holds *inclusive* per-category totals: a transfer adds to the span it happened in,
and a span adds its totals to its parent when it ends, so every chunk and every window carries
the bytes of everything under it.
"""

from __future__ import annotations

from types import MappingProxyType

from ._accel import speedups

# Attribute keys the exporters stamp and the loaders read back (tracer.perfetto, tracer._otel,
# tracer.testing): a span's recorder ids and its window flag. A transfer slice has SPAN_ID only.
SPAN_ID, PARENT_ID, TRACE_ID = "spectrace.span_id", "spectrace.parent_id", "spectrace.trace_id"
WINDOW = "spectrace.window"

# The binding categories of DESIGN.md, in the order tables print them.
CATEGORIES: tuple[str, ...] = ("prefill_queries", "past_key", "past_value", "logits", "other")
DIRECTIONS: tuple[str, ...] = ("h2d", "d2h", "d2d")


def category_of(binding: str) -> str:
    """Map a binding name in QEfficient's style to its category.

    ``past_key.3_RetainedState`` -> ``past_key``; ``past_value.0`` -> ``past_value``;
    ``prefill_queries`` -> ``prefill_queries``; a category name maps to itself; anything
    unknown (including non-strings) is ``other``.
    """
    if not isinstance(binding, str):
        return "other"
    head = binding.split(".", 1)[0].split("_RetainedState", 1)[0]
    return head if head in _CATEGORY_SET else "other"


_CATEGORY_SET = frozenset(CATEGORIES)
#: Read-only stand-ins for a span's ``io`` and ``transfers`` before its first transfer.
EMPTY_IO = MappingProxyType({})
EMPTY_TRANSFERS: tuple = ()


class IoTotals:
    """Bytes, time and count of the transfers of one category under one span (inclusive)."""

    __slots__ = ("bytes", "ns", "count", "h2d_bytes", "d2h_bytes", "d2d_bytes")

    def __init__(self) -> None:
        self.bytes = 0
        self.ns = 0
        self.count = 0
        self.h2d_bytes = 0
        self.d2h_bytes = 0
        self.d2d_bytes = 0  # device to device (between the device groups of two engines)

    @property
    def ms(self) -> float:
        return self.ns / 1e6

    @property
    def direction(self) -> str:
        """``h2d``, ``d2h``, ``d2d``, ``both`` (more than one of them) or ``""`` when nothing moved."""
        moved = [d for d, b in (("h2d", self.h2d_bytes), ("d2h", self.d2h_bytes), ("d2d", self.d2d_bytes)) if b]
        return moved[0] if len(moved) == 1 else ("both" if moved else "")

    def add(self, other: IoTotals) -> None:
        self.bytes += other.bytes
        self.ns += other.ns
        self.count += other.count
        self.h2d_bytes += other.h2d_bytes
        self.d2h_bytes += other.d2h_bytes
        self.d2d_bytes += other.d2d_bytes

    def as_dict(self) -> dict:
        return {"bytes": self.bytes, "ms": self.ms, "count": self.count, "direction": self.direction}

    def __repr__(self) -> str:
        return f"IoTotals(bytes={self.bytes}, ms={self.ms:.3f}, count={self.count}, direction={self.direction!r})"



def io_dict(io) -> dict:
    """Every category's ``{bytes, ms, count, direction}`` from ``{category: IoTotals}`` (zeros
    for categories with no traffic): the shape of ``io_metrics()["categories"]`` and ttft.json."""
    return {c: (io[c].as_dict() if c in io else IoTotals().as_dict()) for c in CATEGORIES}


class Transfer:
    """One copy: what moved (category, binding name), which way, how much, when, between which devices.

    ``src``/``dst`` name the device group on each side (``"cuda:0,1"``; ``""`` for the host or
    when the engine did not say): a ``d2d`` copy between two engines' groups has both.
    """

    __slots__ = ("category", "direction", "nbytes", "start_ns", "end_ns", "binding", "span_id", "thread_id",
                 "src", "dst")

    def __init__(self, category, direction, nbytes, start_ns, end_ns, binding, span_id, thread_id,
                 src="", dst=""):
        self.category: str = category
        self.direction: str = direction  # "h2d" | "d2h" | "d2d"
        self.nbytes: int = nbytes
        self.start_ns: int = start_ns
        self.end_ns: int = end_ns
        self.binding: str = binding  # the name the engine gave; equals category when none was given
        self.span_id: int = span_id  # the span it happened in (0 if none was open)
        self.thread_id: int = thread_id
        self.src: str = src
        self.dst: str = dst

    @property
    def ns(self) -> int:
        return self.end_ns - self.start_ns

    def __repr__(self) -> str:
        where = f", {self.src or 'host'}->{self.dst or 'host'}" if self.src or self.dst else ""
        return (f"Transfer({self.binding!r}, category={self.category!r}, {self.direction}{where}, "
                f"bytes={self.nbytes}, ms={self.ns / 1e6:.3f})")


if speedups is not None:
    _SpanFields = speedups.SpanCore  # the same fields in a C struct (tracer/_speedups_types.c)
else:
    class _SpanFields:
        """The fields the span hot path writes; in C (``SpanCore``) when the accelerator is used."""

        __slots__ = ("span_id", "name", "start_ns", "end_ns", "thread_id", "thread_name", "attributes",
                     "io", "transfers", "_token", "_parent", "_window")


class Span(_SpanFields):
    """A span: live while ``end_ns == 0``, a finished record after.

    ``span_id`` is unique in the process and > 0; ``parent_id`` is 0 for a root; ``trace_id`` is
    the root's ``span_id``. ``window`` marks a pass (``ttft.spec_device``, ``ttft.baseline``,
    ...): ``tracer.io_metrics()`` and the debug lines report per window.
    """

    __slots__ = ("parent_id", "trace_id", "window", "__dict__")

    # Rarely set fields live in the lazily created instance ``__dict__`` and read these
    # class-level defaults until then: a span that neither fails nor is a window nor runs under
    # the profiler allocates no dict for them.
    error_type: str | None = None
    error_message: str | None = None
    window_data: WindowData | None = None  # windows only: transfers and chunks under it
    _mirror = None  # a jax.profiler.TraceAnnotation while profiling (tracer.xplane)

    def __init__(self, span_id, parent_id, trace_id, name, attributes, thread_id, thread_name, window):
        self.span_id: int = span_id
        self.parent_id: int = parent_id
        self.trace_id: int = trace_id
        self.name: str = name
        self.start_ns: int = 0
        self.end_ns: int = 0
        self.thread_id: int = thread_id
        self.thread_name: str = thread_name
        self.attributes: dict = attributes
        # Shared empty containers until the first transfer: most spans move no bytes, and two
        # fewer allocations per span is a third of the recording cost.
        self.io: dict[str, IoTotals] = EMPTY_IO
        self.transfers: list[Transfer] = EMPTY_TRANSFERS
        self.window: bool = window
        if window:
            self.window_data = WindowData()
        self._token = None
        self._parent: Span | None = None
        self._window: Span | None = None  # the nearest enclosing window (itself for a window)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def io_bytes(self, category: str) -> int:
        t = self.io.get(category)
        return t.bytes if t else 0

    def io_ms(self, category: str) -> float:
        t = self.io.get(category)
        return t.ms if t else 0.0

    def __repr__(self) -> str:
        dur = f"{self.duration_ns / 1e6:.3f}ms" if self.end_ns else "open"
        return f"Span({self.name!r}, id={self.span_id}, parent={self.parent_id}, {dur})"


class WindowData:
    """What a window (a pass) keeps beyond its inclusive ``io``: the transfers and chunks under it."""

    __slots__ = ("transfers", "chunks")

    def __init__(self) -> None:
        self.transfers: list[Transfer] = []
        self.chunks: list[Span] = []
