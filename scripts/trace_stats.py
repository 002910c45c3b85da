"""What a spectrace trace holds: events per track, and which device events fall inside each chunk.

``python scripts/trace_stats.py OUT/trace.pftrace`` prints a table of slices per
(process, track), the alignment recorded in the trace's metadata, and, per ``prefill.chunk``
slice, how many events of the device processes (XPlane planes) start inside it. Used to check
by hand that a merged GPU trace shows kernels under each chunk (issue 5).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json

from spectrace.tracer._perfetto_read import read_pftrace
from spectrace.tracer._record import SPAN_ID


def _process_name(tr, tracks) -> str:
    t = tr
    while t is not None and t.parent is not None and t.parent in tracks:
        t = tracks[t.parent]
    return t.name if t is not None else "?"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--json", help="write the counts here too")
    args = ap.parse_args(argv)
    p = read_pftrace(args.trace)
    counts = collections.Counter()
    for s in p.slices:
        tr = p.tracks.get(s.track)
        counts[(_process_name(tr, p.tracks), tr.name if tr else "?")] += 1
    print("| process | track | slices |\n|---|---|---:|")
    for (proc, track), n in sorted(counts.items()):
        print(f"| {proc} | {track} | {n} |")
    meta = next(iter(p.metadata()), {})
    print(f"\nalignment: {json.dumps(meta.get('alignment', meta.get('spectrace.alignment')))}")

    def is_device(s) -> bool:  # XPlane events other than the mirrored annotations
        tr = p.tracks.get(s.track)
        return "XPlane" in _process_name(tr, p.tracks) and tr is not None and tr.name != "python"

    device = [s for s in p.slices if is_device(s)]
    starts = sorted(s.start_ns for s in device)
    chunks = [s for s in p.slices if s.name == "prefill.chunk" and SPAN_ID in s.args]
    per_chunk = []
    for c in chunks:
        n = bisect.bisect_right(starts, c.end_ns) - bisect.bisect_left(starts, c.start_ns)
        per_chunk.append((c.args.get("engine"), c.args.get("chunk.index"), n, c.duration_ns / 1e6))
    empty = [pc for pc in per_chunk if pc[2] == 0]
    print(f"\n{len(chunks)} prefill.chunk slices; device events inside each: "
          f"min {min((pc[2] for pc in per_chunk), default=0)}, "
          f"max {max((pc[2] for pc in per_chunk), default=0)}; chunks with none: {len(empty)}")
    for engine, index, n, ms in per_chunk[:8]:
        print(f"  {engine}#{index}: {n} device events in {ms:.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tracks": [{"process": k[0], "track": k[1], "slices": v} for k, v in counts.items()],
                       "chunks": per_chunk, "metadata": meta}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
