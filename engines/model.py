"""The Llama forward pass in plain JAX functions: RMSNorm, RoPE (incl. llama3 scaling), GQA, SwiGLU.

Attention masks by *position id*, never by slot: a key is visible to a query when
``0 <= key_pos <= query_pos``. Padding carries position -1, so it is invisible as a key, and a
pruned prompt (gapped positions) attends exactly as the full prompt would among the kept tokens.

Axis letters (see STYLE.md): B batch, T query positions, S key positions (cache slots), L layers,
N query heads, K KV heads, H head dim, D model dim, F MLP dim, V vocab; plus G = N // K, the
query heads sharing one KV head.

The ``*_jit`` functions at the end bind configs and options as static arguments and donate the
cache. No tracer calls happen here (they would fire at trace time); device work is labelled with
``jax.named_scope`` so XPlane profiles read by phase.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from engines.cache import KVCache
from engines.config import EngineOptions, LlamaConfig


def _precision(x):
    # float32 runs (CPU, tests) must match PyTorch to 1e-4: no TF32/bf16 passes on any backend.
    return lax.Precision.HIGHEST if x.dtype == jnp.float32 else None


def _einsum(spec, a, b, out=None):
    return jnp.einsum(spec, a, b, precision=_precision(a), preferred_element_type=out)


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """Inverse frequencies [H/2], float32, computed exactly as Hugging Face does (incl. llama3)."""
    H = cfg.head_dim
    inv = (1.0 / (cfg.rope_theta ** (np.arange(0, H, 2, dtype=np.int64).astype(np.float32) / H))).astype(np.float32)
    s = cfg.rope_scaling
    if s is None:
        return inv
    if s.rope_type == "linear":
        return (inv / np.float32(s.factor)).astype(np.float32)
    low_wavelen = s.original_max_position / s.low_freq_factor
    high_wavelen = s.original_max_position / s.high_freq_factor
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x, positions, inv_freq):
    """Rotate x [B, T, M, H] (M heads) by its position ids [B, T] (HF's rotate-half layout)."""
    angles = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]   # [B, T, H/2]
    cos = jnp.cos(jnp.concatenate([angles, angles], -1))[:, :, None, :]             # [B, T, 1, H]
    sin = jnp.sin(jnp.concatenate([angles, angles], -1))[:, :, None, :]             # [B, T, 1, H]
    xf = x.astype(jnp.float32)                                                     # [B, T, M, H]
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], -1)               # [B, T, M, H]
    return (xf * cos + rotated * sin).astype(x.dtype)                              # [B, T, M, H]


def rms_norm(x, weight, eps):
    """x [..., D] normalised in float32, cast back, then scaled (HF's order of operations)."""
    xf = x.astype(jnp.float32)                                                     # [..., D]
    normed = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)       # [..., D]
    return weight * normed.astype(x.dtype)                                         # [..., D]


def project_qkv(lp, x, positions, cfg: LlamaConfig, opts: EngineOptions):
    """Post-RoPE queries [B, T, N, H] and keys [B, T, K, H], and values [B, T, K, H]."""
    B, T, _ = x.shape
    N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    if opts.qkv == "fused":
        qkv = _einsum("BTD,DE->BTE", x, lp["wqkv"])                                # [B, T, (N+2K)*H]
        q = qkv[..., : N * H].reshape(B, T, N, H)                                  # [B, T, N, H]
        k = qkv[..., N * H: (N + K) * H].reshape(B, T, K, H)                       # [B, T, K, H]
        v = qkv[..., (N + K) * H:].reshape(B, T, K, H)                             # [B, T, K, H]
    else:
        q = _einsum("BTD,DNH->BTNH", x, lp["wq"])                                  # [B, T, N, H]
        k = _einsum("BTD,DKH->BTKH", x, lp["wk"])                                  # [B, T, K, H]
        v = _einsum("BTD,DKH->BTKH", x, lp["wv"])                                  # [B, T, K, H]
    inv_freq = jnp.asarray(rope_inv_freq(cfg))                                     # [H/2]
    return apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq), v


def _visible(q_pos, k_pos):
    """[B, T, S] mask: key slot holds a real token (pos >= 0) at or before the query's position."""
    return (k_pos[:, None, :] >= 0) & (k_pos[:, None, :] <= q_pos[:, :, None])


def attend(q, k, v, q_pos, k_pos, cfg: LlamaConfig, opts: EngineOptions, kv_len=None):
    """Grouped-query attention of q [B, T, N, H] over k, v [B, S, K, H] -> [B, T, N, H].

    Scores and softmax are float32. A fully masked row (a padding query) softmaxes over the
    finite fill value and yields a harmless average instead of NaN. ``kv_len`` (int32 scalar,
    optional): slots at or past it are empty, so flash attention can skip them.
    """
    B, T, N, H = q.shape
    K, G = cfg.n_kv_heads, cfg.q_per_kv
    fill = jnp.finfo(jnp.float32).min
    scale = jnp.float32(H ** -0.5)

    def one_block(qb, qp):                                                         # qb [B, T', N, H], qp [B, T']
        t = qb.shape[1]
        qg = qb.reshape(B, t, K, G, H)                                             # [B, T, K, G, H]
        scores = _einsum("BTKGH,BSKH->BKGTS", qg, k, jnp.float32) * scale          # [B, K, G, T, S]
        scores = jnp.where(_visible(qp, k_pos)[:, None, None], scores, fill)       # [B, K, G, T, S]
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)                    # [B, K, G, T, S]
        out = _einsum("BKGTS,BSKH->BTKGH", probs, v)                               # [B, T, K, G, H]
        return out.reshape(B, t, N, H)                                             # [B, T, N, H]

    with jax.named_scope("attention"):
        if opts.attention == "batched":
            return one_block(q, q_pos)
        if opts.attention == "dot_product":  # the default
            # jax.nn.dot_product_attention: cuDNN flash attention on GPU in bf16/fp16 (the [T, S]
            # scores never reach HBM), XLA elsewhere. The boolean mask becomes a finite bias, so
            # a fully masked padding row stays finite as above.
            fused = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
            lengths = None if kv_len is None else jnp.full((B,), kv_len, jnp.int32)            # [B]
            exact = jax.default_matmul_precision("highest") if q.dtype == jnp.float32 else contextlib.nullcontext()
            with exact:
                return jax.nn.dot_product_attention(q, k, v, mask=_visible(q_pos, k_pos)[:, None],
                                                    key_value_seq_lengths=lengths,
                                                    implementation="cudnn" if fused else "xla")
        # Seed 003's baseline: one query row at a time, mapped over T.
        per_row = jax.vmap(lambda qr, pr: one_block(qr[:, None], pr[:, None])[:, 0],
                           in_axes=(1, 1), out_axes=1)
        return per_row(q, q_pos)                                                   # [B, T, N, H]


def mlp(lp, x):
    """SwiGLU: down(silu(gate(x)) * up(x)), x [B, T, D] -> [B, T, D]."""
    with jax.named_scope("mlp"):
        gate = _einsum("BTD,DF->BTF", x, lp["w_gate"])                             # [B, T, F]
        up = _einsum("BTD,DF->BTF", x, lp["w_up"])                                 # [B, T, F]
        return _einsum("BTF,FD->BTD", jax.nn.silu(gate) * up, lp["w_down"])        # [B, T, D]


def _out_proj(lp, attn):
    return _einsum("BTNH,NHD->BTD", attn, lp["wo"])                                # [B, T, D]


def logits_of(params, x, cfg: LlamaConfig):
    """Final norm and LM head: x [..., D] -> float32 logits [..., V]."""
    with jax.named_scope("lm_head"):
        h = rms_norm(x, params["final_norm"], cfg.rms_eps)                         # [..., D]
        if cfg.tie_embeddings:
            return _einsum("...D,VD->...V", h, params["embed"], jnp.float32)        # [..., V]
        return _einsum("...D,DV->...V", h, params["lm_head"], jnp.float32)         # [..., V]


def chunk_forward(params, cache: KVCache, tokens, positions, query_row, *, cfg: LlamaConfig,
                  opts: EngineOptions, return_queries: bool):
    """One prefill chunk (or one decode step, T = 1) through every layer, writing the KV cache.

    Args:
      tokens, positions: [B, T] int32; padding has position -1 and must sit at the end.
      query_row: int32 scalar, the row of the chunk's last real token: its logits are returned
        and (with ``return_queries``) its post-RoPE query in every layer.

    The chunk's keys/values go to cache slots ``[length, length + T)``; ``length`` then advances
    by the number of real tokens, so padding slots are overwritten by whatever comes next.

    Returns ``(logits [B, V] float32, cache, q_rows [L, B, N, H] float32 or None)``.
    """
    with jax.named_scope("prefill.chunk"):
        return _cached_forward(params, cache, tokens, positions, query_row, cfg=cfg, opts=opts,
                               return_queries=return_queries)


def _cached_forward(params, cache: KVCache, tokens, positions, query_row, *, cfg: LlamaConfig,
                    opts: EngineOptions, return_queries: bool):
    start = cache.length
    k_pos = lax.dynamic_update_slice(cache.pos, positions, (0, start))             # [B, S]
    kv_len = jnp.minimum(start + tokens.shape[1], cache.pos.shape[1])              # slots in use
    x = jnp.take(params["embed"], tokens, axis=0)                                  # [B, T, D]

    def layer(carry, xs):
        x, ck, cv = carry                                                          # ck, cv [L, B, S, K, H]
        lp, li = xs
        q, k, v = project_qkv(lp, rms_norm(x, lp["attn_norm"], cfg.rms_eps), positions, cfg, opts)
        ck = lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), (li, 0, start, 0, 0))
        cv = lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), (li, 0, start, 0, 0))
        attn = attend(q, ck[li], cv[li], positions, k_pos, cfg, opts, kv_len)      # [B, T, N, H]
        x = x + _out_proj(lp, attn)                                                # [B, T, D]
        x = x + mlp(lp, rms_norm(x, lp["mlp_norm"], cfg.rms_eps))                  # [B, T, D]
        q_row = None
        if return_queries:
            q_row = lax.dynamic_index_in_dim(q, query_row, 1, keepdims=False).astype(jnp.float32)  # [B, N, H]
        return (x, ck, cv), q_row

    layer_ids = jnp.arange(cfg.n_layers, dtype=jnp.int32)                          # [L]
    (x, ck, cv), q_rows = lax.scan(layer, (x, cache.k, cache.v), (params["layers"], layer_ids))
    x_last = lax.dynamic_index_in_dim(x, query_row, 1, keepdims=False)             # [B, D]
    logits = logits_of(params, x_last, cfg)                                        # [B, V]
    n_real = jnp.sum(positions[0] >= 0).astype(jnp.int32)
    return logits, KVCache(ck, cv, k_pos, start + n_real), q_rows


def forward(params, tokens, positions, *, cfg: LlamaConfig, opts: EngineOptions):
    """Full forward without a cache: tokens, positions [B, T] -> float32 logits [B, T, V].

    The reference the cached paths are tested against (teacher forcing, pruned prompts).
    """
    x = jnp.take(params["embed"], tokens, axis=0)                                  # [B, T, D]

    def layer(x, lp):
        q, k, v = project_qkv(lp, rms_norm(x, lp["attn_norm"], cfg.rms_eps), positions, cfg, opts)
        x = x + _out_proj(lp, attend(q, k, v, positions, positions, cfg, opts))    # [B, T, D]
        x = x + mlp(lp, rms_norm(x, lp["mlp_norm"], cfg.rms_eps))                  # [B, T, D]
        return x, None

    x, _ = lax.scan(layer, x, params["layers"])                                    # [B, T, D]
    return logits_of(params, x, cfg)                                               # [B, T, V]


def decode_step(params, cache: KVCache, token, position, *, cfg: LlamaConfig, opts: EngineOptions,
                return_queries: bool):
    """Feed token [B] at position [B]; returns (greedy next token [B], cache, q [L, B, N, H] or None)."""
    with jax.named_scope("decode.step"):
        logits, cache, q = _cached_forward(params, cache, token[:, None], position[:, None],
                                           jnp.int32(0), cfg=cfg, opts=opts, return_queries=return_queries)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache, q


def decode_scan(params, cache: KVCache, token, position, *, cfg: LlamaConfig, opts: EngineOptions,
                steps: int, return_queries: bool):
    """``steps`` greedy steps as one ``lax.scan``, starting by feeding token [B] at position [B].

    Returns (tokens [steps, B] (the token after each step), cache, queries [steps, L, B, N, H]
    of the fed tokens, or None).
    """
    def step(carry, _):
        cache, tok, pos = carry
        nxt, cache, q = decode_step(params, cache, tok, pos, cfg=cfg, opts=opts, return_queries=return_queries)
        return (cache, nxt, pos + 1), (nxt, q)

    with jax.named_scope("decode"):
        (cache, _, _), (tokens, queries) = lax.scan(step, (cache, token, position), None, length=steps)
    return tokens, cache, queries


# Compiled forms: config/options static (hashable dataclasses), the cache donated so XLA updates it
# in place. One compilation per (config, options, chunk length).
chunk_forward_jit = jax.jit(chunk_forward, static_argnames=("cfg", "opts", "return_queries"),
                            donate_argnames=("cache",))
decode_step_jit = jax.jit(decode_step, static_argnames=("cfg", "opts", "return_queries"),
                          donate_argnames=("cache",))
decode_scan_jit = jax.jit(decode_scan, static_argnames=("cfg", "opts", "steps", "return_queries"),
                          donate_argnames=("cache",))
forward_jit = jax.jit(forward, static_argnames=("cfg", "opts"))
