"""Is a prefill chunk limited by the GPU's power rather than its bandwidth? XLA's MLP against the epilogue's.

Session 22 (H100) found the SwiGLU epilogue kernel (``engines.swiglu_gemm``) 5% faster than
XLA's GEMM + multiply in isolation, yet the 8B's whole chunk no faster: the chunk's other kernels
ran ~2.5% slower in the epilogue's process (a separate one). The hypothesis this tests: a GPU at
its power cap lowers its clocks for all kernels, so dropping a memory-bound multiply (little
power) for more dense GEMM time saves little, as time follows energy rather than bytes. If the
clocks do not differ, look for another cause. This builds one ``PROBE_MODEL`` engine per MLP form in
one process (same seed, the base's or the draft's XLA options by ``PROBE_ENGINE``), times one
fresh ``PROBE_LEN``-token chunk of each round-robin (``PROBE_REPS``), and samples
``nvidia-smi`` every 20 ms meanwhile, so each form's runs get the SM clock, the board power and
the share of samples with the software power cap active::

    . scripts/device_env.sh && PROBE_MODEL=llama-3.1-8b PROBE_ENGINE=base python3 scripts/probe_mlp_power.py
"""

from __future__ import annotations

import datetime
import os
import signal
import statistics
import subprocess
import tempfile
import time

import jax
import numpy as np

from spectrace.engines.base import BaseEngine

MODEL = os.environ.get("PROBE_MODEL", "llama-3.1-8b")
PROMPT = int(os.environ.get("PROBE_LEN", "10741"))
REPS = int(os.environ.get("PROBE_REPS", "10"))
ENGINE = os.environ.get("PROBE_ENGINE", "base")


def _field(*names: str) -> str:
    """The first of ``names`` this driver's nvidia-smi can query."""
    for name in names:
        if not subprocess.run(["nvidia-smi", f"--query-gpu={name}", "--format=csv"], capture_output=True).returncode:
            return name
    return names[-1]


def sampler(path: str) -> subprocess.Popen:
    """nvidia-smi writing the time, SM clock, power, power-cap flag and temperature to ``path``
    every 20 ms until interrupted. The instant power, where the driver has it: ``power.draw`` is
    a one-second average on recent GPUs, which would blur forms that alternate every 50-300 ms.
    Drivers before 535 name the flag ``clocks_throttle_reasons``."""
    power = _field("power.draw.instant", "power.draw")
    cap = _field("clocks_event_reasons.sw_power_cap", "clocks_throttle_reasons.sw_power_cap")
    fields = f"timestamp,clocks.sm,{power},{cap},temperature.gpu"
    return subprocess.Popen(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-lms", "20",
                             "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def samples(proc: subprocess.Popen, path: str) -> list[tuple[float, float, float, bool, float]]:
    """(unix time, SM MHz, W, power-capped, deg C) per line the sampler wrote, once it is stopped."""
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # nvidia-smi flushes on SIGINT
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    rows = []
    for line in open(path).read().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            t = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            rows.append((t, float(parts[1]), float(parts[2]), parts[3].lower() == "active", float(parts[4])))
        except (ValueError, IndexError):
            continue
    return rows


def main() -> None:
    os.environ.pop("SPECTRACE_MLP_EPILOGUE", None)  # each engine keeps the MLP form it is built with
    engines = {mlp: BaseEngine.from_pretrained(MODEL, prefill_seq_len=16384, ctx_len=PROMPT + 64, name=ENGINE, mlp=mlp)
               for mlp in ("xla", "epilogue")}
    ids = np.random.default_rng(0).integers(3, engines["xla"].config.vocab_size, PROMPT).astype(np.int32)
    fit = -(PROMPT // -128) * 128
    inputs = np.zeros((2, 1, fit), np.int32)
    inputs[1] = -1
    inputs[0, 0, :PROMPT], inputs[1, 0, :PROMPT] = ids, np.arange(PROMPT)
    whole = jax.device_put(inputs, engines["xla"].device)
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
    path = tempfile.mktemp(suffix=".csv", prefix="probe_mlp_power_")
    proc = sampler(path)
    time.sleep(0.5)
    times = {k: [] for k in engines}
    for _ in range(REPS):
        for k in engines:
            times[k].append(run(k))
    rows = samples(proc, path)
    kind = engines["xla"].device.device_kind
    print(f"{MODEL} ({ENGINE}'s options) on {kind}: one {fit}-row chunk, {REPS} round-robin runs, "
          f"{len(rows)} nvidia-smi samples")
    heads = ("mlp", 9), ("ready ms", 9), ("std", 6), ("SM MHz", 7), ("min", 5), ("W", 6), ("capped", 7), ("deg C", 6)
    print(" ".join(f"{h:>{w}}" for h, w in heads), f"{'n':>4}")
    ref = statistics.mean(ms for ms, _, _ in times["xla"])
    for k, ts in times.items():
        inside = [r for r in rows if any(a <= r[0] <= b for _, a, b in ts)]
        ms = [m for m, _, _ in ts]
        if inside:
            mhz, w = [r[1] for r in inside], [r[2] for r in inside]
            print(f"{k:>9} {statistics.mean(ms):9.2f} {statistics.stdev(ms):6.2f} {statistics.mean(mhz):7.0f} "
                  f"{min(mhz):5.0f} {statistics.mean(w):6.0f} {sum(r[3] for r in inside) / len(inside):7.2f} "
                  f"{statistics.mean(r[4] for r in inside):6.1f} {len(inside):4d}   {statistics.mean(ms) / ref:.3f}x")
        else:
            print(f"{k:>9} {statistics.mean(ms):9.2f} {statistics.stdev(ms):6.2f}  (no samples)  "
                  f"{statistics.mean(ms) / ref:.3f}x")


if __name__ == "__main__":
    main()
