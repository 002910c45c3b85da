"""What splitting the draft's one prefill chunk in two costs on the device.

The speculative TTFT starts with ~3.2 ms of tokenization and ~0.8 ms of ``bind`` on the H100
host before the draft's chunk can be dispatched (session 16's host timeline). A small first
chunk, tokenized and dispatched first, would let the rest of the prompt tokenize while it runs;
that pays only if two chunks cost the device little more than one. This times, round-robin,
one fresh chunk of the whole prompt against a fresh first chunk of ``S1`` rows followed at once
by the continued rest (fitted to 128 rows), both dispatched before the host waits, for each
``S1`` in ``PROBE_SPLITS``; the inputs are on the device already (no tokenization, no copies).

    . scripts/device_env.sh && python3 scripts/probe_split_chunk.py

``PROBE_PROFILE=1`` then profiles two runs of the one chunk and of the first split and prints
each form's device busy time and its ops by summed time, side by side: where the split's extra
time goes. ``PROBE_SPLITS=""`` times and profiles the one chunk alone (its 40 heaviest ops), e.g.
the pruned base chunk: ``PROBE_MODEL=llama-3.1-8b PROBE_LEN=1089 PROBE_ENGINE=base``.

``PROBE_ENGINE`` (default ``spec``) names the engine, which picks its chunk programs' XLA options
(``engines.host.chunk_xla``): ``spec`` compiles the draft as the pipeline does (Triton GEMMs
allowed, command buffers); ``base`` as the base's chunks (cuBLAS; no command buffers until session 18),
which is how session 16's runs of this probe compiled it (they named no engine).
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import numpy as np

from spectrace.engines.base import BaseEngine

MODEL = os.environ.get("PROBE_MODEL", "llama-3.2-1b")
PROMPT = int(os.environ.get("PROBE_LEN", "10741"))
SPLITS = [int(s) for s in os.environ.get("PROBE_SPLITS", "1024 2048 3072").split()]
REPS = int(os.environ.get("PROBE_REPS", "12"))
ENGINE = os.environ.get("PROBE_ENGINE", "spec")


def draft_and_prompt():
    """(engine, ids, chunk function with queries): ``PROBE_MODEL`` built as ``PROBE_ENGINE`` with a
    cache, a random ``PROBE_LEN``-token prompt prefilled once (compiled); shared with ``probe_dispatch.py``."""
    e = BaseEngine.from_pretrained(MODEL, prefill_seq_len=16384, ctx_len=PROMPT + 64, name=ENGINE)
    ids = np.random.default_rng(0).integers(3, e.config.vocab_size, PROMPT).astype(np.int32)
    e.prefill_from_ids(ids, np.arange(PROMPT, dtype=np.int32), return_queries=True)
    return e, ids, e.chunk_fn(return_queries=True)


def chunk_inputs(ids, a: int, b: int, rows: int) -> np.ndarray:
    """Rows [a, b) of the prompt ``ids`` padded to ``rows`` (position -1): a chunk's [2, 1, rows]
    inputs (tokens; positions); shared with ``probe_dispatch.py``."""
    inputs = np.zeros((2, 1, rows), np.int32)
    inputs[1] = -1
    inputs[0, 0, :b - a], inputs[1, 0, :b - a] = ids[a:b], np.arange(a, b)
    return inputs


def main() -> None:
    e, ids, fn = draft_and_prompt()

    def placed(a: int, b: int, rows: int):
        return jax.device_put(chunk_inputs(ids, a, b, rows), e.device)

    fit = lambda n: -(n // -128) * 128  # noqa: E731  the engine's fitted last chunk
    whole = placed(0, PROMPT, fit(PROMPT))
    parts = {s: (placed(0, s, s), placed(s, PROMPT, fit(PROMPT - s))) for s in SPLITS}

    def one() -> tuple[float, float]:
        t0 = time.perf_counter()
        logits, e.cache, q = fn(e.params, e.cache, whole, fresh=True)
        t1 = time.perf_counter()
        jax.block_until_ready((logits, e.cache, q))
        return time.perf_counter() - t0, t1 - t0

    def two(s: int) -> tuple[float, float]:
        (a, b) = parts[s]
        t0 = time.perf_counter()
        _, e.cache, _ = fn(e.params, e.cache, a, fresh=True)
        t1 = time.perf_counter()
        logits, e.cache, q = fn(e.params, e.cache, b, fresh=False)
        jax.block_until_ready((logits, e.cache, q))
        return time.perf_counter() - t0, t1 - t0

    forms = {"one chunk": one, **{f"{s} + {PROMPT - s}": (lambda s=s: two(s)) for s in SPLITS}}
    for f in forms.values():  # compile and warm
        f(), f()
    times = {k: [] for k in forms}
    for _ in range(REPS):
        for k, f in forms.items():
            times[k].append(f())
    print(f"{MODEL} on {e.device.device_kind}: {PROMPT} tokens, inputs on the device, {REPS} round-robin runs")
    print(f"{'form':>16} {'ready ms':>9} {'std':>6} {'best':>8} {'first call returns':>19} {'vs one':>7}")
    ref = statistics.mean(t for t, _ in times["one chunk"])
    for k, ts in times.items():
        ready = [t * 1e3 for t, _ in ts]
        print(f"{k:>16} {statistics.mean(ready):9.2f} {statistics.stdev(ready):6.2f} {min(ready):8.2f} "
              f"{statistics.mean(r * 1e3 for _, r in ts):16.2f} ms {statistics.mean(ready) / ref / 1e3:7.3f}")
    if os.environ.get("PROBE_PROFILE") == "1":
        _profiled({k: forms[k] for k in list(forms)[:2]})


def _profiled(forms: dict, runs: int = 2) -> None:
    """Each form's device ops over ``runs`` profiled runs: busy ms a run, and the ops by summed
    time; then each form's longest idle stretches in its last run, with the ops around them and
    what the host was doing (``tracer.device_time``): where the split's extra idle time sits."""
    import tempfile

    from jax.profiler import TraceAnnotation
    from probe_decode_ops import op_totals
    from spectrace.tracer import device_time, xplane

    tables, idle = {}, {}
    for k, f in forms.items():
        with xplane.profile(tempfile.mkdtemp(), mirror=False) as prof:
            for _ in range(runs):
                with TraceAnnotation("probe.run"):
                    f()
        tables[k] = {name: ns / runs / 1e6 for name, (ns, _, _) in op_totals(prof.paths).items()}
        ops = device_time.device_ops([xplane.read_xplane(p) for p in prof.paths])
        last = max((e for e in ops.host.events if e[2] == "probe.run"), default=None)
        idle[k] = ops.gaps(last[0], last[1], top=6) if last else []
    a, b = (list(tables) * 2)[:2]  # one form (PROBE_SPLITS=""): its ops by time, no differences
    print(f"\ndevice busy a run: {a} {sum(tables[a].values()):.2f} ms, {b} {sum(tables[b].values()):.2f} ms")
    names = sorted(set(tables[a]) | set(tables[b]), key=lambda n: (-abs(tables[b].get(n, 0) - tables[a].get(n, 0)),
                                                                    -tables[a].get(n, 0)))
    print(f"{'ms ' + a:>18} {'ms ' + b:>18} {'diff':>8}  op (largest differences first, then by time)")
    for n in names[:40 if a == b else 25]:
        x, y = tables[a].get(n, 0.0), tables[b].get(n, 0.0)
        print(f"{x:18.3f} {y:18.3f} {y - x:8.3f}  {n[:90]}")
    for k, gaps in idle.items():
        print(f"\nlongest device idle in the last profiled run of {k} (ms: at, length; between; host doing)")
        for at, length, before, after, host in gaps:
            print(f"  {at / 1e6:8.3f} {length / 1e6:7.3f}  {str(before)[:40]} -> {str(after)[:40]}; host in {host}")


if __name__ == "__main__":
    main()
