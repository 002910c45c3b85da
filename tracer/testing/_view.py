"""Read-only views over finished spans, whatever they were loaded from.

A test should not care whether a span came from the in-memory recorder, a ``.pftrace`` file or
an OTLP JSON line, so every loader turns its input into the same :class:`SpanView`. Tree links
(``parent``, ``children``) and the renumbered ids are looked up through the owning
:class:`~tracer.testing.Trace` rather than stored, so a view handed out early stays correct
while a live trace keeps growing.
"""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType
from typing import Any, Mapping

# ``io.<category>.<field>`` attributes are how every exporter flattens ``Span.io``; loaders
# fold them back into ``SpanView.io`` so a loaded span compares equal to a recorded one.
IO_KEY = re.compile(r"^io\.([^.]+)\.(bytes|ms|count|direction)$")


@dataclasses.dataclass(frozen=True)
class Io:
    """Traffic of one category (or of all of them) under a span, inclusive of its descendants."""

    bytes: int = 0
    ms: float = 0.0
    count: int = 0
    direction: str = ""  # "h2d", "d2h", "d2d", "both" or "" when nothing moved

    def __add__(self, other: Io) -> Io:
        dirs = {d for d in (self.direction, other.direction) if d}
        direction = dirs.pop() if len(dirs) == 1 else ("both" if dirs else "")
        return Io(self.bytes + other.bytes, self.ms + other.ms, self.count + other.count, direction)

    def __str__(self) -> str:
        dir_ = f" {self.direction}" if self.direction else ""
        return f"{self.bytes} B in {self.count}x, {self.ms:.3f} ms{dir_}"


NO_IO = Io()


class SpanLookupError(AssertionError, LookupError):
    """``Trace.one`` found no span, or several: a test failure, with near matches listed."""


def lookup(attributes: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """Find ``key`` in ``attributes``; ``chunk_index`` also finds ``chunk.index``.

    Attribute names carry dots, keyword arguments cannot, so a keyword matches an attribute
    whose dots read as underscores (``gen_ai_request_model`` -> ``gen_ai.request.model``).
    An exact key always wins.
    """
    name = find_key(attributes, key)
    return (True, attributes[name]) if name is not None else (False, None)


def find_key(attributes: Mapping[str, Any], key: str) -> str | None:
    """The attribute name ``key`` refers to (see :func:`lookup`), or ``None``."""
    if key in attributes:
        return key
    for name in attributes:
        if name.replace(".", "_") == key:
            return name
    return None


def value_ok(actual: Any, expected: Any) -> bool:
    """``expected`` is a value to compare with ``==`` or a predicate such as ``lambda v: v > 0``."""
    if callable(expected):
        return bool(expected(actual))
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return tuple(actual) == tuple(expected)  # files give lists where the SDK gives tuples
    return actual == expected


def mismatches(attributes: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Why ``attributes`` do not satisfy ``wanted``, one phrase per key; empty when they do."""
    out = []
    for key, expected in wanted.items():
        name = find_key(attributes, key)
        shown = f"a value passing {getattr(expected, '__name__', 'the predicate')}" if callable(expected) else repr(expected)
        if name is None:
            out.append(f"{key} missing (wanted {shown})")
        elif not value_ok(attributes[name], expected):
            out.append(f"{name}={attributes[name]!r} (wanted {shown})")
    return out


def merge_attrs(attrs: Mapping[str, Any] | None, kw: Mapping[str, Any]) -> dict[str, Any]:
    """One filter from ``attrs={"chunk.index": 0}`` and keyword arguments ``chunk_index=0``."""
    merged = dict(attrs or {})
    merged.update(kw)
    return merged


class TransferView:
    """One copy as recorded (in memory, or a Perfetto/OTel file's transfer slice or event)."""

    __slots__ = ("category", "direction", "nbytes", "start_ns", "end_ns", "binding", "_span", "src", "dst")

    def __init__(self, category, direction, nbytes, start_ns, end_ns, binding, span, src="", dst=""):
        self.category: str = category
        self.direction: str = direction
        self.nbytes: int = nbytes
        self.start_ns: int = start_ns
        self.end_ns: int = end_ns
        self.binding: str = binding
        self._span: SpanView | None = span
        self.src: str = src  # the device group the copy left ("" for the host or unknown)
        self.dst: str = dst  # the device group it reached

    @property
    def span(self) -> SpanView | None:
        """The span the copy happened in, or ``None`` when it was not captured."""
        return self._span

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def __repr__(self) -> str:
        return (f"TransferView({self.binding!r}, {self.category}, {self.direction}, "
                f"bytes={self.nbytes}, ms={self.ms:.3f})")


class SpanView:
    """One finished span: what a test reads and asserts on.

    Times are integers in ns on one clock per trace (``perf_counter_ns`` for a live capture,
    epoch ns for loaded files). ``io`` maps category -> :class:`Io`, inclusive of descendants.
    ``span_id``/``parent_id``/``trace_id`` are renumbered 1..n in start order by the trace, so
    they are the same on every run; ``source`` is the record the view was built from.
    """

    __slots__ = ("name", "start_ns", "end_ns", "_attributes", "_io", "thread", "thread_id",
                 "error_type", "error_message", "window", "source", "_raw_id", "_raw_parent",
                 "_trace")

    def __init__(self, name: str, start_ns: int, end_ns: int, attributes: Mapping[str, Any],
                 io: Mapping[str, Io] | None = None, *, thread: str = "", thread_id: int | None = None,
                 error_type: str | None = None, error_message: str | None = None,
                 window: bool = False, source: Any = None, raw_id: Any = None, raw_parent: Any = None):
        self.name = name
        self.start_ns = int(start_ns)
        self.end_ns = int(end_ns)
        self._attributes = MappingProxyType(dict(attributes))
        self._io = MappingProxyType(dict(io or {}))
        self.thread = thread
        self.thread_id = thread_id
        self.error_type = error_type
        self.error_message = error_message
        self.window = window
        self.source = source
        self._raw_id = raw_id
        self._raw_parent = raw_parent
        self._trace = None  # set by the Trace that adopts it

    # -- plain data ------------------------------------------------------------------------
    @property
    def attributes(self) -> Mapping[str, Any]:
        """The span's own attributes (``io.*`` totals live in :attr:`io`)."""
        return self._attributes

    @property
    def io(self) -> Mapping[str, Io]:
        """Category -> :class:`Io` for every category with traffic under this span."""
        return self._io

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def duration_ms(self) -> float:
        return self.duration_ns / 1e6

    def attr(self, key: str, default: Any = None) -> Any:
        found, value = lookup(self._attributes, key)
        return value if found else default

    def __getitem__(self, key: str) -> Any:
        found, value = lookup(self._attributes, key)
        if not found:
            raise KeyError(f"span {self.name!r} has no attribute {key!r}; it has {sorted(self._attributes)}")
        return value

    def matches(self, name: str | None = None, attrs: Mapping[str, Any] | None = None, **kw: Any) -> bool:
        """True when the name (exact, or a glob with ``*``) and every attribute filter match."""
        return _name_ok(self.name, name) and not mismatches(self._attributes, merge_attrs(attrs, kw))

    def io_of(self, category: str | None = None) -> Io:
        """Traffic of one category under this span; ``None`` sums every category."""
        if category is None:
            total = NO_IO
            for io in self._io.values():
                total = total + io
            return total
        if self._trace is not None:
            self._trace._check_category(category)  # a typo must not read as "0 bytes moved"
        return self._io.get(category, NO_IO)

    def bytes(self, category: str | None = None) -> int:
        return self.io_of(category).bytes

    def ms(self, category: str | None = None) -> float:
        return self.io_of(category).ms

    # -- tree, resolved by the trace so a live trace stays current ----------------------------
    def _owner(self):
        if self._trace is None:
            raise RuntimeError("this SpanView belongs to no Trace; build one with Trace.from_spans(...)")
        return self._trace

    @property
    def span_id(self) -> int:
        return self._owner()._index().ids[self]

    @property
    def parent(self) -> SpanView | None:
        return self._owner()._index().parent.get(self)

    @property
    def parent_id(self) -> int:
        parent = self.parent
        return parent.span_id if parent is not None else 0

    @property
    def trace_id(self) -> int:
        return self._owner()._index().trace_ids[self]

    @property
    def children(self) -> list[SpanView]:
        """Direct children in start order."""
        return list(self._owner()._index().children.get(self, ()))

    @property
    def descendants(self) -> list[SpanView]:
        """Every span below this one, depth first (siblings in start order)."""
        index = self._owner()._index()
        out: list[SpanView] = []
        stack = list(reversed(index.children.get(self, ())))
        while stack:
            span = stack.pop()
            out.append(span)
            stack.extend(reversed(index.children.get(span, ())))
        return out

    @property
    def ancestors(self) -> list[SpanView]:
        """Parent, grandparent, ... up to the root."""
        parent = self._owner()._index().parent
        out, span = [], parent.get(self)
        while span is not None and len(out) < len(parent):  # bounded even if a file has a cycle
            out.append(span)
            span = parent.get(span)
        return out

    @property
    def root(self) -> SpanView:
        ancestors = self.ancestors
        return ancestors[-1] if ancestors else self

    @property
    def transfers(self) -> list[TransferView]:
        """Copies recorded directly in this span, in recording order (in-memory captures only)."""
        owner = self._owner()
        owner._sync()
        return [t for t in owner._transfers if t.span is self]

    def all(self, name: str | None = None, *, attrs: Mapping[str, Any] | None = None, **kw: Any) -> list[SpanView]:
        """Descendants matching ``name`` and attributes, in start order."""
        return self._owner().all(name, attrs=attrs, within=self, **kw)

    def one(self, name: str | None = None, *, attrs: Mapping[str, Any] | None = None, **kw: Any) -> SpanView:
        """The single descendant matching; fails listing near matches otherwise."""
        __tracebackhide__ = True
        return self._owner().one(name, attrs=attrs, within=self, **kw)

    # -- assertions: sugar over the trace's ------------------------------------------------
    def assert_within(self, outer: SpanView) -> SpanView:
        __tracebackhide__ = True
        self._owner().assert_within(self, outer)
        return self

    def assert_before(self, later: SpanView) -> SpanView:
        __tracebackhide__ = True
        self._owner().assert_before(self, later)
        return self

    def assert_attr(self, attrs: Mapping[str, Any] | None = None, **kw: Any) -> SpanView:
        __tracebackhide__ = True
        self._owner().assert_attr(self, attrs, **kw)
        return self

    def assert_bytes(self, category: str | None, expected: int | None = None, *,
                     at_least: int | None = None, at_most: int | None = None) -> SpanView:
        __tracebackhide__ = True
        self._owner().assert_bytes(category, expected, span=self, at_least=at_least, at_most=at_most)
        return self

    def assert_ms(self, category: str | None, *, at_least: float | None = None,
                  at_most: float | None = None) -> SpanView:
        __tracebackhide__ = True
        self._owner().assert_ms(category, span=self, at_least=at_least, at_most=at_most)
        return self

    def __repr__(self) -> str:
        attrs = " ".join(f"{k}={v!r}" for k, v in self._attributes.items())
        ident = f"#{self.span_id} " if self._trace is not None else ""
        return f"<SpanView {ident}{self.name}{' ' + attrs if attrs else ''} {self.duration_ms:.3f}ms>"


def _name_ok(actual: str, wanted: str | None) -> bool:
    if wanted is None:
        return True
    if "*" in wanted or "?" in wanted:
        import fnmatch
        return fnmatch.fnmatchcase(actual, wanted)
    return actual == wanted


