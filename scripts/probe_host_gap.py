"""The speculative draft pass's host time between its ``tokenize`` and ``bind`` spans.

Runs the default pair (CPU is fine: only the host's Python and numpy between the spans matter)
on a 10741-token prompt and prints, per request, the gap between the end of the last
``tokenize`` span and the start of the draft's ``bind`` span, and their median. Session 20 used
it to compare the draft pass through ``prefill_from_ids`` (unpad, re-check, re-pad) against
``prefill_tokenized``:

    python scripts/probe_host_gap.py                     # this tree
    PYTHONPATH=/tmp/src python scripts/probe_host_gap.py # another tree linked as /tmp/src/spectrace
"""

from __future__ import annotations

import os

import numpy as np

from spectrace import tracer
from spectrace.engines.speculative import SpecPrefillEngine
from spectrace.engines.tokenizer import exact_prompt

RUNS = int(os.environ.get("PROBE_RUNS", "8"))


def main() -> None:
    spec = SpecPrefillEngine.from_pretrained("default-draft", base="default-base", prefill_seq_len=16384,
                                             ctx_len=10800, keep=0.1, scoring="device")
    prompt = exact_prompt(spec.base.tokenizer, 10741)
    tracer.configure(enabled=True, exporter="none")
    for _ in range(2):
        spec.run(prompt, gen_len=2, baseline=False)
    gaps = []
    for _ in range(RUNS):
        with tracer.capture() as t:
            spec.run(prompt, gen_len=2, baseline=False)
        end = max(s.end_ns for s in t.spans if s.name == "tokenize")
        bind = min(s.start_ns for s in t.spans if s.name == "bind")
        gaps.append((bind - end) / 1e6)
    print(f"{tracer.__file__}: tokenize -> bind gap, ms: " + " ".join(f"{g:.3f}" for g in gaps)
          + f"; median {np.median(gaps):.3f}")


if __name__ == "__main__":
    main()
