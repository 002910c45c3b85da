"""Run by tests/engines/test_devices.py in a subprocess with 8 forced CPU devices (the parent's JAX
already has 1): prefill and greedy decode of one engine over 1, 2 and 4 devices, and the speculative
engine with draft and base on disjoint groups; prints JSON. Argument: the spectrace cache dir."""

from __future__ import annotations

import dataclasses
import json
import sys

import jax
import numpy as np

from spectrace.engines import BaseEngine
from spectrace.engines.defaults import DEFAULT_BASE, GEMMA_BASE

# Head counts 4 (and KV heads 4) so that 2 and 4 devices divide every split axis.
MODELS = {
    "llama": dataclasses.replace(DEFAULT_BASE, n_heads=8, n_kv_heads=4, n_layers=2),
    "gemma": dataclasses.replace(GEMMA_BASE, n_heads=4, n_kv_heads=4),
}


def run(cfg, devices, ids, **switches):
    eng = BaseEngine.from_config(cfg, prefill_seq_len=32, ctx_len=160, dtype=np.float32, devices=devices,
                                 seed=3, **switches)
    pre = eng.prefill_from_ids(ids, np.arange(len(ids)))
    gen = eng.decode(pre, 8, window=None)
    cont = eng.prefill_from_ids(ids[:20], np.arange(len(ids) + 8, len(ids) + 28),
                                 continue_cache=True)
    shard = eng.cache.k[0].sharding
    wq = eng.params["layers"][0]["wq" if "wq" in eng.params["layers"][0] else "wqkv"]
    return {"logits": pre.logits, "tokens": gen.tokens.tolist(), "cont": cont.logits,
            "kv_shard": list(shard.shard_shape(eng.cache.k[0].shape)), "qkv": eng.options.qkv,
            "wq_shard": list(wq.sharding.shard_shape(wq.shape))}


def spec(devs, cache_dir) -> dict:
    """Draft on devices 0-1, base on 4-5 (disjoint groups) against both on device 0."""
    from spectrace import tracer

    from spectrace.engines.speculative.engine import SpecPrefillEngine
    from spectrace.engines.tokenizer import corpus_text

    prompt = corpus_text()[:400]
    out = {}
    for scoring in ("host", "device"):
        got = {}
        for label, draft_devs, base_devs in (("one", devs[:1], devs[:1]), ("split", devs[:2], devs[4:6])):
            eng = SpecPrefillEngine.from_pretrained(
                "default-draft", base="default-base", prefill_seq_len=16, ctx_len=256, keep=0.3, chunk_size=8,
                look_ahead=4, scoring=scoring, dtype=np.float32, draft_devices=draft_devs, base_devices=base_devs,
                cache_dir=cache_dir)
            eng.run(prompt, gen_len=4)  # warm-up: compilations
            tracer.configure(enabled=True)
            with tracer.capture() as t:
                r = eng.run(prompt, gen_len=4)
            spans = [{"name": s.name, "attrs": {k: v for k, v in s.attributes.items() if k in ("engine", "devices")},
                      "transfers": [[x.category, x.direction, x.nbytes, x.src, x.dst] for x in s.transfers]} for s in t.spans]
            got[label] = {"kept": np.asarray(r.kept_indices).tolist(), "logits": np.asarray(r.logits),
                          "tokens": np.asarray(r.tokens).tolist(), "spans": spans}
        one, split = got["one"], got["split"]
        out[scoring] = {"same_kept": one["kept"] == split["kept"], "n_kept": len(one["kept"]),
                        "rel": float(np.max(np.abs(split["logits"] - one["logits"])) / np.max(np.abs(one["logits"]))),
                        "same_tokens": one["tokens"] == split["tokens"], "spans": split["spans"]}
    return out


def placement(devs, cache_dir) -> dict:
    """Weights generated for a group of 4 (loaded for a group of 2) arrive split: each device only its slice."""
    from spectrace.engines.checkpoint import load_weights, read_config
    from spectrace.engines.host import _placement
    from spectrace.engines.params import init_params
    from spectrace.engines.presets import resolve

    cfg = MODELS["llama"]
    split = init_params(cfg, 3, np.float32, _placement(devs[:4], cfg))
    whole = init_params(cfg, 3, np.float32, devs[0])
    src = resolve("default-base", cache_dir=cache_dir)
    disk = read_config(src.path)  # the default base: 2 KV heads, so a group of 2
    loaded = load_weights(src.path, disk, dtype=np.float32, device=_placement(devs[:2], disk))
    shard = lambda a: list(a.addressable_shards[0].data.shape)  # noqa: E731
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree_util.tree_leaves(split), jax.tree_util.tree_leaves(whole)))
    return {"init_same": bool(same), "init_wq": shard(split["layers"]["wq"]), "init_w_down": shard(split["layers"]["w_down"]),
            "init_embed": shard(split["embed"]), "ffn": cfg.ffn_dim, "wq_shape": list(split["layers"]["wq"].shape),
            "loaded_wk": shard(loaded["layers"]["wk"]), "loaded_wk_shape": list(loaded["layers"]["wk"].shape)}


def main() -> None:
    devs = jax.devices()
    assert len(devs) >= 4, f"needs 4 devices, got {len(devs)}"
    ids = np.random.default_rng(0).integers(2, 2000, size=75).astype(np.int32)
    out = {}
    for name, cfg in MODELS.items():
        ref = run(cfg, devs[:1], ids)  # the one-device default: fused projections
        for n in (2, 4):
            got = run(cfg, devs[4:4 + n] if n == 2 else devs[:n], ids)
            rel = lambda a, b: float(np.max(np.abs(a - b)) / np.max(np.abs(b)))  # noqa: E731
            out[f"{name}/{n}"] = {"rel": rel(got["logits"], ref["logits"]), "rel_cont": rel(got["cont"], ref["cont"]),
                                  "tokens": got["tokens"], "ref_tokens": ref["tokens"],
                                  "kv_shard": got["kv_shard"], "qkv": got["qkv"],
                                  "wq_shard": got["wq_shard"], "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads}
    try:
        BaseEngine.from_config(dataclasses.replace(DEFAULT_BASE, n_kv_heads=2), prefill_seq_len=32, ctx_len=64,
                               dtype=np.float32, devices=devs[:4])
        out["error"] = None
    except ValueError as e:
        out["error"] = str(e)
    out["spec"] = spec(devs, sys.argv[1])
    out["placement"] = placement(devs, sys.argv[1])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
