"""How a prefill chunk's time depends on its row count: is padding the pruned base chunk worth rows?

Until session 16 the speculative pipeline's queued pruned base chunk was fitted to
``max_kept_tokens`` rounded up to ``FIT_MULTIPLE`` (128): 1089 kept tokens at most for the
10741-token prompt -> 1152 rows, 75 more than the 1077 it keeps (since: 16, 1104 rows,
``engines.speculative.handover.PRUNED_MULTIPLE``, from this probe's table). Whether fewer rows save time depends on the GEMMs' tiles and waves,
so this times one fresh chunk of each row count in ``PROBE_ROWS`` (all real tokens, the module's
``FIT_MULTIPLE`` set to 1 so the chunk is exactly that long), unprofiled, round-robin so drift
hits every row count alike, and prints the mean, best and ms per 100 rows.

    . scripts/device_env.sh && PROBE_MODEL=llama-3.1-8b python3 scripts/probe_chunk_rows.py
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import numpy as np

from spectrace.engines import base as base_module
from spectrace.engines.base import BaseEngine

MODEL = os.environ.get("PROBE_MODEL", "llama-3.1-8b")
ROWS = [int(r) for r in os.environ.get("PROBE_ROWS", "1024 1088 1104 1120 1152").split()]
REPS = int(os.environ.get("PROBE_REPS", "10"))


def main() -> None:
    base_module.FIT_MULTIPLE = 1  # the chunk is exactly as long as its real tokens
    e = BaseEngine.from_pretrained(MODEL, prefill_seq_len=16384, ctx_len=16384)
    rng = np.random.default_rng(0)
    inputs = {r: (rng.integers(3, e.config.vocab_size, r).astype(np.int32), np.arange(r, dtype=np.int32))
              for r in ROWS}

    def once(r: int) -> float:
        t0 = time.perf_counter()
        pre = e.prefill_from_ids(*inputs[r], host_logits=False)
        jax.block_until_ready(pre.last_logits)
        return time.perf_counter() - t0

    for r in ROWS:  # compile and warm each shape
        once(r), once(r)
    times = {r: [] for r in ROWS}
    for _ in range(REPS):
        for r in ROWS:
            times[r].append(once(r) * 1e3)
    print(f"{MODEL} on {e.device.device_kind}: one fresh prefill chunk per row count, {REPS} round-robin runs")
    print(f"{'rows':>6} {'mean ms':>9} {'std':>6} {'best':>8} {'ms/100 rows':>12} {'vs ' + str(ROWS[-1]):>9}")
    ref = statistics.mean(times[ROWS[-1]])
    for r in ROWS:
        m = statistics.mean(times[r])
        print(f"{r:6d} {m:9.2f} {statistics.stdev(times[r]):6.2f} {min(times[r]):8.2f} {100 * m / r:12.3f} "
              f"{m / ref:9.3f}")


if __name__ == "__main__":
    main()
