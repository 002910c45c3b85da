"""How the draft window's tokenization (``engines.tokenizer.encode``) scales with its pieces, on
``tokenizers`` and on ``tiktoken``.

``encode`` cuts a long prompt into ``os.cpu_count()`` pieces. A rank-defined tokenizer (the
embedded one since session 23, Llama 3's) runs them on ``tiktoken`` (``engines.tiktoken_bpe``),
others as one batch on the tokenizers' Rust thread pool (3.26 ms of the speculative TTFT on the
16-core H100 host, session 18). This times both, best and median of ``PROBE_REPS`` calls on the
10741-token benchmark prompt, for several piece counts, after checking each gives the single
``tokenizers`` call's ids: back to back, and each call after 50 ms of idling (as in a request,
where the threads have slept since the last one); and the time to find the cuts.

    . scripts/device_env.sh && python3 scripts/probe_tokenize.py
"""

from __future__ import annotations

import os
import time

import numpy as np

from spectrace.engines import presets
from spectrace.engines.tokenizer import (_cut_points, _ids_array, _parallel_backend, encode, exact_prompt,
                                         load_tokenizer)

REPS = int(os.environ.get("PROBE_REPS", "200"))
PIECES = [int(p) for p in os.environ.get("PROBE_PIECES", "1 2 4 8 16 32 64").split()]


def timed(f, n=REPS, idle: float = 0.0) -> str:
    ts = []
    for _ in range(n):
        time.sleep(idle)
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return f"{min(ts) * 1e3:7.3f} {np.median(ts) * 1e3:7.3f}"


def main() -> None:
    tok = load_tokenizer(presets.resolve("llama-3.2-1b").tokenizer_path)
    prompt = exact_prompt(tok, 10741)
    whole = np.asarray(tok(prompt)["input_ids"], np.int32)
    backend, plan = _parallel_backend(tok)
    print(f"{os.cpu_count()} cores, {len(prompt)} characters, {len(whole)} tokens; ms best, median of {REPS} "
          f"(after idling: of {max(REPS // 4, 5)}); tiktoken path {'on' if plan.fast else 'OFF'}")
    print(f"{'pieces':>6} {'made':>6} {'path':>10} {'encode':>15} {'after 50 ms idle':>17} {'cuts':>15}")
    for p in PIECES:
        def cut():
            return _cut_points(prompt, p, after_newline=plan.after_newline, avoid=plan.avoid)

        cuts = cut()
        parts = [prompt[a:b] for a, b in zip([0, *cuts], [*cuts, len(prompt)])]

        def hf():
            batch = backend.encode_batch_fast(parts, add_special_tokens=False)
            return _ids_array(plan.prefix, [enc.ids for enc in batch])

        def engine():  # what the engine runs: tiktoken where it applies
            return encode(tok, prompt, pieces=p, min_chars=0)

        for name, call in (("tokenizers", hf), ("engine", engine)):
            assert np.array_equal(call(), whole), f"pieces={p} {name}: ids differ"
            idle = timed(call, n=max(REPS // 4, 5), idle=0.05)
            print(f"{p:>6} {len(parts):>6} {name:>10} {timed(call):>15} {idle:>17} {timed(cut):>15}")


if __name__ == "__main__":
    main()
