"""The parameter pytree of a Llama model: its layout, random initialisation, and the fused-QKV form.

Layer weights are stacked along a leading L axis so the forward pass is one ``lax.scan`` over
layers (one layer compiled, not L). Weights are stored input-axis first (``x @ w``), heads split
out, so einsum strings read directly::

    embed       [V, D]            final_norm [D]          lm_head [D, V]  (absent when tied)
    layers/attn_norm [L, D]       layers/mlp_norm [L, D]
    layers/wq   [L, D, N, H]      layers/wk [L, D, K, H]  layers/wv [L, D, K, H]
    layers/wo   [L, N, H, D]
    layers/w_gate [L, D, F]       layers/w_up [L, D, F]   layers/w_down [L, F, D]

With ``EngineOptions(qkv="fused")`` the three projections become one
``layers/wqkv [L, D, (N+2K)*H]`` (:func:`for_options`), made from the same values so both forms
compute the same function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from engines.config import EngineOptions, LlamaConfig


def param_shapes(cfg: LlamaConfig) -> dict:
    """The separate-QKV layout's shapes, as a pytree of tuples (what checkpoints are checked against)."""
    L, D, N, K, H, F, V = (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                           cfg.ffn_dim, cfg.vocab_size)
    shapes = {
        "embed": (V, D),
        "final_norm": (D,),
        "layers": {
            "attn_norm": (L, D), "mlp_norm": (L, D),
            "wq": (L, D, N, H), "wk": (L, D, K, H), "wv": (L, D, K, H), "wo": (L, N, H, D),
            "w_gate": (L, D, F), "w_up": (L, D, F), "w_down": (L, F, D),
        },
    }
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, V)
    return shapes


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


def init_params_numpy(cfg: LlamaConfig, seed: int) -> dict:
    """Seeded random float32 weights on the host (numpy's PCG64: the same bytes on every platform).

    For small models written to disk (the embedded default pair, the reference-test models):
    embeddings ~ N(0, 1), projections ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1²) so that a
    forgotten or misplaced norm weight changes the logits.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for path, name, shape in _flat(param_shapes(cfg)):
        fan_in = _fan_in(name, shape)
        if name.endswith("norm"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif fan_in is None:
            value = rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        out[path] = value.astype(np.float32)
    return _unflat(out)


def init_params(cfg: LlamaConfig, seed: int, dtype, device) -> dict:
    """Seeded random weights generated *on the device* in ``dtype`` (8B of bf16 never touches the host).

    Same distributions as :func:`init_params_numpy` but from ``jax.random`` (different values).
    """
    flat = list(_flat(param_shapes(cfg)))

    def make():
        keys = jax.random.split(jax.random.key(seed), len(flat))
        out = {}
        for key, (path, name, shape) in zip(keys, flat):
            fan_in = _fan_in(name, shape)
            if name.endswith("norm"):
                value = 1.0 + 0.1 * jax.random.normal(key, shape, jnp.float32)
                out[path] = value.astype(dtype)
                continue
            value = jax.random.normal(key, shape, dtype)
            out[path] = value if fan_in is None else value * jnp.asarray(1.0 / np.sqrt(fan_in), dtype)
        return _unflat(out)

    sharding = jax.sharding.SingleDeviceSharding(device)
    return jax.jit(make, out_shardings=sharding)()


def for_options(params: dict, cfg: LlamaConfig, opts: EngineOptions) -> dict:
    """Convert between the separate and fused QKV layouts as ``opts.qkv`` asks (no-op if already so).

    The old arrays are dropped from the returned tree; the caller should not keep the input
    around (for 8B, two copies of the attention weights would be 1.6 GB more).
    """
    layers = dict(params["layers"])
    L, D, N, K, H = cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    if opts.qkv == "fused" and "wqkv" not in layers:
        wq, wk, wv = layers.pop("wq"), layers.pop("wk"), layers.pop("wv")
        layers["wqkv"] = jax.jit(lambda a, b, c: jnp.concatenate(
            [a.reshape(L, D, N * H), b.reshape(L, D, K * H), c.reshape(L, D, K * H)], axis=-1))(wq, wk, wv)
    elif opts.qkv == "separate" and "wqkv" in layers:
        wqkv = layers.pop("wqkv")                                        # [L, D, (N+2K)*H]
        layers["wq"] = wqkv[..., : N * H].reshape(L, D, N, H)
        layers["wk"] = wqkv[..., N * H: (N + K) * H].reshape(L, D, K, H)
        layers["wv"] = wqkv[..., (N + K) * H:].reshape(L, D, K, H)
    return {**params, "layers": layers}


def weight_bytes(params: dict) -> int:
    """Bytes of all weights (decode reads each once per token: the memory-bandwidth floor)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))
