"""The queued pruned chunk (engines/speculative/handover.py) against the reference forward, on the GPU.

Runs the speculative pipeline (device scoring) on the 8B/1B presets, then the base engine's
masked reference forward without a cache (``forward_logits``) over the kept tokens at their
original positions, and the same pipeline with the handover off (the host round trip): max
relative error of the pruned logits against the reference, and top-1 of all three.
``python3 scripts/check_handover.py [--base P --draft P --prompt-len N]`` (bf16 on a GPU).
"""

from __future__ import annotations

import argparse

import numpy as np

from spectrace.engines.speculative import SpecPrefillEngine, handover
from spectrace.engines.tokenizer import exact_prompt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="llama-3.1-8b")
    ap.add_argument("--draft", default="llama-3.2-1b")
    ap.add_argument("--prompt-len", type=int, default=10741)
    ap.add_argument("--prefill-seq-len", type=int, default=16384)
    a = ap.parse_args()
    spec = SpecPrefillEngine.from_pretrained(a.draft, base=a.base, prefill_seq_len=a.prefill_seq_len,
                                             ctx_len=a.prompt_len + 64, keep=0.10, scoring="device")
    prompt = exact_prompt(spec.base.tokenizer, a.prompt_len)
    queued = spec.run(prompt, gen_len=0, baseline=True)
    assert spec.base.cache is not None
    real_same_device = handover.same_device
    handover.same_device = lambda d, b: False
    try:
        round_trip = spec.run(prompt, gen_len=0, baseline=False)
    finally:
        handover.same_device = real_same_device
    ids = np.asarray(spec.base.tokenizer(prompt)["input_ids"], np.int32)
    kept = queued.kept_indices
    ref = spec.base.forward_logits(ids[kept], kept)[-1]
    rel = lambda x: float(np.abs(x - ref).max() / np.abs(ref).max())
    print(f"{a.base}/{a.draft}, {a.prompt_len} tokens, kept {len(kept)} ({queued.padded_len_pruned} rows queued), "
          f"{spec.base.dtype}: same kept tokens with the round trip "
          f"{round_trip.kept_indices.tolist() == kept.tolist()}")
    print(f"  pruned logits vs the reference forward: queued max rel err {rel(queued.logits):.4f}, "
          f"round trip {rel(round_trip.logits):.4f}; top-1 queued {int(queued.logits.argmax())}, "
          f"round trip {int(round_trip.logits.argmax())}, reference {int(ref.argmax())}")


if __name__ == "__main__":
    main()
