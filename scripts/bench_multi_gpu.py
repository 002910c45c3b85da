"""Issue 16's multi-GPU measurements in one run: tensor-parallel base, disjoint draft/base groups, 70B shape.

On the device machine (every GPU it has; results as JSON and a table under $OUT)::

    bash scripts/gpu_multi.sh          # = . scripts/device_env.sh; python3 scripts/bench_multi_gpu.py --big --out $OUT

CPU smoke (8 forced host devices; what tests/engines/test_bench_multi_gpu.py runs, with --n 1)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu python scripts/bench_multi_gpu.py \\
        --base default-base --draft default-draft --prompt-len 600 --prefill-seq-len 128 --tp 1,2,4 \\
        --big --big-base default-base --big-draft default-draft --out /tmp/multi

Sections (each variant warmed up, then ``--n`` timed runs, variants alternating within a round):

* ``tp``: the base's full prefill TTFT (prompt string to last-token logits) on 1 device and
  tensor-parallel over 2, 4, 8 (those that exist, ``--tp``), speed-up and scaling efficiency
  (``t1 / (n * tn)``), and from one profiled prefill per size the collective time per
  ``prefill.chunk`` span per device: the union of device ops whose name has all-reduce,
  all-gather, reduce-scatter, collective-permute, all-to-all or nccl (``tracer.device_time``).
* ``spec``: speculative TTFT (device scoring, keep ``--keep``) with draft and base on device 0
  (``same``), draft on the last device and base on device 0 (``disjoint``), and draft on the last
  device with the base over the largest ``--tp`` group that leaves it out (``disjoint_tpN``).
* ``xplane``: one profiled request of each ``spec`` variant: a Perfetto file (``xplane_spec.pftrace``
  under --out, or /tmp when over 50 MB) with every device its own track, and the device-time
  table per span and device.
* ``big`` (``--big``): ``--big-base`` (llama-3.1-70b) over every device (or the largest group
  its heads divide) with ``--big-draft`` on the last device, where the memory estimate fits:
  speculative TTFT against the same engine's full prefill. Its random weights are generated
  already split, one slice per device (``engines.sharding.stacked_shardings``).

Where the base's KV heads do not split over a ``--tp`` size (the default pair: 2 KV heads), the
KV heads are repeated (vLLM's replication; the same function) for every size of the run alike.
"""

from __future__ import annotations

import os

for _k, _v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ[_k] = _v  # NVLink multicast off in every program started on the device machine
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import argparse
import dataclasses
import gc
import json
import math
import socket
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from spectrace import tracer
from spectrace.engines import BaseEngine
from spectrace.engines.speculative.engine import SpecPrefillEngine
from spectrace.engines.tokenizer import exact_prompt, load_tokenizer
from spectrace.tracer import xplane
from spectrace.tracer.device_time import (
    DeviceOps,
    aligned,
    device_ops,
    format_rows,
    rows,
)

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all", "nccl",
               "allreduce", "allgather", "reducescatter")
MAX_TRACE_BYTES = 50 * 2**20


def ms_stats(xs) -> dict:
    ms = [x * 1e3 for x in xs]
    return {"mean_ms": statistics.mean(ms), "std_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0, "runs_ms": ms}


def model_config(name, cache_dir):
    from spectrace.engines.checkpoint import read_config
    from spectrace.engines.presets import resolve

    src = resolve(name, cache_dir=cache_dir)
    return src, (src.config if src.path is None else read_config(src.path))


def engine_dtype(args, device):
    return jnp.dtype(args.dtype) if args.dtype else jnp.dtype(jnp.float32 if device.platform == "cpu" else jnp.bfloat16)


def kv_factor(cfg, sizes) -> int:
    """How often to repeat the KV heads so that every size in ``sizes`` splits them (1: as is)."""
    f = 1
    for n in sizes:
        f = math.lcm(f, n // math.gcd(cfg.n_kv_heads, n))
    return f


def load(name, group, args, *, role="base", kv=1, ctx_len):
    """An engine on ``group``: ``from_pretrained``, or built here for repeated KV heads / split random init."""
    kw = {"prefill_seq_len": args.prefill_seq_len, "ctx_len": ctx_len}
    src, cfg = model_config(name, args.cache_dir)
    if kv == 1:  # over a group, from_pretrained generates or loads each device's slice in place
        return BaseEngine.from_pretrained(name, dtype=args.dtype, devices=group if len(group) > 1 else group[0],
                                          name=role, cache_dir=args.cache_dir, **kw)
    dtype = engine_dtype(args, group[0])
    from spectrace.engines.checkpoint import load_weights
    from spectrace.engines.params import init_params

    params = (init_params(cfg, 0, dtype, group[0]) if src.path is None
              else load_weights(src.path, cfg, dtype=dtype, device=group[0]))
    layers = dict(params["layers"])
    for w in ("wk", "wv"):  # [L, D, K, H]: query head n still reads (repeated) KV head n // (N / K)
        layers[w] = jnp.repeat(layers[w], kv, axis=2)
    params, cfg = {**params, "layers": layers}, dataclasses.replace(cfg, n_kv_heads=cfg.n_kv_heads * kv)
    return BaseEngine(cfg, params, load_tokenizer(src.tokenizer_path), device=group if len(group) > 1 else group[0],
                      name=role, model_name=src.name, **kw)


def timed_prefill(base, prompt) -> float:
    t0 = time.perf_counter()
    r = base.prefill(prompt, window="ttft.baseline")
    np.asarray(r.logits)
    return time.perf_counter() - t0


def profiled(calls: dict, logdir: str):
    """Run each ``label -> fn`` once, recorded, inside one XPlane profile: (spans per label, paths)."""
    spans = {}
    with xplane.profile(logdir) as prof:
        for label, fn in calls.items():
            with tracer.capture() as rec:
                fn()
            spans[label] = list(rec.spans)
    return spans, prof.paths


def device_key(d) -> str:
    return f"{'GPU' if d.platform in ('gpu', 'cuda', 'rocm') else d.platform.upper()}:{d.id}"


def collective_per_chunk(spans: dict, paths, groups: dict) -> dict:
    """label -> per ``prefill.chunk`` span: ms, and per device of the label's group the collective ms."""
    from spectrace.tracer import clock
    from spectrace.tracer.perfetto import align_file

    spaces = [xplane.read_xplane(p) for p in paths]
    marks = [(s.name, clock.to_epoch_ns(s.start_ns), clock.to_epoch_ns(s.end_ns))
             for ss in spans.values() for s in ss if s.end_ns]
    files = [align_file(sp, marks, os.getpid(), socket.gethostname()) for sp in spaces]
    ops = device_ops(*aligned(spaces, files))
    per_dev = ops.devices or {"all": ops}
    coll = {k: DeviceOps([(s, e, n) for s, e, n in zip(d.starts, d.ends, d.names)
                          if any(c in n.lower() for c in COLLECTIVES)]) for k, d in per_dev.items()}
    out = {}
    for label, ss in spans.items():
        keys = [device_key(d) for d in groups[label] if device_key(d) in coll] or list(coll)
        chunks = []
        for s in sorted((s for s in ss if s.name == "prefill.chunk" and s.end_ns), key=lambda s: s.start_ns):
            a, b = clock.to_epoch_ns(s.start_ns), clock.to_epoch_ns(s.end_ns)
            chunks.append({"index": s.attributes.get("chunk.index"), "ms": (b - a) / 1e6,
                           "collective_ms": {k: coll[k].busy_ns(a, b) / 1e6 for k in keys},
                           "busy_ms": {k: per_dev[k].busy_ns(a, b) / 1e6 for k in keys}})
        mean = statistics.mean(statistics.mean(c["collective_ms"].values()) for c in chunks) if chunks else 0.0
        out[label] = {"chunks": chunks, "mean_collective_ms_per_chunk": mean,
                      "aligned_files": sum(f["offset_us"] is not None for f in files)}
    return out


def run_spec_variants(variants: dict, prompt, args) -> dict:
    for v in variants.values():
        for _ in range(args.warmup):
            v.run(prompt, gen_len=1, baseline=False)
    got = {k: [] for k in variants}
    for _ in range(args.n):
        for k, v in variants.items():
            r = v.run(prompt, gen_len=1, baseline=False)
            got[k].append(r)
    return got


def spec_summary(results) -> dict:
    rs = results
    return {"ttft_speculative": ms_stats([r.ttft_speculative_s for r in rs]),
            "ttft_spec_device": ms_stats([r.ttft_spec_device_s for r in rs]),
            "ttft_host_scoring": ms_stats([r.ttft_host_scoring_s for r in rs]),
            "ttft_base_pruned": ms_stats([r.ttft_base_pruned_only_s for r in rs]),
            "kept_tokens": rs[0].kept_tokens, "kept_indices": np.asarray(rs[0].kept_indices).tolist()}


def write_trace(spans: dict, paths, out_dir) -> tuple[str, dict]:
    from spectrace.tracer.perfetto import write_pftrace

    path = os.path.join(out_dir, "xplane_spec.pftrace")
    summary = write_pftrace(path, [s for ss in spans.values() for s in ss], xplanes=paths,
                            metadata={"command": "scripts/bench_multi_gpu.py", "variants": list(spans)})
    if os.path.getsize(path) > MAX_TRACE_BYTES:
        moved = os.path.join(tempfile.gettempdir(), "xplane_spec.pftrace")
        os.replace(path, moved)
        path = moved
    return path, summary


def big_section(args, devs, ctx_len) -> dict:
    from spectrace.engines.limits import check_memory
    from spectrace.tracer.errors import UserError

    _, cfg = model_config(args.big_base, args.cache_dir)
    _, dcfg = model_config(args.big_draft, args.cache_dir)
    n = max(k for k in range(1, len(devs) + 1) if len(devs) % k == 0 and not (
        cfg.n_heads % k or cfg.n_kv_heads % k or cfg.ffn_dim % k))
    dtype = str(engine_dtype(args, devs[0]))
    ns = SimpleNamespace(base_devices=list(range(n)), dtype=dtype)
    seq = args.prefill_seq_len
    try:  # the base's share of the memory estimate, the draft's weights whole (it sits on one device)
        check_memory(ns, {"base": (args.big_base, cfg)}, slots=-(ctx_len // -seq) * seq, seq=seq)
        free = devs[-1].memory_stats() or {}
        need = dcfg.weight_bytes(2 if dtype == "bfloat16" else 4) + cfg.weight_bytes(2 if dtype == "bfloat16" else 4) // n
        if free.get("bytes_limit") and need > free["bytes_limit"] - free.get("bytes_in_use", 0):
            raise UserError(f"draft {args.big_draft} plus the base's share needs {need / 2**30:.1f} GiB on the last device")
    except UserError as e:
        return {"skipped": str(e), "tp": n}
    base = load(args.big_base, devs[:n], args, ctx_len=ctx_len)
    draft = load(args.big_draft, devs[-1:], args, role="spec", ctx_len=ctx_len)
    spec = SpecPrefillEngine(draft, base, keep=args.keep, look_ahead=args.look_ahead, scoring="device")
    prompt = exact_prompt(base.tokenizer, args.prompt_len)
    for _ in range(args.warmup):
        spec.run(prompt, gen_len=1, baseline=True)
    rs = [spec.run(prompt, gen_len=1, baseline=True) for _ in range(args.n)]
    full = ms_stats([r.ttft_baseline_s for r in rs])
    sp = ms_stats([r.ttft_speculative_s for r in rs])
    return {"base": args.big_base, "draft": args.big_draft, "tp": n, "base_devices": [str(d) for d in devs[:n]],
            "draft_device": str(devs[-1]), "full_prefill": full, "speculative": sp,
            "speculative_over_full": sp["mean_ms"] / full["mean_ms"], "kept_tokens": rs[0].kept_tokens}


def table(doc) -> str:
    pm = lambda s: f"{s['mean_ms']:.2f} ± {s['std_ms']:.2f}"
    out = [(f"## {doc['devices_kind']} x{doc['n_devices']}: base {doc['config']['base']}, draft "
            f"{doc['config']['draft']}, {doc['prompt_tokens']} tokens, n={doc['config']['n']}"), "",
           "| base full prefill | TTFT ms | speed-up | efficiency | collective ms / chunk |", "|---|---:|---:|---:|---:|"]
    for n, r in doc["tp"].items():
        out.append(f"| {n} device(s) | {pm(r['ttft'])} | {r['speedup']:.2f}x | {r['efficiency']:.2f} | "
                   f"{r['collectives']['mean_collective_ms_per_chunk']:.3f} |")
    out += ["", "| speculative | TTFT ms | / same | kept |", "|---|---:|---:|---:|"]
    for k, r in doc["spec"]["variants"].items():
        out.append(f"| {k} ({r['draft']} / {r['base']}) | {pm(r['ttft_speculative'])} | {r['ratio_to_same']:.3f} | "
                   f"{r['kept_tokens']} |")
    out.append(f"kept indices equal across variants: {doc['spec']['same_kept_indices']}")
    b = doc.get("big")
    if b is not None:
        out.append("")
        out.append(f"big: skipped ({b['skipped']})" if "skipped" in b else
                   f"big: {b['base']} over {b['tp']} + {b['draft']}: full prefill {pm(b['full_prefill'])} ms, "
                   f"speculative {pm(b['speculative'])} ms, ratio {b['speculative_over_full']:.3f}")
    out.append(f"trace: {doc['xplane']['trace']}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="llama-3.1-8b")
    ap.add_argument("--draft", default="llama-3.2-1b")
    ap.add_argument("--prompt-len", type=int, default=10741)
    ap.add_argument("--prefill-seq-len", type=int, default=16384)
    ap.add_argument("--keep", type=float, default=0.10)
    ap.add_argument("--look-ahead", type=int, default=8)
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on GPU")
    ap.add_argument("--tp", default="1,2,4,8", help="tensor-parallel sizes (those the machine has run)")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--big", action="store_true", help="also the 70B-shape base over every device")
    ap.add_argument("--big-base", default="llama-3.1-70b")
    ap.add_argument("--big-draft", default="llama-3.1-8b")
    ap.add_argument("--cache-dir", default=None, help="spectrace cache of the default models")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    devs = jax.devices()
    sizes = sorted({n for n in map(int, args.tp.split(",")) if n <= len(devs)} | {1})
    ctx_len = args.prompt_len + args.look_ahead + 64
    _, bcfg = model_config(args.base, args.cache_dir)
    kv = kv_factor(bcfg, sizes)
    print(f"# {len(devs)} x {devs[0].device_kind}; TP sizes {sizes}; KV heads x{kv}", file=sys.stderr, flush=True)
    tracer.configure(enabled=True, exporter="none")
    doc = {"schema": "spectrace.bench_multi_gpu/1", "config": vars(args), "n_devices": len(devs),
           "devices_kind": devs[0].device_kind, "devices": [str(d) for d in devs], "jax": jax.__version__,
           "kv_heads": {"model": bcfg.n_kv_heads, "repeated": kv}}

    # (a) full prefill, 1 device vs tensor-parallel; alternating sizes within each round.
    bases = {n: load(args.base, devs[:n], args, kv=kv, ctx_len=ctx_len) for n in sizes}
    prompt = exact_prompt(bases[1].tokenizer, args.prompt_len)
    doc["prompt_tokens"] = len(bases[1].tokenizer(prompt)["input_ids"])
    for b in bases.values():
        for _ in range(args.warmup):
            timed_prefill(b, prompt)
    times = {n: [] for n in sizes}
    for _ in range(args.n):
        for n, b in bases.items():
            times[n].append(timed_prefill(b, prompt))
    with tempfile.TemporaryDirectory() as logdir:
        spans, paths = profiled({n: (lambda b=b: b.prefill(prompt)) for n, b in bases.items()}, logdir)
        coll = collective_per_chunk(spans, paths, {n: devs[:n] for n in sizes})
    t1 = statistics.mean(times[1])
    doc["tp"] = {str(n): {"ttft": ms_stats(times[n]), "speedup": t1 / statistics.mean(times[n]),
                          "efficiency": t1 / (n * statistics.mean(times[n])), "collectives": coll[n]} for n in sizes}

    # (b) speculative: same device vs disjoint groups (draft on the last device).
    drafts = {"0": load(args.draft, devs[:1], args, role="spec", ctx_len=ctx_len)}
    mk = lambda d, b: SpecPrefillEngine(d, b, keep=args.keep, look_ahead=args.look_ahead, scoring="device")
    variants, where = {"same": mk(drafts["0"], bases[1])}, {"same": ("0", "0")}
    if len(devs) > 1:
        drafts["last"] = load(args.draft, devs[-1:], args, role="spec", ctx_len=ctx_len)
        variants["disjoint"], where["disjoint"] = mk(drafts["last"], bases[1]), (str(len(devs) - 1), "0")
        m = max((n for n in sizes if 1 < n < len(devs)), default=None)
        if m:
            variants[f"disjoint_tp{m}"] = mk(drafts["last"], bases[m])
            where[f"disjoint_tp{m}"] = (str(len(devs) - 1), f"0-{m - 1}")
    got = run_spec_variants(variants, prompt, args)
    same = statistics.mean(r.ttft_speculative_s for r in got["same"])
    doc["spec"] = {"variants": {k: {**spec_summary(rs), "draft": where[k][0], "base": where[k][1],
                                    "ratio_to_same": statistics.mean(r.ttft_speculative_s for r in rs) / same}
                                for k, rs in got.items()}}
    kept = {tuple(np.asarray(r.kept_indices).tolist()) for rs in got.values() for r in rs}
    doc["spec"]["same_kept_indices"] = len(kept) == 1

    # (d) the --xplane trace of (b): every device its own track; the device-time table per device.
    with tempfile.TemporaryDirectory() as logdir:
        spans, paths = profiled({k: (lambda v=v: v.run(prompt, gen_len=1, baseline=False))
                                 for k, v in variants.items()}, logdir)
        path, summary = write_trace(spans, paths, args.out)
    doc["xplane"] = {"trace": path, "bytes": os.path.getsize(path), "alignment": {
        k: summary.get(k) for k in ("median_us", "max_us", "offset_us", "pairs")}, "device_time": {}}
    for k, ss in spans.items():
        doc["xplane"]["device_time"][k] = rows(ss, summary["device_time"])
        print(format_rows(doc["xplane"]["device_time"][k], title=f"Device time per span, {k}"), flush=True)

    # (c) the 70B shape over every device, with the draft on the last one.
    if args.big:
        del variants, drafts, bases
        gc.collect()
        doc["big"] = big_section(args, devs, ctx_len)
    tracer.configure(enabled=False)
    with open(os.path.join(args.out, "bench_multi_gpu.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    print("\n" + table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
