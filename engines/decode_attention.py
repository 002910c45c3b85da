"""One decode step's attention as one Pallas kernel (split-K "flash decoding") plus a small combine.

Why: on an H200 the XLA form of a decode step's attention (:func:`engines.attention.masked`,
Q.Kᵀ and P.V as two Triton GEMMs with the mask, max, exp, sum and casts between them) took
~29 us a layer of the 8B's ~158 us against ~9.4 us for reading that layer's keys and values
(``scripts/probe_decode_ops.py``, docs/evidence/h200-session8). Here each program reads one KV
head's range of 256 (or 128) slots once, 64 at a time: scores for the G query heads sharing it,
the position mask, an online softmax and P.V; XLA then merges the ranges exactly by their
maxima and sums (the log-sum-exp merge of :func:`engines.attention._merge`, over many parts),
or, by default (:data:`DECODE_KERNELS`), a second Pallas kernel does (:func:`_combine`).
The query rows go in as a 16-row tile (the smallest tensor-core tile): when G divides 16 the
tile is the 16/G KV heads' rows as q holds them (Llama: G = 4, so no copy), else each head's G
rows padded to 16. Block, warps and stages are :data:`TUNED`'s, from the H200 sweep of
``scripts/check_decode_attention.py`` (docs/performance.md).

Same visibility rule as :func:`~engines.attention.masked`: a slot is seen when its position is
``>= 0`` and ``<=`` the query's. Used for T = 1 on a GPU, full-attention layers without
soft-capping (:func:`supported`); everything else keeps the XLA form. On CPU it runs in Pallas's
interpreter (tests).

Axis letters as in ``engines.model``; P: slots per program, R: query rows per KV head (G padded).
"""

from __future__ import annotations

import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

_FILL = float(jnp.finfo(jnp.float32).min)
_TINY = float(jnp.finfo(jnp.float32).tiny)
ROWS = 16    # query rows per program: G padded to the smallest tensor-core tile
# By head size: (slots per inner step, Triton warps, Triton stages; None = Pallas's default),
# the fastest of scripts/check_decode_attention.py's sweep on an H200 (docs/performance.md).
TUNED = {128: (64, 2, 3), 64: (64, 4, 3), 256: (64, 2, 3)}  # 256: 128's, not measured


def _per_program(S: int, block: int) -> int | None:
    """Slots per program: 256 or 128, a multiple of ``block`` dividing S (None: S is not a multiple of 128)."""
    return next((p for p in (256, 128) if p % block == 0 and S % p == 0), None)


def supported(q, cache_k, spec) -> bool:
    """Whether :func:`attend` runs this layer's decode step on this backend (else the XLA form)."""
    B, T, N, H = q.shape
    S, K = cache_k.shape[1], cache_k.shape[2]
    return (jax.default_backend() == "gpu" and T == 1 and spec.window is None and spec.softcap is None
            and q.dtype in (jnp.bfloat16, jnp.float16) and N // K <= ROWS and H in (64, 128, 256)
            and _per_program(S, TUNED[H][0]) is not None)


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


def pow2(n: int) -> bool:
    """Whether n is a positive power of two (what a Triton block's sizes must be)."""
    return n > 0 and n & (n - 1) == 0


def triton_params(warps: int | None, stages: int | None) -> dict:
    """Triton compiler parameters (``num_warps``, ``num_stages``) where this jax spells them as this code knows."""
    if (warps is None and stages is None) or jax.default_backend() != "gpu":
        return {}
    from jax.experimental.pallas import triton as pltriton

    cls = getattr(pltriton, "CompilerParams", None) or getattr(pltriton, "TritonCompilerParams")
    return {"compiler_params": cls(num_warps=warps, num_stages=stages)}


def _shares_tiles(K: int, G: int) -> bool:
    """Whether whole KV heads' query groups tile ROWS rows (G divides ROWS, ROWS divides N): then a
    program loads the ROWS-row tile holding its G rows, and q needs no padding."""
    return ROWS % G == 0 and (K * G) % ROWS == 0


@functools.partial(jax.jit, static_argnames=("scale", "block", "per", "warps", "stages", "pad", "combine", "copies"))
def attend(q, cache_k, cache_v, q_pos, k_pos, *, scale: float, block: int | None = None, per: int | None = None,
           warps: int | None = None, stages: int | None = None, pad: bool | None = None,
           combine: bool | None = None, copies: int = 1):
    """q [B, 1, N, H] over the cache k, v [B, S, K, H] by positions q_pos [B, 1], k_pos [B, S] -> [B, 1, N, H]
    (or [B, ``copies``, N, H], the row repeated, where the Pallas combine writes it: for the out
    projection's two-row GEMM, ``engines.models.common.row_copies``; row 0 is the one).

    ``block``: slots per inner step; ``per``: slots per program (default :func:`_per_program`);
    ``warps``, ``stages``: Triton warps and pipeline stages per program. Unset, ``block``,
    ``warps`` and ``stages`` are :data:`TUNED`'s for the head size (all three, when ``block`` is unset).
    ``pad``: pad each KV head's G query rows to ROWS (default: only when :func:`_shares_tiles`
    says it must; sharing tiles saves the pad kernel, ~1.5 us a layer on an H200).
    ``combine``: merge the ranges in the Pallas kernel :func:`_combine` rather than XLA's
    :func:`_merge` (default :data:`COMBINE`; only where :func:`combine_supported` and the tiles
    are shared).
    """
    B, _, N, H = q.shape
    if block is None:
        block, warps, stages = TUNED[H]
    S, K = cache_k.shape[1], cache_k.shape[2]
    G = N // K
    per = per or _per_program(S, block)
    nblk = S // per
    pad = not _shares_tiles(K, G) if pad is None else pad
    if pad:
        qr = jnp.pad(q[:, 0].reshape(B, K, G, H), ((0, 0), (0, 0), (0, ROWS - G), (0, 0)))  # [B, K, R, H]
        tile, rows = (lambda k: k), np.broadcast_to(np.arange(G), (K, G))         # head k: rows 0..G-1
    else:
        t = ROWS // G                                                              # KV heads per tile
        qr = q[:, 0].reshape(B, N // ROWS, ROWS, H)                                # [B, N/R, R, H]
        tile, rows = (lambda k: k // t), (np.arange(K) % t)[:, None] * G + np.arange(G)  # [K, G]
    qp = jnp.broadcast_to(q_pos[:, :1], (B, block))                                # [B, block]
    sq = pl.squeezed
    fuse = not pad and (COMBINE if combine is None else combine) and combine_supported(G)
    C = _combine_chunk(nblk)
    nbuf = -(-nblk // C) * C if fuse else nblk                                     # the combine reads whole steps
    o, m, l = pl.pallas_call(
        functools.partial(_kernel, per=per, block=block, scale=scale),
        grid=(B, K, nblk),
        in_specs=[pl.BlockSpec((sq, sq, ROWS, H), lambda b, k, j: (b, tile(k), 0, 0)),
                  pl.BlockSpec((sq, per, sq, H), lambda b, k, j: (b, j, k, 0)),
                  pl.BlockSpec((sq, per, sq, H), lambda b, k, j: (b, j, k, 0)),
                  pl.BlockSpec((sq, per), lambda b, k, j: (b, j)),
                  pl.BlockSpec((sq, block), lambda b, k, j: (b, 0))],
        out_specs=[pl.BlockSpec((sq, sq, sq, ROWS, H), lambda b, k, j: (b, k, j, 0, 0)),
                   pl.BlockSpec((sq, sq, sq, ROWS), lambda b, k, j: (b, k, j, 0)),
                   pl.BlockSpec((sq, sq, sq, ROWS), lambda b, k, j: (b, k, j, 0))],
        out_shape=[jax.ShapeDtypeStruct((B, K, nbuf, ROWS, H), jnp.float32),
                   jax.ShapeDtypeStruct((B, K, nbuf, ROWS), jnp.float32),
                   jax.ShapeDtypeStruct((B, K, nbuf, ROWS), jnp.float32)],
        interpret=jax.default_backend() != "gpu",
        **triton_params(warps, stages),
    )(qr, cache_k, cache_v, k_pos, qp)
    if fuse:
        return _combine(o, m, l, nblk=nblk, G=G, dtype=q.dtype, copies=copies)    # [B, copies, N, H]
    idx = jnp.asarray(rows, jnp.int32)[None, :, None, :]                           # [1, K, 1, G]: head k's rows
    m, l = (jnp.take_along_axis(a, idx, axis=3) for a in (m, l))                   # [B, K, nblk, G]
    o = jnp.take_along_axis(o, idx[..., None], axis=3)                             # [B, K, nblk, G, H]
    num, den = _merge(m, l, o)                                                     # [B, K, G, H], [B, K, G]
    out = num / jnp.maximum(den, jnp.finfo(jnp.float32).tiny)[..., None]         # [B, K, G, H]
    return out.reshape(B, 1, N, H).astype(q.dtype)


_KNOWN_KERNELS = ("combine", "rope")


def decode_kernels(names: str) -> frozenset:
    """The kernel names of a ``$SPECTRACE_DECODE_KERNELS`` value (separated by ``+``, ``,`` or
    spaces; ``none`` or empty: none); a name it does not know is an error, not silently the default."""
    found = frozenset(n for n in re.split(r"[+, ]", names) if n and n != "none")
    for n in sorted(found - set(_KNOWN_KERNELS)):
        raise ValueError(f"SPECTRACE_DECODE_KERNELS={names!r}: unknown kernel {n!r} (known: {', '.join(_KNOWN_KERNELS)})")
    return found


#: The decode-step kernels in use: both by default (``rope``: ``engines.rope_cache``; ``combine``:
#: :func:`_combine`), or those ``$SPECTRACE_DECODE_KERNELS`` names (``none``: the XLA forms). Both on
#: measured 0.981x (0.975..0.987) the decode step of the XLA forms on an H100, with 31% (8B) and
#: 20% (1B) fewer launches a step (docs/performance.md, "Session 14").
DEFAULT_DECODE_KERNELS = "rope+combine"
DECODE_KERNELS = decode_kernels(os.environ.get("SPECTRACE_DECODE_KERNELS", DEFAULT_DECODE_KERNELS))
#: Whether :func:`attend` merges in :func:`_combine` by default.
COMBINE = "combine" in DECODE_KERNELS
#: The most slot ranges the combine merges per loop step (a power of two; the partials are padded
#: to a whole number of steps): the 10741-token prompt's 43 ranges are one step.
COMBINE_CHUNK = 64


def _combine_chunk(nblk: int) -> int:
    return min(COMBINE_CHUNK, 1 << (nblk - 1).bit_length())


def combine_supported(G: int) -> bool:
    """Whether :func:`_combine` can merge G query rows a KV head (G must divide the 16-row tile,
    hence be a power of two, as Triton blocks must)."""
    return ROWS % G == 0


def _combine_kernel(o_ref, m_ref, l_ref, out_ref, *, nblk: int, G: int, copies: int):
    """Batch row b, query head n: its partials of ``nblk`` ranges merged online, C ranges a step,
    into out [H] (written ``copies`` times). One program per query head: 8 programs (one per KV
    head) took ~8 us on an H100."""
    b, n = pl.program_id(0), pl.program_id(1)
    k = n // G
    r = (k % (ROWS // G)) * G + n % G                                              # head n's row in its KV head's tile
    C, H = _combine_chunk(nblk), o_ref.shape[-1]

    def step(c, carry):
        mx, den, acc = carry                                                       # [], [], [H]
        js = pl.ds(pl.multiple_of(c * C, C), C)
        valid = (c * C + jnp.arange(C)) < nblk                                     # [C]: the padding is unwritten
        mc = jnp.where(valid, m_ref[b, k, js, r], _FILL)                          # [C]
        lc = jnp.where(valid, l_ref[b, k, js, r], 0.0)                            # [C]
        oc = jnp.where(valid[:, None], o_ref[b, k, js, r, :], 0.0)                # [C, H]
        m_new = jnp.maximum(mx, jnp.max(mc))                                       # []
        w = jnp.where(valid, jnp.exp(mc - m_new), 0.0)                            # [C]
        decay = jnp.exp(mx - m_new)
        return m_new, den * decay + jnp.sum(w * lc), acc * decay + jnp.sum(w[:, None] * oc, axis=0)

    init = (jnp.float32(_FILL), jnp.float32(0.0), jnp.zeros((H,), jnp.float32))
    _, den, acc = lax.fori_loop(0, -(-nblk // C), step, init)
    out = (acc / jnp.maximum(den, _TINY)).astype(out_ref.dtype)                    # [H]
    for r in range(copies):  # the row again where the out projection wants two (no XLA concatenate)
        out_ref[b, r, n, :] = out


def _combine(o, m, l, *, nblk: int, G: int, dtype, copies: int = 1):
    """The kernel's partials o [B, K, nbuf, ROWS, H], m, l [B, K, nbuf, ROWS] (the first ``nblk``
    ranges written) -> [B, copies, N, H]: one program per (batch row, query head) instead of XLA's
    gathers, reductions and division (~5 small kernels a layer)."""
    B, K, _, _, H = o.shape
    return pl.pallas_call(
        functools.partial(_combine_kernel, nblk=nblk, G=G, copies=copies),
        grid=(B, K * G),
        out_shape=jax.ShapeDtypeStruct((B, copies, K * G, H), dtype),
        interpret=jax.default_backend() != "gpu",
        **triton_params(4, 1),
    )(o, m, l)


def _merge(m, l, o):
    """Blocks' partials (axis 2) merged exactly: weights exp(m - max m), then weighted sums.

    (One ``lax.reduce`` carrying (max, sum, output) together is the same merge in one pass, but
    XLA's kernel for it was slower on an H200: 27.3 against 23.4 us a call with the kernel.)"""
    w = jnp.exp(m - jnp.max(m, axis=2, keepdims=True))                             # [B, K, nblk, G]
    return jnp.sum(w[..., None] * o, axis=2), jnp.sum(w * l, axis=2)               # [B, K, G, H], [B, K, G]
