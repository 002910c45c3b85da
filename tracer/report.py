"""report.html: one self-contained page that shows where time-to-first-token went.

Why server-side SVG: the report must open from a CI artifact or an air-gapped box, so it has no
network, no CDN and no JavaScript; every chart is inline SVG computed here, and a Content
Security Policy forbids anything else. Every string that came from ``ttft.json`` is
HTML-escaped (a model name or config value is data, never markup).

Charts (each ``<svg class="chart" data-chart=...>``; every drawn mark has ``data-mark``):
``ttft-windows`` (baseline vs speculative, stacked by window), ``io-bytes`` and ``io-ms``
(per pass, stacked by binding category), ``chunks-<pass>`` (per-chunk latency split into IO per
category and the rest). With several runs (``runs`` in ttft.json, or several run directories)
values are means and tables show mean ± std.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence

from spectrace.tracer._atomic import make_dirs, remove_dirs, write_text
from spectrace.tracer._record import CATEGORIES
from spectrace.tracer._svg import _chunk_chart, _e, _g, _hbars, _legend, _pm, _pm_auto, _time_unit
from spectrace.tracer.benchstats import Stat, summarize
from spectrace.tracer.benchstats import finite
from spectrace.tracer.ttft import PASSES as _WINDOW_PASSES
from spectrace.tracer.ttft import TTFT_FIELDS, check, load

__all__ = ["render_report", "write_report", "load_ttft", "PASSES"]

PASSES: tuple[str, ...] = tuple(_WINDOW_PASSES.values())  # the passes with chunks: spec, baseline, base_pruned
_PASS_LABEL = {"spec": "spec (draft)", "baseline": "baseline", "base_pruned": "base_pruned"}
# Colour-blind-safe (Tableau 10); prefill_queries is red because it is the usual suspect.
_CAT_COLOR = {"prefill_queries": "#e15759", "past_key": "#4e79a7", "past_value": "#76b7b2",
              "logits": "#f28e2b", "other": "#b07aa1"}
_REST_COLOR = "#c9ced6"
_BUSY_COLOR = "#59a14f"  # device time per span: busy (green) vs idle (_REST_COLOR)
# (field, label, colour): the speculative bar's segments; host scoring's three parts if present.
_SPEC_SEGMENTS = (("ttft_spec_device_s", "draft device window", "#f28e2b"),
                  ("t_assemble_s", "assemble", "#edc948"), ("t_score_s", "score", "#e15759"),
                  ("t_select_s", "select", "#ff9da7"),
                  ("ttft_base_pruned_only_s", "base prefill of kept tokens", "#59a14f"))
_BASE_SEGMENT = ("ttft_baseline_s", "baseline prefill", "#4e79a7")


def _stat(values: Iterable[Any]) -> Stat | None:
    xs = [v for v in (_num(x) for x in values) if v is not None]
    return summarize(xs) if xs else None


def _num(x: Any) -> float | None:
    """A finite real number as a float, else None (an int too large for a float included)."""
    try:
        return finite(x)
    except OverflowError:
        return None


# ---------------------------------------------------------------- input
def load_ttft(path: str | os.PathLike) -> dict:
    """Read one ttft.json (a file, or a directory holding one) and check it is ours
    (:func:`tracer.ttft.load`: every problem is one ``ValueError`` naming the file)."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "ttft.json"
    return load(p)


def _runs(docs: Sequence[dict]) -> list[dict]:
    """Every run of every document; a run lacking io/chunks borrows the document's (last run's)."""
    out = []
    for doc in docs:
        runs = [r for r in doc.get("runs") or [] if isinstance(r, dict)] or [doc]
        for i, r in enumerate(runs):
            if i == len(runs) - 1:
                r = {**{k: doc[k] for k in ("io", "chunks", "slowest_chunks") if k in doc}, **r}
            out.append(r)
    return out


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return [v for v in x if isinstance(v, dict)] if isinstance(x, list) else []


# ---------------------------------------------------------------- formatting
def _ms_unit(max_ms: float) -> tuple[float, str]:
    return _time_unit(max_ms / 1e3)[0] / 1e3, _time_unit(max_ms / 1e3)[1]


def _bytes_unit(max_b: float) -> tuple[float, str]:
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if max_b >= div:
            return 1 / div, unit
    return 1.0, "B"


# ---------------------------------------------------------------- aggregation
def _io_stats(runs: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """pass -> category -> {bytes, ms, count: Stat|None, direction: str}, only where traffic."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for p in PASSES:
        for c in CATEGORIES:
            cells = [_d(_d(_d(r.get("io")).get(p)).get(c)) for r in runs]
            if not any(cells):
                continue
            dirs = sorted({str(x["direction"]) for x in cells if x.get("direction")})
            out.setdefault(p, {})[c] = {k: _stat(x.get(k, 0) for x in cells) for k in ("bytes", "ms", "count")}
            out[p][c]["direction"] = "/".join(dirs)
    return out


def _chunk_rows(runs: list[dict], pass_: str) -> list[dict]:
    """One row per chunk index: mean IO ms per category, the rest, and Stat of total ms."""
    by_index: dict[Any, list[dict]] = {}
    for r in runs:
        for ch in _l(_d(r.get("chunks")).get(pass_)):
            by_index.setdefault(ch.get("index"), []).append(ch)
    rows = []
    for idx in sorted(by_index, key=lambda k: (_num(k) is None, _num(k) or 0, str(k))):
        chs = by_index[idx]
        ms = _stat(c.get("ms") for c in chs)
        segs = []
        for c in CATEGORIES:
            s = _stat(_d(_d(ch.get("io")).get(c)).get("ms", 0) for ch in chs)
            segs.append((c, s.mean if s else 0.0, _CAT_COLOR[c]))
        rest = max((ms.mean if ms else 0.0) - sum(v for _, v, _ in segs), 0.0)
        segs.append(("compute & rest", rest, _REST_COLOR))
        tokens = {ch.get("tokens") for ch in chs}
        rows.append({"index": idx, "tokens": "/".join(map(str, tokens)), "ms": ms, "segs": segs})
    return rows


def _config_diff(docs: Sequence[dict]) -> list[str]:
    keys = set().union(*(_d(d.get("config")) for d in docs))
    canon = lambda d, k: json.dumps(_d(d.get("config")).get(k), sort_keys=True, default=str)  # noqa: E731
    return sorted(str(k) for k in keys if len({canon(d, k) for d in docs}) > 1)


# ---------------------------------------------------------------- page
def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Cells are already-escaped HTML."""
    th = "".join(f"<th>{h}</th>" for h in head)
    tr = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{tr}</tbody></table>'


def _kv(title: str, d: Mapping) -> str:
    if not d:
        return f"<h3>{_e(title)}</h3><p class='muted'>not recorded</p>"
    rows = [(f"<code>{_e(k)}</code>", _e(v if isinstance(v, str) else json.dumps(v, default=str)))
            for k, v in d.items()]
    return f"<h3>{_e(title)}</h3>" + _table(["key", "value"], rows, "kv")


def render_report(data: dict | list[dict]) -> str:
    """The whole report.html for one ttft.json document or several (one per run directory)."""
    docs = [data] if isinstance(data, dict) else list(data)
    if not docs:
        raise ValueError("render_report() got no ttft.json documents")
    for i, d in enumerate(docs):
        check(d, f"document {i}")
    runs = _runs(docs)
    n = len(runs)
    st = {f: _stat(r.get(f) for r in runs) for f in TTFT_FIELDS}
    st["speculative"] = _stat(_spec_total(r) for r in runs)
    io = _io_stats(runs)
    parts = _headline(st, io) + [_ttft_section(st, n), _io_section(io), _chunks_section(runs),
                                 _slowest_section(runs), _device_section(docs[-1]), _run_section(docs)]
    sub = f"{n} run{'s' if n > 1 else ''}" + (" · values are mean ± std" if n > 1 else "")
    if st["prompt_tokens"]:
        sub += f" · prompt {_pm(st['prompt_tokens'])} tokens"
    if st["kept_tokens"]:
        sub += f" · kept {_pm(st['kept_tokens'])}"
    return _PAGE.format(sub=_e(sub), body="\n".join(parts))


def _mean(s: Stat | None) -> float:
    return s.mean if s else 0.0


def _spec_total(r: dict) -> float | None:
    """Speculative TTFT = spec device + host scoring + base pruned (computed if not given)."""
    v = _num(r.get("ttft_speculative_s"))
    if v is not None:
        return v
    parts = [_num(r.get(f)) for f in ("ttft_spec_device_s", "ttft_host_scoring_s", "ttft_base_pruned_only_s")]
    return None if any(p is None for p in parts) else sum(parts)


def _headline(st: dict, io: dict) -> list[str]:
    """The sentences the investigation in seeds/000 needed: how much slower, and where."""
    out = []
    base, spec = st["ttft_baseline_s"], st["speculative"]
    if base and spec and base.mean > 0:
        ratio = spec.mean / base.mean
        top_lbl, top_v = max(((lbl, _mean(st.get(f))) for f, lbl, _ in _SPEC_SEGMENTS), key=lambda t: t[1])
        out.append(f'<p class="headline">Speculative TTFT is <b>{ratio:.2f}×</b> the baseline '
                   f'({"slower" if ratio > 1 else "faster"}): {_pm_auto(spec)} vs {_pm_auto(base)}. '
                   f'Largest window: <b>{_e(top_lbl)}</b> ({100 * top_v / spec.mean:.0f}% of speculative).</p>')
    hot = max(((p, c, v) for p, cs in io.items() for c, v in cs.items() if v["ms"]),
              key=lambda t: t[2]["ms"].mean, default=None)
    if hot:
        p, c, v = hot
        ms = v["ms"]
        out.append(f'<p class="headline">Most transfer time: <b>{_e(c)}</b> {_e(v["direction"])} in pass '
                   f'<b>{_e(p)}</b>: {_pm_auto(Stat(ms.mean / 1e3, ms.std / 1e3, ms.n))}, '
                   f'{_pm_auto(v["bytes"], _bytes_unit)} over {_pm(v["count"])} transfers.</p>')
    return out


def _ttft_section(st: dict, n: int) -> str:
    spec = st["speculative"]
    host_split = any(st[f] for f in ("t_assemble_s", "t_score_s", "t_select_s"))
    segs = [(lbl, _mean(st[f]), c) for f, lbl, c in _SPEC_SEGMENTS if host_split or not f.startswith("t_")]
    if not host_split:
        segs.insert(1, ("host scoring", _mean(st["ttft_host_scoring_s"]), "#e15759"))
    f, lbl, color = _BASE_SEGMENT
    rows = [("baseline", [(lbl, _mean(st[f]), color)], st[f].std if st[f] else 0.0),
            ("speculative", segs, spec.std if spec else 0.0)]
    scale, unit = _time_unit(max(_mean(st[f]), _mean(spec)))
    table = _table(["field", "value" + (f" (mean ± std, n={n})" if n > 1 else "")],
                   [(f"<code>{k}</code>", _pm_auto(st[k]) if k.endswith("_s") else _pm(st[k]))
                    for k in TTFT_FIELDS if st[k]], "kv")
    return ("<h2>TTFT windows</h2>" + _legend([(lbl, color)] + [(s[0], s[2]) for s in segs])
            + _hbars("ttft-windows", "TTFT windows", rows, scale, unit, "time to first token") + table)


def _io_section(io: dict) -> str:
    head = "<h2>Host↔device IO per binding category</h2>"
    passes = [p for p in PASSES if p in io]
    if not passes:
        return head + "<p class='muted'>no transfers recorded</p>"
    cats = [c for c in CATEGORIES if any(c in io[p] for p in passes)]

    def rows_of(key: str) -> list:
        return [(_PASS_LABEL[p], [(c, _mean(io[p].get(c, {}).get(key)), _CAT_COLOR[c]) for c in cats], 0.0)
                for p in passes]
    bscale, bunit = _bytes_unit(max(sum(_mean(v["bytes"]) for v in io[p].values()) for p in passes))
    trows = []
    for p in passes:
        for c, v in ((c, io[p][c]) for c in cats if c in io[p]):
            gbps = _mean(v["bytes"]) / _mean(v["ms"]) / 1e6 if _mean(v["ms"]) > 0 else None
            trows.append((_e(p), f'<i class="sw" style="background:{_CAT_COLOR[c]}"></i>{_e(c)}',
                          _e(v["direction"]), _pm_auto(v["bytes"], _bytes_unit), _pm(v["ms"], 1, "ms"),
                          _pm(v["count"]), "—" if gbps is None else f"{gbps:.2f} GB/s"))
    return (head + _legend([(c, _CAT_COLOR[c]) for c in cats])
            + _hbars("io-bytes", "bytes per category", rows_of("bytes"), bscale, bunit, "bytes moved", _bytes_unit)
            + _hbars("io-ms", "time per category", rows_of("ms"), 1.0, "ms", "transfer time", _ms_unit)
            + _table(["pass", "category", "direction", "bytes", "time", "transfers", "effective"], trows, "num"))


def _chunks_section(runs: list[dict]) -> str:
    """One panel per pass on a shared scale, so a draft chunk and a base chunk compare at a glance."""
    rows = {p: _chunk_rows(runs, p) for p in PASSES}
    tops = sorted(r["ms"].mean + r["ms"].std for rs in rows.values() for r in rs if r["ms"])
    # One outlier (the retained-cache copy after the last draft chunk) must not flatten the rest.
    p95 = tops[int(0.95 * (len(tops) - 1))] if tops else 0.0
    ymax = p95 * 1.3 if tops and tops[-1] > 2.5 * p95 else (tops[-1] if tops else 0.0)
    out = "<h2>Per-chunk latency</h2>" + _legend([(c, _CAT_COLOR[c]) for c in CATEGORIES]
                                                  + [("compute & rest", _REST_COLOR)])
    return out + "".join(f"<h3>{_e(_PASS_LABEL[p])} · {len(rows[p])} chunks</h3>" + _chunk_chart(p, rows[p], ymax)
                         for p in PASSES if rows[p])


def _slowest_section(runs: list[dict]) -> str:
    multi = len(runs) > 1
    slow = sorted(((ri, s) for ri, r in enumerate(runs) for s in _l(r.get("slowest_chunks"))),
                  key=lambda t: -(_num(t[1].get("ms")) or 0))
    chunk = {(ri, p, ch.get("index")): ch for ri, r in enumerate(runs) for p in PASSES
             for ch in _l(_d(r.get("chunks")).get(p))}
    rows = []
    for ri, s in slow[:15]:
        ch = chunk.get((ri, s.get("pass"), s.get("index")), {})
        cio = {c: _num(_d(v).get("ms")) or 0 for c, v in _d(ch.get("io")).items()}
        worst = max(cio, key=cio.get) if cio and max(cio.values()) > 0 else None
        rows.append(([str(ri)] if multi else []) + [
            _e(s.get("pass")), _e(s.get("index")), _e(ch.get("tokens", "—")), _e(_g(_num(s.get("ms")) or 0)),
            "—" if worst is None else f"{_e(worst)} ({_g(cio[worst])} ms)"])
    if not rows:
        return "<h2>Slowest chunks</h2><p class='muted'>none recorded</p>"
    head = (["run"] if multi else []) + ["pass", "chunk", "tokens", "ms", "largest IO"]
    return "<h2>Slowest chunks</h2>" + _table(head, rows, "num")


def _device_section(doc: dict) -> str:
    """``device_time`` (``spectrace run --xplane``): device busy vs idle inside each span."""
    rows = [r for r in _l(doc.get("device_time")) if isinstance(r, Mapping)]
    if not rows:
        return ""
    out = []
    for r in rows:
        ms = _num(r.get("ms")) or 0.0
        out.append(("\u2003" * int(_num(r.get("depth")) or 0) + _span_label(r), _g(ms), *_device_cells(r, ms)))
        devices = r.get("devices") if isinstance(r.get("devices"), Mapping) else {}
        if devices and (_num(r.get("device_ops")) or _num(r.get("device_busy_ms"))):
            pad = "\u2003" * (int(_num(r.get("depth")) or 0) + 1)
            out += [(f"{pad}<span class='muted'>{_e(k)}</span>", "", *_device_cells(d, ms))
                    for k, d in devices.items() if isinstance(d, Mapping)]
    windows = [(str(r.get("name")), [("device busy", (_num(r.get("device_busy_ms")) or 0.0) / 1e3, _BUSY_COLOR),
                                     ("device idle", (_num(r.get("device_idle_ms")) or 0.0) / 1e3, _REST_COLOR)], 0.0)
               for r in rows if not r.get("depth")]
    scale, unit = _time_unit(max((sum(v for _, v, _ in segs) for _, segs, _ in windows), default=0.0))
    chart = (_legend([("device busy", _BUSY_COLOR), ("device idle", _REST_COLOR)])
             + _hbars("device-windows", "device busy and idle time per window", windows, scale, unit, "time")
             if windows else "")
    split = " Below each span, one row per device (several ran ops): that device alone." \
        if any(isinstance(r.get("devices"), Mapping) and r.get("devices") for r in rows) else ""
    return ("<h2>Device time per span (last run, XPlane)</h2><p class='muted'>busy: at least one device op "
            "running; idle: the span's time without one (launches, host work, waiting). Heaviest ops: "
            f"those starting inside the span, by summed time.{split}</p>" + chart
            + _table(["span", "ms", "busy ms", "idle ms", "busy", "ops", "heaviest ops"], out, "num")
            + _gaps_table(rows))


def _gaps_table(rows: list) -> str:
    """The longest device idle gaps (``tracer.device_time.longest_gaps``): where in which span the
    device waited, between which ops, and what the host was doing meanwhile."""
    from spectrace.tracer.device_time import gap_between, longest_gaps

    found = longest_gaps(rows)
    if not found:
        return ""
    body = [(_span_label(r), _g(_num(g.get("ms")) or 0.0), _g(_num(g.get("at_ms")) or 0.0),
             f"<code>{_e(gap_between(g.get('after'), g.get('before'), width=40))}</code>",
             f"<code>{_e(str(g.get('host'))[:60])}</code>" if g.get("host") else "—") for r, g in found]
    return ("<h3>Longest device idle gaps</h3><p class='muted'>no op ran on any device; at: ms from the "
            "span's start; host: the innermost host event covering half the gap or more.</p>"
            + _table(["span", "gap ms", "at ms", "between", "host"], body, "num"))


def _span_label(r: Mapping) -> str:
    """A device-time row's span, escaped: name, ``#chunk``, and the engine below a window."""
    label = _e(r.get("name"))
    if r.get("chunk.index") is not None:
        label += f" #{_e(r.get('chunk.index'))}"
    if r.get("engine") is not None and r.get("depth"):
        label += f" <span class='muted'>{_e(r.get('engine'))}</span>"
    return label


def _device_cells(r: Mapping, ms: float) -> tuple:
    """busy ms, idle ms, busy share of the span's ``ms``, ops, heaviest ops: of a row or one device."""
    busy = _num(r.get("device_busy_ms")) or 0.0
    top = ", ".join(f"<code>{_e(str(t.get('name'))[:48])}</code> {_g(_num(t.get('ms')) or 0)} ms ×{_e(t.get('count'))}"
                    for t in _l(r.get("top_ops"))[:3] if isinstance(t, Mapping))
    return (_g(busy), _g(_num(r.get("device_idle_ms")) or 0.0), f"{100 * busy / ms:.0f}%" if ms > 0 else "—",
            _e(r.get("device_ops")), top or "—")


def _run_section(docs: Sequence[dict]) -> str:
    last, diff = docs[-1], _config_diff(docs)
    warn = (f"<p class='warn'>Run directories differ in config: {_e(', '.join(diff))}; showing the last one.</p>"
            if diff else "")
    boxes = "".join(f"<div>{_kv(t, _d(last.get(k)))}</div>" for t, k in (
        ("configuration", "config"), ("versions", "versions"), ("devices", "devices"),
        ("trace alignment (XPlane)", "alignment")))
    return f'<h2>Run</h2>{warn}<div class="cols">{boxes}</div>'


def write_report(out_dir: str | os.PathLike, *, run_dirs: Sequence[str | os.PathLike] | None = None,
                 output: str | os.PathLike | None = None) -> pathlib.Path:
    """Write ``out_dir/report.html`` (or ``output``) from ``out_dir/ttft.json``, or from every
    ``run_dirs/ttft.json``.

    With no ``run_dirs`` and no ttft.json in ``out_dir``, its subdirectories that hold one are the
    runs (a bench output directory). Returns the path written.
    """
    out = pathlib.Path(out_dir)
    if run_dirs is None:
        run_dirs = [out] if (out / "ttft.json").is_file() else sorted(
            d for d in out.iterdir() if (d / "ttft.json").is_file()) if out.is_dir() else []
    if not run_dirs:
        raise FileNotFoundError(f"no ttft.json in {out} or its subdirectories; "
                                f"write one with `spectrace run --out {out}`")
    html_text = render_report([load_ttft(d) for d in run_dirs])
    path = pathlib.Path(output) if output else out / "report.html"
    created = make_dirs(path.parent)
    try:
        write_text(path, html_text)
    except BaseException:
        remove_dirs(created)  # no empty directory left behind by a failed write
        raise
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>spectrace · TTFT report</title>
<style>
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#1f2933;
background:#f6f7f9;margin:0}}
main{{max-width:960px;margin:0 auto;padding:24px 28px 48px;background:#fff;box-shadow:0 0 0 1px #e4e7eb}}
h1{{font-size:22px;margin:0 0 2px}} h2{{font-size:17px;margin:30px 0 8px;border-bottom:1px solid #e4e7eb;padding-bottom:4px}}
h3{{font-size:14px;margin:16px 0 4px;color:#3e4c59}} .sub,.muted{{color:#7b8794}}
.headline{{background:#fff8e6;border-left:4px solid #f0b429;padding:8px 12px;margin:10px 0}}
.warn{{background:#ffeeee;border-left:4px solid #e15759;padding:8px 12px}}
.legend{{display:flex;flex-wrap:wrap;gap:4px 16px;margin:6px 0;font-size:13px}}
.legend i,.sw{{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px}}
svg.chart{{display:block;max-width:100%;height:auto;font-family:inherit}}
svg .grid{{stroke:#e4e7eb}} svg .axisline{{stroke:#9aa5b1}} svg .tick{{font-size:11px;fill:#616e7c}}
svg .axis{{font-size:12px;fill:#3e4c59}} svg .row{{font-size:13px;fill:#1f2933;font-weight:600}}
svg .val{{font-size:12px;fill:#1f2933;font-variant-numeric:tabular-nums}}
svg .brk{{stroke:#fff;stroke-width:2.5}} svg .clip{{font-size:11px;fill:#1f2933;font-weight:600}}
svg .err{{stroke:#1f2933;stroke-width:1.4;fill:none}} svg .hit{{fill:transparent}} svg .hit:hover{{fill:rgba(0,0,0,.06)}}
svg rect[data-mark]:hover{{opacity:.8}}
table{{border-collapse:collapse;margin:8px 0;font-size:13px;font-variant-numeric:tabular-nums}}
th,td{{padding:4px 10px;border-bottom:1px solid #eef0f2;text-align:left;vertical-align:top}}
th{{background:#f5f7fa;font-weight:600}} table.num td:not(:first-child):not(:nth-child(2)){{text-align:right}}
table.kv td:last-child{{word-break:break-all}} code{{font-size:12px}}
.cols{{display:grid;grid-template-columns:1fr 1fr;gap:0 24px}}
</style></head>
<body><main>
<h1>spectrace · where time to first token went</h1>
<div class="sub">{sub}</div>
{body}
</main></body></html>
"""
