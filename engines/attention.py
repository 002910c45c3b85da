"""Grouped-query attention over the KV cache: which keys a query sees, and how that is computed.

The rule: a key is visible to a query when ``0 <= key_pos <= query_pos`` (position ids, not
slots), and on a sliding-window layer also ``key_pos > query_pos - window``. Padding has
position -1, so it is invisible as a key, and a pruned prompt (gapped positions) attends exactly
as the full prompt would among the kept tokens: a kept token sees the kept subset of what it saw
in the full prompt, its window measured in original positions. How a layer scores is an
:class:`AttnSpec` (scale, tanh soft-capping, window). Three forms compute it:

* :func:`masked`: scores over every cache slot, masked by position. Holds for any positions;
  reads every slot. Used for decode steps (T = 1, where reading the cache is the cost anyway),
  the seed-003 variants (``batched``, ``vmap``) and the cache-free reference forward.
* :func:`chunk_causal`: a prefill chunk of T queries at slots ``[start, start + T)``. Slots are
  written in order and positions increase along them (a continued prompt must continue the
  positions; the engine checks), so "key position <= mine" is "key slot <= my slot": the
  chunk sees the filled prefix ``[0, start)`` in full and its own T keys causally. Each part is
  a case flash attention runs natively (cuDNN on GPU: no [T, S] mask in HBM, no work above the
  diagonal or past ``start``); the two are merged exactly by their log-sum-exp. Measured on an
  H100 against the old single masked call over all slots, which cuDNN could not run causally.
* :func:`sliding`: a sliding-window layer's queries over a band of the cache. Slots hold
  strictly increasing positions, so a query at slot j can only see slots ``(j - window, j]``
  (an earlier slot has a smaller position, at least one less per slot), gapped positions or
  not; a block of Q queries needs a band of ``window - 1 + Q`` slots, masked by position. The
  cost is O(T * window), whatever the cache holds.

Padding queries (the tail of the last chunk) get finite, meaningless outputs; their keys sit
past every real query's slot, so no real token sees them.

Axis letters as in ``engines.model``; G = N // K query heads per KV head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax import lax

_FILL = float(jnp.finfo(jnp.float32).min)  # finite: a fully masked row averages instead of NaN


def _precision(x):
    # float32 runs (CPU, tests) must match PyTorch to 1e-4: no TF32/bf16 passes on any backend.
    return lax.Precision.HIGHEST if x.dtype == jnp.float32 else None


@dataclass(frozen=True)
class AttnSpec:
    """How one layer scores keys: ``softmax(softcap(q . k * scale))`` over the visible keys.

    ``scale``: None means ``head_dim ** -0.5`` (Llama); Gemma uses ``query_pre_attn_scalar ** -0.5``.
    ``softcap``: Gemma 2's ``tanh(s / c) * c`` on the scores before the mask (None: none).
    ``window``: a sliding-window layer sees keys with ``key_pos > query_pos - window`` (None: all).
    Hashable: it is a static argument of the compiled functions.
    """

    scale: float | None = None
    softcap: float | None = None
    window: int | None = None

    def scale_for(self, head_dim: int) -> float:
        return head_dim ** -0.5 if self.scale is None else self.scale


FULL = AttnSpec()


def visible(q_pos, k_pos, window: int | None = None):
    """[B, T, S] mask: the key holds a real token (pos >= 0) at or before the query's position
    (and, with a ``window``, within ``window - 1`` positions of it)."""
    kp, qp = k_pos[:, None, :], q_pos[:, :, None]
    mask = (kp >= 0) & (kp <= qp)
    return mask if window is None else mask & (kp > qp - window)


def _scores(qg, k, spec: AttnSpec, H: int, letters: str):
    """Float32 scores of grouped queries against keys, scaled and soft-capped (before any mask)."""
    s = jnp.einsum(letters, qg, k, precision=_precision(qg),
                   preferred_element_type=jnp.float32) * jnp.float32(spec.scale_for(H))
    if spec.softcap is not None:
        s = jnp.tanh(s / jnp.float32(spec.softcap)) * jnp.float32(spec.softcap)
    return s


def _scores_softmax(q, k, v, mask, spec: AttnSpec = FULL, *, with_lse: bool = True):
    """Reference attention with its log-sum-exp: q [B, T, N, H], k, v [B, S, K, H], mask
    broadcastable to [B, T, S] -> (out [B, T, N, H], lse [B, N, T] float32). Scores in float32.

    ``with_lse=False`` (lse None): a plain ``softmax``, the max/exp/sum/divide pattern XLA's GPU
    softmax rewriter fuses into one kernel; exp(s - logsumexp(s)) is the same values but not
    that pattern (decode steps and the look-ahead take this form, :func:`masked`)."""
    B, T, N, H = q.shape
    K = k.shape[2]
    qg = q.reshape(B, T, K, N // K, H)                                             # [B, T, K, G, H]
    scores = _scores(qg, k, spec, H, "BTKGH,BSKH->BKGTS")                          # [B, K, G, T, S]
    scores = jnp.where(mask[:, None, None], scores, _FILL)                         # [B, K, G, T, S]
    if with_lse:
        lse = jax.nn.logsumexp(scores, axis=-1)                                    # [B, K, G, T]
        probs = jnp.exp(scores - lse[..., None]).astype(v.dtype)                   # [B, K, G, T, S]
    else:
        lse, probs = None, jax.nn.softmax(scores, axis=-1).astype(v.dtype)         # [B, K, G, T, S]
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v, precision=_precision(q))       # [B, T, K, G, H]
    return out.reshape(B, T, N, H), None if lse is None else lse.reshape(B, N, T)


def masked(q, k, v, q_pos, k_pos, *, per_row: bool = False, spec: AttnSpec = FULL, key_mask=None):
    """Attention of q [B, T, N, H] over k, v [B, S, K, H] by position ids q_pos [B, T], k_pos [B, S].

    ``per_row``: map a one-query attention over the T rows (seed 003's baseline) instead of one
    batched Q.Kᵀ. ``key_mask`` [B, S] bool: keys marked False are invisible to every query (the
    reference forward drops tokens this way).
    """
    with jax.named_scope("attention"):
        if key_mask is not None:
            k_pos = jnp.where(key_mask, k_pos, -1)
        if not per_row:
            return _scores_softmax(q, k, v, visible(q_pos, k_pos, spec.window), spec, with_lse=False)[0]
        one = lambda qr, pr: _scores_softmax(qr[:, None], k, v, visible(pr[:, None], k_pos, spec.window),
                                             spec, with_lse=False)[0][:, 0]
        return jax.vmap(one, in_axes=(1, 1), out_axes=1)(q, q_pos)                # [B, T, N, H]


_BAND_BLOCK = 256  # queries per band of :func:`sliding` (at most; a power of two dividing T)


def sliding(q, cache_k, cache_v, q_pos, k_pos, first_slot, spec: AttnSpec):
    """A sliding-window layer: q [B, T, N, H] at cache slots ``[first_slot, first_slot + T)`` over
    the layer's cache [B, S, K, H] (already holding these rows' keys), masked by position.

    The T rows go in blocks of Q (a power of two dividing T, at most ``min(window, 256)``); each
    block reads the band ``[block_slot - window + 1, block_slot + Q)`` (clamped into the cache),
    which holds every key any of its queries can see. One gather and one batched Q.Kᵀ for all
    blocks: scores [B, T/Q, K, G, Q, window - 1 + Q] instead of [B, T, S].
    """
    B, T, N, H = q.shape
    S, K = cache_k.shape[1], cache_k.shape[2]
    W = spec.window
    Q = math.gcd(T, 1 << (min(W, _BAND_BLOCK).bit_length() - 1))                  # divides T
    nb, L = T // Q, min(S, W - 1 + Q)
    with jax.named_scope("attention.sliding"):
        starts = first_slot + jnp.arange(nb, dtype=jnp.int32) * Q - (W - 1)       # [nb]
        starts = jnp.clip(starts, 0, S - L)
        idx = starts[:, None] + jnp.arange(L, dtype=jnp.int32)[None, :]           # [nb, L]
        kb = jnp.take(cache_k, idx, axis=1)                                        # [B, nb, L, K, H]
        vb = jnp.take(cache_v, idx, axis=1)                                        # [B, nb, L, K, H]
        kp = jnp.take(k_pos, idx, axis=1)                                          # [B, nb, L]
        qp = q_pos.reshape(B, nb, Q)                                               # [B, nb, Q]
        mask = (kp[:, :, None, :] >= 0) & (kp[:, :, None, :] <= qp[..., None]) & (
            kp[:, :, None, :] > qp[..., None] - W)                                 # [B, nb, Q, L]
        qg = q.reshape(B, nb, Q, K, N // K, H)                                     # [B, nb, Q, K, G, H]
        s = _scores(qg, kb, spec, H, "BnQKGH,BnLKH->BnKGQL")                       # [B, nb, K, G, Q, L]
        s = jnp.where(mask[:, :, None, None], s, _FILL)
        p = jax.nn.softmax(s, axis=-1).astype(cache_v.dtype)                       # [B, nb, K, G, Q, L]
        out = jnp.einsum("BnKGQL,BnLKH->BnQKGH", p, vb, precision=_precision(q))   # [B, nb, Q, K, G, H]
        return out.reshape(B, T, N, H).astype(q.dtype)


def chunk_causal(q, k, v, cache_k, cache_v, start, *, prefix: bool = True, spec: AttnSpec = FULL):
    """A prefill chunk's attention: causal over its own k, v [B, T, K, H], plus the whole filled
    prefix ``[0, start)`` of the layer's cache [B, S, K, H] (already holding this chunk at
    ``[start, start + T)``, which the prefix length excludes). ``start``: int32 scalar, may be 0.
    ``prefix=False`` (static): the caller knows ``start`` is 0; only the causal part runs, with
    no prefix call and no merge (the first chunk of a fresh prefill).

    ``spec``: scale and soft-capping (no window: sliding layers use :func:`sliding`). cuDNN has
    no soft-capping, so a soft-capped layer (Gemma 2) takes the XLA form on a GPU too.

    Returns [B, T, N, H].
    """
    assert spec.window is None, "a sliding-window layer attends through sliding()"
    with jax.named_scope("attention"):
        fused = (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16) and _has_cudnn()
                 and spec.softcap is None)
        if not prefix:
            return (_cudnn if fused else _xla)(q, k, v, spec, causal=True)[0]
        if fused:
            own, own_lse = _cudnn(q, k, v, spec, causal=True)                      # [B,T,N,H], [B,N,T]
            # cuDNN needs a non-empty prefix: at start 0 it reads slot 0 and the merge weighs it 0.
            prefix, prefix_lse = _cudnn(q, cache_k, cache_v, spec, kv_len=jnp.maximum(start, 1))
        else:
            own, own_lse = _xla(q, k, v, spec, causal=True)
            # CPU: a loop over the filled prefix only. Elsewhere (float32 or no cuDNN on a GPU)
            # one masked pass: a data-dependent loop would run trip by trip from the host.
            cpu = jax.default_backend() == "cpu"
            prefix, prefix_lse = _xla_prefix(q, cache_k, cache_v, start, spec) if cpu else \
                _xla(q, cache_k, cache_v, spec, kv_len=start)
        return _merge(own, own_lse, prefix, prefix_lse, start > 0)


def _merge(o1, lse1, o2, lse2, use2):
    """Softmax over the union of two key sets from each set's output and log-sum-exp (exact)."""
    l1 = jnp.swapaxes(lse1, 1, 2)[..., None]                                       # [B, T, N, 1]
    l2 = jnp.where(use2, jnp.swapaxes(lse2, 1, 2)[..., None], -jnp.inf)            # [B, T, N, 1]
    m = jnp.maximum(l1, l2)
    w1, w2 = jnp.exp(l1 - m), jnp.exp(l2 - m)                                      # w2 = 0 unless use2
    o2 = jnp.where(use2, o2.astype(jnp.float32), 0.0)
    out = (o1.astype(jnp.float32) * w1 + o2 * w2) / (w1 + w2)                      # [B, T, N, H]
    return out.astype(o1.dtype)


def _xla(q, k, v, spec: AttnSpec = FULL, *, causal=False, kv_len=None):
    """One part of :func:`chunk_causal` in plain XLA (CPU, float32): the same cases as :func:`_cudnn`."""
    T, S = q.shape[1], k.shape[1]
    if causal:
        mask = jnp.tril(jnp.ones((T, S), bool))[None]                              # [1, T, S]
    else:
        mask = (jnp.arange(S) < kv_len)[None, None, :]                             # [1, 1, S]
    return _scores_softmax(q, k, v, mask, spec)


def _xla_prefix(q, cache_k, cache_v, start, spec: AttnSpec = FULL):
    """q [B, T, N, H] over the cache's filled prefix ``[0, start)`` only, T slots at a time with
    an online softmax (flash attention's recurrence), in plain XLA.

    Masking all S slots (``_xla(kv_len=start)``) costs every chunk the whole cache; an XPlane of
    the default CPU run showed that masked select as the largest op of every chunk. Here the
    loop runs ceil(start / T) times (0 at start 0: the merge then ignores the part). Returns
    (out [B, T, N, H], lse [B, N, T] float32) like :func:`_xla`.
    """
    B, T, N, H = q.shape
    K = cache_k.shape[2]
    G = N // K
    qg = q.reshape(B, T, K, G, H)                                                  # [B, T, K, G, H]

    def block(b, carry):
        m, l, acc = carry                                                          # [B,K,G,T] x 2, [B,K,G,T,H]
        kb = lax.dynamic_slice_in_dim(cache_k, b * T, T, axis=1)                   # [B, T', K, H]
        vb = lax.dynamic_slice_in_dim(cache_v, b * T, T, axis=1)                   # [B, T', K, H]
        s = _scores(qg, kb, spec, H, "BTKGH,BSKH->BKGTS")                          # [B, K, G, T, T']
        s = jnp.where(b * T + jnp.arange(T) < start, s, -jnp.inf)                 # slots past the prefix
        m_new = jnp.maximum(m, s.max(-1))                                          # finite: a block has a slot
        p = jnp.exp(s - m_new[..., None])                                          # [B, K, G, T, T']
        scale = jnp.exp(m - m_new)                                                 # 0 on the first block
        pv = jnp.einsum("BKGTS,BSKH->BKGTH", p.astype(vb.dtype), vb, precision=_precision(q),
                        preferred_element_type=jnp.float32)                        # [B, K, G, T, H]
        return m_new, l * scale + p.sum(-1), acc * scale[..., None] + pv

    init = (jnp.full((B, K, G, T), -jnp.inf, jnp.float32), jnp.zeros((B, K, G, T), jnp.float32),
            jnp.zeros((B, K, G, T, H), jnp.float32))
    m, l, acc = lax.fori_loop(0, (start + T - 1) // T, block, init)
    out = (acc / l[..., None]).transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)       # NaN at start 0 (unused)
    return out.astype(q.dtype), (m + jnp.log(l)).reshape(B, N, T)


def _has_cudnn() -> bool:
    """Whether this jax has the cuDNN wrapper :func:`_cudnn` calls (a private module: checked, not assumed)."""
    try:
        from jax._src.cudnn import fused_attention_stablehlo  # noqa: F401
    except ImportError:
        return False
    return True


def _cudnn(q, k, v, spec: AttnSpec = FULL, *, causal=False, kv_len=None):
    """cuDNN flash attention returning the float32 log-sum-exp [B, N, T] too.

    ``jax.nn.dot_product_attention(return_residual=True)`` casts the log-sum-exp to the output
    dtype (bf16: ~0.4% relative error, too coarse to merge two parts exactly), so this calls the
    function it wraps. ``causal``: top-left causal over T == S. ``kv_len``: keys past it are
    padding (cuDNN stops its key loop there).
    """
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    B, T = q.shape[:2]
    lengths = {}
    if causal:
        mask = cudnn.MaskType.CAUSAL
    else:
        mask = cudnn.MaskType.PADDING
        lengths = dict(q_seqlen=jnp.full((B,), T, jnp.int32),
                       kv_seqlen=jnp.broadcast_to(jnp.asarray(kv_len, jnp.int32), (B,)))
    out, lse = cudnn.dot_product_attention(q, k, v, scale=spec.scale_for(q.shape[-1]), mask_type=mask,
                                           return_residual=True, **lengths)
    return out, lse.astype(jnp.float32)
