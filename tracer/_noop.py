"""The disabled span, :data:`NOOP`, and the decorators (``@tracer.span(name)``, :func:`instrument`).

Split from :mod:`tracer._core` (the recording spans) so each module is one concept; ``_core``
re-exports these names. Disabled, ``span()`` returns the one shared :data:`NOOP`: no allocation.
"""

from __future__ import annotations

import functools

from ._accel import speedups as _C


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

    def io_metrics(self) -> dict:
        from ._io import io_metrics_of

        return io_metrics_of(None)

    def __call__(self, fn):
        # Decorating while disabled must still trace calls made after recording is turned on.
        # The shared no-op cannot carry a name, so it is the one the last disabled span() call
        # gave: right for ``@tracer.span("name")``, applied in the same expression. A disabled
        # span object kept and applied later, or a decorator applied while other threads open
        # spans, cannot know its name for sure (a per-call object or a per-thread note would
        # cost every disabled span 50-100 ns): :func:`tracer.instrument` always can.
        name, attributes, window = _get_noop_last()
        return _decorate(fn, name, dict(attributes), window)

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOOP"


NOOP = _NoopSpan()


# What the last disabled span() call named (NOOP used as a decorator): one tuple, one store
# (in C, the call's name and keywords, kept as passed: no allocation).
_noop_last: list = [("", {}, False)]
if _C is None:
    def _get_noop_last() -> tuple:
        return _noop_last[0]

    def _set_noop_last(name, attributes, window) -> None:
        _noop_last[0] = (name, attributes, window)
else:
    _get_noop_last, _set_noop_last = _C.noop_last, _C.set_noop_last


def _decorate(fn, name, attributes, window):
    from ._core import span, window_  # at decoration time: _core imports this module

    opener = window_ if window else span

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with opener(name, **attributes):
            return fn(*args, **kwargs)

    return wrapper


def instrument(name: str, /, *, window: bool = False, **attributes):
    """A decorator that opens a span (or window) named ``name`` around every call.

    Unlike ``@tracer.span(name)`` it never depends on whether recording was on when it was
    applied: the decision is made at each call.
    """
    return lambda fn: _decorate(fn, name, attributes, window)
