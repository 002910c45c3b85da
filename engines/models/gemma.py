"""The Gemma family (Gemma 2, Gemma 3 text) as transformers computes it, in plain JAX functions.

Per layer: ``h = norm(x)``; q, k, v; Gemma 3 normalises q and k over the head dim (QK-norm)
before RoPE; RoPE from the layer type's table (full: ``rope_theta`` and any scaling; sliding:
``rope_local_theta``); attention scaled by ``query_pre_attn_scalar ** -0.5``, Gemma 2 soft-caps
its scores, sliding layers see ``key_pos > query_pos - sliding_window`` (by position ids: a
pruned prompt keeps its original window); ``x += post_attn_norm(o_proj(attn))``;
``x += post_mlp_norm(down(gelu_tanh(gate(h)) * up(h)))`` with ``h = mlp_norm(x)``.
Every norm is ``x * rsqrt(mean(x²) + eps) * (1 + w)`` in float32, cast back afterwards;
embeddings are scaled by ``sqrt(dim)`` cast to the weight dtype; logits read the tied embedding
and Gemma 2 soft-caps them. The family interface is :mod:`spectrace.engines.models.llama`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from spectrace.engines.attention import AttnSpec
from spectrace.engines.config import EngineOptions
from spectrace.engines.models import common
from spectrace.engines.models.gemma_config import FULL, GemmaConfig
from spectrace.engines.models.llama import projection_layout

NORM_CENTER = 0.0  # the scale is 1 + w: random init w ~ N(0, 0.1²)


def embed_std(cfg: GemmaConfig) -> float:
    # Times sqrt(dim) at the input: the residual stream starts at unit RMS, as in trained Gemmas.
    return float(cfg.dim) ** -0.5


def param_shapes(cfg: GemmaConfig) -> dict:
    L, D, N, K, H, F, V = (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                           cfg.ffn_dim, cfg.vocab_size)
    layers = {
        "attn_norm": (L, D), "post_attn_norm": (L, D), "mlp_norm": (L, D), "post_mlp_norm": (L, D),
        "wq": (L, D, N, H), "wk": (L, D, K, H), "wv": (L, D, K, H), "wo": (L, N, H, D),
        "w_gate": (L, D, F), "w_up": (L, D, F), "w_down": (L, F, D),
    }
    if cfg.qk_norm:
        layers.update(q_norm=(L, H), k_norm=(L, H))
    shapes = {"embed": (V, D), "final_norm": (D,), "layers": layers}
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, V)
    return shapes


def hf_layout(cfg: GemmaConfig) -> list:
    D, H, V = cfg.dim, cfg.head_dim, cfg.vocab_size
    p = "model.layers.{i}."
    same = lambda w: w  # noqa: E731
    rows = [
        ("embed", "model.embed_tokens.weight", (V, D), same),
        ("final_norm", "model.norm.weight", (D,), same),
        ("layers/attn_norm", p + "input_layernorm.weight", (D,), same),
        ("layers/post_attn_norm", p + "post_attention_layernorm.weight", (D,), same),
        ("layers/mlp_norm", p + "pre_feedforward_layernorm.weight", (D,), same),
        ("layers/post_mlp_norm", p + "post_feedforward_layernorm.weight", (D,), same),
        *projection_layout(cfg, p),
    ]
    if cfg.qk_norm:
        rows += [("layers/q_norm", p + "self_attn.q_norm.weight", (H,), same),
                 ("layers/k_norm", p + "self_attn.k_norm.weight", (H,), same)]
    if not cfg.tie_embeddings:
        rows.append(("lm_head", "lm_head.weight", (V, D), lambda w: w.T))
    return rows


def rms_norm(x, weight, eps):
    """x [..., M] * rsqrt(mean(x²) + eps) * (1 + w), all in float32, then cast to x's dtype
    (Gemma's order: Llama casts before scaling)."""
    xf = x.astype(jnp.float32)
    normed = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (normed * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)


def embed(params, tokens, cfg: GemmaConfig):
    table = params["embed"]
    scale = jnp.asarray(np.float32(cfg.dim ** 0.5)).astype(table.dtype)           # bf16: 33.94 -> 34.0
    return jnp.take(table, tokens, axis=0) * scale                                 # [B, T, D]


def rope(positions, cfg: GemmaConfig) -> list:
    """Per layer, the (cos, sin) [B, T, 1, H] of its type: full layers ``rope_theta`` (+ scaling),
    sliding ones ``rope_local_theta``; each table computed once."""
    full = common.rope_tables(positions, common.rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
    if cfg.rope_local_theta == cfg.rope_theta and cfg.rope_scaling is None:
        local = full
    else:
        local = common.rope_tables(positions, common.rope_inv_freq(cfg.head_dim, cfg.rope_local_theta))
    return [full if t == FULL else local for t in cfg.layer_types]


def attn_spec(cfg: GemmaConfig, i: int) -> AttnSpec:
    return AttnSpec(scale=float(cfg.query_pre_attn_scalar) ** -0.5, softcap=cfg.attn_softcap,
                    window=cfg.layer_windows[i])


def qkv(lp, x, rope_i, cfg: GemmaConfig, opts: EngineOptions):
    """The stream x [B, T, D] as given, post-RoPE queries [B, T, N, H] and keys [B, T, K, H]
    (QK-normed first on Gemma 3), values [B, T, K, H]."""
    h = rms_norm(x, lp["attn_norm"], cfg.rms_eps)
    q, k, v = common.project_qkv(lp, h, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, opts.qkv == "fused")
    if cfg.qk_norm:
        q = rms_norm(q, lp["q_norm"], cfg.rms_eps)                                 # over H
        k = rms_norm(k, lp["k_norm"], cfg.rms_eps)
    return x, common.apply_rope(q, rope_i), common.apply_rope(k, rope_i), v


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


def finish(lp, x, attn, cfg: GemmaConfig):
    """Post-attention norm and residual, then the normed GeGLU MLP and residual: [B, T, D] -> [B, T, D]."""
    x = x + rms_norm(common.out_proj(lp, attn, x.shape[1]), lp["post_attn_norm"], cfg.rms_eps)
    m = common.gated_mlp(lp, rms_norm(x, lp["mlp_norm"], cfg.rms_eps), _gelu_tanh)
    return x + rms_norm(m, lp["post_mlp_norm"], cfg.rms_eps)


def logits(params, x, cfg: GemmaConfig):
    """Final norm, tied LM head, Gemma 2's soft-cap: x [..., D] -> float32 logits [..., V]."""
    with jax.named_scope("lm_head"):
        h = rms_norm(x, params["final_norm"], cfg.rms_eps)
        if cfg.tie_embeddings:
            out = common.einsum("...D,VD->...V", h, params["embed"], jnp.float32)
        else:
            out = common.einsum("...D,DV->...V", h, params["lm_head"], jnp.float32)
        if cfg.final_softcap is not None:
            out = jnp.tanh(out / cfg.final_softcap) * cfg.final_softcap
        return out
