"""Errors the ``spectrace`` command reports as one line (exit code 2) instead of a traceback.

Its own module so that ``python -m spectrace.tracer.cli`` (where cli is ``__main__``) and
:mod:`engines.jobs` raise and catch the same class.
"""


class UserError(Exception):
    """A mistake in what the user asked for: the message names the option and the value."""
