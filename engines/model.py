"""The forward pass every model family shares: chunked prefill into the KV cache, decode, the reference.

What a layer computes is the family's (``engines.models.llama``, ``engines.models.gemma``,
picked by ``engines.models.family(cfg)``); this module owns the cache, the chunk, the
last-row shortcut and decoding. Attention masks by *position id*, never by slot
(``engines.attention``): padding carries position -1 and a pruned prompt keeps its gapped
positions. Parameters come in the engine's per-layer form (``params["layers"]`` a sequence of
dicts, see ``engines.params.for_options``) and the KV cache holds one buffer per layer
(``engines.cache``): the layer loop is unrolled in Python so every weight and cache read is in place.

Axis letters (see STYLE.md): B batch, T query positions, S key positions (cache slots), L layers,
N query heads, K KV heads, H head dim, D model dim, F MLP dim, V vocab; plus G = N // K, the
query heads sharing one KV head.

The ``*_jit`` functions at the end bind configs and options as static arguments and donate the
cache. No tracer calls happen here (they would fire at trace time); device work is labelled with
``jax.named_scope`` so XPlane profiles read by phase.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from spectrace.engines import attention, decode_attention, fused_norm, rope_cache
from spectrace.engines.cache import KVCache
from spectrace.engines.config import EngineOptions
from spectrace.engines.models import common, family


def rope_inv_freq(cfg):
    """Inverse frequencies [H/2] of the full-attention layers (``rope_theta`` and any scaling)."""
    return common.rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)


def chunk_forward(params, cache: KVCache, inputs, query_row=None, *, cfg,
                  opts: EngineOptions, return_queries: bool, fresh: bool = False):
    """One prefill chunk (or one decode step, T = 1) through every layer, writing the KV cache.

    Args:
      inputs: [2, B, T] int32, the tokens and their positions as one array, so that placing a
        chunk's inputs is one host-to-device copy (``bind``); padding has position -1 and must
        sit at the end.
      query_row: int32 scalar, the row whose logits are returned and (with ``return_queries``)
        whose post-RoPE query in every layer; None (the engines' use): the chunk's last real
        token, counted here from the positions rather than copied from the host.

    The chunk's keys/values go to cache slots ``[length, length + T)``; ``length`` then advances
    by the number of real tokens, so padding slots are overwritten by whatever comes next.
    ``fresh``: start a new prompt: the chunk goes to slot 0 whatever the cache held (its positions
    are reset to -1 here), and attention skips the cached-prefix part
    (``attention.chunk_causal(prefix=False)``); a separate compilation.

    Returns ``(logits [B, V] float32, cache, q_rows [L, B, N, H] float32 or None)``.
    """
    with jax.named_scope("prefill.chunk"):
        return _cached_forward(params, cache, inputs[0], inputs[1], query_row, cfg=cfg, opts=opts,
                               return_queries=return_queries, fresh=fresh)


def _cached_forward(params, cache: KVCache, tokens, positions, query_row, *, cfg,
                    opts: EngineOptions, return_queries: bool, fresh: bool = False, queries_only: bool = False):
    """``chunk_forward`` without its scope, tokens and positions apart (``query_row`` None: the
    last real row). ``queries_only``: stop after the last layer's queries and cache write (no
    attention, MLP or logits past them; logits come back None)."""
    fam = family(cfg)
    B, T = tokens.shape
    n_real = jnp.sum(positions[0] >= 0).astype(jnp.int32)                          # padding sits at the end
    if query_row is None:
        query_row = jnp.maximum(n_real - 1, 0)
    # Fresh: whatever the cache held is dropped here (every slot past this chunk -1), so the
    # engine needs no separate reset program before a new prompt.
    start = jnp.int32(0) if fresh else cache.length
    old_pos = jnp.full_like(cache.pos, -1) if fresh else cache.pos                 # [B, S]
    k_pos = lax.dynamic_update_slice(old_pos, positions, (0, start))               # [B, S]
    ropes = fam.rope(positions, cfg)                                               # L x [B, T, 1, H] x 2
    x = fam.embed(params, tokens, cfg)                                             # [B, T, D]
    layers = params["layers"]
    keys, values, q_rows = [], [], []
    # A Python loop, not lax.scan: each layer's weights and cache are buffers of their own, read in
    # place (scanning stacked weights made XLA copy every layer's slice first: 2x the weight reads).
    for i, lp in enumerate(layers):
        spec = fam.attn_spec(cfg, i)
        x, q, k, v, ck, cv = _project_and_write(fam, lp, x, ropes[i], cache.k[i], cache.v[i], start, T, cfg, opts)
        keys.append(ck)
        values.append(cv)
        if return_queries:
            q_rows.append(_row(q, query_row)[:, 0].astype(jnp.float32))          # [B, N, H]
        if queries_only and i == len(layers) - 1:
            break
        if i == len(layers) - 1 and T > 1:
            # Past the last layer's keys and values only the returned row matters (its logits):
            # attention, projection and MLP for that one row instead of T.
            x, q, q_pos = _row(x, query_row), _row(q, query_row), _row(positions, query_row)
            attn = _attend(q, None, None, ck, cv, q_pos, k_pos, start + query_row, spec, opts, fresh=False,
                           one_row=True, copies=_out_copies(lp))                   # [B, 1 or 2, N, H]
        else:
            attn = _attend(q, k, v, ck, cv, positions, k_pos, start, spec, opts, fresh,
                           copies=_out_copies(lp))                                 # [B, T (or 2 for T = 1), N, H]
        x = fam.finish(lp, x, attn, cfg)                                           # [B, T', D] (or a Residual)
    q_rows = jnp.stack(q_rows) if return_queries else None                         # [L, B, N, H]
    cache = KVCache(tuple(keys), tuple(values), k_pos, start + n_real)
    if queries_only:
        return None, cache, q_rows
    head = fused_norm.rows(x, lambda a: common.lm_head_rows(a[:, :1], cfg.vocab_size * cfg.dim))  # [B, 1 or 2, D]
    logits = fam.logits(params, head, cfg)[:, 0]                                   # [B, V]: the one row left
    return logits, cache, q_rows


def _project_and_write(fam, lp, x, rope_i, cache_k, cache_v, start, T: int, cfg, opts: EngineOptions):
    """The layer's stream, post-RoPE queries, keys and values, and its cache k, v [B, S, K, H] with
    them written from slot ``start``. A decode step of a family with a fused QKV row does RoPE and
    the cache write in one kernel (``engines.rope_cache``; its k and v are then None: a decode
    step's attention reads them from the cache)."""
    if T == 1 and hasattr(fam, "qkv_row") and "wqkv" in lp and rope_cache.supported(cfg, cache_k):
        x, qkv = fam.qkv_row(lp, x, cfg)                                          # [B, 1, D], [B, R, E]
        q, ck, cv = rope_cache.rope_write(qkv, rope_i, cache_k, cache_v, start, n_heads=cfg.n_heads,
                                          n_kv_heads=cfg.n_kv_heads)             # [B, 1, N, H]
        return x, q, None, None, ck, cv
    x, q, k, v = fam.qkv(lp, x, rope_i, cfg, opts)                                # x: [B, T, D]
    ck = lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, start, 0, 0))  # [B, S, K, H]
    cv = lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, start, 0, 0))  # [B, S, K, H]
    return x, q, k, v, ck, cv


def _out_copies(lp) -> int:
    """How many copies of a one-row attention output the layer's out projection wants (2: its
    two-row GEMM, ``common.row_copies``); the decode attention's combine writes them."""
    return common.row_copies(lp["wo"]) if "wo" in lp else 1


def _row(a, row):
    """Row ``row`` (int32 scalar) of axis 1, kept as an axis of size 1."""
    return lax.dynamic_slice_in_dim(a, row, 1, axis=1)


def _attend(q, k, v, cache_k, cache_v, q_pos, k_pos, first_slot, spec, opts: EngineOptions, fresh: bool,
            one_row: bool = False, copies: int = 1):
    """The queries (at slots from ``first_slot``) over the layer's cache, which already holds them.
    A one-row query may come back as ``copies`` rows (the decode attention's combine writes them)."""
    if spec.window is not None and opts.attention == "dot_product":
        # A sliding layer reads only the band of slots its window can reach (attention.sliding).
        return attention.sliding(q, cache_k, cache_v, q_pos, k_pos, first_slot, spec)
    if opts.attention == "dot_product" and q.shape[1] > 1 and not one_row:
        return attention.chunk_causal(q, k, v, cache_k, cache_v, first_slot, prefix=not fresh, spec=spec)
    if opts.attention == "dot_product" and decode_attention.supported(q, cache_k, spec):
        # A GPU decode step (or the last layer's one row): one Pallas kernel reads each KV head's
        # slots once (engines.decode_attention says what the XLA form cost).
        return decode_attention.attend(q, cache_k, cache_v, q_pos, k_pos, scale=spec.scale_for(q.shape[-1]),
                                       copies=copies)
    # Decode steps elsewhere (T = 1: one query reads every slot, which is the cost of decode
    # anyway) and seed 003's variants: scores over every slot, masked by position (and window).
    return attention.masked(q, cache_k, cache_v, q_pos, k_pos, per_row=opts.attention == "vmap", spec=spec)


def forward(params, tokens, positions, *, cfg, opts: EngineOptions, key_mask=None):
    """Full forward without a cache: tokens, positions [B, T] -> float32 logits [B, T, V].

    The reference the cached paths are tested against (teacher forcing, pruned prompts): plain
    position-masked attention over every key (sliding layers: the window by position), whatever
    ``opts.attention`` says. ``key_mask`` [B, T] bool: tokens marked False are invisible as keys
    in every layer (a pruned prompt's reference: the full prompt with the dropped tokens masked).
    """
    fam = family(cfg)
    ropes = fam.rope(positions, cfg)                                               # L x [B, T, 1, H] x 2
    x = fam.embed(params, tokens, cfg)                                             # [B, T, D]
    for i, lp in enumerate(params["layers"]):
        x, q, k, v = fam.qkv(lp, x, ropes[i], cfg, opts)
        attn = attention.masked(q, k, v, positions, positions, spec=fam.attn_spec(cfg, i), key_mask=key_mask)
        x = fam.finish(lp, x, attn, cfg)                                           # [B, T, D]
    return fam.logits(params, x, cfg)                                              # [B, T, V]


def greedy(logits):
    """The greedy token of each row: logits [B, V] -> int32 [B]."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def decode_step(params, cache: KVCache, token, position, *, cfg, opts: EngineOptions,
                return_queries: bool, queries_only: bool = False):
    """Feed token [B] at position [B]; returns (greedy next token [B], cache, q [L, B, N, H] or None).
    ``queries_only``: the token's queries and cache entries only (the next token is None)."""
    with jax.named_scope("decode.step"):
        logits, cache, q = _cached_forward(params, cache, token[:, None], position[:, None], jnp.int32(0),
                                           cfg=cfg, opts=opts, return_queries=return_queries,
                                           queries_only=queries_only)
    return None if queries_only else greedy(logits), cache, q


def decode_scan(params, cache: KVCache, logits, position, *, cfg, opts: EngineOptions,
                steps: int, return_queries: bool, last_token: bool = True):
    """Greedy decoding on the device: the argmax of ``logits`` [B, V] (the prefill's last row) is
    the first token, fed at ``position`` [B]; then ``steps`` steps as one ``lax.scan``.

    A device loop, not straight-line code: unrolling the draft's 7 look-ahead steps measured
    1.5x slower on an H100 (28.8 vs 19.2 ms, docs/evidence/h100-session4/bench_lookahead.txt).

    ``last_token=False`` (with ``return_queries``; the speculative look-ahead, which reads only
    the fed tokens' queries): the last step feeds its token for its queries and cache entries
    and stops after the last layer's QKV projection, with no LM head; ``steps - 1`` loop steps,
    then that one.

    Returns (tokens [steps + 1, B] (the first token, then the token after each step; without
    ``last_token`` the last is missing: [steps, B], the fed tokens), cache, queries
    [steps, L, B, N, H] of the fed tokens, or None).
    """
    if not (last_token or (return_queries and steps > 0)):
        raise ValueError("last_token=False needs return_queries and steps > 0: the last step is for its queries")

    def step(carry, _):
        cache, tok, pos = carry
        nxt, cache, q = decode_step(params, cache, tok, pos, cfg=cfg, opts=opts, return_queries=return_queries)
        return (cache, nxt, pos + 1), (nxt, q)

    first = greedy(logits)                                                         # [B]
    with jax.named_scope("decode"):
        (cache, tok, pos), (tokens, queries) = lax.scan(step, (cache, first, position), None,
                                                        length=steps if last_token else steps - 1)
        if not last_token:                                                         # feed tok for its queries
            _, cache, q = decode_step(params, cache, tok, pos, cfg=cfg, opts=opts, return_queries=True,
                                      queries_only=True)
            queries = jnp.concatenate([queries, q[None]], axis=0)                  # [steps, L, B, N, H]
    return jnp.concatenate([first[None], tokens], axis=0), cache, queries          # [steps + 1 or steps, B]


@functools.lru_cache(maxsize=None)
def chunk_jit(xla: tuple):
    """``chunk_forward`` compiled with per-program XLA options ``xla`` (``(name, value)`` pairs,
    e.g. ``(("xla_gpu_enable_command_buffer", ""),)``); ``chunk_jit(())`` is :data:`chunk_forward_jit`.

    Per program, not per process (``XLA_FLAGS``): on the H200 the base's prefill chunks and the
    draft's look-ahead want different settings (``engines.host.GPU_BASE_CHUNK_XLA``).

    ``keep_unused``: a fresh chunk overwrites the cache's slot positions and length without
    reading them, and JAX would drop those unused (donated) arguments, so their outputs came back
    in new buffers at every call. Kept, they alias: the whole cache stays at its addresses, one
    reason less for a chunk's CUDA graph to be updated before its launch (session 19,
    ``scripts/probe_graph_updates.py``).
    """
    return jax.jit(chunk_forward, static_argnames=("cfg", "opts", "return_queries", "fresh"),
                   donate_argnames=("cache",), keep_unused=True, compiler_options=dict(xla) or None)


def chunk_forward_into(params, cache: KVCache, inputs, into, query_row=None, **kw):
    """``chunk_forward`` with ``into``: the previous call's (logits, q_rows) or (logits,),
    donated and never read, so that this call's outputs take their buffers
    (``engines.fixed_buffers``)."""
    del into
    return chunk_forward(params, cache, inputs, query_row, **kw)


@functools.lru_cache(maxsize=None)
def chunk_into_jit(xla: tuple):
    """:func:`chunk_forward_into` compiled as :func:`chunk_jit`, ``into`` donated too: JAX aliases
    each donated array to the first output of its shape and dtype, in order, so the cache's go to
    the cache and ``into``'s to the logits and query rows."""
    return jax.jit(chunk_forward_into, static_argnames=("cfg", "opts", "return_queries", "fresh"),
                   donate_argnames=("cache", "into"), keep_unused=True, compiler_options=dict(xla) or None)


@functools.lru_cache(maxsize=None)
def decode_jit(xla: tuple):
    """``decode_scan`` compiled with per-program XLA options ``xla`` (as :func:`chunk_jit`);
    ``decode_jit(())`` is :data:`decode_scan_jit`."""
    return jax.jit(decode_scan, static_argnames=("cfg", "opts", "steps", "return_queries", "last_token"),
                   donate_argnames=("cache",), compiler_options=dict(xla) or None)


# Compiled forms: config/options static (hashable dataclasses), the cache donated so XLA updates it
# in place. One compilation per (config, options, chunk length).
chunk_forward_jit = chunk_jit(())
decode_step_jit = jax.jit(decode_step, static_argnames=("cfg", "opts", "return_queries", "queries_only"),
                          donate_argnames=("cache",))
decode_scan_jit = decode_jit(())
forward_jit = jax.jit(forward, static_argnames=("cfg", "opts"))
