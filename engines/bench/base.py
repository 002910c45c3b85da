"""Benchmark the base engine against Hugging Face transformers on the same shapes, in one run.

    python -m spectrace.engines.bench.base --preset llama-3.1-8b --prompt-len 10741 --prefill-seq-len 2048 \\
        --gen 64 --runs 5

Measures, after warm-up runs, ``--runs`` times each (mean ± sample std):

* prefill TTFT: ``prefill_from_ids`` of ``--prompt-len`` token ids until the last token's logits
  are on the host (cache allocation, input copy, every chunk, logits copy); tokenization is left
  out so both sides get identical input ids;
* decode ms/token: the greedy decode after that prefill, ``(gen - 1)`` steps, tokens on the host;
* transformers (if ``torch`` imports): ``LlamaForCausalLM`` built from the same config with
  random weights, sdpa attention, the engine's dtype; prefill = ``model(ids, logits_to_keep=1)``
  with ``torch.cuda.synchronize()``; decode ms/token = (generate(gen) - generate(1)) / (gen - 1).

Prints a markdown table with the ratio and decode against the weight-streaming floor
(weight bytes / the GPU's HBM bandwidth: 3.35 TB/s H100 SXM, 4.8 TB/s H200; 3.35 for others). Runs on CPU too (``--preset default-base --prompt-len 300``).
"""

from __future__ import annotations

import argparse
import os
import sys

# JAX must not take 75% of GPU memory when PyTorch shares the GPU in this process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from spectrace.tracer import benchstats  # noqa: E402
from spectrace.tracer.cli import _nonnegative_int, _positive_int  # noqa: E402

HBM_BYTES_PER_S = {"H100": 3.35e12, "H200": 4.8e12}  # by device_kind substring (datasheet figures)
DEFAULT_HBM_BYTES_PER_S = 3.35e12


def hbm_bytes_per_s(device_kind: str) -> float:
    """The weight-streaming floor's bandwidth for a JAX ``device_kind`` such as ``"NVIDIA H200"``."""
    return next((bw for name, bw in HBM_BYTES_PER_S.items() if name in device_kind), DEFAULT_HBM_BYTES_PER_S)


def _fmt(xs: list[float] | None) -> str:
    return benchstats.summarize(xs).format(2) if xs else "n/a"  # mean ± sample std, as seed 003


def bench_engine(args) -> dict:
    import numpy as np

    from spectrace.engines.base import BaseEngine
    from spectrace.engines.params import weight_bytes

    ctx = args.ctx_len or args.prompt_len + args.gen
    switches = dict(opt.split("=", 1) for opt in args.option)
    engine = BaseEngine.from_pretrained(args.preset, prefill_seq_len=args.prefill_seq_len, ctx_len=ctx,
                                        dtype=args.dtype, **switches)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, engine.config.vocab_size, args.prompt_len).astype(np.int32)
    positions = np.arange(args.prompt_len, dtype=np.int32)
    prefill_ms, decode_ms = [], []
    for run in range(args.warmup + args.runs):
        result = engine.prefill_from_ids(ids, positions)
        generated = engine.decode(result, args.gen)
        if run >= args.warmup:
            prefill_ms.append(1e3 * result.elapsed_s)
            if generated.steps:
                decode_ms.append(generated.ms_per_token)
    return {"engine": engine, "ids": ids, "prefill_ms": prefill_ms, "decode_ms": decode_ms,
            "num_chunks": result.num_chunks, "weight_bytes": weight_bytes(engine.params)}


def bench_hf(args, engine, ids) -> dict | None:
    try:
        import torch
        import transformers
    except ImportError as exc:
        print(f"transformers baseline skipped: {exc}", file=sys.stderr)
        return None
    from spectrace.engines.bench.hf_baseline import hf_model, prefill_s, timed_s

    try:
        model = hf_model(engine.config, engine.dtype)
    except Exception as exc:  # noqa: BLE001 - the engine's numbers still print without the baseline
        print(f"transformers baseline failed to build: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    model.generation_config.eos_token_id = None  # generate exactly n tokens
    model.generation_config.pad_token_id = 0
    input_ids = torch.tensor(ids[None].astype("int64"), device=model.device)

    def generate(n):
        return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=n,
                              min_new_tokens=n, do_sample=False)

    prefill_ms, decode_ms = [], []
    with torch.inference_mode():
        for run in range(args.warmup + args.runs):
            t_prefill = prefill_s(model, input_ids)
            if args.gen > 1:
                t_one = timed_s(lambda: generate(1), model.device)
                t_all = timed_s(lambda: generate(args.gen), model.device)
            if run >= args.warmup:
                prefill_ms.append(1e3 * t_prefill)
                if args.gen > 1:
                    decode_ms.append(1e3 * (t_all - t_one) / (args.gen - 1))
    return {"prefill_ms": prefill_ms, "decode_ms": decode_ms, "device": model.device.type,
            "versions": f"transformers {transformers.__version__}, torch {torch.__version__}"}


def _ratio(hf: list[float] | None, ours: list[float]) -> str:
    if not hf or not ours:
        return "n/a"
    return f"{benchstats.summarize(hf).mean / benchstats.summarize(ours).mean:.2f}x"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Base engine vs Hugging Face transformers: prefill TTFT and decode.")
    parser.add_argument("--preset", default="default-base", help="preset name or checkpoint directory")
    parser.add_argument("--prompt-len", type=_positive_int("--prompt-len"), default=300)
    parser.add_argument("--prefill-seq-len", type=_positive_int("--prefill-seq-len"), default=128)
    parser.add_argument("--gen", type=_positive_int("--gen"), default=16, help="tokens to generate (gen - 1 decode steps)")
    parser.add_argument("--runs", type=_positive_int("--runs"), default=5)
    parser.add_argument("--warmup", type=_nonnegative_int("--warmup"), default=1)
    parser.add_argument("--ctx-len", type=_positive_int("--ctx-len"), default=None, help="default: prompt-len + gen")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an EngineOptions switch, e.g. attention=dot_product (repeatable)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.prompt_len < 1 or args.gen < 1:
        parser.error("--runs, --prompt-len and --gen must be >= 1")

    import jax

    ours = bench_engine(args)
    engine = ours["engine"]
    hf = None if args.no_hf else bench_hf(args, engine, ours["ids"])
    dev = jax.devices()[0]
    bandwidth = hbm_bytes_per_s(dev.device_kind)
    floor_ms = 1e3 * ours["weight_bytes"] / bandwidth
    print(f"\n{args.preset}: prompt {args.prompt_len} tokens, prefill_seq_len {args.prefill_seq_len} "
          f"({ours['num_chunks']} chunks), gen {args.gen}, dtype {engine.dtype}, {engine.options}, device {dev.device_kind} "
          f"({dev.platform}), n={args.runs} after {args.warmup} warm-up")
    if hf:
        print(f"baseline: {hf['versions']}, sdpa, on {hf['device']}")
    print()
    print("| metric | spectrace (JAX) | transformers | transformers / spectrace |")
    print("| --- | --- | --- | --- |")
    print(f"| prefill TTFT (ms) | {_fmt(ours['prefill_ms'])} | {_fmt(hf and hf['prefill_ms'])} | "
          f"{_ratio(hf and hf['prefill_ms'], ours['prefill_ms'])} |")
    print(f"| decode (ms/token) | {_fmt(ours['decode_ms'])} | {_fmt(hf and hf['decode_ms'])} | "
          f"{_ratio(hf and hf['decode_ms'], ours['decode_ms'])} |")
    floor_ratio = (f"{benchstats.summarize(ours['decode_ms']).mean / floor_ms:.1f}x floor" if ours["decode_ms"]
                   else "n/a")
    print(f"| decode floor: {ours['weight_bytes'] / 1e9:.3f} GB weights / {bandwidth / 1e12:.2f} TB/s (ms/token) | "
          f"{floor_ms:.3f} | | spectrace at {floor_ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
