"""Speculative-prefill benchmark: TTFT against a Hugging Face full prefill, host vs device scoring.

Seed 000's question, answered with numbers: at 10741 prompt tokens, Llama-3.1-8B base and
Llama-3.2-1B draft (random weights, real shapes), keep 0.10, is speculative TTFT below the
base model's full prefill, and how much of it is the host-scoring design (bytes and ms per
binding category)? Every variant runs ``n`` times after ``warmup`` runs and is reported as
mean ± std (seed 003's protocol); the reference is transformers' full prefill of the same base
shape (:mod:`engines.hf_baseline`: sdpa, ``logits_to_keep=1``) measured in the same process.

By hand on an H100 (not CI)::

    python -m spectrace.engines.bench.spec --out bench.json
    python -m spectrace.engines.bench.spec --base default-base --draft default-draft --prompt-len 300   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

# PyTorch shares the GPU in this process: JAX must not take 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from spectrace import tracer  # noqa: E402
from spectrace.engines import BaseEngine  # noqa: E402
from spectrace.engines.bench.hf_baseline import hf_model, prefill_s, prefill_text_s  # noqa: E402
from spectrace.engines.speculative.engine import SpecPrefillEngine  # noqa: E402
from spectrace.engines.tokenizer import exact_prompt  # noqa: E402
from spectrace.tracer import benchstats  # noqa: E402
from spectrace.tracer.cli import _keep, _nonnegative_int, _positive_int  # noqa: E402

PHASES = ("ttft_spec_device_s", "t_assemble_s", "t_score_s", "t_select_s", "ttft_host_scoring_s",
          "ttft_base_pruned_only_s", "ttft_speculative_s", "ttft_baseline_s")
IO_PASSES = ("spec", "host_scoring", "base_pruned", "baseline")


def hf_full_prefill(base: BaseEngine, prompt: str, ids: np.ndarray, *, n: int, warmup: int) -> dict:
    """Seconds of transformers' full prefill (sdpa, last-token logits to the host) of the base's
    shape: ``runs`` from ids already on the device, ``text_runs`` from the prompt string (the
    tokenizer call included, as in the engines' TTFT); the two alternate."""
    import torch
    import transformers

    model = hf_model(base.config, base.dtype)
    x = torch.as_tensor(ids[None], dtype=torch.long, device=model.device)   # [1, P]
    pairs = [(prefill_s(model, x), prefill_text_s(model, base.tokenizer, prompt))
             for _ in range(warmup + n)][warmup:]
    times, text_times = [p[0] for p in pairs], [p[1] for p in pairs]
    cuda = model.device.type == "cuda"
    info = {"device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
            "dtype": str(model.dtype).replace("torch.", ""), "torch": torch.__version__,
            "transformers": transformers.__version__}
    del model
    if cuda:
        torch.cuda.empty_cache()  # the JAX engines still share this GPU
    return {"runs": times, "text_runs": text_times, "info": info}


def run_mode(engine: SpecPrefillEngine, prompt: str, *, n: int, warmup: int, gen_len: int) -> list[dict]:
    """``warmup`` + ``n`` requests with recording on; per measured run: TTFT fields and IO per pass."""
    runs = []
    previous = tracer.configure(enabled=True, exporter="none")  # the bench reads spans, exports none
    try:
        for i in range(warmup + n):
            r = engine.run(prompt, gen_len=gen_len, baseline=True)
            print(f"  {engine.scoring} run {i}{' (warm-up)' if i < warmup else ''}: speculative "
                  f"{r.ttft_speculative_s:.4f}s (spec {r.ttft_spec_device_s:.4f} + scoring "
                  f"{r.ttft_host_scoring_s:.4f} + pruned {r.ttft_base_pruned_only_s:.4f}), "
                  f"baseline {r.ttft_baseline_s:.4f}s", file=sys.stderr, flush=True)
            if i >= warmup:
                runs.append({**r.ttft(), "io": r.io, "kept_indices": r.kept_indices.tolist()})
    finally:
        tracer.configure(**previous)
    return runs


def _modes(text: str) -> list[str]:
    """``--modes``: scoring modes, comma-separated, each ``host`` or ``device``, at least one."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in ("host", "device") for m in modes):
        raise argparse.ArgumentTypeError(f"--modes must list host and/or device, comma-separated, got {text!r}")
    return modes


def io_table(results: dict[str, list[dict]]) -> str:
    """Markdown: per pass and category, bytes and mean ms for each scoring mode."""
    modes = list(results)
    head = ["pass", "category"] + [f"{m} {what}" for m in modes for what in ("bytes", "ms", "count")]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for p in IO_PASSES:
        for cat in tracer.CATEGORIES:
            cells, moved = [], False
            for m in modes:
                per_run = [run["io"].get(p, {}).get(cat, {}) for run in results[m]]
                b = int(np.mean([x.get("bytes", 0) for x in per_run]))
                ms = float(np.mean([x.get("ms", 0.0) for x in per_run]))
                cnt = float(np.mean([x.get("count", 0) for x in per_run]))
                moved |= b > 0
                cells += [f"{b:,}", f"{ms:.3f}", f"{cnt:g}"]
            if moved:
                lines.append("| " + " | ".join([p, cat] + cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="llama-3.1-8b")
    ap.add_argument("--draft", default="llama-3.2-1b")
    ap.add_argument("--prompt-len", type=_positive_int("--prompt-len"), default=10741)
    ap.add_argument("--keep", type=_keep, default=0.10)
    ap.add_argument("--look-ahead", type=_positive_int("--look-ahead"), default=8)
    ap.add_argument("--chunk-size", type=_positive_int("--chunk-size"), default=32)
    ap.add_argument("--layers", default="all", choices=("all", "last4", "last1", "full", "sliding"))
    ap.add_argument("--prefill-seq-len", type=_positive_int("--prefill-seq-len"), default=1024)
    ap.add_argument("--gen-len", type=_nonnegative_int("--gen-len"), default=1)
    ap.add_argument("--modes", type=_modes, default="host,device")
    ap.add_argument("-n", "--n", type=_positive_int("-n"), default=5)
    # Two warm-ups, as scripts/bench_variants.py: after one, the first measured device-scoring run
    # was 1.2-2.7 ms slower than the mean of the next four in 4 of sessions 14-17's 5 H100 runs
    # (docs/evidence/h100-session1[4-7]/bench_spec*.txt): a one-time cost not yet paid, not traced
    # to a program.
    ap.add_argument("--warmup", type=_nonnegative_int("--warmup"), default=2)
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on accelerators")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers reference")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    modes = args.modes

    ctx_len = args.prompt_len + args.look_ahead + args.gen_len
    devices = jax.devices()
    draft = BaseEngine.from_pretrained(args.draft, prefill_seq_len=args.prefill_seq_len, ctx_len=ctx_len,
                                       dtype=args.dtype, devices=devices[-1], name="spec")
    base = BaseEngine.from_pretrained(args.base, prefill_seq_len=args.prefill_seq_len, ctx_len=ctx_len,
                                      dtype=args.dtype, devices=devices[0])
    prompt = exact_prompt(base.tokenizer, args.prompt_len)
    ids = np.asarray(base.tokenizer(prompt)["input_ids"], np.int64)
    print(f"# spec prefill bench: base {args.base}, draft {args.draft}, prompt {len(ids)} tokens, keep {args.keep}, "
          f"look_ahead {args.look_ahead}, prefill_seq_len {args.prefill_seq_len}, n={args.n} (+{args.warmup} warm-up), "
          f"{devices[0].device_kind}", flush=True)

    results = {}
    for mode in modes:
        eng = SpecPrefillEngine(draft, base, keep=args.keep, chunk_size=args.chunk_size, look_ahead=args.look_ahead,
                                scoring=mode, layers=args.layers)
        results[mode] = run_mode(eng, prompt, n=args.n, warmup=args.warmup, gen_len=args.gen_len)
    same_kept = len({tuple(r["kept_indices"]) for m in modes for r in results[m]}) == 1

    ttft_runs = {}
    hf = None
    if not args.no_hf:
        hf = hf_full_prefill(base, prompt, ids, n=args.n, warmup=args.warmup)
        ttft_runs["hf_full_prefill"] = [{"ttft_s": t} for t in hf["runs"]]
        ttft_runs["hf_text_to_logits"] = [{"ttft_s": t} for t in hf["text_runs"]]
    first = modes[0]
    ttft_runs["jax_full_prefill"] = [{"ttft_s": r["ttft_baseline_s"]} for r in results[first]]
    for mode in modes:
        ttft_runs[f"spec_{mode}"] = [{"ttft_s": r["ttft_speculative_s"]} for r in results[mode]]
    ttft = benchstats.compare(ttft_runs, baseline=next(iter(ttft_runs)), phases=("ttft_s",))
    breakdown = benchstats.compare({m: results[m] for m in modes}, baseline=first, phases=PHASES)

    print("\n## TTFT vs the full base prefill\n")
    print(ttft.to_markdown(digits=4))
    if hf:
        for mode in modes:
            spec = np.mean([r["ttft_speculative_s"] for r in results[mode]])
            print(f"speculative ({mode} scoring) / transformers full prefill: {spec / np.mean(hf['runs']):.3f}x "
                  f"from ids on the device, {spec / np.mean(hf['text_runs']):.3f}x from the prompt string "
                  "(like for like: the speculative TTFT includes tokenization)")
        print()
    print("## Speculative TTFT breakdown, scoring modes side by side\n")
    print(breakdown.to_markdown(digits=4, effect_phases=("ttft_host_scoring_s", "ttft_speculative_s")))
    print("## IO per pass and binding category (mean per run)\n")
    print(io_table(results))
    r0 = results[first][0]
    print(f"kept {len(r0['kept_indices'])} of {r0['prompt_tokens']} tokens; host and device keep the same "
          f"indices: {same_kept}")

    if args.out:
        doc = {"schema": "spectrace.bench_spec/1", "config": vars(args), "prompt_tokens": int(len(ids)),
               "devices": [str(d) for d in devices], "versions": {"jax": jax.__version__,
                                                                   "python": platform.python_version()},
               "hf": hf, "ttft": ttft.to_json(), "breakdown": breakdown.to_json(), "runs": results,
               "same_kept_indices": same_kept}
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1, default=float)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
