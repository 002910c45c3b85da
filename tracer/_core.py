"""The hot path: spans, windows and transfers recorded as plain records.

Everything here runs inside the engine being observed, so it does the least it can: a span is
one ``__slots__`` object, two ``perf_counter_ns`` reads and a context-variable set/reset; a
transfer is one record and a few integer additions. Formatting, OpenTelemetry objects and file
writing happen later (``tracer._otel``, ``tracer.perfetto``), off this path.

Disabled, :func:`span` is one flag check returning the shared :data:`NOOP` (no allocation).
Nothing here raises into the caller except for misuse that is a bug in the caller's code
(a negative byte count, a bad direction): those fail loudly with the value in the message.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import itertools
import sys
import threading
from time import perf_counter_ns

from . import _config
from ._record import EMPTY_IO, EMPTY_TRANSFERS, IoTotals, Span, Transfer, WindowData, category_of, io_dict

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("spectrace_span", default=None)
_get_ident = threading.get_native_id  # the OS thread id: what Perfetto tracks show


class _State:
    """Process-wide recorder state. One instance, :data:`STATE`."""

    __slots__ = ("enabled", "debug", "max_spans", "pending", "dropped", "captures", "exporting",
                 "on_root_end", "mirror", "last_window", "recorded", "warned_drop", "lock")

    def __init__(self) -> None:
        env = _config.from_environment()
        self.enabled: bool = env["enabled"]
        self.debug: bool = env["debug"]
        self.max_spans: int = env["max_spans"]
        # Finished spans waiting for an exporter (bounded). A deque: append and popleft are
        # atomic, so the export thread can drain it while engine threads append.
        self.pending: collections.deque[Span] = collections.deque()
        self.dropped = 0  # spans that did not fit into ``pending``
        self.captures: tuple = ()  # active tracer.capture() recordings
        self.exporting = False  # an exporter consumes ``pending``
        self.on_root_end = None  # callable: wake the export worker
        self.mirror = None  # factory(name) -> context manager (TraceAnnotation while profiling)
        self.last_window: Span | None = None
        self.recorded = 0
        self.warned_drop = False
        self.lock = threading.Lock()  # guards cross-thread io merges and id allocation races


STATE = _State()


# ``next()`` on a count is atomic under the GIL, unlike ``+=`` on an attribute.
_ids = itertools.count(1)


class ActiveSpan(Span):
    """A span being recorded: context manager, decorator, attribute setter.

    Built by :func:`span` without ``__init__`` (name, attributes, window only); ``__enter__``
    fills in the rest. Every store here is on the engine's critical path.
    """

    __slots__ = ()

    def __enter__(self):
        parent = _current.get()
        self.span_id = sid = next(_ids)
        tid = _get_ident()
        self.thread_id = tid
        try:
            self.thread_name = _tls.name
        except AttributeError:
            self.thread_name = _tls.name = threading.current_thread().name
        self.io = EMPTY_IO
        self.transfers = EMPTY_TRANSFERS
        self.end_ns = 0
        self._parent = parent
        if parent is not None:
            self.parent_id = parent.span_id
            self.trace_id = parent.trace_id
            self._window = self if self.window else parent._window
        else:
            self.parent_id = 0
            self.trace_id = sid
            self._window = self if self.window else None
        self._token = _current.set(self)
        if STATE.mirror is not None:
            self._enter_mirror()
        self.start_ns = perf_counter_ns()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.end_ns = perf_counter_ns()
        if exc_type is not None:
            self.error_type = exc_type.__qualname__
            self.error_message = str(exc)
        if self._mirror is not None:
            self._exit_mirror()
        try:
            _current.reset(self._token)
        except ValueError:  # ended in another context (e.g. a generator moved across tasks)
            _current.set(self._parent)
        self._token = None  # a kept Token is one more object for every garbage collection
        # Finishing, inlined: roll io up, feed windows and captures, buffer for export.
        st = STATE
        st.recorded += 1
        parent = self._parent
        if parent is not None:
            if self.io:
                _roll_up(self, parent)
            if self._window is not None and self.name == "prefill.chunk":
                self._window.window_data.chunks.append(self)
        if self.window:
            _end_window(self)
        if st.captures:
            for cap in st.captures:
                cap._add(self)
            if not st.exporting:
                return False  # a capture holds it; nothing else will read the buffer
        pending = st.pending
        if len(pending) < st.max_spans:
            pending.append(self)
        else:
            _count_drop(1)
        if parent is None and st.on_root_end is not None:
            st.on_root_end()
        return False

    def _enter_mirror(self) -> None:
        try:
            m = STATE.mirror(self.name)
            m.__enter__()
            self._mirror = m
        except Exception:  # the profiler must never break the engine
            pass

    def _exit_mirror(self) -> None:
        try:
            self._mirror.__exit__(None, None, None)
        except Exception:
            pass

    def set(self, key: str, value) -> None:
        """Set one attribute after the span started (e.g. tokens/s known only at the end)."""
        self.attributes[key] = value

    def set_attributes(self, attributes: dict) -> None:
        self.attributes.update(attributes)

    def __call__(self, fn):
        """Use as a decorator: every call of ``fn`` opens a fresh span with this name."""
        return _decorate(fn, self.name, dict(self.attributes), self.window)


class _NoopSpan:
    """The shared disabled span: enters, exits, accepts attributes, records nothing."""

    __slots__ = ()
    name = ""
    attributes: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return False

    def set(self, key, value) -> None:
        pass

    def set_attributes(self, attributes) -> None:
        pass

    def __call__(self, fn):
        # Decorating while disabled must still trace calls made after recording is turned on;
        # the name comes from the span() call that returned this object (same expression).
        return _decorate(fn, _noop_last[0], dict(_noop_last[1]), _noop_last[2])

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOOP"


NOOP = _NoopSpan()
_noop_last: list = ["", {}, False]


def _decorate(fn, name, attributes, window):
    opener = window_ if window else span

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with opener(name, **attributes):
            return fn(*args, **kwargs)

    return wrapper


_new_span = ActiveSpan.__new__
# Thread names per thread (not per ident: idents are reused once a thread ended).
_tls = threading.local()


def span(name: str, /, **attributes):
    """Open a span: ``with tracer.span("prefill.chunk", engine="spec") as s:``.

    Also a decorator (``@tracer.span("score.compute")``). Attribute names with dots are passed
    with ``**{"chunk.index": i}``. Disabled: returns the shared :data:`NOOP`.
    """
    if not STATE.enabled:
        _noop_last[0] = name  # for NOOP used as a decorator (see _NoopSpan.__call__)
        _noop_last[1] = attributes
        _noop_last[2] = False
        return NOOP
    s = _new_span(ActiveSpan)
    s.name = name
    s.attributes = attributes
    s.window = False
    return s


def window_(name: str, /, **attributes):
    """Open a window: a span that is one pass (``ttft.spec_device``, ``ttft.baseline``, ...).

    ``tracer.io_metrics()`` reports the last finished window, and with ``QEFF_SPEC_DEBUG`` on
    every window prints its chunk line and IO table when it ends.
    """
    s = span(name, **attributes)
    if s is NOOP:
        _noop_last[2] = True
        return NOOP
    s.window = True
    s.window_data = WindowData()
    return s


def current_span():
    """The innermost open span of this context, or :data:`NOOP`."""
    s = _current.get()
    return NOOP if s is None else s


def _roll_up(s: Span, parent: Span) -> None:
    if parent.thread_id == s.thread_id:
        _merge_io(parent, s.io)
    else:  # a child on another thread: its parent may be merging its own children right now
        with STATE.lock:
            _merge_io(parent, s.io)


def _end_window(s: Span) -> None:
    STATE.last_window = s
    if STATE.debug:
        from ._debug import print_window  # imported lazily: only with QEFF_SPEC_DEBUG on

        print_window(s)


def _merge_io(parent: Span, src) -> None:
    into = parent.io
    if into is EMPTY_IO:
        into = parent.io = {}
    for cat, tot in src.items():
        mine = into.get(cat)
        if mine is None:
            mine = into[cat] = IoTotals()
        mine.add(tot)


def _count_drop(n: int) -> None:
    STATE.dropped += n
    if not STATE.warned_drop:
        STATE.warned_drop = True
        print(f"spectrace: warning: span buffer full (max_spans={STATE.max_spans}); dropping "
              "finished spans from now on and counting them (set SPECTRACE_MAX_SPANS or "
              "tracer.configure(max_spans=...), or export with OTEL_TRACES_EXPORTER)",
              file=sys.stderr)


_DIRECTIONS = {"h2d": "h2d", "d2h": "d2h"}


def record_transfer(binding: str, direction: str, nbytes: int, *, ns: int | None = None,
                    start_ns: int | None = None, end_ns: int | None = None) -> None:
    """Record one host<->device copy whose duration was measured elsewhere.

    ``binding`` is a binding name (``past_key.3_RetainedState``) or a category; ``direction``
    is ``"h2d"`` or ``"d2h"``; give either ``ns`` (duration, ending now) or ``start_ns`` and
    ``end_ns`` (``perf_counter_ns`` readings).
    """
    if not STATE.enabled:
        return
    _check(direction, nbytes)
    if end_ns is None:
        end_ns = perf_counter_ns()
    if start_ns is None:
        start_ns = end_ns - (ns or 0)
    if end_ns < start_ns:
        raise ValueError(f"transfer end_ns ({end_ns}) is before start_ns ({start_ns})")
    _add_transfer(binding, direction, int(nbytes), start_ns, end_ns)


def _check(direction, nbytes) -> None:
    if type(nbytes) is not int:  # numpy integers and other ``__index__`` types are fine too
        if isinstance(nbytes, bool) or not hasattr(nbytes, "__index__"):
            raise ValueError(f"nbytes must be a non-negative integer, got {nbytes!r}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be a non-negative integer, got {nbytes!r}")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be 'h2d' or 'd2h', got {direction!r}")


_categories: dict = {}  # binding name -> category, so the split runs once per name


def _add_transfer(binding, direction, nbytes, start_ns, end_ns) -> None:
    cur = _current.get()
    if cur is None:
        return  # nothing to roll up onto; io_metrics is per window
    category = _categories.get(binding)
    if category is None:
        category = category_of(binding)
        if isinstance(binding, str) and len(_categories) < 4096:
            _categories[binding] = category
        else:
            binding = category
    t = Transfer(category, direction, nbytes, start_ns, end_ns, binding, cur.span_id, cur.thread_id)
    if cur.transfers is EMPTY_TRANSFERS:
        cur.transfers = [t]
    else:
        cur.transfers.append(t)
    io = cur.io
    if io is EMPTY_IO:
        io = cur.io = {}
    tot = io.get(category)
    if tot is None:
        tot = io[category] = IoTotals()
    tot.bytes += nbytes
    tot.ns += end_ns - start_ns
    tot.count += 1
    if direction == "h2d":
        tot.h2d_bytes += nbytes
    else:
        tot.d2h_bytes += nbytes
    w = cur._window
    if w is not None:
        w.window_data.transfers.append(t)


class _TransferTimer:
    """``with tracer.transfer(binding, direction, nbytes):`` times the copy inside the block."""

    __slots__ = ("binding", "direction", "nbytes", "start_ns")

    def __init__(self, binding, direction, nbytes):
        self.binding = binding
        self.direction = direction
        self.nbytes = nbytes

    def __enter__(self):
        self.start_ns = perf_counter_ns()
        return self

    def __exit__(self, exc_type, exc, tb):
        end = perf_counter_ns()
        if exc_type is None and STATE.enabled:
            _add_transfer(self.binding, self.direction, int(self.nbytes), self.start_ns, end)
        return False


def transfer(binding: str, direction: str, nbytes: int):
    """Time one host<->device copy: ``with tracer.transfer("logits", "d2h", x.nbytes): ...``.

    ``nbytes`` may be set on the returned object inside the block when only known after the copy.
    """
    if not STATE.enabled:
        return NOOP
    _check(direction, nbytes)
    return _TransferTimer(binding, direction, nbytes)


def io_metrics() -> dict:
    """The last finished window's IO in QEfficient's ``get_last_io_metrics()`` shape.

    ``{"total_bytes", "total_ms", "details", "categories"}``: ``details`` has one entry per
    binding name (bytes, ms, count, category, direction); ``categories`` has every category.
    """
    w = STATE.last_window
    categories = io_dict(w.io if w is not None else {})
    details: dict[str, dict] = {}
    if w is None:
        return {"total_bytes": 0, "total_ms": 0.0, "details": details, "categories": categories}
    for t in w.window_data.transfers:
        d = details.get(t.binding)
        if d is None:
            d = details[t.binding] = {"category": t.category, "direction": t.direction,
                                      "bytes": 0, "ms": 0.0, "count": 0}
        d["bytes"] += t.nbytes
        d["ms"] += t.ns / 1e6
        d["count"] += 1
        if d["direction"] != t.direction:
            d["direction"] = "both"
    return {"total_bytes": sum(t.bytes for t in w.io.values()),
            "total_ms": sum(t.ns for t in w.io.values()) / 1e6,
            "details": details, "categories": categories}


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


def take_pending() -> list[Span]:
    """Remove and return the finished spans waiting for an exporter (export worker, flush)."""
    pending = STATE.pending
    return [pending.popleft() for _ in range(len(pending))]
