"""rotel's ``--debug-log-verbosity detailed`` output, parsed back into spans and metric points.

What rotel prints (``src/topology/debug/`` in streamfold/rotel, a port of the OpenTelemetry
Collector's debug exporter; checked against rotel 0.0.1a15 by hand):

* one ``print!`` per received request, so blocks never interleave with each other; its own log
  lines (``2026-...Z  INFO Starting Rotel.``) sit between blocks and are skipped;
* times are integers in unix ns (``Start time: 1796167318145492731``), ids lower-case hex,
  an empty parent is ``Parent ID      : `` (nothing after the colon);
* attribute values are Go-collector style ``Str(...)``, ``Int(3)``, ``Double(1.5)``,
  ``Bool(true)``, ``Slice(Int(1), Int(2))``, ``Map(k:Str(v))``, ``Bytes([1, 2])``, ``Empty``,
  with nothing escaped: a string holding a newline continues on the next physical line, and a
  ``)`` or ``, `` inside a string is ambiguous inside a ``Slice``/``Map`` (resolved here by
  backtracking; a top-level ``Str`` always parses exactly);
* a newline inside a string is read back exactly unless the line after it looks like one of
  rotel's own lines (``     -> k: Int(1)``, ``Span #0``, ...): then it cannot be told apart;
* doubles use Rust's ``Display`` (``1`` for 1.0, no exponent): attributes keep their type
  (``Double(1)``), but a metric point's or exemplar's ``Value: 3`` does not say whether it was an
  int or a double (read as int); span events' attribute header is ``     -> Attributes::`` (two
  colons) and their attributes are indented one level deeper;
* its log lines are coloured even into a file unless ``NO_COLOR`` is set (it is, here);
* histogram points print ``ExplicitBounds #i: b`` and ``Buckets #i, Count: n`` lines, exponential
  histograms ``Bucket (lo, hi], Count: n`` lines, summaries ``QuantileValue #i: Quantile q,
  Value v``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterator

__all__ = ["BLOCK_HEADER", "Event", "Exemplar", "Link", "MetricPoint", "ReceivedSpan", "parse", "parse_value"]


# ---- what the collector received ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Event:
    name: str
    time_ns: int
    attributes: dict[str, Any]
    dropped_attributes_count: int = 0


@dataclasses.dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    trace_state: str
    attributes: dict[str, Any]
    dropped_attributes_count: int = 0


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector decoded it. Ids are lower-case hex; times unix ns."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # "SPAN_KIND_INTERNAL", ...
    start_ns: int
    end_ns: int
    status_code: str | None  # "STATUS_CODE_UNSET" | "STATUS_CODE_OK" | "STATUS_CODE_ERROR"
    status_message: str
    attributes: dict[str, Any]
    events: tuple[Event, ...]
    links: tuple[Link, ...]
    resource: dict[str, Any]  # resource attributes
    scope: str  # instrumentation scope name
    scope_version: str = ""
    trace_state: str = ""

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def __repr__(self) -> str:
        return (f"ReceivedSpan({self.name!r}, id={self.span_id}, parent={self.parent_span_id}, "
                f"{self.start_ns}..{self.end_ns}, {len(self.attributes)} attributes, "
                f"{len(self.events)} events)")


@dataclasses.dataclass(frozen=True)
class Exemplar:
    trace_id: str
    span_id: str
    time_ns: int
    value: float | int | None
    attributes: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class MetricPoint:
    """One data point of one metric, with its metric's descriptor and resource.

    ``kind``: ``Gauge``, ``Sum``, ``Histogram``, ``ExponentialHistogram`` or ``Summary``.
    Number points (Gauge, Sum) have ``value``; histograms ``count``, ``sum``, ``min``, ``max``,
    ``bounds`` (explicit bounds) and ``counts`` (``len(bounds) + 1`` bucket counts);
    exponential histograms ``buckets``: ``(low, high, count)`` as rotel computed them;
    summaries ``count``, ``sum`` and ``quantiles``: ``(quantile, value)``.
    """

    name: str
    kind: str
    unit: str
    description: str
    attributes: dict[str, Any]
    start_ns: int
    time_ns: int
    temporality: str | None = None  # "AGGREGATION_TEMPORALITY_CUMULATIVE" / "_DELTA"
    is_monotonic: bool | None = None
    value: float | int | None = None
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    bounds: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    buckets: tuple[tuple[float, float, int], ...] = ()
    quantiles: tuple[tuple[float, float], ...] = ()
    exemplars: tuple[Exemplar, ...] = ()
    resource: dict[str, Any] = dataclasses.field(default_factory=dict)
    scope: str = ""


# ---- parsing rotel's debug output --------------------------------------------------------------
_LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z\s+(TRACE|DEBUG|INFO|WARN|ERROR)\b")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Every line rotel prints for traces and metrics starts like one of these; any other physical
# line continues the value of the line before (a string attribute holding a newline).
_STRUCTURAL = re.compile(
    r"^(?:"
    r"Resource(?:Spans|Metrics|Log) #\d+$|Resource SchemaURL: |Resource attributes:$"
    r"|Scope(?:Spans|Metrics|Logs) #\d+$|Scope(?:Spans|Metrics|Logs) SchemaURL: "
    r"|InstrumentationScope(?: |$)"
    r"|Span #\d+$|    (?:Trace ID|Parent ID|ID|Name|Kind|TraceState|Status code|Status message) *: "
    r"|Start time: |End time: |Attributes:$|Events:$|SpanEvent #\d+$|Links:$|SpanLink #\d+$"
    r"|Metric #\d+$|Descriptor:$|(?:Histogram|Number|ExponentialHistogram|Summary)DataPoints #\d+$"
    r"|Data point attributes:$|StartTimestamp: |Timestamp: |Count: |Sum: |Min: |Max: "
    r"|ExplicitBounds #\d+: |Buckets #\d+, Count: |Bucket [\[(]|QuantileValue #\d+: "
    r"|Value: |Exemplars:$|Exemplar #\d+$"
    r"| +-> "
    r")")
#: The line that starts one received request's block (an incremental reader cuts the text there).
BLOCK_HEADER = re.compile(rb"^Resource(?:Spans|Metrics|Log) #\d+$", re.M)
_TYPES = ("Str", "Int", "Double", "Bool", "Slice", "Map", "Bytes")
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(?:\d+(?:\.\d+)?(?:e-?\d+)?|inf|NaN)")
_ATTR = re.compile(r"^( +)-> (.*?): ((?:" + "|".join(_TYPES) + r")\(.*\)|Empty)$", re.S)


def _float(text: str) -> float:
    return float(text.replace("NaN", "nan"))


def _number(text: str) -> int | float:
    text = text.strip()
    return int(text) if _INT.fullmatch(text) else _float(text)


def _values(s: str, i: int) -> Iterator[tuple[Any, int]]:
    """Every way to read one printed ``AnyValue`` starting at ``s[i]``: ``(value, end index)``."""
    if s.startswith("Empty", i):
        yield None, i + 5
        return
    for t in _TYPES:
        if s.startswith(t + "(", i):
            break
    else:
        return
    k = i + len(t) + 1
    if t == "Str":  # unescaped: any ")" may be the end
        j = s.find(")", k)
        while j != -1:
            yield s[k:j], j + 1
            j = s.find(")", j + 1)
    elif t in ("Int", "Double", "Bool"):
        j = s.find(")", k)
        if j == -1:
            return
        body = s[k:j]
        if t == "Int" and _INT.fullmatch(body):
            yield int(body), j + 1
        elif t == "Double" and _FLOAT.fullmatch(body):
            yield _float(body), j + 1
        elif t == "Bool" and body in ("true", "false"):
            yield body == "true", j + 1
    elif t == "Bytes":  # Rust Debug of Vec<u8>: "[1, 2, 3]"
        m = re.compile(r"\[((?:\d+(?:, \d+)*)?)\]\)").match(s, k)
        if m:
            yield bytes(int(x) for x in m.group(1).split(", ") if x), m.end()
    elif t == "Slice":
        for items, j in _sequence(s, k, _values):
            yield items, j
    else:  # Map: "k:Str(v), k2:Int(1)"
        for items, j in _sequence(s, k, _map_item):
            yield dict(items), j


def _map_item(s: str, i: int) -> Iterator[tuple[tuple[str, Any], int]]:
    j = s.find(":", i)
    while j != -1:
        for v, end in _values(s, j + 1):
            yield (s[i:j], v), end
        j = s.find(":", j + 1)


def _sequence(s: str, i: int, item: Callable) -> Iterator[tuple[list, int]]:
    """``item, item, ...)`` from ``s[i]``; an empty sequence is just ``)``."""
    if s.startswith(")", i):
        yield [], i + 1
    yield from _nonempty(s, i, item)


def _nonempty(s: str, i: int, item: Callable) -> Iterator[tuple[list, int]]:
    for v, j in item(s, i):
        if s.startswith(")", j):
            yield [v], j + 1
        if s.startswith(", ", j):
            for rest, end in _nonempty(s, j + 2, item):
                yield [v] + rest, end


def parse_value(text: str) -> Any:
    """One printed value (``Str(a)``, ``Int(1)``, ``Slice(...)``, ...) as Python; unreadable
    text is returned as it is."""
    for v, end in _values(text, 0):
        if end == len(text):
            return v
    return text


def _logical_lines(text: str) -> list[str]:
    """Physical lines joined where a value continued on the next one; rotel's log lines dropped."""
    out: list[str] = []
    if text.endswith("\n"):
        text = text[:-1]
    for raw in text.split("\n"):
        line = _ANSI.sub("", raw.rstrip("\r"))
        if _LOG_LINE.match(line):
            continue
        if out and not _STRUCTURAL.match(line):
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


def _field(line: str) -> str:
    """The value after ``Label   : `` (nothing after the colon reads as "")."""
    return line.partition(": ")[2] if ": " in line else ""


class _Builder:
    """The state machine over logical lines; collects finished spans and metric points."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.points: list[MetricPoint] = []
        self.resource: dict[str, Any] = {}
        self.scope, self.scope_version = "", ""
        self.span: dict | None = None
        self.event: dict | None = None
        self.link: dict | None = None
        self.metric: dict | None = None
        self.point: dict | None = None
        self.exemplar: dict | None = None
        self.attrs: dict | None = None  # where the next "-> key: Value" lines go
        self.in_logs = False  # inside a ResourceLog block: skipped (logs are not asked for)

    # -- finishing ----------------------------------------------------------------------------
    def _end_sub(self) -> None:
        if self.event is not None and self.span is not None:
            self.span["events"].append(Event(**self.event))
        if self.link is not None and self.span is not None:
            self.span["links"].append(Link(**self.link))
        if self.exemplar is not None and self.point is not None:
            self.point["exemplars"].append(Exemplar(**self.exemplar))
        self.event = self.link = self.exemplar = None

    def end_span(self) -> None:
        self._end_sub()
        s, self.span = self.span, None
        if s is not None and s.get("start_ns") is not None and s.get("end_ns") is not None:
            s["events"], s["links"] = tuple(s["events"]), tuple(s["links"])
            self.spans.append(ReceivedSpan(**s))

    def end_point(self) -> None:
        self._end_sub()
        p, self.point = self.point, None
        if p is not None and self.metric is not None:
            p["exemplars"] = tuple(p["exemplars"])
            for k in ("bounds", "counts", "buckets", "quantiles"):
                p[k] = tuple(p[k])
            self.points.append(MetricPoint(**self.metric, **p))

    def end_all(self) -> None:
        self.end_span()
        self.end_point()
        self.attrs = None

    # -- one logical line ---------------------------------------------------------------------
    def feed(self, line: str) -> None:  # noqa: C901 (one branch per line kind reads best)
        if line.startswith(("ResourceSpans #", "ResourceMetrics #", "ResourceLog #")):
            self.end_all()
            self.metric = None
            self.resource, self.scope, self.scope_version = {}, "", ""
            self.in_logs = line.startswith("ResourceLog")
        elif self.in_logs:
            return
        elif line == "Resource attributes:":
            self.attrs = self.resource
        elif line.startswith(("ScopeSpans #", "ScopeMetrics #")):
            self.end_all()
            self.metric = None
            self.scope, self.scope_version = "", ""
        elif line.startswith("InstrumentationScope attributes"):
            self.attrs = {}
        elif line.startswith("InstrumentationScope"):
            rest = line[len("InstrumentationScope"):].strip(" ")
            self.scope, _, self.scope_version = rest.partition(" ")
        elif line.startswith("Span #"):
            self.end_all()
            self.span = dict(trace_id="", span_id="", parent_span_id=None, name="", kind="",
                             start_ns=None, end_ns=None, status_code=None, status_message="",
                             attributes={}, events=[], links=[], resource=self.resource,
                             scope=self.scope, scope_version=self.scope_version, trace_state="")
        elif self.span is not None and self._span_line(line):
            pass
        elif line.startswith("Metric #"):
            self.end_all()
            self.metric = dict(name="", kind="", unit="", description="", temporality=None,
                               is_monotonic=None, resource=self.resource, scope=self.scope)
        elif self.metric is not None and self._metric_line(line):
            pass
        else:
            m = _ATTR.match(line)
            if m and self.attrs is not None:
                self.attrs[m.group(2)] = parse_value(m.group(3))

    def _span_line(self, line: str) -> bool:
        s = self.span
        label = line.partition(":")[0].strip()
        if line.startswith("    ") and not line.startswith("     ->"):
            key = {"Trace ID": "trace_id", "Parent ID": "parent_span_id", "ID": "span_id", "Name": "name",
                   "Kind": "kind", "TraceState": "trace_state", "Status code": "status_code",
                   "Status message": "status_message"}.get(label)
            if key is None:
                return False
            value = _field(line)
            s[key] = (value or None) if key == "parent_span_id" else value
            return True
        if line.startswith("Start time: "):
            s["start_ns"] = int(_field(line))
        elif line.startswith("End time: "):
            s["end_ns"] = int(_field(line))
        elif line == "Attributes:":
            self._end_sub()
            self.attrs = s["attributes"]
        elif line in ("Events:", "Links:"):
            self._end_sub()
            self.attrs = None
        elif line.startswith("SpanEvent #"):
            self._end_sub()
            self.event = dict(name="", time_ns=0, attributes={}, dropped_attributes_count=0)
            self.attrs = None
        elif line.startswith("SpanLink #"):
            self._end_sub()
            self.link = dict(trace_id="", span_id="", trace_state="", attributes={}, dropped_attributes_count=0)
            self.attrs = None
        elif (self.event is not None or self.link is not None) and line.startswith("     -> "):
            sub = self.event if self.event is not None else self.link
            label, _, value = line[len("     -> "):].partition(": ")
            if label.startswith("Attributes:"):  # printed "     -> Attributes::"
                self.attrs = sub["attributes"]
                return True
            key = {"Name": "name", "Timestamp": "time_ns", "DroppedAttributesCount": "dropped_attributes_count",
                   "Trace ID": "trace_id", "ID": "span_id", "TraceState": "trace_state"}.get(label)
            if key is None or key not in sub:
                return False
            sub[key] = int(value) if key in ("time_ns", "dropped_attributes_count") else value
        else:
            return False
        return True

    def _metric_line(self, line: str) -> bool:
        m, p = self.metric, self.point
        if line == "Descriptor:":
            self.attrs = None
            return True
        if line.startswith("     -> ") and p is None:
            label, _, value = line[len("     -> "):].partition(": ")
            if line.endswith(":") and not value:
                label, value = line[len("     -> "):-1], ""
            key = {"Name": "name", "Description": "description", "Unit": "unit", "DataType": "kind",
                   "AggregationTemporality": "temporality", "IsMonotonic": "is_monotonic"}.get(label)
            if key is None:
                return False
            m[key] = (value == "true") if key == "is_monotonic" else value
            return True
        head = re.match(r"^(Histogram|Number|ExponentialHistogram|Summary)DataPoints #\d+$", line)
        if head:
            self.end_point()
            self.point = dict(attributes={}, start_ns=0, time_ns=0, value=None, count=None, sum=None,
                              min=None, max=None, bounds=[], counts=[], buckets=[], quantiles=[], exemplars=[])
            self.attrs = None
            return True
        if p is None:
            return False
        if self.exemplar is not None and line.startswith("     -> "):
            label, _, value = line[len("     -> "):].partition(": ")
            if label.startswith("FilteredAttributes"):
                self.attrs = self.exemplar["attributes"]
                return True
            key = {"Trace ID": "trace_id", "Span ID": "span_id", "Timestamp": "time_ns", "Value": "value"}.get(label)
            if key is None:
                return False
            self.exemplar[key] = int(value) if key == "time_ns" else (_number(value) if key == "value" else value)
            return True
        if line == "Data point attributes:":
            self.attrs = p["attributes"]
        elif line.startswith("StartTimestamp: "):
            p["start_ns"] = int(_field(line))
        elif line.startswith("Timestamp: "):
            p["time_ns"] = int(_field(line))
        elif line.startswith("Count: "):
            p["count"] = int(_field(line))
        elif line.startswith(("Sum: ", "Min: ", "Max: ")):
            p[line[:3].lower()] = _float(_field(line))
        elif line.startswith("Value: "):
            p["value"] = _number(_field(line))
        elif line.startswith("ExplicitBounds #"):
            p["bounds"].append(_float(_field(line)))
        elif line.startswith("Buckets #"):
            p["counts"].append(int(line.rpartition("Count: ")[2]))
        elif line.startswith("Bucket "):  # "Bucket (lo, hi], Count: n" / "Bucket [0, 0], Count: n"
            b = re.match(r"^Bucket [\[(](\S+), (\S+)[\])], Count: (\d+)$", line)
            if b:
                p["buckets"].append((_float(b.group(1)), _float(b.group(2)), int(b.group(3))))
        elif line.startswith("QuantileValue #"):
            q = re.search(r"Quantile (\S+), Value (\S+)$", line)
            if q:
                p["quantiles"].append((_float(q.group(1)), _float(q.group(2))))
        elif line == "Exemplars:":
            self._end_sub()
            self.attrs = None
        elif line.startswith("Exemplar #"):
            self._end_sub()
            self.exemplar = dict(trace_id="", span_id="", time_ns=0, value=None, attributes={})
            self.attrs = None
        else:
            return False
        return True


def parse(text: str) -> tuple[list[ReceivedSpan], list[MetricPoint]]:
    """Spans and metric points in rotel's ``--debug-log-verbosity detailed`` output ``text``.

    Text before the first ``Resource... #`` header (a block cut by an offset) is ignored; a
    span at the very end is kept only once its ``End time`` line has been read.
    """
    b = _Builder()
    for line in _logical_lines(text):
        b.feed(line)
    b.end_all()
    return b.spans, b.points
