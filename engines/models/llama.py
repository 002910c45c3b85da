"""The Llama family: RMSNorm, RoPE (incl. llama3 scaling), GQA, SwiGLU; its weights and HF tensor names.

A family module gives the generic driver (:mod:`spectrace.engines.model`) the pieces of one
layer and the ends of the network; the driver owns the cache, the chunk loop and decoding.
Every family module has the same functions: ``param_shapes``, ``hf_layout``, ``embed``,
``rope``, ``attn_spec``, ``qkv``, ``finish``, ``logits``, and the init constants
``NORM_CENTER`` / ``embed_std``; optionally ``qkv_row`` (a decode step's QKV before RoPE, for
``engines.rope_cache``). ``qkv`` returns the residual stream with q, k, v; ``finish``
may hand the next layer an :class:`~spectrace.engines.fused_norm.Residual` (the stream and a branch
not yet added): the driver only selects its rows (``fused_norm.rows``); the family's ``qkv`` and
``logits`` add it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spectrace.engines import fused_norm
from spectrace.engines.attention import FULL
from spectrace.engines.config import EngineOptions, LlamaConfig
from spectrace.engines.fused_norm import Residual
from spectrace.engines.models import common

NORM_CENTER = 1.0  # norm weights are the scale itself: random init 1 + N(0, 0.1²)


def embed_std(cfg: LlamaConfig) -> float:
    return 1.0


def param_shapes(cfg: LlamaConfig) -> dict:
    """The stacked separate-QKV layout's shapes (what checkpoints are checked against)."""
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


def projection_layout(cfg, p: str = "model.layers.{i}.") -> list:
    """(our path, HF name, HF shape, HF -> ours) of the projections and MLP, shared with Gemma."""
    D, N, K, H, F = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim
    return [
        ("layers/wq", p + "self_attn.q_proj.weight", (N * H, D), lambda w: w.T.reshape(D, N, H)),
        ("layers/wk", p + "self_attn.k_proj.weight", (K * H, D), lambda w: w.T.reshape(D, K, H)),
        ("layers/wv", p + "self_attn.v_proj.weight", (K * H, D), lambda w: w.T.reshape(D, K, H)),
        ("layers/wo", p + "self_attn.o_proj.weight", (D, N * H), lambda w: w.T.reshape(N, H, D)),
        ("layers/w_gate", p + "mlp.gate_proj.weight", (F, D), lambda w: w.T),
        ("layers/w_up", p + "mlp.up_proj.weight", (F, D), lambda w: w.T),
        ("layers/w_down", p + "mlp.down_proj.weight", (D, F), lambda w: w.T),
    ]


def hf_layout(cfg: LlamaConfig) -> list:
    """(our leaf path, HF name template, HF shape, transform HF -> ours) for every weight."""
    D, V = cfg.dim, cfg.vocab_size
    p = "model.layers.{i}."
    rows = [
        ("embed", "model.embed_tokens.weight", (V, D), lambda w: w),
        ("final_norm", "model.norm.weight", (D,), lambda w: w),
        ("layers/attn_norm", p + "input_layernorm.weight", (D,), lambda w: w),
        ("layers/mlp_norm", p + "post_attention_layernorm.weight", (D,), lambda w: w),
        *projection_layout(cfg, p),
    ]
    if not cfg.tie_embeddings:
        rows.append(("lm_head", "lm_head.weight", (V, D), lambda w: w.T))
    return rows


def embed(params, tokens, cfg: LlamaConfig):
    return jnp.take(params["embed"], tokens, axis=0)                               # [B, T, D]


def rope(positions, cfg: LlamaConfig) -> list:
    """One (cos, sin) pair [B, T, 1, H] for every layer (all share one table)."""
    tables = common.rope_tables(positions, common.rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
    return [tables] * cfg.n_layers


def attn_spec(cfg: LlamaConfig, i: int):
    return FULL


def qkv(lp, x, rope_i, cfg: LlamaConfig, opts: EngineOptions):
    """The stream [B, T, D] (the previous layer's residual added here, with the norm: one kernel on
    GPU, ``engines.fused_norm``), post-RoPE queries [B, T, N, H] and keys [B, T, K, H], and values
    [B, T, K, H]. ``x``: the embeddings [B, T, D] or the previous layer's :class:`Residual`."""
    x, h = fused_norm.add_rms_norm(x, lp["attn_norm"], cfg.rms_eps)               # [B, T, D] x 2
    q, k, v = common.project_qkv(lp, h, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, opts.qkv == "fused")
    return x, common.apply_rope(q, rope_i), common.apply_rope(k, rope_i), v


def qkv_row(lp, x, cfg: LlamaConfig):
    """A decode step's stream [B, 1, D] and fused QKV projection [B, R, (N+2K)*H] before RoPE, for
    ``engines.rope_cache`` (RoPE and the cache write in one kernel). Needs the fused weight."""
    x, h = fused_norm.add_rms_norm(x, lp["attn_norm"], cfg.rms_eps,
                                   copies=common.row_copies(lp["wqkv"]))         # [B, 1, D], [B, R, D]
    return x, common.fused_qkv(lp, h)


def finish(lp, x, attn, cfg: LlamaConfig):
    """Output projection, residual, SwiGLU MLP: x [B, T, D] -> the stream and the MLP's output not
    yet added (a :class:`Residual`; the next norm adds it). ``attn`` [B, T or 2, N, H]: a decode
    step's row may come doubled, and the projection's doubled row goes to the norm as it is."""
    x, h = fused_norm.add_rms_norm(Residual(x, common.out_proj_rows(lp, attn)), lp["mlp_norm"], cfg.rms_eps)
    return Residual(x, common.gated_mlp(lp, h, jax.nn.silu))                       # [B, T, D] x 2


def logits(params, x, cfg: LlamaConfig):
    """Final norm and LM head: x [..., D] (or the last layer's :class:`Residual`) -> float32 logits [..., V]."""
    with jax.named_scope("lm_head"):
        _, h = fused_norm.add_rms_norm(x, params["final_norm"], cfg.rms_eps)      # [..., D]
        if cfg.tie_embeddings:
            return common.einsum("...D,VD->...V", h, params["embed"], jnp.float32)  # [..., V]
        return common.einsum("...D,DV->...V", h, params["lm_head"], jnp.float32)   # [..., V]
