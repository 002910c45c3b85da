"""``spectrace diff``: why one TTFT is slower than another, read off the traces.

Seed 000 is an engineer with "TTFT(spec_device) is ~4x TTFT(base_full)" and a hand-written list
of hypotheses (the FP32 ``prefill_queries`` copy per chunk, chunk outliers, the ``other`` IO
bucket). Every number that list needs is in a spectrace trace; this module does the subtraction
and says, ranked and with evidence, where the difference is:

* the TTFT difference decomposed down the span tree: windows, then their child spans
  (tokenize, bind, chunks, look-ahead, scoring parts), each chunk part split into transfer time
  per category and the rest; what no span covers is *unexplained* (host time between spans).
  The decomposition is additive: parts sum to their window, windows to the total;
* per binding category and direction: bytes, transfer ms, copies, implied bandwidth;
* chunk outliers (:func:`tracer._diff_stats.mad_outliers`'s rule) and, with XPlane data
  (``device.busy_ms``/``device.idle_ms`` on spans), whether compute or idling changed;
* with n >= 2 runs a side, a row is *flagged* only when Welch's t says it is beyond noise
  (Benjamini–Hochberg over the rows, :mod:`tracer._diff_stats`); with one run a side nothing can
  be tested, and rows are listed by their share of the difference instead, which is said.

Pure functions over :class:`tracer._diff_input.Side` (no JAX, no I/O but the loading); the
result is one JSON-ready dict (schema ``spectrace.diff/1``) that the text
(:mod:`tracer._diff_text`) and the HTML page (:mod:`tracer._diff_html`) render.
"""

from __future__ import annotations

from ._diff_input import GAP, REST, InputError, PASSES, Side, kind_of, load_sides, samples_from_doc
from ._diff_stats import MAD_SCALE, bh, compare_stats, mad_outliers, median
from .benchstats import Stat

__all__ = ["SCHEMA", "InputError", "compare", "diff_paths", "format_text", "render_html", "run_summary",
           "write_html", "write_json", "OUTLIER_RULE"]

SCHEMA = "spectrace.diff/1"
OUTLIER_RULE = ("a chunk is an outlier when it is slower than its window's median chunk by more than "
                "k·MAD (MAD scaled by {scale}, k = {k:g}) and by more than 50% of that median "
                "(windows of 3 chunks or more; chunk times are means over a side's runs)")
LISTED_SHARE = 0.05  # untested rows (one run a side) are named at 5% of the difference or more


def diff_paths(a: str, b: str | None = None, *, passes: list[str] | None = None,
               variants: list[str] | None = None, alpha: float = 0.05, outlier_k: float = 5.0) -> dict:
    """Load both sides (``b`` None: two passes or variants of ``a``) and :func:`compare` them.

    Returns ``{"schema", "comparisons": [...]}``: one comparison, or one per bench variant
    present on both sides when two bench outputs are given without ``variants``.
    """
    picks = list(passes or variants or [])
    kinds = [kind_of(p) for p in ([a] if b is None else [a, b])]
    if kinds[-1] != kinds[0]:
        raise InputError(f"{a!r} is a {_KIND_NAME[kinds[0]]} but {b!r} is a {_KIND_NAME[kinds[1]]}; "
                         "compare two run directories or two bench outputs")
    if kinds[0] == "bench" and passes:
        raise InputError("--passes names passes of run directories; for bench outputs use --variants")
    if kinds[0] == "run" and variants:
        raise InputError("--variants names variants of bench outputs; for run directories use --passes")
    if b is None:
        if len(picks) != 2:
            raise InputError("give two directories A B, or one with --passes P Q (run) or --variants V W (bench)")
        sides = load_sides(a, picks, lambda p: p)
        pairs = [(sides[0], sides[1])]
    else:
        if len(picks) > 2:
            raise InputError(f"give at most two names (one for each side), got {len(picks)}: {' '.join(picks)}")
        pa, pb = (picks + picks)[:2] if picks else ([], [])
        sa = load_sides(a, [pa] if pa else [], lambda p: "A")
        sb = load_sides(b, [pb] if pb else [], lambda p: "B")
        if sa[0].kind == "bench" and not picks:
            common = [s.pass_ for s in sa if s.pass_ in {x.pass_ for x in sb}]
            if not common:
                raise InputError(f"the bench outputs {a!r} and {b!r} share no variant; pick one each with --variants V W")
            pairs = [(next(s for s in sa if s.pass_ == v), next(s for s in sb if s.pass_ == v)) for v in common]
        else:
            pairs = [(sa[0], sb[0])]
    return {"schema": SCHEMA, "comparisons": [compare(x, y, alpha=alpha, outlier_k=outlier_k) for x, y in pairs]}


_KIND_NAME = {"bench": "bench output (bench.json)", "run": "run directory (ttft.json)"}


# ---------------------------------------------------------------- rows
def _stat_dict(s: Stat) -> dict:
    return {"mean": s.mean, "std": s.std, "n": s.n}


class _Rows:
    """Builds rows of one comparison and remembers them, so the correction runs over all of them at once."""

    def __init__(self, a: Side, b: Side, alpha: float):
        self.a, self.b, self.alpha = a, b, alpha
        self.ka, self.kb = a.keys(), b.keys()
        self.all: list[dict] = []

    def row(self, name: str, key: tuple, *, test: bool = True) -> dict:
        sa = self.a.stat(key) if key in self.ka else None
        sb = self.b.stat(key) if key in self.kb else None
        sa, sb = sa or Stat(0.0, 0.0, max(self.a.n, 1)), sb or Stat(0.0, 0.0, max(self.b.n, 1))
        t = compare_stats(sa, sb, alpha=self.alpha)
        only = None if (key in self.ka) == (key in self.kb) else ("a" if key in self.ka else "b")
        r = {"name": name, "a": _stat_dict(sa), "b": _stat_dict(sb), "delta_ms": sa.mean - sb.mean,
             "share": None, "test": t.as_dict(), "p": t.p, "flag": None, "only": only}
        if test:
            self.all.append(r)
        return r

    def finish(self, total: dict) -> None:
        d = total["delta_ms"]
        for r in self.all + [total]:
            r["share"] = r["delta_ms"] / d if d else None
        for r, f in zip(self.all, bh([r["p"] for r in self.all], self.alpha)):
            r["flag"] = f
        total["flag"] = None if total["p"] is None else total["p"] < self.alpha


def _ordered(side_a: Side, side_b: Side, head: str, *, prefix: tuple = ()) -> list[tuple]:
    """Keys starting with ``(head, *prefix)`` in first-seen order, A's runs before B's."""
    seen: dict[tuple, None] = {}
    for side in (side_a, side_b):
        keys = [k for s in side.samples for k in s.values] if side.samples else list(side.stats)
        for k in keys:
            if k[0] == head and k[1:1 + len(prefix)] == prefix:
                seen.setdefault(k, None)
    return list(seen)


def compare(a: Side, b: Side, *, alpha: float = 0.05, outlier_k: float = 5.0) -> dict:
    """One comparison of side ``a`` against side ``b`` (Δ = A − B): the JSON-ready result."""
    rows = _Rows(a, b, alpha)
    total = rows.row("total", ("total",), test=False)
    windows = []
    for (_, w) in _ordered(a, b, "window"):
        wr = rows.row(w, ("window", w))
        wr["parts"] = []
        for key in _ordered(a, b, "part", prefix=(w,)):
            pr = rows.row(key[2], key)
            pr["count_a"], pr["count_b"] = (_mean(s, ("count", w, key[2])) for s in (a, b))
            io_keys = sorted(_ordered(a, b, "partio", prefix=(w, key[2])), key=lambda k: k[3] == REST)
            pr["io"] = [rows.row(k[3], k) for k in io_keys] if any(k[3] != REST for k in io_keys) else []
            wr["parts"].append(pr)
        if ("gap", w) in rows.ka | rows.kb:  # the window's time no child covers: parts sum to the window
            gap = rows.row(GAP, ("gap", w))
            gap["io"] = []
            wr["parts"].append(gap)
        windows.append(wr)
    parts = []
    for key in _ordered(a, b, "agg"):
        r = rows.row(key[1], key)
        r["count_a"], r["count_b"] = (_mean(s, ("aggcount", key[1])) for s in (a, b))
        parts.append(r)
    unexplained = next((r for r in parts if r["name"] == GAP), None)
    between = [rows.row(f"{k[1]} → {k[2]}", k) for k in _ordered(a, b, "between")]
    io = [_io_row(rows, k) for k in _ordered(a, b, "io")]
    device = [{"name": " › ".join(k[1:]), "busy": rows.row("busy", k), "idle": rows.row("idle", ("idle", *k[1:]))}
              for k in _ordered(a, b, "busy")]
    rows.finish(total)
    ta, tb = total["a"]["mean"], total["b"]["mean"]
    out = {"a": _side_info(a), "b": _side_info(b), "matched_windows": a.windows == b.windows,
           "statistic": _statistic(a, b, alpha), "total": total, "ratio": ta / tb if tb else None,
           "windows": windows, "parts": parts, "unexplained": unexplained, "between_windows": between,
           "io": io, "chunks": _chunks(a, b, outlier_k), "device": device, "gaps": _gap_changes(a, b),
           "mismatches": _mismatches(a, b)}
    from ._diff_explain import explain

    out["explanation"] = explain(out)
    return out


def _mean(side: Side, key: tuple) -> float | None:
    s = side.stat(key) if key in side.keys() else None
    return None if s is None else s.mean


def _io_row(rows: _Rows, key: tuple) -> dict:
    _, cat, direction = key
    r = rows.row(f"{cat} {direction}".strip(), key)
    r.update(category=cat, direction=direction)
    for side, k in ((rows.a, "a"), (rows.b, "b")):
        nbytes = _mean(side, ("iobytes", cat, direction)) or 0.0
        count = _mean(side, ("iocount", cat, direction)) or 0.0
        ms = r[k]["mean"]
        r[k].update(bytes=nbytes, count=count, gbps=nbytes / ms / 1e6 if ms > 0 else None)
    r["delta_bytes"] = r["a"]["bytes"] - r["b"]["bytes"]
    return r


def _side_info(s: Side) -> dict:
    doc = s.docs[0] if s.docs else {}
    return {"label": s.label, "path": s.path, "kind": s.kind, "pass": s.pass_, "windows": list(s.windows),
            "n": s.n, "source": s.source, "prompt_tokens": doc.get("prompt_tokens"),
            "config": doc.get("config") if isinstance(doc.get("config"), dict) else {}}


def _statistic(a: Side, b: Side, alpha: float) -> dict:
    if a.n >= 2 and b.n >= 2:
        how = (f"Welch's t over the runs (n = {a.n} and {b.n}), two-sided, alpha = {alpha:g}, "
               "Benjamini–Hochberg over the rows (false discovery rate alpha); a flagged row is beyond noise")
        name = "welch"
    elif a.n >= 2 or b.n >= 2:
        how = (f"one side is a single run: flagged when it lies outside the other side's {1 - alpha:.0%} "
               f"prediction interval (t with n - 1 df), Benjamini–Hochberg over the rows")
        name = "prediction"
    else:
        how = (f"one run a side: no noise estimate, nothing is tested; rows at >= {LISTED_SHARE:.0%} of the "
               "difference are named (give each side --runs 5 to test against noise, seed 003's protocol)")
        name = None
    return {"name": name, "alpha": alpha, "correction": "benjamini-hochberg" if name else None, "description": how}


# ---------------------------------------------------------------- chunks, gaps, mismatches
def _chunk_means(side: Side, w: str) -> list[tuple] | None:
    """(index, tokens, mean ms, {category: mean io ms}) per chunk position, when every run has
    the same chunk count."""
    lists = [s.chunks.get(w, []) for s in side.samples]
    if not lists or not lists[0] or len({len(x) for x in lists}) > 1:
        return None
    n = len(lists)
    out = []
    for i in range(len(lists[0])):
        cats = {c for x in lists for c in x[i][3]}
        out.append((lists[0][i][0], lists[0][i][1], sum(x[i][2] for x in lists) / n,
                    {c: sum(x[i][3].get(c, 0.0) for x in lists) / n for c in cats}))
    return out


def _chunks(a: Side, b: Side, k: float) -> dict:
    outliers, windows = [], []
    for side, other in ((a, b), (b, a)):
        for w in side.windows:
            mine = _chunk_means(side, w)
            theirs = _chunk_means(other, w) if w in other.windows else None
            if mine is None:
                continue
            matched = theirs is not None and len(theirs) == len(mine)
            if side is a:
                windows.append({"window": w, "a": [c[2] for c in mine], "b": [c[2] for c in theirs] if theirs else [],
                                "index": [c[0] for c in mine], "matched": matched})
            med = median([c[2] for c in mine])
            for i, ms, excess in mad_outliers([c[2] for c in mine], k=k):
                other_ms = theirs[i][2] if matched else None
                outliers.append({"side": side.label, "window": w, "index": mine[i][0], "tokens": mine[i][1],
                                 "ms": ms, "median_ms": med, "excess_ms": excess, "other_ms": other_ms,
                                 "io_ms": {c: v for c, v in mine[i][3].items() if v > 0},
                                 "delta_ms": None if other_ms is None else (ms - other_ms) * (1 if side is a else -1)})
    return {"rule": OUTLIER_RULE.format(scale=MAD_SCALE, k=k), "k": k, "outliers": outliers, "windows": windows}


def _gap_changes(a: Side, b: Side) -> dict[str, list[dict]]:
    """Per window, the gaps between child spans whose position exists on both sides, largest change first."""
    out: dict[str, list[dict]] = {}
    for w in set(a.windows) & set(b.windows):
        means = []
        for side in (a, b):
            gs = [s.gaps.get(w, {}) for s in side.samples]
            means.append({g: sum(x.get(g, 0.0) for x in gs) / len(gs) for g in (gs[0] if gs else {})})
        common = [g for g in means[0] if g in means[1]]
        rows = [{"between": g, "a_ms": means[0][g], "b_ms": means[1][g], "delta_ms": means[0][g] - means[1][g]}
                for g in common]
        if rows:
            out[w] = sorted(rows, key=lambda r: -abs(r["delta_ms"]))[:5]
    return out


def _mismatches(a: Side, b: Side) -> list[str]:
    """Every way the sides differ besides their times: stated, never silently compared."""
    out = [*a.notes, *b.notes]
    one_dir = a.path == b.path
    if a.kind == "bench":
        if a.windows != b.windows:
            out.append(f"the variants' phases differ: {', '.join(a.windows)} ({a.label}) vs "
                       f"{', '.join(b.windows)} ({b.label}); phases only on one side are compared against 0")
        return out
    if a.windows != b.windows:
        out.append(f"different passes: {a.label} is {a.pass_} ({' + '.join(a.windows)}), {b.label} is {b.pass_} "
                   f"({' + '.join(b.windows)}); windows only on one side count against 0, and parts are also "
                   "summed by name over each side's windows")
    if a.n != b.n:
        out.append(f"{a.label} has {a.n} runs, {b.label} {b.n}")
    da, db = (s.docs[0] if s.docs else {} for s in (a, b))
    if not one_dir:
        ca, cb = da.get("config") or {}, db.get("config") or {}
        for key in sorted(set(ca) | set(cb), key=str):
            if ca.get(key) != cb.get(key) and key != "runs":
                out.append(f"setup differs: {key} is {ca.get(key)!r} in {a.label}, {cb.get(key)!r} in {b.label}")
        for what in ("prompt_tokens", "padded_len"):
            if da.get(what) != db.get(what):
                out.append(f"prompts differ: {what} {da.get(what)} ({a.label}) vs {db.get(what)} ({b.label}); "
                           "times are compared as measured, not per token")
        for what in ("versions", "devices"):
            if (da.get(what) or {}) != (db.get(what) or {}):
                diff = sorted(k for k in set(da.get(what) or {}) | set(db.get(what) or {})
                              if (da.get(what) or {}).get(k) != (db.get(what) or {}).get(k))
                out.append(f"{what} differ: {', '.join(map(str, diff))}")
    ma, mb = (s.samples[0].models if s.samples else {} for s in (a, b))
    for w in a.windows:
        if w in b.windows and ma.get(w) != mb.get(w):
            out.append(f"models differ in {w}: {ma.get(w)} ({a.label}) vs {mb.get(w)} ({b.label})")
    if a.windows != b.windows and set(ma.values()) != set(mb.values()):
        out.append(f"models differ: {a.label} runs {', '.join(sorted(set(ma.values())))}, "
                   f"{b.label} {', '.join(sorted(set(mb.values())))}")
    for w in a.windows:
        if w not in b.windows:
            continue
        ca, cb = _mean(a, ("count", w, "chunks")), _mean(b, ("count", w, "chunks"))
        if ca != cb:
            out.append(f"chunk counts differ in {w}: {_n(ca)} ({a.label}) vs {_n(cb)} ({b.label}); "
                       "chunk-by-chunk comparison skipped there, their totals compared")
    return out


def _n(x: float | None) -> str:
    return "0" if x is None else f"{x:g}"


# ---------------------------------------------------------------- output
def format_text(doc: dict) -> str:
    """What ``spectrace diff`` prints (:mod:`tracer._diff_text`)."""
    from ._diff_text import format_text as fmt

    return fmt(doc)


def render_html(doc: dict) -> str:
    """The diff page, in report.html's style (:mod:`tracer._diff_html`)."""
    from ._diff_html import render

    return render(doc)


def write_json(path, doc: dict) -> None:
    """Write atomically (:mod:`tracer._atomic`): a reader never sees half a document."""
    import json

    from ._atomic import write_text

    write_text(path, json.dumps(doc, indent=2) + "\n")


def write_html(path, doc: dict) -> None:
    from ._atomic import write_text

    write_text(path, render_html(doc))


# ---------------------------------------------------------------- spectrace run's last lines
def run_summary(doc: dict, out=None, *, lines: int = 5) -> str:
    """The speculative-vs-baseline explanation ``spectrace run`` ends with, from ``ttft.json``
    alone (windows, chunks and IO per pass; the trace's finer split is ``spectrace diff``'s,
    which the last line names with the run directory ``out``).

    Never raises: the run's files are written by then, and a summary line must not turn a
    finished run into a traceback; a problem is one line that says so.
    """
    try:
        if not isinstance(doc.get("ttft_baseline_s"), (int, float)):
            return "speculative vs baseline: no baseline was measured"
        sides = [Side(p, "", "run", p, PASSES[p], samples=samples_from_doc(doc, PASSES[p], "ttft.json"),
                      docs=[doc], source="ttft.json") for p in ("speculative", "baseline")]
        head, *rest = compare(*sides)["explanation"]
    except Exception as e:  # noqa: BLE001 - see the docstring
        return f"speculative vs baseline: not explained ({type(e).__name__}: {e})"
    hint = [f"  (spectrace diff {out} --passes speculative baseline: span by span)"] if out is not None else []
    return "\n".join([head] + [f"  {x}" for x in rest[:lines]] + hint)
