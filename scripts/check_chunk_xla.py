"""The base engine's tuned chunk programs (engines.host.GPU_BASE_CHUNK_XLA) against the reference forward.

One GPU call, before a benchmark that uses them: Llama-3.1-8B shape (random bf16 weights, seed
0), a 700-token prompt in three 256-row chunks, the chunked prefill with and without the
per-program options against the engine's masked reference forward (no cache):

    . scripts/device_env.sh && python3 scripts/check_chunk_xla.py
"""

from __future__ import annotations

import os

import numpy as np

from spectrace.engines.base import BaseEngine


def main() -> None:
    ids = np.random.default_rng(0).integers(3, 128000, 700).astype(np.int32)
    pos = np.arange(700, dtype=np.int32)
    got = {}
    for label, env in (("tuned", None), ("plain", "")):
        if env is None:
            os.environ.pop("SPECTRACE_CHUNK_XLA", None)
        else:
            os.environ["SPECTRACE_CHUNK_XLA"] = env
        e = BaseEngine.from_pretrained("llama-3.1-8b", prefill_seq_len=256, ctx_len=1024)
        got[label] = e.prefill_from_ids(ids, pos).logits
        if label == "tuned":
            print("options:", e.chunk_xla)
            ref = e.forward_logits(ids)[-1]
        del e
    for label, lg in got.items():
        rel = float(np.abs(lg - ref).max() / np.abs(ref).max())
        print(f"{label} chunked vs masked reference (bf16, 700 tokens, 3 chunks): max rel err {rel:.4f}, "
              f"top-1 equal {int(lg.argmax()) == int(ref.argmax())}")
    print(f"tuned vs plain: max rel diff {float(np.abs(got['tuned'] - got['plain']).max() / np.abs(got['plain']).max()):.4f}")


if __name__ == "__main__":
    main()
