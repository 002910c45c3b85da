"""One decode step's attention as one Pallas kernel (split-K "flash decoding") plus a small combine.

Why: on an H200 the XLA form of a decode step's attention (:func:`engines.attention.masked`,
Q.Kᵀ and P.V as two Triton GEMMs with the mask, max, exp, sum and casts between them) took
~29 us a layer of the 8B's ~158 us against ~9.4 us for reading that layer's keys and values
(``scripts/probe_decode_ops.py``, docs/evidence/h200-session8). Here each program reads one KV
head's block of slots once: scores for the G query heads sharing it (padded to 16 rows, the
smallest tensor-core tile), the position mask, a softmax within the block and P.V; XLA then
merges the blocks exactly by their maxima and sums (the log-sum-exp merge of
:func:`engines.attention._merge`, over many parts).

Same visibility rule as :func:`~engines.attention.masked`: a slot is seen when its position is
``>= 0`` and ``<=`` the query's. Used for T = 1 on a GPU, full-attention layers without
soft-capping (:func:`supported`); everything else keeps the XLA form. On CPU it runs in Pallas's
interpreter (tests).

Axis letters as in ``engines.model``; P: slots per program, R: query rows per KV head (G padded).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

_FILL = float(jnp.finfo(jnp.float32).min)
BLOCK = 128  # slots per inner step
ROWS = 16    # query rows per program: G padded to the smallest tensor-core tile


def _per_program(S: int, block: int = BLOCK) -> int | None:
    """Slots per program: the largest of 2 blocks and 1 dividing S (None: S is not a multiple of ``block``)."""
    return next((p for p in (2 * block, block) if S % p == 0), None)


def supported(q, cache_k, spec) -> bool:
    """Whether :func:`attend` runs this layer's decode step on this backend (else the XLA form)."""
    B, T, N, H = q.shape
    S, K = cache_k.shape[1], cache_k.shape[2]
    return (jax.default_backend() == "gpu" and T == 1 and spec.window is None and spec.softcap is None
            and q.dtype in (jnp.bfloat16, jnp.float16) and N // K <= ROWS and H in (64, 128, 256)
            and _per_program(S) is not None)


def _kernel(q_ref, k_ref, v_ref, kp_ref, qp_ref, o_ref, m_ref, l_ref, *, per: int, block: int, scale: float):
    """One (batch, KV head, slot range): partial output [R, H], row maxima and sums [R]."""
    q = q_ref[...]                                                                 # [R, H]
    qp = qp_ref[...]                                                               # [block] the query position

    def step(i, carry):
        m, l, acc = carry                                                          # [R], [R], [R, H]
        sl = pl.ds(pl.multiple_of(i * block, block), block)
        k = k_ref[sl, :]                                                           # [block, H]
        kp = kp_ref[sl]                                                            # [block]
        s = lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32) * scale  # [R, block]
        vis = (kp >= 0) & (kp <= qp)
        s = jnp.where(vis[None, :], s, _FILL)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))                                 # [R]
        p = jnp.where(vis[None, :], jnp.exp(s - m_new[:, None]), 0.0)             # [R, block]
        decay = jnp.exp(m - m_new)
        pv = jnp.dot(p.astype(v_ref.dtype), v_ref[sl, :], preferred_element_type=jnp.float32)  # [R, H]
        return m_new, l * decay + jnp.sum(p, axis=1), acc * decay[:, None] + pv

    R, H = q.shape
    init = (jnp.full((R,), _FILL, jnp.float32), jnp.zeros((R,), jnp.float32), jnp.zeros((R, H), jnp.float32))
    m, l, acc = lax.fori_loop(0, per // block, step, init)
    o_ref[...] = acc
    m_ref[...] = m
    l_ref[...] = l


def _params(warps: int | None) -> dict:
    """Triton compiler parameters (``num_warps``) where this jax spells them as this code knows."""
    if warps is None or jax.default_backend() != "gpu":
        return {}
    from jax.experimental.pallas import triton as pltriton

    cls = getattr(pltriton, "CompilerParams", None) or getattr(pltriton, "TritonCompilerParams")
    return {"compiler_params": cls(num_warps=warps)}


@functools.partial(jax.jit, static_argnames=("scale", "block", "per", "warps"))
def attend(q, cache_k, cache_v, q_pos, k_pos, *, scale: float, block: int = BLOCK, per: int | None = None,
           warps: int | None = None):
    """q [B, 1, N, H] over the cache k, v [B, S, K, H] by positions q_pos [B, 1], k_pos [B, S] -> [B, 1, N, H].

    ``block``: slots per inner step; ``per``: slots per program (default :func:`_per_program`);
    ``warps``: Triton warps per program (default Pallas's)."""
    B, _, N, H = q.shape
    S, K = cache_k.shape[1], cache_k.shape[2]
    G = N // K
    per = per or _per_program(S, block)
    nblk = S // per
    qg = q[:, 0].reshape(B, K, G, H)                                               # [B, K, G, H]
    qg = jnp.pad(qg, ((0, 0), (0, 0), (0, ROWS - G), (0, 0)))                      # [B, K, R, H]
    qp = jnp.broadcast_to(q_pos[:, :1], (B, block))                                # [B, block]
    sq = pl.squeezed
    o, m, l = pl.pallas_call(
        functools.partial(_kernel, per=per, block=block, scale=scale),
        grid=(B, K, nblk),
        in_specs=[pl.BlockSpec((sq, sq, ROWS, H), lambda b, k, j: (b, k, 0, 0)),
                  pl.BlockSpec((sq, per, sq, H), lambda b, k, j: (b, j, k, 0)),
                  pl.BlockSpec((sq, per, sq, H), lambda b, k, j: (b, j, k, 0)),
                  pl.BlockSpec((sq, per), lambda b, k, j: (b, j)),
                  pl.BlockSpec((sq, block), lambda b, k, j: (b, 0))],
        out_specs=[pl.BlockSpec((sq, sq, sq, ROWS, H), lambda b, k, j: (b, k, j, 0, 0)),
                   pl.BlockSpec((sq, sq, sq, ROWS), lambda b, k, j: (b, k, j, 0)),
                   pl.BlockSpec((sq, sq, sq, ROWS), lambda b, k, j: (b, k, j, 0))],
        out_shape=[jax.ShapeDtypeStruct((B, K, nblk, ROWS, H), jnp.float32),
                   jax.ShapeDtypeStruct((B, K, nblk, ROWS), jnp.float32),
                   jax.ShapeDtypeStruct((B, K, nblk, ROWS), jnp.float32)],
        interpret=jax.default_backend() != "gpu",
        **_params(warps),
    )(qg, cache_k, cache_v, k_pos, qp)
    top = jnp.max(m, axis=2, keepdims=True)                                        # [B, K, 1, R]
    w = jnp.exp(m - top)                                                           # [B, K, nblk, R]
    num = jnp.sum(w[..., None] * o, axis=2)                                        # [B, K, R, H]
    den = jnp.maximum(jnp.sum(w * l, axis=2), jnp.finfo(jnp.float32).tiny)        # [B, K, R]
    out = (num / den[..., None])[:, :, :G]                                         # [B, K, G, H]
    return out.reshape(B, 1, N, H).astype(q.dtype)
