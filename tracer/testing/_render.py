"""The span tree as text, for failure messages and ``print(trace)``.

A failing trace assertion in CI is only useful if its message explains itself, so every
assertion prints the part of the tree around the spans it looked at: their ancestors, the spans
themselves (marked ``>``), their children and nearby siblings, each with start/end relative to
the first span of the trace, duration, attributes and per-category traffic. Long runs of
uninteresting siblings (a hundred prefill chunks) collapse into one ``...`` line.
"""

from __future__ import annotations

from typing import Iterable

LEGEND = "span tree (#id name  start-end ms from trace start (duration)  attributes  io: category bytes/transfers ms):"
_MAX_VALUE = 40  # characters of one attribute value before it is cut


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 3] + "..."


def describe(span, t0: int) -> str:
    """``#3 prefill.chunk  1.200-2.400 ms (1.200)  engine='spec' chunk.index=0  io: ...``."""
    start = (span.start_ns - t0) / 1e6
    end = (span.end_ns - t0) / 1e6
    parts = [f"#{span.span_id} {span.name}  {start:.3f}-{end:.3f} ms ({span.duration_ms:.3f})"]
    if span.attributes:
        parts.append(" ".join(f"{k}={_short(v)}" for k, v in span.attributes.items()))
    if span.io:
        parts.append("io: " + ", ".join(f"{cat} {io.bytes} B/{io.count}x {io.ms:.3f} ms"
                                        for cat, io in span.io.items()))
    if span.error_type:
        parts.append(f"ERROR {span.error_type}: {span.error_message}")
    return "  ".join(parts)


def tree(trace, focus: Iterable = (), max_lines: int = 40) -> str:
    """The trees holding ``focus`` (all trees when empty), pruned to about ``max_lines`` lines."""
    index = trace._index()
    if not index.spans:
        return "span tree: (empty: no finished span was captured)"
    focus = [s for s in focus if s._trace is trace]
    marked = set(focus)
    roots = sorted(_unique(s.root for s in focus), key=index.ids.__getitem__) if focus else list(index.roots)
    total = sum(1 + len(r.descendants) for r in roots)
    keep = None  # None: print everything under ``roots``
    if total > max_lines:
        keep = set()
        for s in focus or roots:
            keep.add(s)
            keep.update(s.ancestors)
            keep.update(index.children.get(s, ())[:3])
        # Up to two siblings on each side of every focus span give something to compare with.
        for s in focus:
            siblings = index.children.get(s.parent, ()) if s.parent is not None else index.roots
            i = siblings.index(s)
            keep.update(siblings[max(0, i - 2):i + 3])
    lines = [LEGEND]
    t0 = index.t0
    for root in _walk_level(roots, keep):
        _emit(root, 0, index, keep, marked, t0, lines)
    if len(lines) > max_lines + 1 and keep is None:
        cut = len(lines) - max_lines - 1
        lines = lines[:max_lines + 1] + [f"  ... {cut} more lines"]
    return "\n".join(lines)


def _emit(item, depth, index, keep, marked, t0, lines) -> None:
    pad = "  " * depth
    if isinstance(item, tuple):  # an elided run of siblings
        names = {}
        for s in item:
            names[s.name] = names.get(s.name, 0) + 1
        summary = ", ".join(f"{n} x{c}" for n, c in names.items())
        ids = f"#{item[0].span_id}" if len(item) == 1 else f"#{item[0].span_id}..#{item[-1].span_id}"
        lines.append(f"  {pad}... {len(item)} span{'s' if len(item) > 1 else ''} {ids} ({summary})")
        return
    lines.append(f"{'>' if item in marked else ' '} {pad}{describe(item, t0)}")
    for child in _walk_level(index.children.get(item, ()), keep):
        _emit(child, depth + 1, index, keep, marked, t0, lines)


def _walk_level(spans, keep):
    """The spans of one level, with runs of spans not in ``keep`` folded into tuples."""
    if keep is None:
        yield from spans
        return
    run: list = []
    for s in spans:
        if s in keep:
            if run:
                yield tuple(run)
                run = []
            yield s
        else:
            run.append(s)
    if run:
        yield tuple(run)


def _unique(items) -> list:
    seen, out = set(), []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def describe_query(name, wanted) -> str:
    """``'prefill.chunk' with engine='spec', chunk_index=0``: a query as failure messages say it."""
    what = repr(name) if name is not None else "any name"
    if wanted:
        shown = ", ".join(f"{k}={getattr(v, '__name__', None) if callable(v) else repr(v)}"
                          for k, v in wanted.items())
        what += f" with {shown}"
    return what
