"""Where the draft's look-ahead time goes, per device op.

A Llama-3.2-1B decode step streams ~2.5 GB of weights: ~0.75 ms on an H100, ~0.5 ms on an H200;
the look-ahead measured ~2.3 ms per step on both. This script (one GPU call, results under
``$OUT``):

1. times the look-ahead unprofiled at 1, 2, 4 and 8 generated tokens (0, 1, 3, 7 steps) after a
   10741-token prefill: the slope is the per-step cost, the intercept the per-call overhead;
2. profiles three 7-step look-aheads and prints the device ops by summed time with the XLA op
   each one runs (``hlo_op`` / ``long_name`` stats of the XPlane event);
3. writes the compiled HLO of the 7-step program (``$OUT/decode_scan.hlo.txt``) so copies or
   transposes inside the loop body can be read off it.

It times whole steps (``decode_scan`` with ``last_token=True``, as host-scoring mode runs it);
since session 17 the device-scoring look-ahead stops its last step at the queries.

    python scripts/probe_lookahead.py

On an H100 (docs/evidence/h100-session5/) its op table showed the QKV and output projections
as ``input_reduce_fusion`` ops streaming ~1 TB/s (``probe_lookahead_before.txt``); with
``model._gemm_rows`` they are GEMMs and a step went 1.94 -> 1.75 ms (``probe_lookahead.txt``).
"""

from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np
# scripts/ is this script's own folder on sys.path: the op table is probe_decode_ops's
from probe_decode_ops import op_totals
from spectrace.engines import model
from spectrace.engines.base import BaseEngine
from spectrace.tracer import xplane

PROMPT = int(os.environ.get("PROBE_LEN", "10741"))  # PROBE_* shrink it for a CPU smoke run
RUNS = 5


def main() -> None:
    out = os.environ.get("OUT", tempfile.mkdtemp())
    e = BaseEngine.from_pretrained(os.environ.get("PROBE_DRAFT", "llama-3.2-1b"), prefill_seq_len=16384,
                                   ctx_len=PROMPT + 16)
    ids = np.random.default_rng(0).integers(3, e.config.vocab_size, PROMPT).astype(np.int32)
    pos = np.arange(PROMPT, dtype=np.int32)

    def lookahead(n):
        pre = e.prefill_from_ids(ids, pos, return_queries=True, host_logits=False)
        t0 = time.perf_counter()
        g = e.decode(pre, n, return_queries=True, window=None, span_name="lookahead")
        if g.queries is not None:
            np.asarray(g.queries)
        return time.perf_counter() - t0

    print(f"look-ahead after a {PROMPT}-token prefill, {e.device.device_kind}, mean ± std of {RUNS} (ms):")
    means = {}
    for n in (1, 2, 4, 8):
        t = [lookahead(n) for _ in range(RUNS + 1)][1:]
        means[n - 1] = 1e3 * np.mean(t)
        print(f"  {n - 1} steps  {means[n - 1]:7.2f} ± {1e3 * np.std(t):.2f}")
    slope = (means[7] - means[1]) / 6
    print(f"  per step {slope:.2f} ms; per call {means[7] - 7 * slope:.2f} ms")

    with xplane.profile(tempfile.mkdtemp(), mirror=False) as prof:
        for _ in range(3):
            lookahead(8)
    ops = {name: [ns, n, what[:150]] for name, (ns, n, what) in op_totals(prof.paths).items()}
    total = sum(v[0] for v in ops.values())
    print(f"\ndevice ops of 3 profiled 7-step look-aheads (the prefills too): {total / 1e6:.2f} ms in "
          f"{sum(v[1] for v in ops.values())} ops; by summed time:")
    for name, (ns, count, what) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:40]:
        print(f"  {ns / 1e6:8.3f} ms {count:6d}x {name[:60]:60} {what}")

    pre = e.prefill_from_ids(ids, pos, return_queries=True, host_logits=False)
    position = jax.device_put(np.full((1,), PROMPT, np.int32), e.device)
    text = model.decode_scan_jit.lower(e.params, e.cache, pre.last_logits, position, cfg=e.config,
                                       opts=e.options, steps=7, return_queries=True).compile().as_text()
    with open(os.path.join(out, "decode_scan.hlo.txt"), "w") as f:
        f.write(text)
    print(f"\nwrote {out}/decode_scan.hlo.txt ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
