"""The Llama forward pass in plain JAX functions: RMSNorm, RoPE (incl. llama3 scaling), GQA, SwiGLU.

Attention masks by *position id*, never by slot (``engines.attention``): padding carries position
-1 and a pruned prompt keeps its gapped positions. Parameters come in the engine's per-layer form
(``params["layers"]`` a sequence of dicts, see ``engines.params.for_options``) and the KV cache
holds one buffer per layer (``engines.cache``): the layer loop is unrolled in Python so every
weight and cache read is in place.

Axis letters (see STYLE.md): B batch, T query positions, S key positions (cache slots), L layers,
N query heads, K KV heads, H head dim, D model dim, F MLP dim, V vocab; plus G = N // K, the
query heads sharing one KV head.

The ``*_jit`` functions at the end bind configs and options as static arguments and donate the
cache. No tracer calls happen here (they would fire at trace time); device work is labelled with
``jax.named_scope`` so XPlane profiles read by phase.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from spectrace.engines import attention
from spectrace.engines.cache import KVCache
from spectrace.engines.config import EngineOptions, LlamaConfig


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


def rope_tables(positions, cfg: LlamaConfig):
    """cos, sin [B, T, 1, H] float32 for position ids [B, T]; computed once per forward, shared by layers."""
    inv_freq = jnp.asarray(rope_inv_freq(cfg))                                     # [H/2]
    angles = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]   # [B, T, H/2]
    angles = jnp.concatenate([angles, angles], -1)[:, :, None, :]                  # [B, T, 1, H]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, rope):
    """Rotate x [B, T, M, H] (M heads) by ``rope_tables`` (HF's rotate-half layout)."""
    cos, sin = rope                                                                # [B, T, 1, H]
    xf = x.astype(jnp.float32)                                                     # [B, T, M, H]
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], -1)               # [B, T, M, H]
    return (xf * cos + rotated * sin).astype(x.dtype)                              # [B, T, M, H]


def rms_norm(x, weight, eps):
    """x [..., D] normalised in float32, cast back, then scaled (HF's order of operations)."""
    xf = x.astype(jnp.float32)                                                     # [..., D]
    normed = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)       # [..., D]
    return weight * normed.astype(x.dtype)                                         # [..., D]


# XLA's GPU simplifier turns a dot with one row and a weight of fewer than ~10M elements into a
# multiply + reduce (GpuAlgebraicSimplifier: "too small for rewriting" as a GEMM). In a decode
# step of Llama-3.2-1B that hits the fused QKV (2048 x 3072) and output (2048 x 2048)
# projections, and those reduces streamed the weights at ~1 TB/s of the H100's 3.35 (XPlane of
# scripts/probe_lookahead.py). Two identical rows keep the dot a GEMM: the draft's 7 look-ahead
# steps went 15.6 -> 13.2 ms (scripts/probe_spans.py, H100). Larger weights (8B) are GEMMs already.
_GEMM_MIN_WEIGHT = 10_000_000
_GEMM_ROWS_BACKENDS = ("gpu",)  # where the rewrite happens (a test adds "cpu" to run this path)


def _gemm_rows(x, weight):
    """x [B, T, ...], with its one row doubled (T = 2) where a one-row dot against ``weight`` would
    become a reduce on GPU; take ``[:, :T]`` of the product."""
    if x.shape[1] == 1 and weight.size < _GEMM_MIN_WEIGHT and jax.default_backend() in _GEMM_ROWS_BACKENDS:
        return jnp.concatenate([x, x], axis=1)                                     # [B, 2, ...]
    return x


def project_qkv(lp, x, rope, cfg: LlamaConfig, opts: EngineOptions):
    """Post-RoPE queries [B, T, N, H] and keys [B, T, K, H], and values [B, T, K, H]."""
    B, T, _ = x.shape
    N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    if opts.qkv == "fused":
        qkv = _einsum("BTD,DE->BTE", _gemm_rows(x, lp["wqkv"]), lp["wqkv"])[:, :T]  # [B, T, (N+2K)*H]
        q = qkv[..., : N * H].reshape(B, T, N, H)                                  # [B, T, N, H]
        k = qkv[..., N * H: (N + K) * H].reshape(B, T, K, H)                       # [B, T, K, H]
        v = qkv[..., (N + K) * H:].reshape(B, T, K, H)                             # [B, T, K, H]
    else:
        q = _einsum("BTD,DNH->BTNH", x, lp["wq"])                                  # [B, T, N, H]
        k = _einsum("BTD,DKH->BTKH", x, lp["wk"])                                  # [B, T, K, H]
        v = _einsum("BTD,DKH->BTKH", x, lp["wv"])                                  # [B, T, K, H]
    return apply_rope(q, rope), apply_rope(k, rope), v


def mlp(lp, x):
    """SwiGLU: down(silu(gate(x)) * up(x)), x [B, T, D] -> [B, T, D]."""
    with jax.named_scope("mlp"):
        if "w_gate_up" in lp:
            gate, up = jnp.split(_einsum("BTD,DE->BTE", x, lp["w_gate_up"]), 2, axis=-1)  # [B, T, F] x 2
        else:
            gate = _einsum("BTD,DF->BTF", x, lp["w_gate"])                         # [B, T, F]
            up = _einsum("BTD,DF->BTF", x, lp["w_up"])                             # [B, T, F]
        return _einsum("BTF,FD->BTD", jax.nn.silu(gate) * up, lp["w_down"])        # [B, T, D]


def _out_proj(lp, attn):
    return _einsum("BTNH,NHD->BTD", _gemm_rows(attn, lp["wo"]), lp["wo"])[:, :attn.shape[1]]  # [B, T, D]


def logits_of(params, x, cfg: LlamaConfig):
    """Final norm and LM head: x [..., D] -> float32 logits [..., V]."""
    with jax.named_scope("lm_head"):
        h = rms_norm(x, params["final_norm"], cfg.rms_eps)                         # [..., D]
        if cfg.tie_embeddings:
            return _einsum("...D,VD->...V", h, params["embed"], jnp.float32)        # [..., V]
        return _einsum("...D,DV->...V", h, params["lm_head"], jnp.float32)         # [..., V]


def chunk_forward(params, cache: KVCache, tokens, positions, query_row, *, cfg: LlamaConfig,
                  opts: EngineOptions, return_queries: bool, fresh: bool = False):
    """One prefill chunk (or one decode step, T = 1) through every layer, writing the KV cache.

    Args:
      tokens, positions: [B, T] int32; padding has position -1 and must sit at the end.
      query_row: int32 scalar, the row of the chunk's last real token: its logits are returned
        and (with ``return_queries``) its post-RoPE query in every layer.

    The chunk's keys/values go to cache slots ``[length, length + T)``; ``length`` then advances
    by the number of real tokens, so padding slots are overwritten by whatever comes next.
    ``fresh``: start a new prompt: the chunk goes to slot 0 whatever the cache held (its positions
    are reset to -1 here), and attention skips the cached-prefix part
    (``attention.chunk_causal(prefix=False)``); a separate compilation.

    Returns ``(logits [B, V] float32, cache, q_rows [L, B, N, H] float32 or None)``.
    """
    with jax.named_scope("prefill.chunk"):
        return _cached_forward(params, cache, tokens, positions, query_row, cfg=cfg, opts=opts,
                               return_queries=return_queries, fresh=fresh)


def _cached_forward(params, cache: KVCache, tokens, positions, query_row, *, cfg: LlamaConfig,
                    opts: EngineOptions, return_queries: bool, fresh: bool = False):
    B, T = tokens.shape
    # Fresh: whatever the cache held is dropped here (every slot past this chunk -1), so the
    # engine needs no separate reset program before a new prompt.
    start = jnp.int32(0) if fresh else cache.length
    old_pos = jnp.full_like(cache.pos, -1) if fresh else cache.pos                 # [B, S]
    k_pos = lax.dynamic_update_slice(old_pos, positions, (0, start))               # [B, S]
    rope = rope_tables(positions, cfg)                                             # [B, T, 1, H] x 2
    x = jnp.take(params["embed"], tokens, axis=0)                                  # [B, T, D]
    layers = params["layers"]
    keys, values, q_rows = [], [], []
    # A Python loop, not lax.scan: each layer's weights and cache are buffers of their own, read in
    # place (scanning stacked weights made XLA copy every layer's slice first: 2x the weight reads).
    for i, lp in enumerate(layers):
        q, k, v = project_qkv(lp, rms_norm(x, lp["attn_norm"], cfg.rms_eps), rope, cfg, opts)
        ck = lax.dynamic_update_slice(cache.k[i], k.astype(cache.k[i].dtype), (0, start, 0, 0))  # [B, S, K, H]
        cv = lax.dynamic_update_slice(cache.v[i], v.astype(cache.v[i].dtype), (0, start, 0, 0))  # [B, S, K, H]
        keys.append(ck)
        values.append(cv)
        if return_queries:
            q_rows.append(_row(q, query_row)[:, 0].astype(jnp.float32))          # [B, N, H]
        if i == len(layers) - 1 and T > 1:
            # Past the last layer's keys and values only the returned row matters (its logits):
            # attention, projection and MLP for that one row instead of T.
            x, q, q_pos = _row(x, query_row), _row(q, query_row), _row(positions, query_row)
            attn = attention.masked(q, ck, cv, q_pos, k_pos)                       # [B, 1, N, H]
        else:
            attn = _attend(q, k, v, ck, cv, positions, k_pos, start, opts, fresh)  # [B, T, N, H]
        x = x + _out_proj(lp, attn)                                                # [B, T', D]
        x = x + mlp(lp, rms_norm(x, lp["mlp_norm"], cfg.rms_eps))                  # [B, T', D]
    logits = logits_of(params, x[:, 0], cfg)                                       # [B, V]: the one row left
    n_real = jnp.sum(positions[0] >= 0).astype(jnp.int32)
    q_rows = jnp.stack(q_rows) if return_queries else None                         # [L, B, N, H]
    return logits, KVCache(tuple(keys), tuple(values), k_pos, start + n_real), q_rows


def _row(a, row):
    """Row ``row`` (int32 scalar) of axis 1, kept as an axis of size 1."""
    return lax.dynamic_slice_in_dim(a, row, 1, axis=1)


def _attend(q, k, v, cache_k, cache_v, q_pos, k_pos, start, opts: EngineOptions, fresh: bool):
    """The chunk's queries over the layer's cache (which already holds this chunk)."""
    if opts.attention == "dot_product" and q.shape[1] > 1:
        return attention.chunk_causal(q, k, v, cache_k, cache_v, start, prefix=not fresh)
    # Decode steps (T = 1: one query reads every slot, which is the cost of decode anyway) and
    # seed 003's variants: scores over every slot, masked by position.
    return attention.masked(q, cache_k, cache_v, q_pos, k_pos, per_row=opts.attention == "vmap")


def forward(params, tokens, positions, *, cfg: LlamaConfig, opts: EngineOptions):
    """Full forward without a cache: tokens, positions [B, T] -> float32 logits [B, T, V].

    The reference the cached paths are tested against (teacher forcing, pruned prompts): plain
    position-masked attention, whatever ``opts.attention`` says.
    """
    rope = rope_tables(positions, cfg)                                             # [B, T, 1, H] x 2
    x = jnp.take(params["embed"], tokens, axis=0)                                  # [B, T, D]
    for lp in params["layers"]:
        q, k, v = project_qkv(lp, rms_norm(x, lp["attn_norm"], cfg.rms_eps), rope, cfg, opts)
        x = x + _out_proj(lp, attention.masked(q, k, v, positions, positions))    # [B, T, D]
        x = x + mlp(lp, rms_norm(x, lp["mlp_norm"], cfg.rms_eps))                  # [B, T, D]
    return logits_of(params, x, cfg)                                               # [B, T, V]


def greedy(logits):
    """The greedy token of each row: logits [B, V] -> int32 [B]."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def decode_step(params, cache: KVCache, token, position, *, cfg: LlamaConfig, opts: EngineOptions,
                return_queries: bool):
    """Feed token [B] at position [B]; returns (greedy next token [B], cache, q [L, B, N, H] or None)."""
    with jax.named_scope("decode.step"):
        logits, cache, q = _cached_forward(params, cache, token[:, None], position[:, None],
                                           jnp.int32(0), cfg=cfg, opts=opts, return_queries=return_queries)
    return greedy(logits), cache, q


def decode_scan(params, cache: KVCache, logits, position, *, cfg: LlamaConfig, opts: EngineOptions,
                steps: int, return_queries: bool):
    """Greedy decoding on the device: the argmax of ``logits`` [B, V] (the prefill's last row) is
    the first token, fed at ``position`` [B]; then ``steps`` steps as one ``lax.scan``.

    A device loop, not straight-line code: unrolling the draft's 7 look-ahead steps measured
    1.5x slower on an H100 (28.8 vs 19.2 ms, docs/evidence/h100-session4/bench_lookahead.txt).

    Returns (tokens [steps + 1, B] (the first token, then the token after each step), cache,
    queries [steps, L, B, N, H] of the fed tokens, or None).
    """
    def step(carry, _):
        cache, tok, pos = carry
        nxt, cache, q = decode_step(params, cache, tok, pos, cfg=cfg, opts=opts, return_queries=return_queries)
        return (cache, nxt, pos + 1), (nxt, q)

    first = greedy(logits)                                                         # [B]
    with jax.named_scope("decode"):
        (cache, _, _), (tokens, queries) = lax.scan(step, (cache, first, position), None, length=steps)
    return jnp.concatenate([first[None], tokens], axis=0), cache, queries          # [steps + 1, B]


# Compiled forms: config/options static (hashable dataclasses), the cache donated so XLA updates it
# in place. One compilation per (config, options, chunk length).
chunk_forward_jit = jax.jit(chunk_forward, static_argnames=("cfg", "opts", "return_queries", "fresh"),
                            donate_argnames=("cache",))
decode_step_jit = jax.jit(decode_step, static_argnames=("cfg", "opts", "return_queries"),
                          donate_argnames=("cache",))
decode_scan_jit = jax.jit(decode_scan, static_argnames=("cfg", "opts", "steps", "return_queries"),
                          donate_argnames=("cache",))
forward_jit = jax.jit(forward, static_argnames=("cfg", "opts"))
