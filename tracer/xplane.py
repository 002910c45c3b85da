"""JAX's device profile (XPlane) next to the tracer's spans: capture, read, align.

The tracer's spans say what the host asked for; an XPlane says what the device did (kernels per
stream on GPU, XLA ops and thunks on CPU). :func:`profile` wraps ``jax.profiler.trace`` and,
while it runs, mirrors every tracer span as a ``jax.profiler.TraceAnnotation`` of the same
name. Those mirrored annotations are what makes alignment *measured*: :func:`align` pairs each
span with its annotation and returns the constant offset between the two clocks and the
residual after removing it.

XPlane time: the ``Task Environment`` plane's ``profile_start_time`` stat is epoch ns and every
event's ``start_ns`` is an offset from it, on host and device planes alike (checked with jax
0.10.2 on CPU and 0.11.2 on an H100: annotations land 0.1 µs from their spans after a measured
offset, residual under 5 µs, and every kernel of a chunk inside it). JAX is imported lazily,
so ``tracer`` works without it.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import os
import statistics
import time

from . import _core

__all__ = ["Plane", "Profile", "XSpace", "align", "find_xplane_files", "profile", "read_xplane", "set_mirror"]

_ABSOLUTE_NS = 10**17  # an event start past this is already epoch ns (a non-normalized XSpace)


def set_mirror(factory):
    """Install ``factory(name) -> context manager`` as the span mirror; returns the previous one.

    The core (``tracer._core.STATE.mirror``) calls ``factory(span.name)`` and enters the result
    just before a span's start timestamp and exits it just after its end, so the annotation
    brackets the span by the cost of one enter/exit. ``None`` turns mirroring off.
    :func:`profile` installs ``jax.profiler.TraceAnnotation`` for its block.
    """
    previous = _core.STATE.mirror
    _core.STATE.mirror = factory
    return previous


class Profile:
    """What one :func:`profile` block produced: ``paths`` of the new ``*.xplane.pb`` files."""

    def __init__(self, logdir: str):
        self.logdir = logdir
        self.paths: list[str] = []
        self.start_epoch_ns = 0
        self.end_epoch_ns = 0

    def __repr__(self) -> str:
        return f"Profile({self.logdir!r}, paths={self.paths!r})"


@contextlib.contextmanager
def profile(logdir, *, python_tracer: bool = False, host_tracer_level: int = 2, mirror: bool = True):
    """``with tracer.xplane.profile(logdir) as prof:`` — a ``jax.profiler.trace`` of the block.

    Tracer spans opened inside the block also open a ``TraceAnnotation`` (``mirror=True``).
    The Python tracer of JAX's profiler is off by default: it adds an event per Python call,
    slowing the run being measured and burying the XLA events. After the block,
    ``prof.paths`` lists the XPlane files it wrote.
    """
    import jax
    from jax.profiler import TraceAnnotation

    logdir = os.path.abspath(os.fspath(logdir))
    before = set(find_xplane_files(logdir)) if os.path.isdir(logdir) else set()
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 1 if python_tracer else 0
    options.host_tracer_level = host_tracer_level
    prof = Profile(logdir)
    prof.start_epoch_ns = time.time_ns()
    jax.profiler.start_trace(logdir, profiler_options=options)
    # The class itself is the factory: no Python frame between a span and its annotation.
    previous = set_mirror(TraceAnnotation) if mirror else _core.STATE.mirror
    try:
        yield prof
    finally:
        set_mirror(previous)
        prof.end_epoch_ns = time.time_ns()
        jax.profiler.stop_trace()
        prof.paths = [p for p in find_xplane_files(logdir) if p not in before]


def find_xplane_files(logdir) -> list[str]:
    """Every ``*.xplane.pb`` under ``logdir`` (``plugins/profile/<run>/<host>.xplane.pb``), sorted."""
    return sorted(glob.glob(os.path.join(os.fspath(logdir), "**", "*.xplane.pb"), recursive=True))


class Plane:
    """One XPlane: ``lines`` of ``(line name, events)``; an event is
    ``(name, start_ns, duration_ns, stats)`` with ``start_ns`` an offset from the profile start."""

    __slots__ = ("name", "stats", "lines")

    def __init__(self, name: str, stats: dict, lines: list):
        self.name = name
        self.stats = stats
        self.lines = lines

    @property
    def n_events(self) -> int:
        return sum(len(evs) for _, evs in self.lines)


class XSpace:
    """A read XPlane file: its planes, clock origin and the process it came from."""

    __slots__ = ("path", "start_ns", "stop_ns", "host", "pid", "metadata", "planes")

    def __init__(self, path, start_ns, stop_ns, host, pid, metadata, planes):
        self.path: str = path
        self.start_ns: int = start_ns  # profile_start_time, epoch ns
        self.stop_ns: int = stop_ns
        self.host: str = host
        self.pid: int | None = pid
        self.metadata: dict = metadata
        self.planes: list[Plane] = planes

    @property
    def n_events(self) -> int:
        return sum(p.n_events for p in self.planes)

    def __repr__(self) -> str:
        return f"XSpace({self.path!r}, planes={[p.name for p in self.planes]}, events={self.n_events})"


def read_xplane(path) -> XSpace:
    """Read a ``*.xplane.pb`` through ``jax.profiler.ProfileData`` (what ships with jaxlib).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for one
    that is truncated, empty or not an XPlane written by the JAX profiler.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # FileNotFoundError names the path
        data = f.read()
    try:
        from jax.profiler import ProfileData
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f"reading {path} needs jax (pip install jax): {e}") from None
    try:
        with _stderr_captured() as log:
            planes, env, meta = _planes(ProfileData.from_serialized_xspace(data))
    except Exception as e:
        said = next((ln.split("] ", 1)[-1] for ln in log() if ln.strip()), "")
        raise ValueError(f"{path} is not an XPlane file (protobuf XSpace did not parse: "
                         f"truncated or another format; {len(data)} bytes"
                         + (f"; the parser said: {said[:160]}" if said else "") + ")") from e
    if env is None or not isinstance(env.get("profile_start_time"), int):
        what = "is empty" if not data else "has no 'Task Environment' plane with profile_start_time"
        raise ValueError(f"{path} is not an XPlane file written by jax.profiler ({what}; "
                         "truncated, or another protobuf?)")
    pid = meta.get("process_id")
    for plane in planes:
        pid = pid if pid is not None else plane.stats.get("process_id")
    base = os.path.basename(path)
    host = base[: -len(".xplane.pb")] if base.endswith(".xplane.pb") else base
    return XSpace(path, env["profile_start_time"], env.get("profile_stop_time", 0), host,
                  pid if isinstance(pid, int) else None, meta, planes)


def _planes(space) -> tuple[list[Plane], dict | None, dict]:
    """(planes with events, the ``Task Environment`` stats, ``/host:metadata`` stats)."""
    planes, env, meta = [], None, {}
    for plane in space.planes:
        name = plane.name
        stats = _stats(plane.stats)
        if name == "Task Environment":
            env = stats
            continue
        if name == "/host:metadata":
            meta.update(stats)
        lines = []
        for line in plane.lines:
            events = [(e.name, e.start_ns, e.duration_ns, _stats(e.stats)) for e in line.events]
            if events:
                lines.append((line.name, events))
        if lines:
            planes.append(Plane(name, stats, lines))
    return planes, env, meta


@contextlib.contextmanager
def _stderr_captured():
    """Collect what C++ code writes to fd 2 during the block (``log()``: its lines, afterwards).

    jaxlib's protobuf parser logs each problem of a damaged file straight to fd 2 (``E1201
    ... wire_format_lite.cc:578] String field ... contains invalid UTF-8``), which would turn
    ``spectrace merge``'s one-line error into a screenful. The lines are kept for the error
    message instead. Only the file descriptor is swapped, for the length of one parse.
    """
    import tempfile

    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to capture
        yield lambda: lines
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read(1 << 16).decode("utf-8", "replace").splitlines())


def _stats(pairs) -> dict:
    d = dict(pairs)
    d.pop(None, None)  # ProfileData yields (None, None) for stats whose metadata id is unknown
    return d


def op_ordinal(stats: dict) -> int | None:
    """The ``device_ordinal`` of an XLA op event (one with an ``hlo_op`` stat), else None: on CPU
    every forced host device's ops share the ``/host:CPU`` plane, and this says whose an op is."""
    n = stats.get("device_ordinal")
    return n if "hlo_op" in stats and isinstance(n, int) and not isinstance(n, bool) else None


def event_epoch_ns(xspace: XSpace, start_ns: float) -> int:
    """Epoch ns of an event offset (before any alignment correction)."""
    if start_ns >= _ABSOLUTE_NS:
        return int(start_ns)
    return xspace.start_ns + round(start_ns)


def no_alignment() -> dict:
    """What :func:`align` returns when nothing could be paired (a fresh dict each call)."""
    return {"offset_us": None, "median_us": None, "max_us": None, "pairs": 0}


def align(marks, xspace: XSpace) -> dict:
    """Measure how far the XPlane clock is from the spans' clock.

    ``marks``: ``(name, start_epoch_ns, end_epoch_ns)`` of the spans of the process that was
    profiled. Each span is paired with the host-plane event of the same name in the same order
    (per name; when the profile covered only some spans, the contiguous run of spans closest in
    time). Starts and ends both count. Returns ``offset_us`` (median of annotation minus span;
    subtract it from XPlane times), ``median_us``/``max_us`` of the residual after that
    correction and ``pairs``; ``None`` values when nothing could be paired.
    """
    by_name: dict[str, list] = {}
    for name, start, end in marks:
        by_name.setdefault(name, []).append((start, end))
    annots: dict[str, list] = {}
    for plane in xspace.planes:
        if not plane.name.startswith("/host:"):
            continue
        for _, events in plane.lines:
            for name, start, dur, _ in events:
                if name in by_name:
                    s = event_epoch_ns(xspace, start)
                    annots.setdefault(name, []).append((s, s + round(dur)))
    diffs: list[int] = []
    pairs = 0
    for name, evs in annots.items():
        spans = sorted(by_name[name])
        evs.sort()
        n, m = len(spans), len(evs)
        if m > n:  # more annotations than spans: pair the spans with the closest run of them
            spans, evs, n, m = evs, spans, m, n
            sign = -1
        else:
            sign = 1
        # Clocks of one host agree to µs while spans of one name are far apart, so the right
        # run starts at the span nearest the first annotation; look one or two either side
        # (clamped to the runs there are: a profile clock ahead by more than two spans' spacing
        # put the window past the last run, and nothing was paired).
        i = bisect.bisect_left([s[0] for s in spans], evs[0][0])
        lo = min(max(0, i - 2), n - m)
        best = None
        for k in range(lo, max(lo, min(n - m, i + 2)) + 1):
            d = [sign * (e[0] - s[0]) for s, e in zip(spans[k:k + m], evs)]
            score = abs(statistics.median(d))
            if best is None or score < best[0]:
                best = (score, k)
        k = best[1]
        for s, e in zip(spans[k:k + m], evs):
            diffs.append(sign * (e[0] - s[0]))
            diffs.append(sign * (e[1] - s[1]))
        pairs += m
    if not diffs:
        return no_alignment()
    offset = statistics.median(diffs)
    resid = [abs(d - offset) for d in diffs]
    return {"offset_us": offset / 1e3, "median_us": statistics.median(resid) / 1e3,
            "max_us": max(resid) / 1e3, "pairs": pairs}
