"""``QEFF_SPEC_DEBUG`` lines: the per-pass chunk summary and IO table, on stderr.

The chunk line keeps QEfficient's format so logs from either stack read the same:
``[spec:prefill] chunks=N total=X.XXXs worst=[(i, s), (j, s), (k, s)]``.
"""

from __future__ import annotations

import sys

from ._record import CATEGORIES, Span


def chunk_line(window: Span) -> str:
    """The ``[spec:prefill]`` line of one window: chunk count, total and the three slowest."""
    chunks = window.window_data.chunks
    total = sum(c.duration_ns for c in chunks) / 1e9
    worst = sorted(chunks, key=lambda c: c.duration_ns, reverse=True)[:3]
    worst_s = ", ".join(f"({c.attributes.get('chunk.index', i)}, {c.duration_ns / 1e9:.4f})"
                        for i, c in enumerate(worst))
    return f"[spec:prefill] chunks={len(chunks)} total={total:.3f}s worst=[{worst_s}]"


def io_table(io: dict, title: str) -> str:
    """A fixed-width table of bytes, ms, count and direction per category, with a total row."""
    rows = [f"[spec:io] {title}",
            f"  {'category':<16}{'bytes':>14}{'ms':>11}{'count':>7}  dir"]
    total_b = total_ms = total_n = 0
    for cat in CATEGORIES:
        t = io.get(cat)
        b, ms, n, d = (t.bytes, t.ms, t.count, t.direction) if t else (0, 0.0, 0, "")
        total_b, total_ms, total_n = total_b + b, total_ms + ms, total_n + n
        rows.append(f"  {cat:<16}{b:>14,}{ms:>11.3f}{n:>7}  {d or '-'}")
    rows.append(f"  {'total':<16}{total_b:>14,}{total_ms:>11.3f}{total_n:>7}")
    return "\n".join(rows)


def print_window(window: Span, file=None) -> None:
    try:
        out = file or sys.stderr
        engine = window.attributes.get("engine")
        title = window.name + (f" engine={engine}" if engine else "")
        if window.window_data.chunks:
            print(chunk_line(window), file=out)
        print(io_table(window.io, title), file=out)
    except Exception:  # a debug print must never break the engine
        pass
