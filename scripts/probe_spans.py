"""The speculative TTFT's spans on their own, without a profiler attached, under setting variants.

An XPlane shows which kernels ran and when the device sat idle, but the profiler's per-launch
cost inflates that idle. This script times the same spans unprofiled: it runs the issue-4 pair
(random ``llama-3.1-8b`` base, ``llama-3.2-1b`` draft, 10741-token prompt, keep 0.10, device
scoring) ``RUNS`` times after a warm-up in one process per variant, and prints the mean of
every span by name (and chunk index) side by side::

    python scripts/probe_spans.py                              # defaults vs XLA command buffers off
    python scripts/probe_spans.py "" "PROBE_PSL=4096" "XLA_FLAGS=--xla_gpu_enable_command_buffer="

Each argument is one variant: environment assignments (``PROBE_PSL`` the prefill_seq_len,
default 16384; ``XLA_FLAGS``; ``PROBE_CPROFILE=1`` writes the host's cProfile of the measured
runs to ``$OUT/cprofile_<pid>.txt``; empty: the defaults). The GPU is named in the header; the means
and standard deviations go to ``$OUT/probe_spans.json`` when ``OUT`` is set.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import shlex
import subprocess
import sys
from collections import defaultdict

RUNS = int(os.environ.get("RUNS", "5"))
VARIANTS = ["", "XLA_FLAGS=--xla_gpu_enable_command_buffer="]


def child() -> None:
    import numpy as np

    from spectrace import tracer
    from spectrace.engines.speculative.engine import SpecPrefillEngine
    from spectrace.engines.tokenizer import exact_prompt

    n = int(os.environ.get("PROBE_LEN", "10741"))  # PROBE_* shrink it for a CPU smoke run
    eng = SpecPrefillEngine.from_pretrained(os.environ.get("PROBE_DRAFT", "llama-3.2-1b"),
                                            base=os.environ.get("PROBE_BASE", "llama-3.1-8b"),
                                            prefill_seq_len=int(os.environ.get("PROBE_PSL", "16384")),
                                            ctx_len=n + 64, keep=0.10, scoring="device")
    prompt = exact_prompt(eng.draft.tokenizer, n)
    tracer.configure(enabled=True, exporter="none")
    per_span: dict[str, list[float]] = defaultdict(list)
    prof = cProfile.Profile() if os.environ.get("PROBE_CPROFILE") else None
    for i in range(RUNS + 1):
        with tracer.capture() as rec:
            if prof and i:
                prof.enable()
            eng.run(prompt, gen_len=0, baseline=False)
            if prof:
                prof.disable()
        if i == 0:
            continue  # compiles
        seen: dict[str, float] = defaultdict(float)
        for s in rec:
            name = s.name + (f"#{s.attributes['chunk.index']}" if "chunk.index" in s.attributes else "")
            engine = s.attributes.get("engine")
            seen[f"{name} [{engine}]" if engine and not s.name.startswith("ttft.") else name] += s.duration_ns / 1e6
        for k, v in seen.items():
            per_span[k].append(v)
    if prof:  # where the host's time goes in the measured runs (cProfile's overhead included)
        with open(os.path.join(os.environ.get("OUT", "."), f"cprofile_{os.getpid()}.txt"), "w") as f:
            pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(40)
    print(json.dumps({"device": str(eng.base.device.device_kind),
                      "spans": {k: [float(np.mean(v)), float(np.std(v))] for k, v in per_span.items()}}))


def main() -> None:
    variants = sys.argv[1:] or VARIANTS
    results = {}
    for i, flags in enumerate(variants):
        env = {**os.environ, "PROBE_CHILD": "1", **dict(a.split("=", 1) for a in shlex.split(flags))}
        out = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stderr[-4000:])
            raise SystemExit(f"variant {flags!r} failed (exit {out.returncode})")
        # keyed with the position too: the same variant twice measures the noise between processes
        results[f"{i}: {flags or '(default)'}"] = json.loads(out.stdout.strip().splitlines()[-1])
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "probe_spans.json"), "w") as f:
            json.dump(results, f, indent=1)
    names = list(dict.fromkeys(n for r in results.values() for n in r["spans"]))
    device = next(iter(results.values()))["device"]
    print(f"span means (ms) over {RUNS} runs after a warm-up, {device}; one process per variant")
    print(f"{'span':32}" + "".join(f"{v[:28]:>30}" for v in results))
    for n in names:
        print(f"{n:32}" + "".join(f"{r['spans'].get(n, [float('nan')] * 2)[0]:22.2f} ± "
                                  f"{r['spans'].get(n, [0, float('nan')])[1]:5.2f}" for r in results.values()))
    total = lambda r: sum(r["spans"].get(w, [0])[0] for w in ("ttft.spec_device", "ttft.host_scoring",
                                                               "ttft.base_pruned"))
    print(f"{'speculative TTFT':32}" + "".join(f"{total(r):30.2f}" for r in results.values()))


if __name__ == "__main__":
    child() if os.environ.get("PROBE_CHILD") else main()
