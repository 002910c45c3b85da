"""The draft's look-ahead cost on its own: Llama-3.2-1B preset, 10741-token prefill, then 7 greedy
steps with queries (what ``SpecPrefillEngine`` runs as ``lookahead``), mean of 5 after a warm-up.

    XLA_FLAGS=--xla_gpu_enable_command_buffer= python scripts/bench_lookahead.py

Measured on an NVIDIA H200 (2026-11-23): 16.3 ± 0.7 ms with XLA's default command buffers,
16.3 ± 1.1 ms with them off, 16.1 ± 0.5 ms with WHILE/CONDITIONAL left out of them: the
~2.3 ms per step is not CUDA-graph setup.
"""

from __future__ import annotations

import time

import numpy as np

from engines.base import BaseEngine

PROMPT = 10741


def main() -> None:
    e = BaseEngine.from_pretrained("llama-3.2-1b", prefill_seq_len=4096, ctx_len=PROMPT + 16)
    ids = np.random.default_rng(0).integers(3, e.config.vocab_size, PROMPT).astype(np.int32)
    pos = np.arange(PROMPT, dtype=np.int32)
    prefill_s, lookahead_s = [], []
    for i in range(6):
        t0 = time.perf_counter()
        pre = e.prefill_from_ids(ids, pos, return_queries=True)
        t1 = time.perf_counter()
        g = e.decode(pre, 8, return_queries=True, window=None, span_name="lookahead")
        np.asarray(g.queries)
        t2 = time.perf_counter()
        if i:  # the first run compiles
            prefill_s.append(t1 - t0)
            lookahead_s.append(t2 - t1)
    print(f"1B prefill {1e3 * np.mean(prefill_s):.1f} ms, lookahead (7 steps) "
          f"{1e3 * np.mean(lookahead_s):.1f} ± {1e3 * np.std(lookahead_s):.1f} ms")


if __name__ == "__main__":
    main()
