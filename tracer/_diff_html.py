"""diff.html: the ``spectrace diff`` result as one self-contained page, in report.html's style.

Same rules as :mod:`tracer.report` (whose page, styles and table helper it reuses): no network,
no JavaScript, inline SVG only, every string from the inputs HTML-escaped. Charts
(``<svg data-chart=...>``, every mark ``data-mark``): ``diff-windows`` (A and B stacked by
window), ``diff-parts`` (each part's Δ as a bar left or right of zero: where the difference is).
"""

from __future__ import annotations

from ._diff_explain import _verdict, fmt_bytes
from ._diff_input import GAP
from ._svg import _W, _e, _g, _hbars, _legend, _nice_ticks, _svg
from .report import _CAT_COLOR, _PAGE, _REST_COLOR, _table

__all__ = ["render"]

_WINDOW_COLOR = {"ttft.spec_device": "#f28e2b", "ttft.host_scoring": "#e15759", "ttft.base_pruned": "#59a14f",
                 "ttft.baseline": "#4e79a7"}
_SLOWER, _FASTER = "#e15759", "#59a14f"  # Δ > 0: A slower there; Δ < 0: A faster
_PAGE_DIFF = (_PAGE.replace("TTFT report", "TTFT diff")
              .replace("where time to first token went", "why one time to first token differs from another"))


def _ms(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def _cell(s: dict) -> str:
    return _e(_ms(s["mean"]) + (f" ± {_ms(s['std'])}" if s["n"] > 1 and s["std"] else ""))


def _mark(r: dict, c: dict) -> str:
    out = []
    if r.get("flag"):
        out.append("<b title='beyond noise'>*</b>")
    if r.get("only"):
        out.append(f"only {_e(c[r['only']]['label'])}")
    p = r.get("p")
    if p is not None and r["test"]["method"] != "exact":
        out.append(f"p={p:.2g}")
    return " ".join(out)


def _row(label: str, r: dict, c: dict, depth: int = 0) -> tuple:
    share = "" if r.get("share") is None else f"{100 * r['share']:.0f}%"
    return ("\u2003" * depth + _e(label), _cell(r["a"]), _cell(r["b"]), _e(f"{r['delta_ms']:+.3f}"), share,
            _mark(r, c))


def _diverging(name: str, title: str, rows: list[tuple[str, float]]) -> str:
    """Horizontal bars from a zero line: one per (label, Δ ms); red right (A slower), green left."""
    lw, top, rh, gap = 340, 12, 20, 8
    pw = _W - lw - 90
    h = top + len(rows) * (rh + gap) + 40
    ticks = _nice_ticks(max((abs(v) for _, v in rows), default=0.0))
    lim = ticks[-1]
    x = lambda v: lw + pw / 2 + (pw / 2) * v / lim  # noqa: E731
    base_y = top + len(rows) * (rh + gap)
    b = []
    for t in sorted({-t for t in ticks} | set(ticks)):
        b.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 4}" y2="{base_y}"/>'
                 f'<text class="tick" x="{x(t):.1f}" y="{base_y + 16}" text-anchor="middle">{_g(t)}</text>')
    b.append(f'<line class="axisline" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 4}" y2="{base_y}"/>'
             f'<text class="axis" x="{lw + pw / 2}" y="{h - 6}" text-anchor="middle">Δ ms (A − B)</text>')
    for i, (label, v) in enumerate(rows):
        y = top + i * (rh + gap)
        x0, x1 = sorted((x(0), x(v)))
        b.append(f'<text class="row" x="{lw - 10}" y="{y + rh / 2 + 5}" text-anchor="end">{_e(label[:46])}</text>'
                 f'<rect data-mark="{_e(label)}" x="{x0:.2f}" y="{y}" width="{max(x1 - x0, 0.5):.2f}" height="{rh}" '
                 f'fill="{_SLOWER if v > 0 else _FASTER}"><title>{_e(label)}: {v:+.3f} ms</title></rect>'
                 f'<text class="val" x="{max(x1, x(0)) + 6:.1f}" y="{y + rh / 2 + 5}">{v:+.3g}</text>')
    return _svg(name, h, title, b)


def _one(c: dict) -> str:
    a, b, t = c["a"], c["b"], c["total"]
    head, *rest = c["explanation"]
    out = [f'<p class="headline"><b>{_e(head)}</b></p>', "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in rest) + "</ul>"]
    if c["mismatches"]:
        out.append("<div class='warn'><b>Differences besides time</b><ul>"
                   + "".join(f"<li>{_e(m)}</li>" for m in c["mismatches"]) + "</ul></div>")
    out.append(f"<p class='muted'>{_e(a['label'])}: <code>{_e(a['path'])}</code> ({_e(a['pass'])}, n={a['n']}) · "
               f"{_e(b['label'])}: <code>{_e(b['path'])}</code> ({_e(b['pass'])}, n={b['n']}) · noise: "
               f"{_e(c['statistic']['description'])}</p>")
    names = list(dict.fromkeys(w["name"] for w in c["windows"]))
    bars = [(side["label"], [(w["name"], w[k]["mean"] / 1e3, _WINDOW_COLOR.get(w["name"], _REST_COLOR))
                             for w in c["windows"]], t[k]["std"] / 1e3) for side, k in ((a, "a"), (b, "b"))]
    out.append("<h2>TTFT by window</h2>" + _legend([(n, _WINDOW_COLOR.get(n, _REST_COLOR)) for n in names])
               + _hbars("diff-windows", "TTFT by window, both sides", bars, 1e3, "ms", "time to first token"))
    if c["matched_windows"]:
        parts = [(f"{w['name']} › {'host gaps' if p['name'] == GAP else p['name']}", p["delta_ms"])
                 for w in c["windows"] for p in w["parts"]] \
            or [(w["name"], w["delta_ms"]) for w in c["windows"]]
    else:
        parts = [(p["name"], p["delta_ms"]) for p in c["parts"]]
    parts += [(f"io {r['name']}", r["delta_ms"]) for r in c["io"]]
    out.append("<h2>Where the difference is</h2><p class='muted'>each part's Δ (A − B); red: A slower there, "
               "green: A faster. Transfer rows (io) lie inside the parts above them.</p>"
               + _diverging("diff-parts", "Δ per part", parts))
    rows = [_row("TTFT (sum of the windows)", t, c)]
    for w in c["windows"]:
        rows.append(_row(w["name"], w, c, 1))
        for p in w["parts"]:
            rows.append(_row(p["name"] + (" (host gaps)" if p["name"] == GAP else ""), p, c, 2))
            rows += [_row(r["name"] if r["name"] == "compute & rest" else f"io {r['name']}", r, c, 3) for r in p["io"]]
    rows += [_row(f"between {r['name']} (outside the TTFT)", r, c, 1) for r in c["between_windows"]]
    head_row = ["span", _e(a["label"]) + " ms", _e(b["label"]) + " ms", "Δ ms", "share", "beyond noise / only"]
    out.append("<h3>Decomposition down the span tree</h3>" + _table(head_row, rows, "num"))
    if not c["matched_windows"] and c["parts"]:
        out.append("<h3>Parts summed over each side's windows</h3>"
                   + _table(head_row, [_row(p["name"], p, c, 1) for p in c["parts"]], "num"))
    if c["io"]:
        bw = lambda x: "—" if x is None else f"{x:.3g} GB/s"  # noqa: E731
        io_rows = [(f'<i class="sw" style="background:{_CAT_COLOR.get(r["category"], _REST_COLOR)}"></i>'
                    f'{_e(r["name"])}', _e(fmt_bytes(r["a"]["bytes"])), _e(fmt_bytes(r["b"]["bytes"])),
                    _cell(r["a"]), _cell(r["b"]), _e(f"{r['delta_ms']:+.3f}"), bw(r["a"]["gbps"]), bw(r["b"]["gbps"]),
                    _e(f"{r['a']['count']:g} | {r['b']['count']:g}"), _mark(r, c)) for r in c["io"]]
        out.append("<h2>IO per binding category and direction</h2>" + _table(
            ["category", f"bytes {_e(a['label'])}", f"bytes {_e(b['label'])}", f"ms {_e(a['label'])}",
             f"ms {_e(b['label'])}", "Δ ms", f"bandwidth {_e(a['label'])}", f"bandwidth {_e(b['label'])}",
             "copies", "beyond noise / only"], io_rows, "num"))
    ch = c["chunks"]
    out.append(f"<h2>Chunk outliers</h2><p class='muted'>{_e(ch['rule'])}</p>")
    out.append(_table(["side", "window", "chunk", "ms", "median ms", "over median", "other side"],
                      [(_e(o["side"]), _e(o["window"]), _e(o["index"]), _ms(o["ms"]), _ms(o["median_ms"]),
                        f"{o['excess_ms']:+.3f}", "—" if o["other_ms"] is None else _ms(o["other_ms"]))
                       for o in ch["outliers"]], "num") if ch["outliers"] else "<p class='muted'>none</p>")
    if c["device"]:
        out.append("<h2>Device busy and idle (XPlane)</h2>" + _table(
            ["span", "Δ busy ms", "Δ idle ms", f"busy {_e(a['label'])}", f"busy {_e(b['label'])}", "reading"],
            [(_e(d["name"]), f"{d['busy']['delta_ms']:+.3f}", f"{d['idle']['delta_ms']:+.3f}",
              _cell(d["busy"]["a"]), _cell(d["busy"]["b"]), _e(_verdict(d["busy"]["delta_ms"], d["idle"]["delta_ms"])))
             for d in c["device"]], "num"))
    return "\n".join(out)


def render(doc: dict) -> str:
    """The whole page for a :func:`tracer.diff.diff_paths` result (one section per comparison)."""
    cs = doc["comparisons"]
    body = "\n".join((f"<h2>variant {_e(c['a']['pass'])}</h2>" if len(cs) > 1 else "") + _one(c) for c in cs)
    first = cs[0]
    sub = f"A: {first['a']['path']} · B: {first['b']['path']} · Δ = A − B"
    return _PAGE_DIFF.format(sub=_e(sub), body=body)
