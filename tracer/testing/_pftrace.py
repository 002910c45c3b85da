"""Spans back out of a ``.pftrace`` written by :func:`tracer.perfetto.write_pftrace`.

Decoding (packets, interning, begin/end pairing per track) is :mod:`tracer._perfetto_read`'s,
shared with the merge step; this module only turns slices into views. The writer stamps every
span slice with ``spectrace.span_id``/``spectrace.parent_id``, so parents survive even across
threads and overlap lanes; transfer slices (``"<category> <direction>"`` on a thread's
transfers track) become :class:`TransferView`s. When a file has spectrace spans, other slices
(the XPlane device profile merged in) are left out, so the trace compares equal to the
in-memory capture. A Perfetto file from another tool has no ids: there every slice is a span
and nesting on its track gives the parent, as the Perfetto UI draws it.
"""

from __future__ import annotations

from ._view import SpanView, TransferView


def from_pftrace(data: bytes, path: str = "<bytes>") -> tuple[list[SpanView], list[TransferView]]:
    # Imported here: the perfetto protobuf classes cost ~70 ms, and the pytest plugin imports
    # tracer.testing in every session.
    from .._perfetto_read import decode, parse_trace
    from .._record import PARENT_ID, SPAN_ID, WINDOW
    from .loaders import split_attributes

    pf = decode(parse_trace(data, path), path)
    ours = any(PARENT_ID in s.args for s in pf.slices)
    nested = {} if ours else _nesting(pf.slices)
    views, by_id, moves = [], {}, []
    for n, s in enumerate(pf.slices):
        if ours and PARENT_ID not in s.args:
            if SPAN_ID in s.args and "bytes" in s.args:
                moves.append(s)
            continue
        own, io, meta = split_attributes({k: v for k, v in s.args.items() if not k.startswith("spectrace.")})
        track = pf.tracks.get(s.track)
        if ours:
            raw_id, raw_parent = s.args[SPAN_ID], s.args[PARENT_ID] or None
        else:
            raw_id, raw_parent = n, nested.get(n)
        tid = meta.get("thread.id", track.tid if track is not None else None)
        v = SpanView(s.name or "", s.start_ns, s.end_ns, own, io,
                     thread=str(meta.get("thread.name", (track.name if track is not None else "") or "")),
                     thread_id=int(tid) if tid is not None else None, error_type=meta.get("error.type"),
                     error_message=meta.get("error.message"), window=bool(s.args.get(WINDOW, False)),
                     source=s, raw_id=raw_id, raw_parent=raw_parent)
        views.append(v)
        by_id[raw_id] = v
    transfers = []
    for s in moves:
        category, _, direction = (s.name or "other").partition(" ")
        transfers.append(TransferView(category, direction, int(s.args["bytes"]), s.start_ns, s.end_ns,
                                      str(s.args.get("binding", category)), by_id.get(s.args[SPAN_ID]),
                                      str(s.args.get("src", "")), str(s.args.get("dst", ""))))
    return views, transfers


def _nesting(slices) -> dict[int, int]:
    """Index of each slice -> index of the slice it nests in on its track (slices in start order)."""
    parent, stacks = {}, {}
    for n, s in enumerate(slices):
        stack = stacks.setdefault(s.track, [])
        while stack and slices[stack[-1]].depth >= s.depth:
            stack.pop()
        if stack:
            parent[n] = stack[-1]
        stack.append(n)
    return parent
