"""Drawing primitives for report.html: axes, bars and legends as inline SVG strings.

Why a module of its own: :mod:`tracer.report` decides *what* the page says (which windows,
categories and chunks, aggregated over runs); this module only knows *how* to draw a chart from
rows of already-aggregated numbers: tick placement, coordinates, error bars, the clipped-outlier
mark and the ``data-mark`` attribute on every drawn shape that the Chromium test counts. It knows
nothing of ttft.json. The escaping and number formatting the charts print with live here too, so
the report imports them from here and the dependency runs one way (report -> _svg).
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable

from spectrace.tracer.benchstats import Stat


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


# ---------------------------------------------------------------- formatting
def _time_unit(max_s: float) -> tuple[float, str]:
    return (1.0, "s") if max_s >= 1 else (1e3, "ms") if max_s >= 1e-3 else (1e6, "µs")


def _g(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _dec(v: float) -> int:
    # Four significant digits, like seeds/003's "3.102 ± 0.063 s"; the std gets the same decimals.
    return 0 if v == 0 else min(max(3 - math.floor(math.log10(abs(v))), 0), 6)


def _pm(s: Stat | None, scale: float = 1.0, unit: str = "") -> str:
    if s is None:
        return "—"
    m, u = s.mean * scale, f" {unit}" if unit else ""
    if s.std == 0:
        return (f"{m:,.0f}" if m == int(m) else f"{m:.{_dec(m)}f}") + u
    d = _dec(m)
    return f"{m:.{d}f} ± {s.std * scale:.{d}f}{u}"


def _pm_auto(s: Stat | None, unit_of=None) -> str:
    """``_pm`` in the unit that fits the mean (seconds -> s/ms/µs, bytes -> B..GiB)."""
    return "—" if s is None else _pm(s, *(unit_of or _time_unit)(abs(s.mean)))


def _nice_ticks(vmax: float, n: int = 5) -> list[float]:
    """Round tick values 0..top with top >= vmax (1, 2, 2.5, 5 x 10^k steps)."""
    if not vmax > 0:
        vmax = 1.0
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    k = math.ceil(vmax / step - 1e-9)
    return [i * step for i in range(k + 1)]


# ---------------------------------------------------------------- charts
_W = 900


def _svg(name: str, h: int, title: str, body: list[str]) -> str:
    return (f'<svg class="chart" data-chart="{_e(name)}" viewBox="0 0 {_W} {h}" width="{_W}" '
            f'height="{h}" role="img" aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg">'
            + "".join(body) + "</svg>")


def _legend(items: Iterable[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{c}"></i>{_e(lbl)}</span>' for lbl, c in items) + "</div>"


def _hbars(name: str, title: str, rows: list[tuple[str, list[tuple[str, float, str]], float]],
           scale: float, unit: str, axis: str, unit_of=_time_unit) -> str:
    """Horizontal stacked bars: rows of (label, [(segment label, value, colour)], std of total).

    The axis is in ``unit`` (values times ``scale``); each bar's total is printed in the unit
    that fits it (``unit_of``), so a small bar reads "41.10 MiB", not "0.04014 GiB".
    """
    lw, rw, top, rh, gap = 150, 120, 12, 30, 16
    pw = _W - lw - rw
    h = top + len(rows) * (rh + gap) + 46
    vmax = max((sum(v for _, v, _ in segs) + sd for _, segs, sd in rows), default=0) * scale
    ticks = _nice_ticks(vmax)
    x = lambda v: lw + pw * v / ticks[-1]  # noqa: E731
    base_y = top + len(rows) * (rh + gap)
    b = [f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 4}" y2="{base_y}"/>'
         f'<text class="tick" x="{x(t):.1f}" y="{base_y + 16}" text-anchor="middle">{_g(t)}</text>'
         for t in ticks]
    b.append(f'<text class="axis" x="{lw + pw / 2}" y="{h - 6}" text-anchor="middle">'
             f'{_e(axis)} ({_e(unit)})</text>')
    for i, (label, segs, sd) in enumerate(rows):
        y = top + i * (rh + gap)
        b.append(f'<text class="row" x="{lw - 10}" y="{y + rh / 2 + 5}" '
                 f'text-anchor="end">{_e(label)}</text>')
        acc = 0.0
        for seg, v, color in segs:
            v *= scale
            if v > 0:
                b.append(f'<rect data-mark="{_e(seg)}" x="{x(acc):.2f}" y="{y}" '
                         f'width="{max(x(acc + v) - x(acc), 0.5):.2f}" height="{rh}" fill="{color}">'
                         f'<title>{_e(label)} · {_e(seg)}: {_g(v)} {_e(unit)}</title></rect>')
            acc += v
        end = x(acc)
        if sd > 0:
            e0, e1 = x(max(acc - sd * scale, 0)), x(acc + sd * scale)
            b.append(f'<path class="err" d="M{e0:.1f} {y + rh / 2}H{e1:.1f}M{e0:.1f} {y + 8}V{y + rh - 8}'
                     f'M{e1:.1f} {y + 8}V{y + rh - 8}"/>')
            end = e1
        total = _pm_auto(Stat(acc / scale, sd, 2), unit_of)
        b.append(f'<text class="val" x="{end + 6:.1f}" y="{y + rh / 2 + 5}">{total}</text>')
    return _svg(name, h, title, b)


def _chunk_chart(pass_: str, rows: list[dict], ymax_ms: float) -> str:
    """Vertical bars, one per chunk: IO ms per category stacked under the rest of its time."""
    lw, top, ph, bottom = 70, 14, 190, 46
    pw = _W - lw - 20
    h = top + ph + bottom
    ticks = _nice_ticks(ymax_ms)
    cap = ticks[-1]
    y = lambda v: top + ph - ph * min(v, cap) / cap  # noqa: E731
    b = [f'<line class="grid" x1="{lw}" x2="{lw + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
         f'<text class="tick" x="{lw - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{_g(t)}</text>'
         for t in ticks]
    b.append(f'<text class="axis" transform="translate(16 {top + ph / 2}) rotate(-90)" '
             f'text-anchor="middle">latency (ms)</text>'
             f'<text class="axis" x="{lw + pw / 2}" y="{h - 6}" text-anchor="middle">chunk index</text>')
    n = max(len(rows), 1)
    slot = pw / n
    bw = max(slot * 0.8, 0.6)
    every = max(1, math.ceil(n / 20))
    for i, r in enumerate(rows):
        x0 = lw + i * slot + (slot - bw) / 2
        acc, tip = 0.0, [f"chunk {r['index']} · {r['tokens']} tokens · {_pm(r['ms'], unit='ms')}"]
        for label, v, color in r["segs"]:
            if v > 0 and acc < cap:
                b.append(f'<rect data-mark="{_e(label)}" x="{x0:.2f}" y="{y(acc + v):.2f}" '
                         f'width="{bw:.2f}" height="{max(y(acc) - y(acc + v), 0.3):.2f}" fill="{color}"/>')
                tip.append(f"{label}: {_g(v)} ms")
            acc += v
        # A transparent hit box carries the tooltip for the whole chunk.
        b.append(f'<rect class="hit" x="{x0:.2f}" y="{top}" width="{bw:.2f}" height="{ph}">'
                 f'<title>{_e(chr(10).join(tip))}</title></rect>')
        sd = r["ms"].std if r["ms"] else 0
        if acc > cap:  # an outlier past the axis: break the bar and print its value
            left = i > n / 2
            b.append(f'<path class="brk" d="M{x0 - 1:.1f} {top + 9}L{x0 + bw + 1:.1f} {top + 4}"/>'
                     f'<text class="clip" x="{x0 - 3 if left else x0 + bw + 3:.1f}" y="{top + 10}" '
                     f'text-anchor="{"end" if left else "start"}">{_g(acc)} ms ↑</text>')
        elif sd > 0:
            cx = x0 + bw / 2
            b.append(f'<path class="err" d="M{cx:.1f} {y(acc - sd):.1f}V{y(acc + sd):.1f}"/>')
        if i % every == 0:
            b.append(f'<text class="tick" x="{x0 + bw / 2:.1f}" y="{top + ph + 16}" '
                     f'text-anchor="middle">{_e(r["index"])}</text>')
    b.append(f'<line class="axisline" x1="{lw}" x2="{lw + pw}" y1="{top + ph}" y2="{top + ph}"/>')
    return _svg(f"chunks-{pass_}", h, f"per-chunk latency, {pass_}", b)
