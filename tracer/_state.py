"""The recorder's process state and context gating: ``STATE``, the current-span context variable,
the unsampled marker, :class:`suppress`, the books' drop counter and the misuse reporter.

Split from :mod:`tracer._core` (the spans themselves) so each module is one concept; ``_core``
re-exports these names, which is where the rest of the tracer imports them from.
"""

from __future__ import annotations

import collections
import contextvars
import sys
import threading

from . import _config
from ._accel import speedups
from ._record import Span

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("spectrace_span", default=None)

if speedups is not None:
    _HotState = speedups.StateCore  # the same fields in a C struct, read by the C span path
else:
    class _HotState:
        """The fields every span reads or counts; in C (``StateCore``) when the accelerator is used."""

        __slots__ = ("enabled", "gated", "exporting", "max_spans", "offered", "unexported", "dropped",
                     "captures", "pending", "on_root_start", "on_root_end", "_mirror")


class _State(_HotState):
    """Process-wide recorder state. One instance, :data:`STATE`."""

    __slots__ = ("debug", "last_window", "warned_drop", "lock", "sampler", "windows_out", "suppressed")

    def __init__(self) -> None:
        env = _config.from_environment()
        self.enabled: bool = env["enabled"]
        self.debug: bool = env["debug"]
        self.max_spans: int = env["max_spans"]
        # Finished spans waiting for an exporter (bounded). A deque: append and popleft are
        # atomic, so the export thread can drain it while engine threads append.
        self.pending: collections.deque[Span] = collections.deque()
        self.dropped = 0  # spans that did not fit into ``pending``
        self.unexported = 0  # spans finished while no exporter was configured (not buffered)
        self.captures: tuple = ()  # active tracer.capture() recordings
        self.exporting = False  # an exporter consumes ``pending``
        self.on_root_end = None  # callable: wake the export worker
        self._mirror = None  # factory(name) -> context manager (TraceAnnotation while profiling)
        self.last_window: Span | None = None  # the process's last finished window (any context)
        self.sampler = None  # the OTel sampler when one is configured
        self.suppressed = 0  # open tracer.suppress() blocks
        self.gated = False  # sampler or suppress in use: span() checks for UNSAMPLED
        self.on_root_start = None  # callable(root span) -> sampled?: the caller's OTel parent, the sampler
        self.windows_out = None  # deque of finished windows for the metrics worker, or None
        # spans_recorded = offered (finished while exporting: buffered or dropped) + unexported,
        # so finishing a span adds to exactly one counter
        self.offered = 0
        self.warned_drop = False
        self.lock = threading.Lock()  # guards cross-thread io merges and id allocation races

    @property
    def recorded(self) -> int:
        """Spans finished and sampled, in all: every one is either offered to the buffer or unexported."""
        return self.offered + self.unexported

    @recorded.setter
    def recorded(self, value: int) -> None:  # a reset (a forked child): both parts
        self.offered = value
        self.unexported = 0

    @property
    def mirror(self):
        """``factory(name) -> context manager`` entered around every span (``tracer.xplane``), or None."""
        return self._mirror

    @mirror.setter
    def mirror(self, factory) -> None:
        self._mirror = factory
        regate()  # span() picks a mirrored span only while one is set: no check on the fast path


STATE = _State()

def _safe_str(value) -> str:
    try:
        return str(value)
    except Exception as e:
        return f"<{type(value).__name__}: str() raised {type(e).__name__}>"


_misuse_seen: set = set()


def _misuse(message: str) -> None:
    """Report one kind of tolerated misuse once per process, on stderr; never raise."""
    if message in _misuse_seen or len(_misuse_seen) > 64:
        return
    _misuse_seen.add(message)
    try:
        print(f"spectrace: warning: {message}", file=sys.stderr)
    except Exception:
        pass

class _Unsampled:
    """The context marker under an unsampled root (never a real span)."""

    __slots__ = ()
    end_ns = 0
    span_id = 0
    _parent = None  # read like a span's when recording was reconfigured under it
    _window = None


UNSAMPLED = _Unsampled()


def regate() -> None:
    """Recompute whether span() takes its slow branch: a sampler or suppress() in use (it must
    look for :data:`UNSAMPLED`, so only then does it read the context) or a mirror set."""
    STATE.gated = STATE.sampler is not None or STATE.suppressed > 0 or STATE._mirror is not None


class suppress:
    """``with tracer.suppress():`` records nothing inside: no span, no transfer, no request metric.

    For work that is not a request: a compile warm-up, a health check. Cheap (the shared no-op
    for every span inside), nestable, and per context (other threads and tasks record as usual).
    """

    __slots__ = ("_token",)

    def __enter__(self):
        STATE.suppressed += 1
        regate()
        self._token = _current.set(UNSAMPLED)
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            _current.reset(self._token)
        except ValueError:
            _current.set(None)
        STATE.suppressed -= 1
        regate()
        return False


def suppressed() -> bool:
    """Whether this context is inside :class:`suppress` or an unsampled request."""
    return _current.get() is UNSAMPLED

def _count_drop(n: int) -> None:
    STATE.dropped += n
    if not STATE.warned_drop:
        STATE.warned_drop = True
        print(f"spectrace: warning: span buffer full (max_spans={STATE.max_spans}); dropping "
              "finished spans from now on and counting them (set SPECTRACE_MAX_SPANS or "
              "tracer.configure(max_spans=...), or export with OTEL_TRACES_EXPORTER)",
              file=sys.stderr)


def take_pending() -> list[Span]:
    """Remove and return the finished spans waiting for an exporter (the export worker's call:
    it counts them as in flight until it settles them)."""
    pending = STATE.pending
    return [pending.popleft() for _ in range(len(pending))]
