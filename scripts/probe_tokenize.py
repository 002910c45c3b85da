"""How the draft window's tokenization (``engines.tokenizer.encode``) scales with its pieces.

``encode`` cuts a long prompt into ``os.cpu_count()`` pieces and encodes them as one batch on the
tokenizers' Rust thread pool (3.26 ms of the speculative TTFT on the 16-core H100 host, session
18). This times it, best and median of ``PROBE_REPS`` calls on the 10741-token benchmark prompt,
for several piece counts, after checking each gives the single call's ids: back to back, and
each call after 50 ms of idling (as in a request, where the tokenizer's threads have slept since
the last one); and the time to find the cuts.

    . scripts/device_env.sh && python3 scripts/probe_tokenize.py
"""

from __future__ import annotations

import os
import time

import numpy as np

from spectrace.engines import BaseEngine
from spectrace.engines.tokenizer import _cut_points, encode, exact_prompt

REPS = int(os.environ.get("PROBE_REPS", "200"))
PIECES = [int(p) for p in os.environ.get("PROBE_PIECES", "1 4 8 16 24 32 48 64 96 128").split()]


def timed(f, n=REPS, idle: float = 0.0) -> str:
    ts = []
    for _ in range(n):
        time.sleep(idle)
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return f"{min(ts) * 1e3:7.3f} {np.median(ts) * 1e3:7.3f}"


def main() -> None:
    tok = BaseEngine.from_pretrained("llama-3.2-1b", prefill_seq_len=16384, ctx_len=11000).tokenizer
    prompt = exact_prompt(tok, 10741)
    whole = np.asarray(tok(prompt)["input_ids"], np.int32)
    print(f"{os.cpu_count()} cores, {len(prompt)} characters, {len(whole)} tokens; "
          f"ms best, median of {REPS}")
    print(f"{'pieces':>6} {'encode':>15} {'after 50 ms idle':>17} {'cuts':>15}")
    for p in PIECES:
        def call():
            return encode(tok, prompt, pieces=p, min_chars=0 if p > 1 else 10**9)
        assert np.array_equal(call(), whole), f"pieces={p}: ids differ"
        print(f"{p:>6} {timed(call):>15} {timed(call, n=max(REPS // 4, 5), idle=0.05):>17} "
              f"{timed(lambda: _cut_points(prompt, p)):>15}")


if __name__ == "__main__":
    main()
