"""The TTFT summary: ``ttft.json`` built from a run's results and its recorded windows.

The numbers come from two places that must agree: the engine's result (QEfficient's TTFT field
names, seconds) and the windows the tracer recorded (bytes and ms per binding category, chunk
timings). Keeping the assembly here, free of JAX, lets ``spectrace report`` and tests rebuild
or check it anywhere. Schema: ``docs/CONTRACTS.md``.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Mapping

from ._record import Span, io_dict

SCHEMA = "spectrace.ttft/1"

#: QEfficient's TTFT fields (seconds) and the prompt/chunk counts, in DESIGN.md's order.
TTFT_FIELDS: tuple[str, ...] = (
    "ttft_spec_device_s", "t_assemble_s", "t_score_s", "t_select_s", "ttft_host_scoring_s",
    "ttft_spec_only_s", "ttft_base_pruned_only_s", "ttft_speculative_s", "ttft_baseline_s",
    "prompt_tokens", "padded_len", "num_chunks", "kept_tokens", "padded_len_pruned", "num_chunks_pruned",
)

#: Window span name -> pass key in ``ttft.json``'s ``io`` and ``chunks``.
PASSES: dict[str, str] = {"ttft.spec_device": "spec", "ttft.baseline": "baseline", "ttft.base_pruned": "base_pruned"}


def _chunk(c: Span, i: int) -> dict:
    return {"index": c.attributes.get("chunk.index", i), "tokens": c.attributes.get("chunk.tokens"),
            "ms": c.duration_ns / 1e6,
            "io": {cat: {"bytes": t.bytes, "ms": t.ms} for cat, t in c.io.items()}}


def run_entry(result, spans: Iterable[Span]) -> dict:
    """One run: the result's TTFT fields plus io, chunks and the three slowest chunks per its windows."""
    entry = {f: _plain(getattr(result, f) if not isinstance(result, Mapping) else result[f]) for f in TTFT_FIELDS}
    io, chunks = {}, {}
    for s in spans:
        key = PASSES.get(s.name)
        if key is None or not s.window:
            continue
        io[key] = io_dict(s.io)
        chunks[key] = [_chunk(c, i) for i, c in enumerate(s.window_data.chunks)]
    entry["io"] = io
    entry["chunks"] = chunks
    every = [{"pass": p, "index": c["index"], "ms": c["ms"]} for p, cs in chunks.items() for c in cs]
    entry["slowest_chunks"] = sorted(every, key=lambda c: c["ms"], reverse=True)[:3]
    return entry


def build(runs: list[dict], *, config: dict, versions: dict, devices: dict,
          alignment: dict | None = None) -> dict:
    """The ``ttft.json`` document: the last run's fields at top level, every run under ``runs``."""
    if not runs:
        raise ValueError("build() needs at least one run")
    last = runs[-1]
    doc = {"schema": SCHEMA}
    doc.update({f: last[f] for f in TTFT_FIELDS})
    doc.update(runs=runs, io=last["io"], chunks=last["chunks"], slowest_chunks=last["slowest_chunks"],
               config=config, versions=versions, devices=devices,
               alignment=alignment or {"median_us": None, "max_us": None})
    return doc


def write(path, doc: dict) -> None:
    """Write atomically: a reader never sees half a document."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def versions(*modules: str) -> dict:
    """Python and the named distributions' versions (absent ones are left out)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for m in ("spectrace", *modules):
        try:
            out[m] = metadata.version(m)
        except metadata.PackageNotFoundError:
            pass
    return out


def _plain(v):
    """numpy scalars -> Python numbers, so json can write them."""
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict)):
        return v.item()
    return v
