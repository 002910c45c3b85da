"""Where the host's time goes when it dispatches the draft's prefill chunk.

A call of the 1B draft's 10741-token chunk returns after ~3.9 ms on the H100 host
(``scripts/probe_split_chunk.py``, inputs already on the device), and its device work starts
~1.5 ms after the call: both sit inside the speculative TTFT. This profiles ``PROBE_CALLS``
calls (host tracer level 2; each call inside a ``probe.call`` annotation, then a wait) and prints
the host events inside the calls by summed time per call (inclusive: a parent holds its
children's time), and for each call when its first device op started after the call began.

    . scripts/device_env.sh && python3 scripts/probe_dispatch.py

``PROBE_MODEL``, ``PROBE_LEN`` and ``PROBE_ENGINE`` as in ``probe_split_chunk.py`` (session 16's
run compiled the 1B as the base's chunks are; the default is now the draft's ``spec``).
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict

import jax
from jax.profiler import TraceAnnotation
from probe_split_chunk import MODEL, PROMPT, chunk_inputs, draft_and_prompt

from spectrace.tracer import xplane

CALLS = int(os.environ.get("PROBE_CALLS", "3"))


def main() -> None:
    e, ids, fn = draft_and_prompt()
    rows = -(PROMPT // -128) * 128
    args = jax.device_put(chunk_inputs(ids, 0, PROMPT, rows), e.device)
    for _ in range(2):  # this argument shape compiles once
        logits, e.cache, q = fn(e.params, e.cache, args, fresh=True)
        jax.block_until_ready((logits, e.cache, q))
    with xplane.profile(tempfile.mkdtemp(), mirror=False) as prof:
        for _ in range(CALLS):
            with TraceAnnotation("probe.call"):
                logits, e.cache, q = fn(e.params, e.cache, args, fresh=True)
            jax.block_until_ready((logits, e.cache, q))
    host, device, calls = defaultdict(lambda: [0, 0]), [], []
    for path in prof.paths:
        for plane in xplane.read_xplane(path).planes:
            for _, events in plane.lines:
                for name, start, dur, _ in events:
                    if plane.name.startswith("/device:"):
                        device.append(start)
                    elif name == "probe.call":
                        calls.append((start, start + dur))
    calls.sort()
    device.sort()
    for path in prof.paths:
        for plane in xplane.read_xplane(path).planes:
            if plane.name.startswith("/device:"):
                continue
            for _, events in plane.lines:
                for name, start, dur, _ in events:
                    if name != "probe.call" and any(a <= start < b for a, b in calls):
                        host[name][0] += dur
                        host[name][1] += 1
    n = max(len(calls), 1)
    print(f"{MODEL} on {e.device.device_kind}: {len(calls)} profiled chunk calls ({PROMPT} tokens, inputs on the device)")
    for i, (a, b) in enumerate(calls):
        first = next((s for s in device if s >= a), None)
        print(f"  call {i}: returns after {(b - a) / 1e6:.3f} ms; first device op "
              f"{'-' if first is None else f'{(first - a) / 1e6:.3f} ms'} after the call began")
    print(f"\n{'ms/call':>9} {'n/call':>7}  host event inside the calls (inclusive)")
    for name, (ns, count) in sorted(host.items(), key=lambda kv: -kv[1][0])[:30]:
        print(f"{ns / n / 1e6:9.3f} {count / n:7.1f}  {name[:110]}")


if __name__ == "__main__":
    main()
