"""The draft's look-ahead cost on its own, as a device loop vs unrolled: Llama-3.2-1B preset,
10741-token prefill, then 7 greedy steps with queries (what ``SpecPrefillEngine`` runs as
``lookahead``), both forms alternating in one process, mean ± std of 5 after a warm-up.

    python scripts/bench_lookahead.py            # add XLA_FLAGS=--xla_gpu_enable_command_buffer= to try without CUDA graphs

Measured on an NVIDIA H200 (2026-11-23, loop form only): 16.3 ± 0.7 ms with XLA's default
command buffers, 16.3 ± 1.1 ms with them off, 16.1 ± 0.5 ms with WHILE/CONDITIONAL left out of
them: the ~2.3 ms per step is not CUDA-graph setup. The unrolled form (the engine's default for
the look-ahead since session 3) awaits a GPU run: ``bash scripts/gpu_perf.sh`` step 5.
"""

from __future__ import annotations

import time

import numpy as np

from engines.base import BaseEngine

PROMPT = 10741
RUNS = 5


def main() -> None:
    e = BaseEngine.from_pretrained("llama-3.2-1b", prefill_seq_len=4096, ctx_len=PROMPT + 16)
    ids = np.random.default_rng(0).integers(3, e.config.vocab_size, PROMPT).astype(np.int32)
    pos = np.arange(PROMPT, dtype=np.int32)
    times: dict[bool, list[float]] = {False: [], True: []}
    tokens = {}
    for i in range(RUNS + 1):
        for unroll in (False, True):
            pre = e.prefill_from_ids(ids, pos, return_queries=True)
            t0 = time.perf_counter()
            g = e.decode(pre, 8, return_queries=True, window=None, span_name="lookahead", unroll=unroll)
            np.asarray(g.queries)
            if i:  # the first round compiles
                times[unroll].append(time.perf_counter() - t0)
            tokens[unroll] = g.tokens
    ms = {k: (1e3 * np.mean(v), 1e3 * np.std(v)) for k, v in times.items()}
    print(f"look-ahead, 7 steps after a {PROMPT}-token prefill ({e.device.device_kind}), mean ± std of {RUNS}:")
    print(f"  device loop (lax.scan)  {ms[False][0]:7.2f} ± {ms[False][1]:.2f} ms")
    print(f"  unrolled                {ms[True][0]:7.2f} ± {ms[True][1]:.2f} ms   ({ms[True][0] / ms[False][0]:.2f}x)")
    print(f"  same tokens: {bool(np.array_equal(tokens[False], tokens[True]))}")


if __name__ == "__main__":
    main()
