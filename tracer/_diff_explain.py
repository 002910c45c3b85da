"""The explanation of a ``spectrace diff`` comparison, in sentences, largest cause first.

Why its own module: :mod:`tracer.diff` computes rows; deciding which rows are worth a sentence
and how to say it ("72 ms of the 600 ms difference is past_key d2h: 178 MB at 2.5 GB/s, only
in A") is a separate concern, shared by the text, the HTML page and ``spectrace run``'s last
lines.

Which rows get a sentence: with a noise test (n >= 2 on a side), flagged rows (beyond noise)
holding at least 1% of the difference; without one, rows holding at least 5% of it (and
0.5% of the larger TTFT, so a self-diff or a tiny difference names no jitter). A category
found on one side only, or moving 1% more bytes on one side, is always named, whatever its
time: moving other data is a structural difference (seed 000's ``prefill_queries``
question). The unexplained rest comes last.
"""

from __future__ import annotations

from ._diff_input import GAP

__all__ = ["explain", "fmt_bytes", "fmt_ms", "listed"]

_METHOD = {"welch": "Welch's t", "prediction": "prediction interval", "exact": "exact", "none": "untested"}
TESTED_SHARE = 0.01
UNTESTED_SHARE = 0.05
SCALE_FLOOR = 0.005


def fmt_ms(v: float, sign: bool = True) -> str:
    s = f"{v:+.3f}" if abs(v) < 0.1 else f"{v:+.2f}" if abs(v) < 1000 else f"{v:+,.0f}"
    return (s if sign else s.lstrip("+")) + " ms"


def fmt_bytes(b: float) -> str:
    for div, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(b) >= div:
            return f"{b / div:.1f} {unit}"
    return f"{b:,.0f} B"


def _gbps(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} GB/s" if x >= 0.01 else f"{x * 1e3:.2f} MB/s"


def _copies(n: float) -> str:
    return f"{n:g} cop{'y' if n == 1 else 'ies'}"


def listed(r: dict, res: dict) -> bool:
    """Whether a row's difference is worth a sentence (see the module docstring)."""
    d, total = abs(r["delta_ms"]), abs(res["total"]["delta_ms"])
    scale = max(res["total"]["a"]["mean"], res["total"]["b"]["mean"], 0.0)
    if r["flag"] is not None:
        return bool(r["flag"]) and d >= TESTED_SHARE * total and d > 0
    return d > 0 and d >= max(UNTESTED_SHARE * total, SCALE_FLOOR * scale)


def _share(r: dict) -> str:
    return "" if r.get("share") is None else f" ({100 * r['share']:.0f}% of the difference)"


def _p(r: dict) -> str:
    if r.get("p") is None or r["test"]["method"] == "exact":
        return ""
    return f", p = {r['p']:.2g}" + ("" if r.get("flag") else ", within noise")


def _only(r: dict, res: dict) -> str:
    return "" if not r.get("only") else f", only in {res[r['only']]['label']}"


def _verdict(busy: float, idle: float) -> str:
    tot = abs(busy) + abs(idle)
    if tot == 0:
        return ""
    if abs(busy) >= 2 / 3 * tot:
        return "compute got slower" if busy > 0 else "compute got faster"
    if abs(idle) >= 2 / 3 * tot:
        return ("the device sat idle longer (host work, launches or copies)" if idle > 0
                else "the device sat idle less")
    return "both device compute and idle time changed"


def _device(name: str, res: dict) -> str:
    d = next((x for x in res["device"] if x["name"] == name), None)
    if d is None:
        return ""
    b, i = d["busy"]["delta_ms"], d["idle"]["delta_ms"]
    return f"; device busy {fmt_ms(b)}, idle {fmt_ms(i)}: {_verdict(b, i)}"


def _headline(res: dict) -> str:
    a, b, t = res["a"], res["b"], res["total"]
    ta, tb, d = t["a"]["mean"], t["b"]["mean"], t["delta_ms"]
    if a["label"] == a["pass"] and b["label"] == b["pass"]:
        who = f"the {a['label']} TTFT is {res['ratio']:.2f}x the {b['label']}" if res["ratio"] else \
            f"the {a['label']} TTFT against the {b['label']}"
    else:
        what = "TTFT" if a["pass"] == b["pass"] and a["kind"] == "bench" else f"{a['pass']} TTFT"
        who = (f"{a['label']}'s {what} is {res['ratio']:.2f}x {b['label']}'s" if res["ratio"]
               else f"{a['label']}'s {what} against {b['label']}'s")
    line = f"{who} ({ta:.2f} vs {tb:.2f} ms, {fmt_ms(d)})"
    if t["flag"] is not None and t["test"]["method"] != "exact":
        line += (f": beyond noise (p = {t['p']:.2g})" if t["flag"] else
                 f": within noise (p = {t['p']:.2g}, {_METHOD[t['test']['method']]})")
    return line


def _part_candidates(res: dict) -> list[tuple[str, dict]]:
    if not res["matched_windows"]:
        return [(r["name"], r) for r in res["parts"] if r["name"] != GAP]
    out = []
    for w in res["windows"]:
        parts = [p for p in w["parts"] if p["name"] != GAP]
        out += [(f"{w['name']} › {p['name']}", p) for p in parts] if parts else [(w["name"], w)]
    return out


def _part_sentence(name: str, r: dict, res: dict) -> str:
    counts = ""
    if r["name"] == "chunks" and (r.get("count_a") or r.get("count_b")):
        counts = (f", {r.get('count_a') or 0:g} chunks in {res['a']['label']} vs {r.get('count_b') or 0:g} "
                  f"in {res['b']['label']}")
    return (f"{name}: {fmt_ms(r['delta_ms'])}{_share(r)}{counts}{_only(r, res)}{_p(r)}"
            f"{_device(name if res['matched_windows'] else '', res)}")


def _io_sentence(r: dict, res: dict) -> str:
    la, lb = res["a"]["label"], res["b"]["label"]
    a, b = r["a"], r["b"]
    head = f"{fmt_ms(r['delta_ms'])} of the {fmt_ms(res['total']['delta_ms'])} difference is {r['name']}"
    if r.get("only"):
        s = a if r["only"] == "a" else b
        body = f"{fmt_bytes(s['bytes'])} in {_copies(s['count'])} at {_gbps(s['gbps'])}, only in {res[r['only']]['label']}"
    elif a["bytes"] == b["bytes"]:
        body = f"the same {fmt_bytes(a['bytes'])} on both sides, at {_gbps(a['gbps'])} ({la}) vs {_gbps(b['gbps'])} ({lb})"
    else:
        body = (f"{fmt_bytes(a['bytes'])} at {_gbps(a['gbps'])} ({la}) vs {fmt_bytes(b['bytes'])} at "
                f"{_gbps(b['gbps'])} ({lb})")
    return f"{head}: {body}{_p(r)}"


def _bytes_differ(r: dict) -> bool:
    """One side only, or at least 1% more data: other data moved (a few bytes of ids are not)."""
    a, b = r["a"]["bytes"], r["b"]["bytes"]
    return bool(r.get("only")) or abs(a - b) > 0.01 * max(a, b)


def _outlier_sentence(o: dict, res: dict) -> str:
    other = next(s["label"] for s in (res["a"], res["b"]) if s["label"] != o["side"])
    tokens = f" ({o['tokens']} tokens)" if o.get("tokens") is not None else ""
    there = f"; {other}'s chunk there: {o['other_ms']:.2f} ms" if o.get("other_ms") is not None else ""
    io = sorted((o.get("io_ms") or {}).items(), key=lambda kv: -kv[1])
    copies = [f"{c} {ms:.2f} ms" for c, ms in io if ms >= 0.1 * o["excess_ms"]]
    if copies:  # the chunk's own transfers: what seed 000 asked of the slow chunk
        there += f"; its transfers: {', '.join(copies)}"
    return (f"chunk outlier: {o['side']} {o['window']} chunk #{o['index']}{tokens} took {o['ms']:.2f} ms, "
            f"{fmt_ms(o['excess_ms'])} over its window's median chunk ({o['median_ms']:.2f} ms; rule: > median + "
            f"{res['chunks']['k']:g}·MAD and > 1.5x median){there}")


def explain(res: dict) -> list[str]:
    """The headline, then one sentence per cause, largest first, then the unexplained rest."""
    out = [_headline(res)]
    found: list[tuple[float, int, str]] = []
    for name, r in _part_candidates(res):
        if listed(r, res):
            found.append((abs(r["delta_ms"]), 0, _part_sentence(name, r, res)))
    for r in res["io"]:
        if listed(r, res) or _bytes_differ(r):
            found.append((abs(r["delta_ms"]), 1, _io_sentence(r, res)))
    for o in res["chunks"]["outliers"]:
        size = abs(o["delta_ms"] if o["delta_ms"] is not None else o["excess_ms"])
        if listed({"delta_ms": size, "flag": None}, res):
            found.append((size, 2, _outlier_sentence(o, res)))
    for r in res["between_windows"]:
        if listed(r, res):
            found.append((abs(r["delta_ms"]), 3, (
                f"host time between the windows {r['name']}: {fmt_ms(r['delta_ms'])} ({res['a']['label']} "
                f"{r['a']['mean']:.2f} ms, {res['b']['label']} {r['b']['mean']:.2f} ms): outside the TTFT windows, "
                "so the TTFT fields do not count it, though a request waits for it")))
    found.sort(key=lambda f: (-f[0], f[1]))
    out += [f[2] for f in found]
    u = res.get("unexplained")
    rows = [r for r in (*res["parts"], *res["io"], *(w for w in res["windows"])) if r["delta_ms"] != 0]
    if res["total"]["delta_ms"] == 0 and not rows and not found:
        return out + ["the two sides are identical: nothing to explain"]
    if not found:
        out.append("no span, category or chunk explains the difference"
                   + (" beyond noise" if res["total"]["flag"] is not None else ""))
    if u is not None:
        where = ""
        gaps = [(w, g) for w, gs in res.get("gaps", {}).items() for g in gs[:1]]
        if gaps and listed(u, res):
            w, g = max(gaps, key=lambda x: abs(x[1]["delta_ms"]))
            where = f"; the largest change is in {w}, {g['between']}: {fmt_ms(g['delta_ms'])}"
        out.append(f"unexplained (host time between spans, in no span): {fmt_ms(u['delta_ms'])}{_share(u)}{_p(u)}{where}")
    return out
