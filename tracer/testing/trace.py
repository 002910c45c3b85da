"""``Trace``: finished spans as a tree you can query and assert on.

One class serves every source (a live in-memory capture, a ``.pftrace`` file, OTLP JSON, OTel
SDK spans) because the questions a test asks do not depend on where the spans came from.
Spans are renumbered 1..n in start order and trace ids 1..k in root start order, so ids in a
failure message are the same on every run. A live trace (the ``spectrace_trace`` fixture)
re-reads its recording whenever it is used, so it can be queried mid-test.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Iterable, Mapping

from .._record import CATEGORIES
from . import _render, loaders
from ._asserts import Assertions
from ._view import NO_IO, Io, SpanLookupError, SpanView, TransferView, _name_ok, merge_attrs, mismatches


class _Index:
    """Tree links and deterministic ids of one snapshot of the spans."""

    __slots__ = ("spans", "ids", "parent", "children", "trace_ids", "roots", "t0", "categories")

    def __init__(self, views: list[SpanView]):
        by_raw = {v._raw_id: v for v in views if v._raw_id is not None}
        parent = {v: by_raw.get(v._raw_parent) for v in views}
        parent = {v: p for v, p in parent.items() if p is not None and p is not v}
        depth: dict[SpanView, int] = {}
        root: dict[SpanView, SpanView] = {}
        for v in views:
            chain, on_chain, p = [], set(), v
            while p is not None and p not in depth:
                if p in on_chain:  # a cycle (only a broken file has one): cut it here
                    del parent[chain[-1]]
                    p = None
                    break
                chain.append(p)
                on_chain.add(p)
                p = parent.get(p)
            d, top = (depth[p], root[p]) if p is not None else (-1, chain[-1] if chain else v)
            for c in reversed(chain):
                d += 1
                depth[c], root[c] = d, top
        # Start order; a parent that starts in the same ns as its child still comes first.
        order = {v: i for i, v in enumerate(views)}
        self.spans = sorted(views, key=lambda v: (v.start_ns, depth[v], order[v]))
        self.ids = {v: i for i, v in enumerate(self.spans, 1)}
        self.parent = parent
        self.children: dict[SpanView, list[SpanView]] = {}
        for v in self.spans:
            p = parent.get(v)
            if p is not None:
                self.children.setdefault(p, []).append(v)
        self.roots = [v for v in self.spans if v not in parent]
        root_ids = {r: i for i, r in enumerate(self.roots, 1)}
        self.trace_ids = {v: root_ids[root[v]] for v in self.spans}
        self.t0 = self.spans[0].start_ns if self.spans else 0
        extra = sorted({c for v in views for c in v.io} - set(CATEGORIES))
        self.categories = CATEGORIES + tuple(extra)  # spectrace's, plus any other seen


class Trace(Assertions):
    """Finished spans (and, for in-memory captures, transfers) as a queryable tree."""

    def __init__(self, spans: Iterable[SpanView] = (), transfers: Iterable[TransferView] = ()):
        self._views: list[SpanView] = []
        self._transfers: list[TransferView] = []
        self._idx: _Index | None = None
        self._recording = None  # a live tracer Recording, read again on every use
        self._seen = 0
        self._adopt(spans, transfers)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a ``.pftrace`` written by spectrace or an OTLP JSON file (collector file exporter)."""
        return cls(*loaders.load(path))

    @classmethod
    def from_spans(cls, spans) -> Trace:
        """From ``tracer.Span`` records or a ``tracer.capture()`` recording (a snapshot)."""
        return cls(*loaders.from_records(list(getattr(spans, "spans", spans))))

    @classmethod
    def from_otel(cls, spans) -> Trace:
        """From OpenTelemetry SDK ``ReadableSpan``s (e.g. ``InMemorySpanExporter.get_finished_spans()``)."""
        return cls(*loaders.from_otel(spans))

    @classmethod
    def from_otlp_json(cls, text: str) -> Trace:
        """From OTLP JSON text (see :meth:`load`)."""
        return cls(*loaders.from_otlp_json(text))

    @classmethod
    def live(cls, recording) -> Trace:
        """A trace that follows a ``tracer.capture()`` recording as spans keep finishing."""
        trace = cls()
        trace._recording = recording
        return trace

    def _adopt(self, spans: Iterable[SpanView], transfers: Iterable[TransferView]) -> None:
        spans = list(spans)
        for v in spans:
            if v._trace is not None and v._trace is not self:
                raise ValueError(f"{v!r} already belongs to another Trace")
            v._trace = self
        self._views.extend(spans)
        self._transfers.extend(transfers)
        self._idx = None

    def _sync(self) -> None:
        rec = self._recording
        if rec is not None and len(rec.spans) != self._seen:
            new = rec.spans[self._seen:]
            self._seen = len(rec.spans)
            self._adopt(*loaders.from_records(new))

    def _index(self) -> _Index:
        self._sync()
        if self._idx is None:
            self._idx = _Index(self._views)
        return self._idx

    # -- collections -------------------------------------------------------------------------
    @property
    def spans(self) -> list[SpanView]:
        """Every span, in start order."""
        return list(self._index().spans)

    @property
    def roots(self) -> list[SpanView]:
        """Spans whose parent is not in the trace, in start order."""
        return list(self._index().roots)

    @property
    def transfers(self) -> list[TransferView]:
        """Individual copies, in start order (in-memory captures; files keep only totals)."""
        self._sync()
        return sorted(self._transfers, key=lambda t: t.start_ns)

    @property
    def categories(self) -> tuple[str, ...]:
        """The binding categories of spectrace plus any other seen in this trace."""
        return self._index().categories

    def __len__(self) -> int:
        return len(self._index().spans)

    def __iter__(self):
        return iter(self.spans)

    def __repr__(self) -> str:
        return f"<Trace {len(self)} spans, {len(self.transfers)} transfers>"

    def __str__(self) -> str:
        return self.tree()

    def tree(self, *focus: SpanView, max_lines: int = 200) -> str:
        """The span tree as text (around ``focus`` when given), as failure messages print it."""
        return _render.tree(self, focus, max_lines=max_lines)

    # -- queries -----------------------------------------------------------------------------
    def all(self, name: str | None = None, *, attrs: Mapping[str, Any] | None = None,
            within: SpanView | None = None, **kw: Any) -> list[SpanView]:
        """Spans named ``name`` (exact, or a glob such as ``ttft.*``) whose attributes match.

        Attribute filters come as ``attrs={"chunk.index": 0}`` and/or keywords, where
        ``chunk_index=0`` finds ``chunk.index``; a filter value may be a predicate
        (``tokens=lambda n: n > 0``). ``within`` limits the search to a span's descendants.
        """
        wanted = merge_attrs(attrs, kw)
        return [s for s in self._pool(within) if _name_ok(s.name, name) and not mismatches(s.attributes, wanted)]

    def one(self, name: str | None = None, *, attrs: Mapping[str, Any] | None = None,
            within: SpanView | None = None, **kw: Any) -> SpanView:
        """The single span that matches; :class:`SpanLookupError` listing near matches otherwise."""
        __tracebackhide__ = True  # pytest: point at the test line
        found = self.all(name, attrs=attrs, within=within, **kw)
        if len(found) == 1:
            return found[0]
        raise SpanLookupError(self._lookup_message(name, merge_attrs(attrs, kw), found, within))

    def io(self, category: str | None = None, name: str | None = None, *, span: SpanView | None = None,
           attrs: Mapping[str, Any] | None = None, **kw: Any) -> Io:
        """Traffic of ``category`` (``None``: every category) under the matching spans.

        Matching spans are those of ``name``/attributes in ``span`` and its descendants (the
        whole trace without ``span``); a matching span below another matching span is not
        counted twice, because ``io`` is inclusive. So ``io("past_key", span=window)`` is the
        window's traffic and ``io("past_key", "prefill.chunk", span=window)`` its chunks' only.
        """
        return self._io_parts(category, name, span, merge_attrs(attrs, kw))[0]

    def bytes(self, category: str | None = None, name: str | None = None, *, span: SpanView | None = None,
              attrs: Mapping[str, Any] | None = None, **kw: Any) -> int:
        """Bytes of ``category`` under the matching spans (see :meth:`io`)."""
        return self.io(category, name, span=span, attrs=attrs, **kw).bytes

    def ms(self, category: str | None = None, name: str | None = None, *, span: SpanView | None = None,
           attrs: Mapping[str, Any] | None = None, **kw: Any) -> float:
        """Transfer milliseconds of ``category`` under the matching spans (see :meth:`io`)."""
        return self.io(category, name, span=span, attrs=attrs, **kw).ms

    # -- helpers shared with the assertions ---------------------------------------------------
    def _pool(self, within: SpanView | None) -> list[SpanView]:
        if within is None:
            return list(self._index().spans)
        self._own(within)
        ids = self._index().ids
        return sorted(within.descendants, key=ids.__getitem__)

    def _own(self, span: Any) -> SpanView:
        if not isinstance(span, SpanView):
            raise TypeError(f"expected a SpanView from this trace, got {span!r}")
        if span._trace is not self:
            raise ValueError(f"{span!r} belongs to another Trace")
        return span

    def _io_parts(self, category, name, span, wanted) -> tuple[Io, list[SpanView]]:
        if category is not None:
            self._check_category(category)
        pool = ([self._own(span)] + self._pool(span)) if span is not None else self._pool(None)
        matching = {s for s in pool if _name_ok(s.name, name) and not mismatches(s.attributes, wanted)}
        top = [s for s in pool if s in matching and not any(a in matching for a in s.ancestors)]
        total = NO_IO
        for s in top:  # the category is checked above (None: every category)
            total = total + (s.io_of(None) if category is None else s._io.get(category, NO_IO))
        return total, top

    def _check_category(self, category: str) -> None:
        if category not in self.categories:
            close = difflib.get_close_matches(category, self.categories, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown binding category {category!r}{hint} "
                             f"(categories: {', '.join(self.categories)})")

    def _lookup_message(self, name, wanted, found, within) -> str:
        what = _render.describe_query(name, wanted)
        where = f" within #{within.span_id} {within.name}" if within is not None else ""
        t0 = self._index().t0
        if len(found) > 1:
            lines = [f"{len(found)} spans match {what}{where}; expected exactly one. "
                     "Add an attribute filter to pick one:"]
            lines += [f"  {_render.describe(s, t0)}" for s in found[:10]]
            if len(found) > 10:
                lines.append(f"  ... and {len(found) - 10} more")
            return "\n".join(lines)
        pool = self._pool(within)
        if not pool:
            return (f"no span matches {what}{where}: the trace is empty. Is recording on "
                    "(tracer.configure(enabled=True); the spectrace_trace fixture does it) and "
                    "did the span finish before the trace was read?")
        lines = [f"no span matches {what}{where}."]
        same = [s for s in pool if _name_ok(s.name, name)]
        if same:
            lines.append(f"Spans named {name!r} that differ:" if name else "Spans that differ:")
            for s in same[:10]:
                lines.append(f"  #{s.span_id} {s.name}: " + "; ".join(mismatches(s.attributes, wanted)))
            if len(same) > 10:
                lines.append(f"  ... and {len(same) - 10} more")
        else:
            names = list(dict.fromkeys(s.name for s in pool))
            close = difflib.get_close_matches(name or "", names, n=3, cutoff=0.5)
            if close:
                lines.append(f"Did you mean {' or '.join(map(repr, close))}?")
            lines.append(f"Span names here: {', '.join(names[:30])}{' ...' if len(names) > 30 else ''}")
        return "\n".join(lines)


__all__ = ["SpanLookupError", "Trace"]
