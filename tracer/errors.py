"""How the ``spectrace`` command ends: one line (exit code 2) for a user error, 130 for Ctrl-C.

Its own module so that ``python -m spectrace.tracer.cli`` (where cli is ``__main__``) and
:mod:`engines.jobs` raise and catch the same class, and share one record of Ctrl-C.

Why Ctrl-C needs a record: Python raises ``KeyboardInterrupt`` wherever the main thread is when
the signal's handler runs, and some places swallow it. During the first second of a run JAX is
being imported and the garbage collector calls jax's ``_xla_gc_callback`` often; a
``KeyboardInterrupt`` raised inside a gc callback (or a ``__del__``, or a weakref callback) is
only printed as "Exception ignored in ..." and the run went on to finish with exit code 0. One
raised while jaxlib's extension module initializes comes out as an ``ImportError``. So the
handler installed by :func:`handle_interrupts` counts every SIGINT, the unraisable-exception
hook drops the swallowed ones silently, and :func:`check_interrupt` (called between the steps of
a run and before its files are committed) raises again if an interrupt was lost.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


class UserError(Exception):
    """A mistake in what the user asked for: the message names the option and the value."""


_STATE = {"received": 0, "deferred": 0}


def interrupted() -> bool:
    """Whether SIGINT arrived since :func:`handle_interrupts` was entered."""
    return _STATE["received"] > 0


def check_interrupt() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived, even one that something swallowed."""
    if _STATE["received"] and not _STATE["deferred"]:
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:
    _STATE["received"] += 1
    if not _STATE["deferred"]:
        raise KeyboardInterrupt


def _unraisable(previous):
    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            return  # counted by _on_sigint; check_interrupt raises it again where it can land
        previous(unraisable)
    return hook


@contextlib.contextmanager
def handle_interrupts(*, then_ignore: bool = False):
    """Install the counting SIGINT handler and the unraisable hook for the block (main thread only).

    ``then_ignore``: afterwards ignore SIGINT instead of restoring the previous handler, for the
    command itself, whose process only exits from there: a Ctrl-C landing in JAX's atexit
    cleanup would otherwise print a traceback after the run's files and summary are out.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STATE["received"] = 0
    old_handler = signal.signal(signal.SIGINT, _on_sigint)
    old_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(old_hook)
    try:
        yield
    finally:
        sys.unraisablehook = old_hook
        signal.signal(signal.SIGINT, signal.SIG_IGN if then_ignore else old_handler)


@contextlib.contextmanager
def interrupts_deferred():
    """A Ctrl-C during the block is counted but raised only after it (cleanup must finish)."""
    _STATE["deferred"] += 1
    try:
        yield
    finally:
        _STATE["deferred"] -= 1
    check_interrupt()
