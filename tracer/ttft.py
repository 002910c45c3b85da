"""The TTFT summary: ``ttft.json`` built from a run's results and its recorded windows.

The numbers come from two places that must agree: the engine's result (QEfficient's TTFT field
names, seconds) and the windows the tracer recorded (bytes and ms per binding category, chunk
timings). Keeping the assembly here, free of JAX, lets ``spectrace report`` and tests rebuild
or check it anywhere. Schema: ``docs/CONTRACTS.md``.
"""

from __future__ import annotations

import json
import math
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
    """Write atomically (:mod:`tracer._atomic`): a reader never sees half a document."""
    from ._atomic import write_text

    write_text(path, json.dumps(doc, indent=2) + "\n")


# ---- reading back: what ``spectrace report`` accepts ---------------------------------------------
MAX_DEPTH = 32  # a real ttft.json nests 6 deep; the bound keeps every later recursion safe
_LIMIT = 1e18  # no time, byte count or token count of a run comes near this
_NUM = "number"
_IO = {"*": {"*": {"bytes": _NUM, "ms": _NUM, "count": _NUM, "direction": str}}}
_CHUNK = {"index": _NUM, "tokens": _NUM, "ms": _NUM, "io": {"*": {"bytes": _NUM, "ms": _NUM}}}
_RUN = {**{f: _NUM for f in TTFT_FIELDS}, "io": _IO, "chunks": {"*": [_CHUNK]},
        "slowest_chunks": [{"pass": str, "index": _NUM, "ms": _NUM}]}
_DEVICE = {"device_busy_ms": _NUM, "device_idle_ms": _NUM, "device_ops": _NUM,
           "top_ops": [{"ms": _NUM, "count": _NUM}],
           "idle_gaps": [{"at_ms": _NUM, "ms": _NUM, "after": str, "before": str, "host": str}]}
_DOC = {**_RUN, "schema": str, "runs": [_RUN], "config": {}, "versions": {}, "devices": {},
        "alignment": {"median_us": _NUM, "max_us": _NUM, "offset_us": _NUM, "pairs": _NUM, "files": []},
        "device_time": [{"depth": _NUM, "ms": _NUM, **_DEVICE,
                         "devices": {"*": _DEVICE}}]}  # devices: key ("CPU:1") -> that device alone


def load(path) -> dict:
    """Read and :func:`check` one ``ttft.json``; every problem is a ``ValueError`` naming the file.

    What a hand-edited, truncated or hostile file can hold (bytes that are not UTF-8, an empty
    file, 100000 nested lists, a 4000-digit integer, NaN, a string where a time belongs) is
    refused here with the file and the key, so the report never meets it. ``OSError`` (missing,
    unreadable) passes through with its file name.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} is 0x{raw[e.start]:02x}); "
                         "a ttft.json is JSON written by spectrace run") from None
    if not text.strip():
        raise ValueError(f"{path} is empty; a ttft.json is JSON written by spectrace run")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply (a ttft.json nests {MAX_DEPTH} levels at most)") from None
    except ValueError as e:  # e.g. an integer past Python's digit limit
        raise ValueError(f"{path}: not a ttft.json: {e}") from None
    check(doc, str(path))
    return doc


def check(doc, where: str) -> None:
    """Refuse a document that is not a ``ttft.json``: ``ValueError`` naming ``where`` and the key.

    Missing keys are fine (older or minimal documents); present ones must have the type
    spectrace writes, numbers must be finite and of plausible size, ``null`` means not recorded.
    Keys spectrace does not know are kept, whatever they hold, within :data:`MAX_DEPTH`.
    """
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: a ttft.json must be a JSON object, got {_kind(doc)}")
    schema = doc.get("schema", SCHEMA)
    if not isinstance(schema, str) or not schema.startswith("spectrace.ttft/"):
        raise ValueError(f"{where}: schema {_short(schema)} is not 'spectrace.ttft/<version>'")
    _check_depth(doc, where)
    _check_value(doc, _DOC, where, "")


def _check_depth(doc, where: str) -> None:
    stack = [(doc, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels; not a ttft.json")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)


def _check_value(v, spec, where: str, key: str) -> None:
    if v is None:
        return
    if spec == _NUM:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if ok and isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{where}: {key} is {v}; it must be a finite number (or null)")
        if not ok or abs(v) > _LIMIT:
            raise ValueError(f"{where}: {key} must be a number{' of at most 1e18' if ok else ''}, got {_short(v)}")
    elif spec is str:
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ValueError(f"{where}: {key} must be a string, got {_kind(v)}")
    elif isinstance(spec, list):
        if not isinstance(v, list):
            raise ValueError(f"{where}: {key} must be a JSON array, got {_kind(v)}")
        for i, x in enumerate(v):
            _check_value(x, spec[0] if spec else None, where, f"{key}[{i}]")
    elif isinstance(spec, dict):
        if not isinstance(v, dict):
            raise ValueError(f"{where}: {key or 'the document'} must be a JSON object, got {_kind(v)}")
        for k, x in v.items():
            sub = spec.get(k, spec.get("*"))
            if sub is not None:
                _check_value(x, sub, where, f"{key}.{k}" if key else k)


def _kind(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), f"the number {_short(v)}" if isinstance(v, (int, float)) else type(v).__name__)


def _short(v) -> str:
    r = repr(v) if not isinstance(v, int) or abs(v) < 10**30 else f"an integer of {v.bit_length()} bits"
    return r if len(r) <= 60 else r[:57] + "..."


def format_summary(doc: dict) -> str:
    """The TTFT breakdown, IO table and slowest chunks that ``spectrace run`` prints."""
    ms = lambda s: f"{1e3 * s:10.2f} ms"  # noqa: E731
    lines = [f"TTFT breakdown ({doc['prompt_tokens']} prompt tokens, {doc['num_chunks']} chunks; "
             f"kept {doc['kept_tokens']} tokens in {doc['num_chunks_pruned']} chunks)"]
    rows = [("spec device window (draft prefill)", "ttft_spec_device_s"),
            ("  host scoring: assemble", "t_assemble_s"), ("  host scoring: score", "t_score_s"),
            ("  host scoring: select", "t_select_s"), ("host scoring total", "ttft_host_scoring_s"),
            ("base prefill of kept tokens", "ttft_base_pruned_only_s"),
            ("speculative TTFT", "ttft_speculative_s"), ("baseline TTFT (full base prefill)", "ttft_baseline_s")]
    for label, key in rows:
        lines.append(f"  {label:<36}{ms(doc[key])}")
    ratio = doc["ttft_speculative_s"] / doc["ttft_baseline_s"] if doc["ttft_baseline_s"] else float("nan")
    lines.append(f"  {'speculative / baseline':<36}{ratio:10.2f} x")
    lines += ["", "IO per pass and binding category (bytes, ms, transfers)",
              f"  {'pass':<12}{'category':<17}{'bytes':>14}{'ms':>11}{'count':>7}"]
    for p, cats in doc["io"].items():
        for cat, t in cats.items():
            if t["count"]:
                lines.append(f"  {p:<12}{cat:<17}{t['bytes']:>14,}{t['ms']:>11.3f}{t['count']:>7}")
    worst = ", ".join(f"{c['pass']}#{c['index']} {c['ms']:.2f} ms" for c in doc["slowest_chunks"])
    lines += ["", f"slowest chunks: {worst}"]
    if doc.get("device_time"):
        from .device_time import format_rows

        lines += ["", format_rows(doc["device_time"], "Device time per span, last run")]
    return "\n".join(lines)


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
