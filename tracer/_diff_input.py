"""What ``spectrace diff`` compares: each side as runs of one pass, flattened to numbers.

Why flatten: the comparison (:mod:`tracer.diff`) must treat a run directory, several runs in
one ``ttft.json``, a bench output (only mean, std and n per phase) and two passes of one run
alike. So every run of a side becomes a :class:`Sample`: a dict from a row key to a value
(``("window", name)``, ``("part", window, label)``, ``("io", category, direction)``, ...),
plus its chunks and the gaps between spans. Rows a run lacks are 0 ("only in A"). A bench
side has no samples, only :class:`~tracer.benchstats.Stat` per row.

A *pass* is the set of TTFT windows a side's TTFT adds up from (DESIGN.md): ``speculative``
is ``ttft.spec_device + ttft.host_scoring + ttft.base_pruned``; ``spec`` is the draft window
alone (seed 000's ``TTFT(spec_device)``); ``baseline`` the full base prefill.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field

from .benchstats import Stat, finite, summarize
from .ttft import PASSES as PASS_KEY
from .ttft import load as load_ttft

__all__ = ["PASSES", "FIELD", "InputError", "Sample", "Side", "kind_of", "load_sides", "samples_from_doc",
           "samples_from_trace"]

PASSES: dict[str, tuple[str, ...]] = {
    "speculative": ("ttft.spec_device", "ttft.host_scoring", "ttft.base_pruned"),
    "spec": ("ttft.spec_device",), "host_scoring": ("ttft.host_scoring",),
    "base_pruned": ("ttft.base_pruned",), "baseline": ("ttft.baseline",)}
FIELD = {"ttft.spec_device": "ttft_spec_device_s", "ttft.host_scoring": "ttft_host_scoring_s",
         "ttft.base_pruned": "ttft_base_pruned_only_s", "ttft.baseline": "ttft_baseline_s"}
_SCORE_FIELDS = (("score.assemble", "t_assemble_s"), ("score.compute", "t_score_s"), ("score.select", "t_select_s"))
GAP = "host time between spans"  # a window's time that no child span covers
REST = "compute & rest"  # a part's time less its transfers
DOC_REST = "other spans and host time"  # ttft.json alone cannot split the rest of a window


class InputError(ValueError):
    """A side that cannot be compared; the message names the path and what was expected."""


@dataclass
class Sample:
    """One run of one pass: every row's value (ms; bytes and counts under their own keys)."""

    values: dict[tuple, float] = field(default_factory=dict)
    chunks: dict[str, list[tuple]] = field(default_factory=dict)  # window -> [(index, tokens, ms, {cat: io ms})]
    gaps: dict[str, dict[str, float]] = field(default_factory=dict)  # window -> {"bind → prefill.chunk #0": ms}
    models: dict[str, str] = field(default_factory=dict)  # window -> gen_ai.request.model

    def add(self, key: tuple, v: float) -> None:
        self.values[key] = self.values.get(key, 0.0) + v

    def split_parts(self) -> Sample:
        """Every part gets a ``compute & rest`` row: its time less its transfers' ms (shown
        where either side has transfers in that part)."""
        io: dict[tuple, float] = {}
        for k, v in self.values.items():
            if k[0] == "partio":
                io[k[1:3]] = io.get(k[1:3], 0.0) + v
        for k, v in list(self.values.items()):
            if k[0] == "part":
                self.values[("partio", *k[1:], REST)] = v - io.get(k[1:], 0.0)
        return self


@dataclass
class Side:
    """One side of a diff: a label, where it came from, and its runs (or a bench's statistics)."""

    label: str
    path: str
    kind: str  # "run" or "bench"
    pass_: str  # a key of PASSES, or a bench variant's name
    windows: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    stats: dict[tuple, Stat] = field(default_factory=dict)  # bench sides
    docs: list[dict] = field(default_factory=list)  # ttft.json documents (config, prompt)
    notes: list[str] = field(default_factory=list)  # inconsistencies met while loading
    source: str = "trace"  # where the rows came from: "trace", "ttft.json" or "bench.json"
    _keys: set | None = field(default=None, repr=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.samples) if self.samples else max((s.n for s in self.stats.values()), default=0)

    def keys(self) -> set:
        """Every row key any run has (computed once: the samples do not change after loading)."""
        if self._keys is None:
            self._keys = set(self.stats) if not self.samples else set().union(*(s.values for s in self.samples))
        return self._keys

    def stat(self, key: tuple) -> Stat | None:
        if not self.samples:
            return self.stats.get(key)
        return summarize([s.values.get(key, 0.0) for s in self.samples])


# ---------------------------------------------------------------- from a trace
def _label(span) -> str:
    return "chunks" if span.name == "prefill.chunk" else span.name


def _where(span) -> str:
    i = span.attributes.get("chunk.index")
    return span.name + (f" #{i}" if i is not None else "")


def samples_from_trace(trace, windows: tuple[str, ...], where: str) -> list[Sample]:
    """One :class:`Sample` per run: the k-th span of each window name belongs to run k."""
    if not len(trace):
        raise InputError(f"{where} holds no spans; spectrace run writes its spans there")
    found = {w: sorted(trace.all(w), key=lambda s: s.start_ns) for w in windows}
    counts = {w: len(v) for w, v in found.items()}
    if not all(counts.values()):
        missing = [w for w, c in counts.items() if not c]
        names = sorted({s.name for s in trace.spans if s.name.startswith("ttft.")})
        raise InputError(f"{where} has no {', '.join(missing)} window{'s' if len(missing) > 1 else ''} "
                         f"(its windows: {', '.join(names) or 'none'})")
    if len(set(counts.values())) > 1:
        raise InputError(f"{where}: the windows do not come in runs: "
                         + ", ".join(f"{c} x {w}" for w, c in counts.items()))
    transfers = trace.transfers
    out = []
    for k in range(next(iter(counts.values()))):
        smp = Sample()
        spans = [found[w][k] for w in windows]
        for w in spans:
            _window(smp, w, transfers if transfers else None)
        ordered = sorted(spans, key=lambda s: s.start_ns)
        for a, b in zip(ordered, ordered[1:]):
            smp.add(("between", a.name, b.name), (b.start_ns - a.end_ns) / 1e6)
        smp.add(("total",), sum(s.duration_ms for s in spans))
        out.append(smp.split_parts())
    return out


def _window(smp: Sample, w, transfers) -> None:
    name = w.name
    smp.add(("window", name), w.duration_ms)
    if w.attributes.get("gen_ai.request.model") is not None:
        smp.models[name] = str(w.attributes["gen_ai.request.model"])
    _device(smp, w, ("window", name))
    children = sorted(w.children, key=lambda s: s.start_ns)
    covered, prev_end, prev = 0.0, w.start_ns, "start"
    gaps: dict[str, float] = {}
    for c in children:
        lbl = _label(c)
        smp.add(("part", name, lbl), c.duration_ms)
        smp.add(("count", name, lbl), 1)
        smp.add(("agg", lbl), c.duration_ms)
        smp.add(("aggcount", lbl), 1)
        for cat, io in c.io.items():
            smp.add(("partio", name, lbl, cat), io.ms)
        _device(smp, c, ("part", name, lbl))
        if c.name == "prefill.chunk":
            smp.chunks.setdefault(name, []).append((c.attributes.get("chunk.index", len(smp.chunks.get(name, []))),
                                                    c.attributes.get("chunk.tokens"), c.duration_ms,
                                                    {cat: io.ms for cat, io in c.io.items()}))
        covered += c.duration_ms
        gaps[f"{prev} → {_where(c)}"] = (c.start_ns - prev_end) / 1e6
        prev_end, prev = max(prev_end, c.end_ns), _where(c)
    if children:
        gaps[f"{prev} → end"] = (w.end_ns - prev_end) / 1e6
    smp.gaps[name] = gaps
    gap = w.duration_ms - covered
    smp.add(("gap", name), gap)
    smp.add(("agg", GAP), gap)
    inside = {w, *w.descendants}
    if transfers is not None:
        for t in transfers:
            if t.span in inside:
                _io(smp, t.category, t.direction or "?", t.nbytes, t.ms, 1)
    else:  # a file without per-copy records: each span's own share of its inclusive totals
        for s in inside:
            for cat, io in s.io.items():
                sub = [c.io.get(cat) for c in s.children]
                own = [io.bytes - sum(x.bytes for x in sub if x), io.ms - sum(x.ms for x in sub if x),
                       io.count - sum(x.count for x in sub if x)]
                if own[2] > 0:
                    _io(smp, cat, io.direction or "?", *own)


def _io(smp: Sample, cat: str, direction: str, nbytes: float, ms: float, count: float) -> None:
    smp.add(("io", cat, direction), ms)
    smp.add(("iobytes", cat, direction), nbytes)
    smp.add(("iocount", cat, direction), count)


def _device(smp: Sample, span, key: tuple) -> None:
    """``device.busy_ms``/``device.idle_ms`` (a ``spectrace run --xplane`` trace) under ``key``."""
    busy, idle = finite(span.attributes.get("device.busy_ms")), finite(span.attributes.get("device.idle_ms"))
    if busy is not None and idle is not None:
        smp.add(("busy", *key[1:]), busy)
        smp.add(("idle", *key[1:]), idle)


# ---------------------------------------------------------------- from ttft.json alone
def samples_from_doc(doc: dict, windows: tuple[str, ...], where: str) -> list[Sample]:
    """Samples from ``ttft.json`` only (the summary ``spectrace run`` prints): windows from the
    TTFT fields, chunks and IO per pass; tokenize, bind and look-ahead stay one "rest"."""
    runs = [r for r in doc.get("runs") or [] if isinstance(r, dict)] or [doc]
    out = []
    for i, run in enumerate(runs):
        if i == len(runs) - 1:  # the last run's io/chunks may live only at the top level
            run = {**{k: doc[k] for k in ("io", "chunks") if k in doc}, **run}
        smp = Sample()
        for w in windows:
            s = finite(run.get(FIELD[w]))
            if s is None:
                raise InputError(f"{where}: {FIELD[w]} is not recorded (run {i}); cannot compare {w}")
            smp.add(("window", w), 1e3 * s)
            smp.add(("total",), 1e3 * s)
            parts = 0.0
            key = PASS_KEY.get(w)
            chunks = [c for c in ((run.get("chunks") or {}).get(key) or []) if isinstance(c, dict)]
            for c in chunks:
                ms = finite(c.get("ms")) or 0.0
                smp.add(("part", w, "chunks"), ms)
                smp.add(("count", w, "chunks"), 1)
                smp.add(("agg", "chunks"), ms)
                smp.add(("aggcount", "chunks"), 1)
                for cat, io in (c.get("io") or {}).items():
                    smp.add(("partio", w, "chunks", cat), finite((io or {}).get("ms")) or 0.0)
                smp.chunks.setdefault(w, []).append((c.get("index"), c.get("tokens"), ms, {
                    cat: finite((io or {}).get("ms")) or 0.0 for cat, io in (c.get("io") or {}).items()}))
                parts += ms
            if w == "ttft.host_scoring":
                for lbl, f in _SCORE_FIELDS:
                    ms = 1e3 * (finite(run.get(f)) or 0.0)
                    smp.add(("part", w, lbl), ms)
                    smp.add(("agg", lbl), ms)
                    parts += ms
            smp.add(("part", w, DOC_REST), 1e3 * s - parts)
            smp.add(("agg", DOC_REST), 1e3 * s - parts)
            for cat, io in ((run.get("io") or {}).get(key) or {}).items():
                if isinstance(io, dict) and (finite(io.get("count")) or 0) > 0:
                    # One key per category: ttft.json sums both directions ("both").
                    _io(smp, cat, "", finite(io.get("bytes")) or 0.0,
                        finite(io.get("ms")) or 0.0, finite(io.get("count")) or 0.0)
        out.append(smp.split_parts())
    return out


# ---------------------------------------------------------------- directories
def _kind(path: str) -> tuple[str, pathlib.Path, list[pathlib.Path]]:
    p = pathlib.Path(path)
    if p.is_file() and p.name in ("ttft.json", "bench.json", "trace.pftrace"):
        p = p.parent
    if not p.exists():
        raise InputError(f"{path!r} does not exist; give a run directory (spectrace run --out) "
                         "or a bench output (spectrace bench --out)")
    if not p.is_dir():
        raise InputError(f"{path!r} is a file; give the directory that holds ttft.json and trace.pftrace, "
                         "or bench.json")
    if (p / "ttft.json").is_file():
        return "run", p, [p]
    if (p / "bench.json").is_file():
        return "bench", p, []
    subs = sorted(d for d in p.iterdir() if (d / "ttft.json").is_file())
    if subs:
        return "run", p, subs
    raise InputError(f"{path!r} holds neither ttft.json (spectrace run --out) nor bench.json "
                     "(spectrace bench --out), nor run directories")


def kind_of(path: str) -> str:
    """``"run"`` or ``"bench"``; :class:`InputError` for a path that is neither."""
    return _kind(path)[0]


def load_sides(path: str, picks: list[str], label_of) -> list[Side]:
    """One :class:`Side` per pass (run directories) or variant (bench) named in ``picks``."""
    kind, p, dirs = _kind(path)
    if kind == "bench":
        return [_bench_side(p, v, label_of(v)) for v in _bench_variants(p, picks)]
    out = []
    docs = [(d, load_ttft(d / "ttft.json")) for d in dirs]
    for d, _ in docs:
        if not (d / "trace.pftrace").is_file():
            raise InputError(f"{str(d)!r} has ttft.json but no trace.pftrace; spectrace diff reads both "
                             "(spectrace run writes them together)")
    from .testing.trace import Trace

    traces = [Trace.load(d / "trace.pftrace") for d, _ in docs]
    for pick in picks or ["speculative"]:
        if pick not in PASSES:
            raise InputError(f"pass {pick!r} is not one of {', '.join(PASSES)}")
        samples, notes = [], []
        for (d, doc), trace in zip(docs, traces):
            got = samples_from_trace(trace, PASSES[pick], f"{d / 'trace.pftrace'}")
            notes += _agree(doc, got, PASSES[pick], str(d))
            samples += got
        out.append(Side(label_of(pick), str(p), "run", pick, PASSES[pick], samples=samples,
                        docs=[doc for _, doc in docs], notes=notes))
    return out


def _agree(doc: dict, samples: list[Sample], windows: tuple[str, ...], where: str) -> list[str]:
    """Notes where the trace and its ttft.json disagree (files from two different runs?)."""
    runs = [r for r in doc.get("runs") or [] if isinstance(r, dict)] or [doc]
    if len(runs) != len(samples):
        return [f"{where}: ttft.json has {len(runs)} runs, trace.pftrace {len(samples)}; the trace's are used"]
    notes = []
    for i, (r, s) in enumerate(zip(runs, samples)):
        for w in windows:
            f = finite(r.get(FIELD[w]))
            ms = s.values.get(("window", w), 0.0)
            if f is not None and abs(1e3 * f - ms) > max(0.01, 0.01 * ms):
                notes.append(f"{where}: run {i} {FIELD[w]} is {1e3 * f:.3f} ms in ttft.json but the trace's {w} "
                             f"lasts {ms:.3f} ms; are they from the same run? The trace's is used")
    return notes


def _bench_doc(p: pathlib.Path) -> dict:
    where = p / "bench.json"
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{where}: not UTF-8 text; a bench.json is JSON written by spectrace bench") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"{where}: not valid JSON: {getattr(e, 'msg', e)}") from None
    ok = isinstance(doc, dict) and str(doc.get("schema", "")).startswith("spectrace.bench/") \
        and isinstance(doc.get("variants"), list) and doc["variants"]
    if not ok:
        raise InputError(f"{where}: not a bench.json (schema 'spectrace.bench/1' with a list of variants)")
    for i, v in enumerate(doc["variants"]):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not isinstance(v.get("phases"), dict):
            raise InputError(f"{where}: variants[{i}] must be an object with a name and phases")
        for ph, st in v["phases"].items():
            vals = [finite(st.get(k)) if isinstance(st, dict) else None for k in ("mean", "std", "n")]
            if None in vals or vals[1] < 0 or vals[2] < 1 or vals[2] != int(vals[2]):
                raise InputError(f"{where}: variants[{i}].phases.{ph} must be {{mean, std >= 0, n >= 1}}, got "
                                 f"{json.dumps(st)[:80]}")
    return doc


def _bench_variants(p: pathlib.Path, picks: list[str]) -> list[str]:
    names = [v["name"] for v in _bench_doc(p)["variants"]]
    for pick in picks:
        if pick not in names:
            raise InputError(f"{str(p / 'bench.json')!r} has no variant {pick!r} (variants: {', '.join(names)})")
    return picks or names


def _bench_side(p: pathlib.Path, variant: str, label: str) -> Side:
    doc = _bench_doc(p)
    v = next(x for x in doc["variants"] if x["name"] == variant)
    st = {ph: Stat(float(s["mean"]), float(s["std"]), int(s["n"])) for ph, s in v["phases"].items()}
    ms = lambda s: Stat(1e3 * s.mean, 1e3 * s.std, s.n)  # noqa: E731
    if "ttft_speculative_s" in st and all(FIELD[w] in st for w in PASSES["speculative"]):
        windows = PASSES["speculative"]
        stats = {("window", w): ms(st[FIELD[w]]) for w in windows}
        stats[("total",)] = ms(st["ttft_speculative_s"])
    elif "total" in st:  # seed 003's phases: prefill + generation = total
        windows = tuple(ph for ph in st if ph != "total")
        stats = {("window", w): ms(st[w]) for w in windows}
        stats[("total",)] = ms(st["total"])
    else:
        raise InputError(f"{str(p / 'bench.json')!r}: variant {variant!r} has neither the TTFT phases nor a total")
    return Side(label, str(p), "bench", variant, windows, stats=stats, docs=[doc], source="bench.json")
