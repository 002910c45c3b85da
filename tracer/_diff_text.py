"""``spectrace diff``'s printed form: the explanation first, then the tables it rests on.

A reader in a terminal or a CI log wants the answer in the first lines and the evidence below
it, so the order is: what was compared, what differs besides time, the explanation, the span
tree of the difference, IO per category and direction, chunk outliers, device busy/idle.
"""

from __future__ import annotations

from ._diff_explain import _gbps, _verdict

__all__ = ["format_text"]

_W = 44  # the name column


def _v(s: dict, n_many: bool) -> str:
    return f"{s['mean']:.3f}±{s['std']:.3f}" if n_many and s["std"] else f"{s['mean']:.3f}"


def _flag(r: dict, c: dict) -> str:
    marks = []
    if r.get("flag"):
        marks.append("*")
    if r.get("only"):
        marks.append(f"only {c[r['only']]['label']}")
    return "  ".join(marks)


def _bw(x) -> str:
    return _gbps(x)


def _line(name: str, r: dict, c: dict, depth: int = 0) -> str:
    many = max(c["a"]["n"], c["b"]["n"]) > 1
    share = "" if r.get("share") is None else f"{100 * r['share']:.0f}%"
    label = ("  " * depth + name)[:_W]
    return (f"  {label:<{_W}}{_v(r['a'], many):>15}{_v(r['b'], many):>15}{r['delta_ms']:>+11.3f}"
            f"{share:>7}  {_flag(r, c)}").rstrip()


def _side(s: dict) -> str:
    what = "bench output" if s["kind"] == "bench" else "run directory"
    runs = f"{s['n']} run{'s' if s['n'] != 1 else ''}"
    pass_ = f"variant {s['pass']}" if s["kind"] == "bench" else f"pass {s['pass']} = {' + '.join(s['windows'])}"
    return f"  {s['label']}: {s['path']} ({what}, {runs}; {pass_}; rows from {s['source']})"


def format_one(c: dict) -> str:
    a, b = c["a"], c["b"]
    out = ["spectrace diff (Δ = A − B)", _side(a), _side(b), f"  noise: {c['statistic']['description']}"]
    if c["mismatches"]:
        out += ["", "Differences besides time"] + [f"  - {m}" for m in c["mismatches"]]
    head, *rest = c["explanation"]
    out += ["", "Explanation", f"  {head}"] + [f"  * {x}" for x in rest]
    t = c["total"]
    out += ["", f"Where the {t['delta_ms']:+.3f} ms are (ms; share of the difference; * beyond noise)",
            f"  {'span':<{_W}}{a['label'][:14]:>15}{b['label'][:14]:>15}{'Δ ms':>11}{'share':>7}",
            _line("TTFT (sum of the windows)", t, c)]
    for w in c["windows"]:
        out.append(_line(w["name"], w, c, 1))
        for p in w["parts"]:
            counts = ""
            if p.get("count_a") or p.get("count_b"):
                counts = f" ({p.get('count_a') or 0:g} | {p.get('count_b') or 0:g})" if p["name"] == "chunks" else ""
            out.append(_line(p["name"] + counts, p, c, 2))
            for r in p["io"]:
                out.append(_line(r["name"] if r["name"] == "compute & rest" else f"io {r['name']}", r, c, 3))
    if not c["matched_windows"] and c["parts"]:
        out += ["", "Parts summed over each side's windows"]
        out += [_line(r["name"] + (f" ({r.get('count_a') or 0:g} | {r.get('count_b') or 0:g})"
                                   if r["name"] == "chunks" else ""), r, c, 1) for r in c["parts"]]
    if c["between_windows"]:
        out += ["", "Host time between windows (outside the TTFT windows; a request still waits for it)"]
        out += [_line(r["name"], r, c, 1) for r in c["between_windows"]]
    if c["io"]:
        out += ["", "IO per binding category and direction (the pass's windows)",
                f"  {'category':<22}{'bytes ' + a['label'][:10]:>16}{'bytes ' + b['label'][:10]:>16}{'ms':>9}{'ms':>9}"
                f"{'Δ ms':>9}{'bandwidth':>12}{'bandwidth':>12}{'copies':>13}"]
        for r in c["io"]:
            out.append(f"  {r['name']:<22}{r['a']['bytes']:>16,.0f}{r['b']['bytes']:>16,.0f}{r['a']['mean']:>9.3f}"
                       f"{r['b']['mean']:>9.3f}{r['delta_ms']:>+9.3f}{_bw(r['a']['gbps']):>12}{_bw(r['b']['gbps']):>12}"
                       f"{r['a']['count']:>6g} |{r['b']['count']:>5g}  {_flag(r, c)}".rstrip())
    ch = c["chunks"]
    if ch["windows"] or ch["outliers"]:
        out += ["", f"Chunk outliers ({ch['rule']})"]
        out += [f"  {o['side']} {o['window']} #{o['index']}: {o['ms']:.2f} ms, median {o['median_ms']:.2f} ms, "
                f"{o['excess_ms']:+.2f} ms over it" + (f"; the other side's: {o['other_ms']:.2f} ms"
                                                     if o["other_ms"] is not None else "") for o in ch["outliers"]]
        if not ch["outliers"]:
            out.append("  none")
    if c["device"]:
        out += ["", "Device time per span (XPlane: busy = a device op running, idle = the rest)",
                f"  {'span':<{_W}}{'busy Δ ms':>11}{'idle Δ ms':>11}  busy {a['label'][:6]} | {b['label'][:6]}"]
        for d in c["device"]:
            bd, idd = d["busy"]["delta_ms"], d["idle"]["delta_ms"]
            out.append(f"  {d['name'][:_W]:<{_W}}{bd:>+11.3f}{idd:>+11.3f}  {d['busy']['a']['mean']:.2f} | "
                       f"{d['busy']['b']['mean']:.2f}  {_verdict(bd, idd)}")
    return "\n".join(out)


def format_text(doc: dict) -> str:
    """Every comparison of a :func:`tracer.diff.diff_paths` result, one after another."""
    parts = []
    for c in doc["comparisons"]:
        if len(doc["comparisons"]) > 1:
            parts.append(f"== variant {c['a']['pass']} ==")
        parts.append(format_one(c))
    return "\n\n".join(parts)
