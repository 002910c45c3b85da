"""Is a prefill chunk limited by the GPU's power rather than its bandwidth? XLA's MLP against the epilogue's.

Session 22 (H100) found the SwiGLU epilogue kernel (``engines.swiglu_gemm``) 5% faster than
XLA's GEMM + multiply in isolation, yet the 8B's whole chunk no faster: the chunk's other kernels
ran ~2.5% slower in the epilogue's process (a separate one). The hypothesis this tests: a GPU at
its power cap lowers its clocks for all kernels, so dropping a memory-bound multiply (little
power) for more dense GEMM time saves little, as time follows energy rather than bytes. If the
clocks do not differ, look for another cause. This builds one ``PROBE_MODEL`` engine per MLP form in
one process (same seed, the base's or the draft's XLA options by ``PROBE_ENGINE``), times one
fresh ``PROBE_LEN``-token chunk of each round-robin (``PROBE_REPS``), and samples
``nvidia-smi`` every 20 ms meanwhile (``engines.bench.gpu_clocks``), so each form's runs get the
SM clock, the board power and the share of samples with the software power cap active::

    . scripts/device_env.sh && PROBE_MODEL=llama-3.1-8b PROBE_ENGINE=base python3 scripts/probe_mlp_power.py
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import numpy as np

from probe_split_chunk import chunk_inputs
from spectrace.engines.base import BaseEngine
from spectrace.engines.bench import gpu_clocks
from spectrace.engines.config import FIT_MULTIPLE

MODEL = os.environ.get("PROBE_MODEL", "llama-3.1-8b")
PROMPT = int(os.environ.get("PROBE_LEN", "10741"))
REPS = int(os.environ.get("PROBE_REPS", "10"))
ENGINE = os.environ.get("PROBE_ENGINE", "base")


def main() -> None:
    os.environ.pop("SPECTRACE_MLP_EPILOGUE", None)  # each engine keeps the MLP form it is built with
    engines = {mlp: BaseEngine.from_pretrained(MODEL, prefill_seq_len=16384, ctx_len=PROMPT + 64, name=ENGINE,
                                               mlp=mlp) for mlp in ("xla", "epilogue")}
    ids = np.random.default_rng(0).integers(3, engines["xla"].config.vocab_size, PROMPT).astype(np.int32)
    fit = -(PROMPT // -FIT_MULTIPLE) * FIT_MULTIPLE  # the engine's fitted last chunk
    whole = jax.device_put(chunk_inputs(ids, 0, PROMPT, fit), engines["xla"].device)
    assert all(e.options.mlp == k for k, e in engines.items()), {k: e.options.mlp for k, e in engines.items()}
    fns = {k: e.chunk_fn(return_queries=True) for k, e in engines.items()}

    def run(k: str) -> tuple[float, float, float]:
        e = engines[k]
        t0 = time.perf_counter()
        wall0 = time.time()
        logits, e.cache, q = fns[k](e.params, e.cache, whole, fresh=True)
        jax.block_until_ready((logits, e.cache, q))
        return (time.perf_counter() - t0) * 1e3, wall0, time.time()

    for k in engines:  # compile (the engine's cache first) and warm
        engines[k].prefill_from_ids(ids, np.arange(PROMPT, dtype=np.int32), return_queries=True)
        run(k), run(k)
    times = {k: [] for k in engines}
    with gpu_clocks.Sampler() as sampler:  # stopped on the way out, whatever happens
        time.sleep(0.5)
        for _ in range(REPS):
            for k in engines:
                times[k].append(run(k))
        rows = sampler.stop()
    kind = engines["xla"].device.device_kind
    print(f"{MODEL} ({ENGINE}'s options) on {kind}: one {fit}-row chunk, {REPS} round-robin runs, "
          f"{len(rows)} nvidia-smi samples")
    print(f"{'mlp':>9} {'ready ms':>9} {'std':>6} {gpu_clocks.HEADER}")
    ref = statistics.mean(ms for ms, _, _ in times["xla"])
    for k, ts in times.items():
        ms = [m for m, _, _ in ts]
        summary = gpu_clocks.summarize(rows, [(a, b) for _, a, b in ts])
        print(f"{k:>9} {statistics.mean(ms):9.2f} {statistics.stdev(ms):6.2f} {gpu_clocks.row(summary)}   "
              f"{statistics.mean(ms) / ref:.3f}x")


if __name__ == "__main__":
    main()
