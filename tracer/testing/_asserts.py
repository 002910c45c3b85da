"""The assertions of :class:`~tracer.testing.Trace`, kept apart from the queries they use.

Every assertion raises ``AssertionError`` whose message says what was expected, what was
found (with values and times), and then prints the span tree around the spans involved, so a
failing CI log explains itself without re-running anything. Spans may be given as
``SpanView``s, lists of them, or a name (meaning every span of that name). Methods set
``__tracebackhide__`` so pytest points at the test's line rather than into this module.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ._render import describe_query
from ._view import SpanLookupError, SpanView, merge_attrs, mismatches


class Assertions:
    """Mixed into :class:`~tracer.testing.Trace`; relies on its ``all``/``_index``/``_io_parts``."""

    def assert_within(self, inner, outer) -> None:
        """Every ``inner`` span lies inside (start and end) some ``outer`` span."""
        __tracebackhide__ = True
        inners, outers = self._resolve(inner, "inner"), self._resolve(outer, "outer")
        bad = [i for i in inners
               if not any(o is not i and o.start_ns <= i.start_ns and i.end_ns <= o.end_ns for o in outers)]
        if not bad:
            return
        i = bad[0]
        o = min(outers, key=lambda o: max(0, o.start_ns - i.start_ns) + max(0, i.end_ns - o.end_ns))
        why = []
        if i is o:
            why.append("it is the same span")
        elif i.start_ns >= o.end_ns:
            why.append(f"starts {(i.start_ns - o.end_ns) / 1e6:.3f} ms after it ends")
        elif i.end_ns <= o.start_ns:
            why.append(f"ends {(o.start_ns - i.end_ns) / 1e6:.3f} ms before it starts")
        else:
            if i.start_ns < o.start_ns:
                why.append(f"starts {(o.start_ns - i.start_ns) / 1e6:.3f} ms before it")
            if i.end_ns > o.end_ns:
                why.append(f"ends {(i.end_ns - o.end_ns) / 1e6:.3f} ms after it")
        others = f" (and {len(bad) - 1} more spans)" if len(bad) > 1 else ""
        self._fail(f"assert_within: {self._label(i)} is not within {self._label(o)}: "
                   f"{' and '.join(why)}{others}", bad + outers)

    def assert_before(self, earlier, later) -> None:
        """Every ``earlier`` span ends no later than every ``later`` span starts."""
        __tracebackhide__ = True
        firsts, seconds = self._resolve(earlier, "earlier"), self._resolve(later, "later")
        a = max(firsts, key=lambda s: s.end_ns)
        b = min(seconds, key=lambda s: s.start_ns)
        if a.end_ns <= b.start_ns:
            return
        self._fail(f"assert_before: {self._label(a)} ends {(a.end_ns - b.start_ns) / 1e6:.3f} ms after "
                   f"{self._label(b)} starts", [a, b])

    def assert_no_overlap(self, *spans) -> None:
        """No two of the given spans overlap in time (touching ends are fine)."""
        __tracebackhide__ = True
        flat: list[SpanView] = []
        for arg in spans:
            flat.extend(s for s in self._resolve(arg, "spans") if s not in flat)
        flat.sort(key=lambda s: (s.start_ns, s.end_ns))
        pairs, last = [], None
        for s in flat:
            if last is not None and s.start_ns < last.end_ns:
                pairs.append((last, s))
            if last is None or s.end_ns > last.end_ns:
                last = s
        if not pairs:
            return
        lines = [f"assert_no_overlap: {len(pairs)} overlapping pair(s) among {len(flat)} spans:"]
        for a, b in pairs[:5]:
            lines.append(f"  {self._label(a)} and {self._label(b)} overlap by "
                         f"{(min(a.end_ns, b.end_ns) - b.start_ns) / 1e6:.3f} ms")
        self._fail("\n".join(lines), [s for p in pairs[:5] for s in p])

    def assert_count(self, name: str | None, n: int, *, attrs: Mapping[str, Any] | None = None,
                     within: SpanView | None = None, **kw: Any) -> list[SpanView]:
        """Exactly ``n`` spans match; returns them (start order) for further checks."""
        __tracebackhide__ = True
        found = self.all(name, attrs=attrs, within=within, **kw)
        if len(found) == n:
            return found
        wanted = merge_attrs(attrs, kw)
        where = f" within {self._label(within)}" if within is not None else ""
        msg = f"assert_count: expected {n} spans {describe_query(name, wanted)}{where}, found {len(found)}"
        if found:
            msg += ": " + ", ".join(f"#{s.span_id}" for s in found[:20])
        else:
            msg += "\n" + self._lookup_message(name, wanted, found, within)
        self._fail(msg, found or ([within] if within is not None else []))

    def assert_attr(self, target, attrs: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Every target span has these attribute values (a value may be a predicate)."""
        __tracebackhide__ = True
        wanted = merge_attrs(attrs, kw)
        if not wanted:
            raise TypeError("assert_attr needs at least one attribute, e.g. assert_attr(span, engine='spec')")
        bad = [(s, mismatches(s.attributes, wanted)) for s in self._resolve(target, "target")]
        bad = [(s, why) for s, why in bad if why]
        if not bad:
            return
        lines = [f"assert_attr: {len(bad)} span(s) do not have the expected attributes:"]
        lines += [f"  {self._label(s)}: {'; '.join(why)}" for s, why in bad[:10]]
        self._fail("\n".join(lines), [s for s, _ in bad[:10]])

    def assert_bytes(self, category: str | None, expected: int | None = None, *, name: str | None = None,
                     span: SpanView | None = None, at_least: int | None = None, at_most: int | None = None,
                     attrs: Mapping[str, Any] | None = None, **kw: Any) -> int:
        """Bytes of ``category`` under the matching spans (as in :meth:`Trace.io`) equal
        ``expected``, or lie in ``[at_least, at_most]``; returns the bytes."""
        __tracebackhide__ = True
        return self._assert_io("bytes", category, expected, name, span, at_least, at_most, attrs, kw)

    def assert_ms(self, category: str | None, *, name: str | None = None, span: SpanView | None = None,
                  at_least: float | None = None, at_most: float | None = None,
                  attrs: Mapping[str, Any] | None = None, **kw: Any) -> float:
        """Transfer ms of ``category`` under the matching spans lie in ``[at_least, at_most]``."""
        __tracebackhide__ = True
        return self._assert_io("ms", category, None, name, span, at_least, at_most, attrs, kw)

    # -- plumbing ----------------------------------------------------------------------------
    def _assert_io(self, field, category, expected, name, span, at_least, at_most, attrs, kw):
        __tracebackhide__ = True
        if expected is None and at_least is None and at_most is None:
            raise TypeError(f"assert_{field} needs an expected value or at_least=/at_most=")
        if expected is not None and (at_least is not None or at_most is not None):
            raise TypeError(f"assert_{field}: give an expected value or bounds, not both")
        wanted = merge_attrs(attrs, kw)
        io, top = self._io_parts(category, name, span, wanted)
        value = getattr(io, field)
        ok = (value == expected if expected is not None else
              (at_least is None or value >= at_least) and (at_most is None or value <= at_most))
        if ok:
            return value
        if expected is not None:
            want = f"expected {expected}"
        else:
            want = "expected " + " and ".join(
                p for p in (f">= {at_least}" if at_least is not None else "",
                            f"<= {at_most}" if at_most is not None else "") if p)
        unit = " B" if field == "bytes" else " ms"
        shown = f"{value}" if field == "bytes" else f"{value:.3f}"
        what = category or "all categories"
        scope = describe_query(name, wanted) if (name or wanted) else "the whole trace"
        if span is not None:
            scope = f"{self._label(span)}" if not (name or wanted) else f"{scope} within {self._label(span)}"
        msg = f"assert_{field}: {what} {field} of {scope} is {shown}{unit}, {want}"
        if not top:
            msg += " (no span matched)"
        elif len(top) > 1 or top[0] is not span:
            parts = ", ".join(f"#{s.span_id} {getattr(s.io_of(category), field):{'d' if field == 'bytes' else '.3f'}}"
                              for s in top[:12])
            msg += f"\nsummed over {len(top)} span(s): {parts}{' ...' if len(top) > 12 else ''}"
        self._fail(msg, top[:12] or ([span] if span is not None else []))

    def _resolve(self, target, role: str) -> list[SpanView]:
        __tracebackhide__ = True
        if isinstance(target, SpanView):
            return [self._own(target)]
        if isinstance(target, str):
            found = self.all(target)
            if not found:
                raise SpanLookupError(self._lookup_message(target, {}, [], None))
            return found
        spans = [self._own(s) for s in target]
        if not spans:
            raise ValueError(f"{role}: got an empty list of spans")
        return spans

    def _label(self, s: SpanView) -> str:
        t0 = self._index().t0
        attrs = " ".join(f"{k}={v!r}" for k, v in list(s.attributes.items())[:4])
        return (f"#{s.span_id} {s.name!r}{' (' + attrs + ')' if attrs else ''} "
                f"[{(s.start_ns - t0) / 1e6:.3f}-{(s.end_ns - t0) / 1e6:.3f} ms]")

    def _fail(self, message: str, focus: Iterable[SpanView]):
        __tracebackhide__ = True
        raise AssertionError(f"{message}\n{self.tree(*focus, max_lines=40)}")
