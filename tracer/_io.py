"""Transfers (host<->device and device<->device copies) on the hot path, and the per-window IO figures they add up to.

A transfer is one :class:`~tracer._record.Transfer` record plus a few integer additions onto the
span it happened in; bytes roll up to the enclosing chunk and window when those end
(:mod:`tracer._core`). :func:`io_metrics` answers QEfficient's ``get_last_io_metrics()`` for the
caller's own last window: per context (thread or asyncio task), so concurrent requests never
read each other's numbers, and a finished window never changes.
"""

from __future__ import annotations

from time import perf_counter_ns

from ._core import STATE, UNSAMPLED, _current, _last_window, _misuse
from ._record import DIRECTIONS, EMPTY_IO, EMPTY_TRANSFERS, IoTotals, Transfer, category_of, io_dict


def record_transfer(binding: str, direction: str, nbytes: int, *, ns: int | None = None,
                    start_ns: int | None = None, end_ns: int | None = None, src: str = "", dst: str = "") -> None:
    """Record one copy whose duration was measured elsewhere.

    ``binding`` is a binding name (``past_key.3_RetainedState``) or a category; ``direction``
    is ``"h2d"``, ``"d2h"`` or ``"d2d"`` (between two device groups); give either ``ns``
    (duration, ending now) or ``start_ns`` and ``end_ns`` (``perf_counter_ns`` readings).
    ``src``/``dst``: the device (group) on each side, e.g. ``"cuda:0,1"``; empty for the host.
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
    _add_transfer(binding, direction, int(nbytes), start_ns, end_ns, src, dst)


def _check(direction, nbytes) -> None:
    """The documented misuse, raised at the call: a byte count that is not a non-negative int, a bad direction."""
    if type(nbytes) is not int:  # numpy integers and other ``__index__`` types are fine too
        if isinstance(nbytes, bool) or not hasattr(nbytes, "__index__"):
            raise ValueError(f"nbytes must be a non-negative integer, got {nbytes!r}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be a non-negative integer, got {nbytes!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'h2d', 'd2h' or 'd2d', got {direction!r}")


_categories: dict = {}  # binding name -> category, so the split runs once per name


def _add_transfer(binding, direction, nbytes, start_ns, end_ns, src="", dst="") -> None:
    cur = _current.get()
    if cur is None or cur is UNSAMPLED:
        return  # nothing to roll up onto; io_metrics is per window
    if cur.end_ns:  # the span this context still names has ended (a task outlived it)
        _misuse("a transfer after its span ended is not recorded (finished spans are immutable)")
        return
    category = _categories.get(binding)
    if category is None:
        category = category_of(binding)
        if isinstance(binding, str) and len(_categories) < 4096:
            _categories[binding] = category
        else:
            binding = category
    t = Transfer(category, direction, nbytes, start_ns, end_ns, binding, cur.span_id, cur.thread_id, src, dst)
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
    elif direction == "d2h":
        tot.d2h_bytes += nbytes
    else:
        tot.d2d_bytes += nbytes
    w = cur._window
    if w is not None and not w.end_ns:
        w.window_data.transfers.append(t)


class _TransferTimer:
    """``with tracer.transfer(binding, direction, nbytes):`` times the copy inside the block.

    ``nbytes`` may be changed inside the block (known only after the copy); it is checked again
    at the end, so a negative or non-integer value fails there, as it would at the call.
    """

    __slots__ = ("binding", "direction", "nbytes", "start_ns", "src", "dst")

    def __init__(self, binding, direction, nbytes, src="", dst=""):
        self.binding = binding
        self.direction = direction
        self.nbytes = nbytes
        self.src = src
        self.dst = dst

    def __enter__(self):
        self.start_ns = perf_counter_ns()
        return self

    def __exit__(self, exc_type, exc, tb):
        end = perf_counter_ns()
        if exc_type is None and STATE.enabled:
            _check(self.direction, self.nbytes)
            _add_transfer(self.binding, self.direction, int(self.nbytes), self.start_ns, end, self.src, self.dst)
        return False


def transfer(binding: str, direction: str, nbytes: int, *, src: str = "", dst: str = ""):
    """Time one copy: ``with tracer.transfer("logits", "d2h", x.nbytes): ...``.

    ``src``/``dst`` as for :func:`record_transfer`. ``nbytes`` may be set on the returned object inside the block when only known after the copy.
    """
    from ._core import NOOP

    if not STATE.enabled:
        return NOOP
    _check(direction, nbytes)
    return _TransferTimer(binding, direction, nbytes, src, dst)


def io_metrics() -> dict:
    """The caller's last finished window's IO in QEfficient's ``get_last_io_metrics()`` shape.

    ``{"total_bytes", "total_ms", "details", "categories"}``: ``details`` has one entry per
    binding name (bytes, ms, count, category, direction); ``categories`` has every category.
    "The caller's" is per context: the last window that ended in this thread or asyncio task
    (a task sees windows of its own and of the context it was created from). A context that
    never finished a window gets the process's last window (QEfficient's single-request use).
    For a given window, ``with tracer.window(...) as w:`` then ``w.io_metrics()``.
    """
    w = _last_window.get()
    return io_metrics_of(w if w is not None else STATE.last_window)


def io_metrics_of(w) -> dict:
    """One span's (a window's) IO figures; zeros for None."""
    categories = io_dict(w.io if w is not None else {})
    details: dict[str, dict] = {}
    if w is None:
        return {"total_bytes": 0, "total_ms": 0.0, "details": details, "categories": categories}
    transfers = w.window_data.transfers if w.window_data is not None else w.transfers
    for t in transfers:
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
