"""The parameter pytree of a model: its layouts, random initialisation, and the fused-QKV form.

Checkpoints and :func:`init_params` stack layer weights along a leading L axis (one array per
weight name, the shapes :func:`param_shapes` checks; each family's module lists its own, e.g.
Gemma adds ``post_attn_norm``, ``post_mlp_norm``, ``q_norm``, ``k_norm``). Weights are stored
input-axis first (``x @ w``), heads split out, so einsum strings read directly (Llama's)::

    embed       [V, D]            final_norm [D]          lm_head [D, V]  (absent when tied)
    layers/attn_norm [L, D]       layers/mlp_norm [L, D]
    layers/wq   [L, D, N, H]      layers/wk [L, D, K, H]  layers/wv [L, D, K, H]
    layers/wo   [L, N, H, D]
    layers/w_gate [L, D, F]       layers/w_up [L, D, F]   layers/w_down [L, F, D]

Engines run on another layout, made by :func:`for_options`: ``layers`` becomes a tuple of L
per-layer dicts (``wq [D, N, H]`` and so on), so the unrolled layer loop reads each weight in place; a ``lax.scan`` over stacked
weights had XLA copy each layer's slice out first, doubling decode's weight traffic. With
``EngineOptions(qkv="fused")`` the projections that read the same input become one matmul each:
``wqkv [D, (N+2K)*H]`` and ``w_gate_up [D, 2F]`` (XLA otherwise merges gate and up itself for
small models by concatenating the two weights on every call), made from the same values so both
forms compute the same function. With ``mlp="epilogue"`` too, gate and up are interleaved in
blocks instead (``w_gate_up_il [D, 2F]``, ``engines.swiglu_gemm``), for the GEMM that applies
SwiGLU before its store.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from spectrace.engines import swiglu_gemm
from spectrace.engines.config import EngineOptions
from spectrace.engines.models import family


def param_shapes(cfg) -> dict:
    """The separate-QKV layout's shapes, as a pytree of tuples (what checkpoints are checked against)."""
    return family(cfg).param_shapes(cfg)


def _fan_in(name: str, shape: tuple) -> int | None:
    """Input width of a weight (scales its init so activations stay O(1)); None for norms/embeddings."""
    if name in ("wq", "wk", "wv", "w_gate", "w_up", "w_down"):
        return shape[1]
    if name == "wo":
        return shape[1] * shape[2]
    if name == "lm_head":
        return shape[0]
    return None


def _flat(shapes: dict, prefix: str = ""):
    for key, value in shapes.items():
        if isinstance(value, dict):
            yield from _flat(value, prefix + key + "/")
        else:
            yield prefix + key, key, value


def _unflat(items: dict) -> dict:
    out: dict = {}
    for path, value in items.items():
        *parents, leaf = path.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def init_params_numpy(cfg, seed: int) -> dict:
    """Seeded random float32 weights on the host (numpy's PCG64: the same bytes on every platform).

    For small models written to disk (the embedded default pair, the reference-test models):
    embeddings ~ N(0, s²) (s = the family's ``embed_std``: 1 for Llama, 1/sqrt(dim) for Gemma,
    which scales them up by sqrt(dim)), projections ~ N(0, 1/fan_in), norm weights ~
    ``NORM_CENTER`` + N(0, 0.1²) (1 + N for Llama's ``w * x``, N for Gemma's ``(1 + w) * x``) so
    that a forgotten or misplaced norm weight changes the logits.
    """
    rng = np.random.default_rng(seed)
    fam = family(cfg)
    out = {}
    for path, name, shape in _flat(param_shapes(cfg)):
        fan_in = _fan_in(name, shape)
        if name.endswith("norm"):
            value = fam.NORM_CENTER + 0.1 * rng.standard_normal(shape)
        elif fan_in is None:
            value = rng.standard_normal(shape) * fam.embed_std(cfg)
        else:
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        out[path] = value.astype(np.float32)
    return _unflat(out)


def init_params(cfg, seed: int, dtype, device) -> dict:
    """Seeded random weights generated *on the device* in ``dtype`` (8B of bf16 never touches the host).

    Same distributions as :func:`init_params_numpy` but from ``jax.random`` (different values).
    """
    flat = list(_flat(param_shapes(cfg)))
    fam = family(cfg)

    def make():
        keys = jax.random.split(jax.random.key(seed), len(flat))
        out = {}
        for key, (path, name, shape) in zip(keys, flat):
            fan_in = _fan_in(name, shape)
            if name.endswith("norm"):
                value = fam.NORM_CENTER + 0.1 * jax.random.normal(key, shape, jnp.float32)
                out[path] = value.astype(dtype)
                continue
            value = jax.random.normal(key, shape, dtype)
            std = fam.embed_std(cfg) if fan_in is None else 1.0 / np.sqrt(fan_in)
            out[path] = value if std == 1.0 else value * jnp.asarray(std, dtype)
        return _unflat(out)

    # ``device`` may be a tree of shardings (engines.sharding.stacked_shardings): a tensor-parallel
    # engine generates each device's slice where it lives (jax.random is partitionable: same values).
    sharding = device if isinstance(device, (jax.sharding.Sharding, dict)) else \
        jax.sharding.SingleDeviceSharding(device)
    return jax.jit(make, out_shardings=sharding)()


def for_options(params: dict, cfg, opts: EngineOptions) -> dict:
    """The engine's form of ``params``: per-layer weights, projections fused or separate as ``opts.qkv`` asks.

    Takes the stacked layout or an engine's own params (then only the fusion may change). Builds
    new arrays in one compiled program and leaves the input untouched; the caller should drop
    the input (for 8B, both forms together are 32 GB).
    """
    layers = params["layers"]
    if isinstance(layers, dict):  # stacked [L, ...]
        split = lambda st: tuple({name: w[l] for name, w in st.items()} for l in range(cfg.n_layers))
    else:
        split = tuple
    convert = jax.jit(lambda ls: tuple(_projections(lp, cfg, opts) for lp in split(ls)))
    return {**params, "layers": convert(layers)}


def _projections(lp: dict, cfg, opts: EngineOptions) -> dict:
    """One layer's weights with Q|K|V and gate|up fused (``qkv="fused"``; gate|up interleaved with
    ``mlp="epilogue"``) or apart (``separate``)."""
    lp = dict(lp)
    N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    interleaved = opts.mlp == "epilogue" and cfg.ffn_dim % swiglu_gemm.BLOCK == 0  # else no kernel tiles it
    fused_mlp = "w_gate_up_il" if interleaved else "w_gate_up"
    if opts.qkv == "fused" and "wqkv" in lp and fused_mlp in lp:
        return lp
    if "wqkv" in lp:  # back to separate weights first (then fused again, the other way, if asked)
        wqkv = lp.pop("wqkv")                                                      # [D, (N+2K)*H]
        D = wqkv.shape[0]
        lp["wq"] = wqkv[:, : N * H].reshape(D, N, H)
        lp["wk"] = wqkv[:, N * H: (N + K) * H].reshape(D, K, H)
        lp["wv"] = wqkv[:, (N + K) * H:].reshape(D, K, H)
        if "w_gate_up" in lp:
            w_gate_up = lp.pop("w_gate_up")                                        # [D, 2F]
            F = w_gate_up.shape[1] // 2
            lp["w_gate"], lp["w_up"] = w_gate_up[:, :F], w_gate_up[:, F:]
        else:
            lp["w_gate"], lp["w_up"] = swiglu_gemm.split_gate_up(lp.pop("w_gate_up_il"))  # [D, F] x 2
    if opts.qkv == "fused":
        wq, wk, wv = lp.pop("wq"), lp.pop("wk"), lp.pop("wv")                      # [D, N|K, H]
        D = wq.shape[0]
        lp["wqkv"] = jnp.concatenate([wq.reshape(D, N * H), wk.reshape(D, K * H), wv.reshape(D, K * H)], -1)
        gate, up = lp.pop("w_gate"), lp.pop("w_up")                                # [D, F] x 2
        lp[fused_mlp] = (swiglu_gemm.interleave(gate, up) if interleaved
                         else jnp.concatenate([gate, up], -1))                     # [D, 2F]
    return lp


def weight_bytes(params: dict) -> int:
    """Bytes of all weights (decode reads each once per token: the memory-bandwidth floor)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))
