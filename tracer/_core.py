"""The hot path: spans, windows and transfers recorded as plain records.

Everything here runs inside the engine being observed, so it does the least it can: a span is
one ``__slots__`` object, two ``perf_counter_ns`` reads and a context-variable set/reset; a
transfer is one record and a few integer additions. Formatting, OpenTelemetry objects and file
writing happen later (``tracer._otel``, ``tracer.perfetto``), off this path.

Disabled, :func:`span` is one flag check returning the shared :data:`NOOP` (no allocation).
Nothing here raises into the caller except for misuse that is a bug in the caller's code
(a negative byte count, a bad direction): those fail loudly with the value in the message.

Two implementations of the common path, one of everything else: where ``tracer/_speedups.c``
is built (:mod:`tracer._accel` chooses), :func:`span` and a plain span's ``__enter__``/
``__exit__`` are C calls; every rare case (re-entry, a double exit, an exception, a root hook,
an unsampled root, a parent that ended first, windows, the profiler mirror, internal errors)
calls back the Python code below, which is also the whole fallback (docs/overhead.md).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from time import perf_counter_ns

from . import _accel
from ._accel import speedups as _C
from ._noop import NOOP, _decorate, _noop_last, _set_noop_last, instrument  # noqa: F401
from ._record import EMPTY_IO, EMPTY_TRANSFERS, Span, WindowData
from ._rollup import _end_window, _last_window, _merge_io, _roll_up  # noqa: F401
from ._state import (STATE, UNSAMPLED, _count_drop, _current, _misuse, _safe_str, regate,  # noqa: F401
                     suppress, suppressed, take_pending)

# Span ids: one counter for both paths, so ids stay unique when C and Python both allocate.
# ``next()`` on a count is atomic under the GIL, unlike ``+=`` on an attribute.
_next_id = _C.next_span_id if _C is not None else itertools.count(1).__next__


class ActiveSpan(Span):
    """A span being recorded: context manager, decorator, attribute setter.

    Built by :func:`span` without ``__init__`` (name, attributes, ``start_ns = 0``);
    ``__enter__`` fills in the rest. Every store here is on the engine's critical path, so a
    live span stores only what the hot path reads back (see docs/overhead.md): ``parent_id``
    and ``trace_id`` are derived from ``_parent`` when an exporter asks, ``window`` is a class
    attribute (:class:`ActiveWindow` for windows), and the thread's OS id and name come from a
    per-thread cache (``threading.get_native_id`` is a syscall).
    Misuse that is not the caller's bug is tolerated and reported once (never raised): entering
    a span twice records it once, a second ``__exit__`` is ignored, and a span that ends after
    its parent leaves the current span to its nearest open ancestor (not to the finished
    parent), so later spans do not become children of something already exported.
    """

    __slots__ = ()
    window = False  # shadows Span's slot: a plain span stores nothing for it

    @property
    def parent_id(self) -> int:
        p = self._parent
        return p.span_id if p is not None else 0

    @property
    def trace_id(self) -> int:
        s = self
        while s._parent is not None:
            s = s._parent
        return s.span_id

    def _enter_py(self):
        """``__enter__`` in Python: the fallback's, and the C path's for its rare cases."""
        if self.start_ns:  # entered before: one span, one record
            _misuse("a span was entered twice; it is recorded once")
            return self
        parent = _current.get()
        if parent is not None and parent.end_ns:  # inherited a finished span (ended out of order)
            parent = _open_ancestor(parent)
        self.span_id = _next_id()
        try:
            self.thread_id, self.thread_name = _tls.thread
        except AttributeError:  # this thread's first span
            self.thread_id, self.thread_name = _thread_pair()
        self.io = EMPTY_IO
        self.transfers = EMPTY_TRANSFERS
        self.end_ns = 0
        self._parent = parent
        if parent is not None:
            self._window = parent._window
        else:
            self._window = None
            if STATE.on_root_start is not None and not _call_hook(STATE.on_root_start, self):
                return self._unsampled()
        self._token = _current.set(self)
        self.start_ns = perf_counter_ns()
        return self

    def _unsampled(self):
        """The sampler dropped this root: mark the context so everything under it is a no-op."""
        self.span_id = 0
        self.start_ns = 1
        self._token = _current.set(UNSAMPLED)
        return NOOP

    def _exit_py(self, exc_type, exc, tb):
        """``__exit__`` in Python: the fallback's, and the C path's for a misplaced exit."""
        end = perf_counter_ns()
        if not self.start_ns or self.end_ns:  # an exit without an enter (end_ns unset then), or a second exit
            _misuse("a span was exited twice (or without being entered); the extra exit is ignored")
            return False
        self.end_ns = end
        try:
            parent = self._parent
            if exc_type is not None or not self.span_id or parent is not None and parent.end_ns:
                self._finish(exc_type, exc)  # the rare cases, one check away
                return False
            # The common case, inlined: no exception, sampled, parent still open (windows and
            # mirrored spans are _FullSpan: they never come here).
            try:
                _current.reset(self._token)
            except ValueError:  # ended in another context (e.g. a generator moved across tasks)
                _current.set(parent)
            self._token = None  # a kept Token is one more object for every garbage collection
            st = STATE
            if parent is not None:
                if self.io:
                    _roll_up(self, parent)
                w = self._window
                if w is not None and self.name == "prefill.chunk" and not w.end_ns:
                    w.window_data.chunks.append(self)
            if st.captures:
                for cap in st.captures:
                    cap._add(self)
            if st.exporting:
                st.offered += 1
                pending = st.pending
                if len(pending) < st.max_spans:
                    pending.append(self)
                else:
                    _count_drop(1)
                if parent is None and st.on_root_end is not None:
                    st.on_root_end()
            else:
                st.unexported += 1  # nothing would read a buffer: keep memory flat (captures hold theirs)
        except Exception as e:  # the recorder's own failure must never reach the engine
            _internal_error(self, e)
        return False

    if _C is None:
        __enter__, __exit__ = _enter_py, _exit_py
    else:  # C methods of SpanCore (tracer/_speedups.c): the common case, the rest calls back above
        __enter__, __exit__ = Span._enter, Span._exit

    def _finish(self, exc_type, exc) -> None:
        """The full ending: an unsampled root, an error, the mirror, a parent that ended first."""
        if not self.span_id:  # an unsampled root: nothing was recorded
            try:
                _current.reset(self._token)
            except ValueError:
                _current.set(None)
            return
        if exc_type is not None:
            self.error_type = exc_type.__qualname__
            self.error_message = _safe_str(exc)
        if self._mirror is not None:
            self._exit_mirror()
        parent = self._parent
        try:
            _current.reset(self._token)
        except ValueError:  # ended in another context (e.g. a generator moved across tasks)
            _current.set(parent)
        self._token = None
        if parent is not None and parent.end_ns:  # the parent ended first: skip finished spans
            parent = _open_ancestor(parent)
            if _current.get() is self._parent:
                _current.set(parent)
            _misuse("a span ended after its parent; its bytes roll up to the nearest open ancestor")
        st = STATE
        if parent is not None:
            if self.io:
                _roll_up(self, parent)
            w = self._window
            if w is not None and self.name == "prefill.chunk" and not w.end_ns:
                w.window_data.chunks.append(self)
        if self.window:
            _end_window(self)
        if st.captures:
            for cap in st.captures:
                cap._add(self)
        if not st.exporting:
            st.unexported += 1
            return
        st.offered += 1
        pending = st.pending
        if len(pending) < st.max_spans:
            pending.append(self)
        else:
            _count_drop(1)
        if self._parent is None and st.on_root_end is not None:
            st.on_root_end()

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
        if self.end_ns:
            _misuse(f"attribute {key!r} set on a finished span is ignored (finished spans are immutable)")
            return
        self.attributes[key] = value

    def set_attributes(self, attributes: dict) -> None:
        if self.end_ns:
            _misuse("attributes set on a finished span are ignored (finished spans are immutable)")
            return
        self.attributes.update(attributes)

    def io_metrics(self) -> dict:
        """This span's IO in QEfficient's ``get_last_io_metrics()`` shape (a window's, usually)."""
        from ._io import io_metrics_of

        return io_metrics_of(self)

    def __call__(self, fn):
        """Use as a decorator: every call of ``fn`` opens a fresh span with this name."""
        return _decorate(fn, self.name, dict(self.attributes), self.window)


class _FullSpan(ActiveSpan):
    """A span whose ending always takes the full path: a window (:class:`ActiveWindow`) or a
    span mirrored into ``jax.profiler`` (:class:`MirroredSpan`). span() and window_() pick the
    class when the span is made, so a plain span's hot path checks for neither."""

    __slots__ = ()

    def __enter__(self):
        if self.start_ns:  # entered before: ActiveSpan's misuse report, nothing else
            return ActiveSpan.__enter__(self)
        r = ActiveSpan.__enter__(self)
        if r is self:  # not an unsampled root
            if self.window:
                self._window = self
            if STATE._mirror is not None:
                self._enter_mirror()
                self.start_ns = perf_counter_ns()  # the span starts inside its mirror
        return r

    def __exit__(self, exc_type, exc, tb):
        end = perf_counter_ns()
        if not self.start_ns or self.end_ns:
            _misuse("a span was exited twice (or without being entered); the extra exit is ignored")
            return False
        self.end_ns = end
        try:
            self._finish(exc_type, exc)
        except Exception as e:  # the recorder's own failure must never reach the engine
            _internal_error(self, e)
        return False


class ActiveWindow(_FullSpan):
    """A window being recorded (:func:`window_`)."""

    __slots__ = ()
    window = True


class MirroredSpan(_FullSpan):
    """A span made while ``STATE.mirror`` was set (``tracer.xplane``)."""

    __slots__ = ()


def _open_ancestor(s):
    """The nearest ancestor of ``s`` (itself included) that has not ended, or None."""
    while s is not None and s.end_ns:
        s = s._parent
    return s


def _internal_error(s, e) -> None:
    """The recorder's own failure while ending ``s``: reported once, never raised (both paths)."""
    try:
        message = f"internal error while ending span {s.name!r}: {e!r}"
    except Exception:  # a name or an error whose repr() raises
        message = f"internal error while ending a span: {type(e).__name__}"
    _misuse(message)


def _call_hook(hook, s) -> bool:
    try:
        return hook(s)
    except Exception as e:
        _misuse(f"internal error in a root-span hook: {e!r}")
        return True


_new_span = ActiveSpan.__new__


# Per thread (not per ident: idents are reused once a thread ended): ``(OS id, name)``, looked
# up at the thread's first span. ``threading.get_native_id`` is a syscall (~280 ns where
# syscalls are trapped, e.g. under gVisor): once per thread, not once per span.
_tls = threading.local()


def _thread_pair() -> tuple:
    """This thread's ``(OS id, name)``, looked up at its first span (and cached by the caller:
    ``_tls`` here, a C thread-local in ``tracer/_speedups.c``)."""
    pair = _tls.thread = (threading.get_native_id(), threading.current_thread().name)
    return pair


def _reset_threads() -> None:
    global _tls
    _tls = threading.local()  # a forked child's thread has a new OS id
    if _C is not None:
        _C.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_threads)


def span(name: str, /, **attributes):
    """Open a span: ``with tracer.span("prefill.chunk", engine="spec") as s:``.

    Also a decorator (``@tracer.span("score.compute")``). Attribute names with dots are passed
    with ``**{"chunk.index": i}``. Disabled: returns the shared :data:`NOOP`.
    """
    st = STATE
    if not st.enabled:
        _noop_last[0] = (name, attributes, False)
        return NOOP
    if st.gated:
        if _current.get() is UNSAMPLED:
            return NOOP  # under a root the sampler dropped, or in tracer.suppress(): as cheap as disabled
        s = _new_span(MirroredSpan if st._mirror is not None else ActiveSpan)
    else:
        s = _new_span(ActiveSpan)
    s.name = name
    s.attributes = attributes
    s.start_ns = 0
    return s


_span_py = span  # the fallback's factory (the C one has the same rules, and the same name)
if _C is not None:
    span = _C.span  # noqa: F811


def window_(name: str, /, **attributes):
    """Open a window: a span that is one pass (``ttft.spec_device``, ``ttft.baseline``, ...).

    ``tracer.io_metrics()`` reports the caller's last finished window, and with
    ``QEFF_SPEC_DEBUG`` on every window prints its chunk line and IO table when it ends.
    """
    s = span(name, **attributes)
    if not isinstance(s, ActiveSpan):  # disabled, or under (or as) an unsampled root
        if s is NOOP and not STATE.enabled:
            _set_noop_last(name, attributes, True)
        return s
    s.__class__ = ActiveWindow  # same layout: its own window flag and full ending
    s.window_data = WindowData()
    return s


def current_span():
    """The innermost open span of this context, or :data:`NOOP`."""
    s = _current.get()
    return NOOP if s is None or s is UNSAMPLED else s


# The C path gets this module's objects and the Python code of every rare case, and follows its
# clock (``perf_counter_ns``, which a test may replace); True where C reads CLOCK_MONOTONIC itself.
_c_clock = _C is not None and _accel.wire(sys.modules[__name__])
