"""Seed 003's experiments in the seed's own order, on a Gemma preset, then the stacked run under XPlane.

``spectrace bench --set seed003`` measures each switch turned *off* against the all-fast engine.
Seed 003 went the other way: one on-device baseline (scan decode, Python per-token prefill,
separate Q/K/V, per-query ``vmap`` attention), each change *on top of it*, every figure n=5
mean ± std with its effect against that one baseline. This script does exactly that with the
engine's switches, then the stacked variant (scan decode + compiled chunked prefill + batched
attention + fused QKV), then one stacked prefill + decode under ``jax.profiler`` with the
tracer's spans: device busy vs idle per phase (the seed's "re-profile with XPlane" step).

Mapping of the seed's changes to ``EngineOptions``: prefill scan -> ``prefill="chunked"`` (one
compiled program over the prompt instead of one Python-dispatched step per token); fused QKV ->
``qkv="fused"``; removing the outer vmap and batched ``Qs @ Ks^T`` -> ``attention="batched"``
(the per-query form is ``"vmap"``); the engine's default attention (``"dot_product"``: cuDNN
flash attention on full layers, the position-masked band on sliding ones) is one more row.

    python scripts/bench_seed003_gemma.py --preset gemma-3-1b --prompt-len 64 --gen-len 128 --runs 5 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ORIGINAL = dict(decode="python", prefill="python", qkv="separate", attention="vmap")
BASELINE = dict(ORIGINAL, decode="scan")
STACKED = dict(decode="scan", prefill="chunked", qkv="fused", attention="batched")
VARIANTS = {
    "original (Python decode loop)": ORIGINAL,
    "baseline (on-device decode)": BASELINE,
    "1 prefill: compiled chunks": dict(BASELINE, prefill="chunked"),
    "2 fused QKV": dict(BASELINE, qkv="fused"),
    "3+4 batched attention (no per-query vmap)": dict(BASELINE, attention="batched"),
    "stacked (scan + chunked + batched + fused)": STACKED,
    "stacked, dot_product attention (engine default)": dict(STACKED, attention="dot_product"),
}
SEED = {"original": (3.051, 23.653), "baseline": (3.102, 0.594), "prefill scan": (0.272, 0.592)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gemma-3-1b")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--gen-len", type=int, default=128)
    parser.add_argument("--prefill-seq-len", type=int, default=None, help="default: the prompt rounded up to 128")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-xplane", action="store_true")
    parser.add_argument("--xplane-only", action="store_true",
                        help="only the stacked variant: warm up, then --xplane-passes profiled passes")
    parser.add_argument("--xplane-passes", type=int, default=1,
                        help="profiled prefill + decode passes (the first one under a fresh profiler runs slower)")
    args = parser.parse_args(argv)

    from spectrace import tracer
    from spectrace.engines import BaseEngine
    from spectrace.engines.tokenizer import exact_prompt
    from spectrace.tracer import benchstats

    psl = args.prefill_seq_len or -(args.prompt_len // -128) * 128
    ctx = psl + args.gen_len + 128
    if args.xplane_only:
        stacked = BaseEngine.from_pretrained(args.preset, prefill_seq_len=psl, ctx_len=ctx, **STACKED)
        prompt = exact_prompt(stacked.tokenizer, args.prompt_len)
        for _ in range(2):
            stacked.decode(stacked.prefill(prompt, window=None), args.gen_len, window=None)
        text = _xplane(stacked, prompt, args.gen_len, tracer, args.xplane_passes)
        print(text)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "xplane.md").write_text(text + "\n")
        return 0
    results, engine, prompt = {}, None, None
    for name, switches in VARIANTS.items():
        t0 = time.perf_counter()
        engine = BaseEngine.from_pretrained(args.preset, prefill_seq_len=psl, ctx_len=ctx, **switches)
        prompt = prompt or exact_prompt(engine.tokenizer, args.prompt_len)
        runs = []
        for i in range(args.warmup + args.runs):
            a = time.perf_counter()
            pre = engine.prefill(prompt, window=None)
            b = time.perf_counter()
            engine.decode(pre, args.gen_len, window=None)
            c = time.perf_counter()
            if i >= args.warmup:
                runs.append({"prefill": b - a, "generation": c - b, "total": c - a})
        results[name] = runs
        print(f"{name}: {len(runs)} runs, prefill {runs[-1]['prefill']:.4f} s, generation "
              f"{runs[-1]['generation']:.4f} s ({time.perf_counter() - t0:.0f} s incl. load and compile)",
              file=sys.stderr, flush=True)
        if name != list(VARIANTS)[-2]:
            del engine  # the stacked engine stays for the XPlane run below
            engine = None
        else:
            stacked = engine
    result = benchstats.compare(results, baseline="baseline (on-device decode)")
    md = benchstats.render_markdown(result)
    dev = stacked.device
    head = (f"{args.preset}: prompt {args.prompt_len} tokens (prefill_seq_len {psl}), {args.gen_len} generated, "
            f"dtype {stacked.dtype}, n={args.runs} after {args.warmup} warm-up, {dev.device_kind} ({dev.platform})\n\n")
    text = head + md + "\n" + _ratios(results) + "\n"
    if not args.no_xplane:
        text += "\n" + _xplane(stacked, prompt, args.gen_len, tracer, args.xplane_passes) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.md").write_text(text)
        (args.out / "bench.json").write_text(json.dumps(benchstats.to_json(result), indent=2) + "\n")
    return 0


def _mean(runs, key):
    return sum(r[key] for r in runs) / len(runs)


def _ratios(results) -> str:
    """The seed's two headline ratios beside ours (different hardware and model code: compare ratios)."""
    orig, base = results["original (Python decode loop)"], results["baseline (on-device decode)"]
    chunked = results["1 prefill: compiled chunks"]
    ours_gen = _mean(orig, "generation") / _mean(base, "generation")
    ours_pre = _mean(base, "prefill") / _mean(chunked, "prefill")
    seed_gen = SEED["original"][1] / SEED["baseline"][1]
    seed_pre = SEED["baseline"][0] / SEED["prefill scan"][0]
    return ("| ratio | seed 003 | here |\n|---|---:|---:|\n"
            f"| generation: Python loop / on-device scan | {seed_gen:.1f}x (23.653 / 0.594 s) | {ours_gen:.1f}x |\n"
            f"| prefill: Python per-token loop / compiled | {seed_pre:.1f}x (3.102 / 0.272 s) | {ours_pre:.1f}x |")


def _xplane(engine, prompt, gen_len, tracer, passes: int = 1) -> str:
    """``passes`` stacked prefill + decode passes under one jax.profiler trace: device busy / idle per span."""
    from spectrace.tracer import xplane
    from spectrace.tracer.device_time import format_rows, rows
    from spectrace.tracer.perfetto import write_pftrace

    previous = tracer.configure(enabled=True, exporter="none")
    out = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with xplane.profile(Path(tmp) / "xplane") as prof:
                recs = []
                for _ in range(passes):
                    with tracer.capture() as rec:
                        pre = engine.prefill(prompt, window="ttft.baseline")
                        engine.decode(pre, gen_len, window="decode")
                    recs.append(rec.spans)
            spans = [s for r in recs for s in r]
            summary = write_pftrace(Path(tmp) / "trace.pftrace", spans, xplanes=prof.paths)
            for i, r in enumerate(recs):
                out.append(format_rows(rows(r, summary["device_time"]),
                                       f"Stacked variant, profiled pass {i + 1} of {passes}: device time per span"))
    finally:
        tracer.configure(**previous)
    return "\n\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
