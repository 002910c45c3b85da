"""SpecPrefill token scoring: which prompt tokens the base model has to see.

The math is the published algorithm (SpecPrefill, ICML 2025; the authors' vLLM worker
``LookAheadSpecWorker._token_importance_from_attn_scores``), not QEfficient's port:

1. anchors ``A`` = the draft's post-RoPE query of the last *real* prompt token in every layer,
   plus one per look-ahead decode step; keys = the draft's post-RoPE prompt keys (GQA: query
   head ``n`` reads KV head ``n // (N // K)``);
2. per layer, head and anchor: ``softmax(q . K^T / sqrt(H))`` over the ``S`` real prompt tokens,
   in fp32 (look-ahead anchors attend to the prompt only, as in the reference);
3. average-pool every row with ``pool_kernel`` (13), stride 1, zero padding ``k // 2`` on the
   left and ``k - 1 - k // 2`` on the right, always dividing by ``k``. This is exactly what the
   reference's ``F.avg_pool1d(kernel_size=k, padding=k // 2, stride=1)`` computes
   (``count_include_pad=True`` is torch's default): tokens near either end of the prompt are
   damped by the zeros. For an even ``k`` torch returns ``S + 1`` values; we keep the first
   ``S``, which is the asymmetric padding above;
4. max over layers x heads, mean over anchors -> one score per prompt token;
   on a draft with sliding-window layers (Gemma) each such layer scores as it attends: an
   anchor at position p reads only the keys with position > p - window there (``windows``,
   ``anchor_positions``), so a sliding layer's probabilities sit on the last window;
5. chunks of ``chunk_size`` (32; the last one may be shorter and is scored by the mean of its
   real tokens), keep the top ``ceil(n_chunks * keep)`` chunks (ties: the earlier chunk wins),
   always keep the last prompt token, return the sorted token indices.

Two implementations of the same math:

* host (numpy), split the way QEfficient's host path is timed: :func:`assemble` (stack the
  copied queries, cast keys to fp32), :func:`compute` (token scores), :func:`select` (indices);
* device (:func:`score_device`, one ``jit``): queries and the key cache never leave the device;
  the output is a fixed-size index vector plus a count, so one small copy brings the answer back.

Key layouts are letter strings over ``L, S, K, H`` and optionally ``B`` (batch, size 1), e.g.
``"LSKH"``, ``"LKSH"`` or ``"LBSKH"``; keys come as one array in that layout or as one array per
layer (the layout without ``L``, stacked where ``L`` stands), so the engine hands over its
per-layer cache exactly as it stores it (no device-side copy to reorder it first).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

LAYER_SETS: tuple[str, ...] = ("all", "last4", "last1", "full", "sliding")
_NO_WINDOW = 1 << 30  # stands for "no window" in the device program's per-layer window vector

# ceil(n * keep) in binary floating point overshoots when n * keep is a whole number that
# 0.1-style fractions cannot hit exactly (30 * 0.1 = 3.0000000000000004 -> 4 chunks). The
# reference keeps that extra chunk; we do not: a whole number of chunks is that number.
_CEIL_SLACK = 1e-9


# --------------------------------------------------------------------------- shared helpers


def validate(*, keep: float, chunk_size: int, pool_kernel: int, layers: str) -> None:
    """Raise ``ValueError`` naming the parameter when a scoring option is out of range."""
    if not isinstance(keep, (int, float)) or isinstance(keep, bool) or not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if not isinstance(pool_kernel, int) or isinstance(pool_kernel, bool) or pool_kernel < 1:
        raise ValueError(f"pool_kernel must be an integer >= 1 (1 = no pooling), got {pool_kernel!r}")
    if layers not in LAYER_SETS and not isinstance(layers, tuple):
        raise ValueError(f"layers must be one of {LAYER_SETS} or a tuple of layer indices, got {layers!r}")


def layer_indices(n_layers: int, layers, windows=None) -> tuple[int, ...]:
    """Which of the draft's ``n_layers`` layers take part: ``"all"``, the last 4 (``"last4"``),
    the last one (``"last1"``), its full-attention (``"full"``) or sliding-window (``"sliding"``)
    layers by ``windows`` (per layer: a window or None), or an explicit tuple of indices."""
    if isinstance(layers, tuple):
        if not layers or any(not isinstance(i, int) or not 0 <= i < n_layers for i in layers):
            raise ValueError(f"layers={layers!r}: layer indices must lie in [0, {n_layers})")
        return tuple(sorted(set(layers)))
    if layers == "all":
        return tuple(range(n_layers))
    if layers == "last4":
        return tuple(range(max(0, n_layers - 4), n_layers))
    if layers == "last1":
        return (n_layers - 1,)
    if layers in ("full", "sliding"):
        windows = tuple(windows or (None,) * n_layers)
        picked = tuple(i for i, w in enumerate(windows) if (w is None) == (layers == "full"))
        if not picked:
            raise ValueError(f"layers={layers!r}: the draft has no {layers}-attention layers")
        return picked
    raise ValueError(f"layers must be one of {LAYER_SETS}, got {layers!r}")


def layer_pick(idx: tuple[int, ...]):
    """An index for the layer axis: a slice for a contiguous run (a view, no gather), else an int array."""
    if idx == tuple(range(idx[0], idx[-1] + 1)):
        return slice(idx[0], idx[-1] + 1)
    return np.asarray(idx, np.int32)


def windows_of(windows, idx) -> tuple | None:
    """The participating layers' windows, or None when none of them has one."""
    if windows is None:
        return None
    picked = tuple(windows[i] for i in idx)
    return picked if any(w is not None for w in picked) else None


def num_chunks(n_tokens: int, chunk_size: int) -> int:
    return -(n_tokens // -chunk_size)


def num_kept_chunks(n_tokens: int, chunk_size: int, keep: float) -> int:
    """``ceil(n_chunks * keep)``, at least 1, at most ``n_chunks`` (see ``_CEIL_SLACK``)."""
    n = num_chunks(n_tokens, chunk_size)
    return min(n, max(1, math.ceil(n * keep - _CEIL_SLACK)))


def max_kept_tokens(n_tokens: int, chunk_size: int, keep: float) -> int:
    """Upper bound on the kept tokens of any prompt of at most ``n_tokens`` tokens."""
    return min(n_tokens, num_kept_chunks(n_tokens, chunk_size, keep) * chunk_size + 1)


def _pool_pads(kernel: int) -> tuple[int, int]:
    return kernel // 2, kernel - 1 - kernel // 2


def _check_layout(layout: str) -> None:
    if not isinstance(layout, str) or sorted(layout.replace("B", "", 1)) != sorted("LSKH"):
        raise ValueError(f"key_layout must be a permutation of 'LSKH' plus an optional 'B', got {layout!r}")


def _drop_batch(keys, layout: str, take):
    """Index batch row 0 away when the layout has a ``B`` axis."""
    _check_layout(layout)
    if "B" not in layout:
        return keys, layout
    return take(keys, 0, axis=layout.index("B")), layout.replace("B", "")


def _gqa_split(n_heads: int, n_kv: int) -> int:
    if n_heads % n_kv:
        raise ValueError(f"query heads ({n_heads}) must be a multiple of KV heads ({n_kv})")
    return n_heads // n_kv


# --------------------------------------------------------------------------- host (numpy)


def assemble(anchor_queries: Sequence[np.ndarray], keys: np.ndarray | Sequence[np.ndarray],
             n_real: int, *, layers="all", key_layout: str = "LSKH") -> tuple[np.ndarray, np.ndarray]:
    """Stack the anchors and cut the copied key cache down to the real prompt, in fp32.

    ``anchor_queries``: one ``[L, N, H]`` array per anchor (final chunk's last real token first,
    then the look-ahead steps). ``keys``: the copied cache in ``key_layout`` (one array, or one
    per layer without the ``L`` letter). Returns ``queries [A, L', N, H]`` and
    ``keys [L', S, K, H]`` with ``S = n_real`` and ``L'`` the layers that take part.
    """
    q = np.stack([np.asarray(a, dtype=np.float32) for a in anchor_queries])      # [A, L, N, H]
    if isinstance(keys, np.ndarray):
        k_all = keys
    else:
        k_all = np.stack([np.asarray(k) for k in keys], axis=key_layout.index("L"))
    k_all, key_layout = _drop_batch(k_all, key_layout, np.take)
    k_all = np.transpose(k_all, [key_layout.index(c) for c in "LSKH"])           # [L, S_cache, K, H]
    sl = layer_pick(layer_indices(q.shape[1], layers))
    k = np.ascontiguousarray(k_all[sl, :n_real], dtype=np.float32)               # [L', S, K, H]
    return np.ascontiguousarray(q[:, sl]), k


def compute(queries: np.ndarray, keys: np.ndarray, *, pool_kernel: int = 13, windows=None,
            anchor_positions=None) -> np.ndarray:
    """Token importance ``[S]`` from ``queries [A, L, N, H]`` and ``keys [L, S, K, H]``.

    ``windows``: per given layer, a sliding window or None; a windowed layer's anchor at
    ``anchor_positions[a]`` sees only the keys at positions ``> anchor_positions[a] - window``
    (key positions are 0..S-1: the draft's unpruned prompt). Loops over layers so that one
    layer's ``[K, G*A, S]`` block is live at a time (the whole ``[L, N, A, S]`` tensor is
    ~180 MB for a 1B draft at 10k tokens); the running max over layers x heads makes the loop exact.
    """
    A, L, N, H = queries.shape
    _, S, K, _ = keys.shape
    G = _gqa_split(N, K)
    left, right = _pool_pads(pool_kernel)
    scale = np.float32(1.0 / math.sqrt(H))
    best = np.full((A, S), -np.inf, dtype=np.float32)                            # [A, S]
    for l in range(L):
        # One batched BLAS matmul per layer (np.einsum would not use BLAS here: ~10x slower).
        q = queries[:, l].reshape(A, K, G, H).transpose(1, 2, 0, 3).reshape(K, G * A, H)  # [K, G*A, H]
        logits = np.matmul(q, keys[l].transpose(1, 2, 0)) * scale                # [K, G*A, S]
        if windows is not None and windows[l] is not None:
            apos = np.asarray(anchor_positions).reshape(A, 1)
            seen = np.arange(S)[None, :] > apos - windows[l]                     # [A, S]
            logits = np.where(np.tile(seen, (G, 1))[None], logits, -np.inf).astype(np.float32)
        top = logits.max(axis=-1, keepdims=True)
        logits -= np.where(np.isfinite(top), top, 0)
        p = np.exp(logits, out=logits)
        p /= np.maximum(p.sum(axis=-1, keepdims=True), np.finfo(np.float32).tiny)  # softmax over S (0: none seen)
        if pool_kernel > 1:
            padded = np.pad(p, [(0, 0), (0, 0), (left, right)])                  # [K, G*A, S+k-1]
            pooled = padded[..., 0:S].copy()
            for j in range(1, pool_kernel):                                      # exact windowed sum
                pooled += padded[..., j:j + S]
            p = pooled / np.float32(pool_kernel)
        p = p.reshape(K * G, A, S)                                               # [N, A, S]
        np.maximum(best, p.max(axis=0), out=best)                                # max over heads
    return best.mean(axis=0)                                                     # [S], mean over anchors


def select(scores: np.ndarray, *, keep: float, chunk_size: int = 32) -> np.ndarray:
    """Sorted kept token indices (int32) from token scores ``[S]``."""
    S = scores.shape[0]
    n = num_chunks(S, chunk_size)
    padded = np.zeros(n * chunk_size, dtype=np.float64)
    padded[:S] = scores
    counts = np.full(n, chunk_size, dtype=np.float64)
    counts[-1] = S - (n - 1) * chunk_size
    chunk_scores = (padded.reshape(n, chunk_size).sum(axis=1) / counts).astype(np.float32)
    order = np.argsort(-chunk_scores, kind="stable")                             # ties: earlier chunk first
    kept = np.zeros(n * chunk_size, dtype=bool)
    kept.reshape(n, chunk_size)[order[:num_kept_chunks(S, chunk_size, keep)]] = True
    kept = kept[:S]
    kept[S - 1] = True                                                           # always the last token
    return np.flatnonzero(kept).astype(np.int32)


def score_host(anchor_queries, keys, n_real: int, *, keep: float, chunk_size: int = 32,
               pool_kernel: int = 13, layers="all", key_layout: str = "LSKH", windows=None,
               anchor_positions=None) -> np.ndarray:
    """``assemble`` + ``compute`` + ``select`` in one call (untimed; the engine times each).
    ``windows``: per model layer (the queries' L), a window or None."""
    q, k = assemble(anchor_queries, keys, n_real, layers=layers, key_layout=key_layout)
    idx = layer_indices(len(anchor_queries[0]), layers, windows)
    return select(compute(q, k, pool_kernel=pool_kernel, windows=windows_of(windows, idx),
                          anchor_positions=anchor_positions), keep=keep, chunk_size=chunk_size)


# --------------------------------------------------------------------------- device (jax)


def score_device(queries, keys, n_real: int, *, keep: float, chunk_size: int = 32,
                 pool_kernel: int = 13, layers="all", key_layout: str = "LSKH", windows=None,
                 anchor_positions=None):
    """Kept indices computed where ``queries [A, L, N, H]`` and ``keys`` (in ``key_layout``, or a
    sequence of per-layer arrays; any cache length ``S_cache >= n_real``) already live.
    ``queries`` may also be a tuple of parts, ``[L, N, H]`` (one anchor) or ``[A_i, L, N, H]``,
    joined in order inside the compiled program (no separate concatenation to wait for).

    Returns device arrays ``(indices [M] int32, count [] int32)``: the first ``count`` entries
    are the sorted kept indices, the rest are ``-1``; ``M = max_kept_tokens(S_cache, ...)`` is
    static, so one compilation serves every prompt length of a cache size. ``n_real`` and the
    number of chunks to keep are traced scalars (computed here on the host, so host and device
    agree on ``ceil``). ``windows`` (per model layer) and ``anchor_positions`` [A]: as
    :func:`compute`'s, for a draft with sliding-window layers.
    """
    _check_layout(key_layout)
    per_layer = isinstance(keys, (list, tuple))
    if per_layer:
        keys = tuple(keys)
        s_cache = keys[0].shape[key_layout.replace("L", "").index("S")]
    else:
        s_cache = keys.shape[key_layout.index("S")]
    n_keep = num_kept_chunks(n_real, chunk_size, keep)
    queries = tuple(queries) if isinstance(queries, (list, tuple)) else queries
    n_layers = len(keys) if per_layer else keys.shape[key_layout.index("L")]
    idx = layer_indices(n_layers, layers, windows)
    wins = windows_of(windows, idx)
    fn = _device_fn(key_layout, per_layer, idx, wins, chunk_size, pool_kernel,
                    max_kept_tokens(s_cache, chunk_size, keep))
    apos = np.zeros(1, np.int32) if wins is None else np.asarray(anchor_positions, np.int32)
    return fn(queries, keys, np.int32(n_real), np.int32(n_keep), apos)  # numpy: placed with the keys


def join_anchors(parts):
    """Anchor query parts, ``[L, N, H]`` (one anchor) or ``[A_i, L, N, H]``, joined in order into
    ``[A, L, N, H]`` (jax arrays; inside ``score_device``'s program or after it)."""
    import jax.numpy as jnp

    return jnp.concatenate([q[None] if q.ndim == 3 else q for q in parts])


@functools.lru_cache(maxsize=None)
def _device_fn(key_layout: str, per_layer: bool, layer_idx: tuple, windows, chunk_size: int, pool_kernel: int,
               max_kept: int):
    import jax
    import jax.numpy as jnp
    from jax import lax

    left, right = _pool_pads(pool_kernel)

    def fn(queries, keys, n_real, n_keep, anchor_positions):
        with jax.named_scope("spec_scoring"):
            if isinstance(queries, tuple):
                queries = join_anchors(queries)                                    # [A, L, N, H]
            A, L, N, H = queries.shape
            sl = layer_pick(layer_idx)
            key_sl = sl
            if per_layer:  # stack only the layers that take part
                keys, key_sl = jnp.stack([keys[i] for i in layer_idx], axis=key_layout.index("L")), slice(None)
            keys, layout = _drop_batch(keys, key_layout, jnp.take)
            k = jnp.transpose(keys, [layout.index(c) for c in "LSKH"])[key_sl]  # [L', S_cache, K, H]
            k = k.astype(jnp.float32)
            Lp, S_cache, K, _ = k.shape
            G = _gqa_split(N, K)
            q = queries[:, sl].astype(jnp.float32).reshape(A, Lp, K, G, H)       # [A, L', K, G, H]
            logits = jnp.einsum("ALKGH,LSKH->LKGAS", q, k,
                                precision=lax.Precision.HIGHEST) / math.sqrt(H)  # [L', K, G, A, S_cache]
            pos = jnp.arange(S_cache)                                            # [S_cache]
            real = pos < n_real
            logits = jnp.where(real, logits, -jnp.inf)
            if windows is not None:  # each sliding layer's anchors read only their window
                w = jnp.asarray([_NO_WINDOW if x is None else x for x in windows], jnp.int32)  # [L']
                seen = pos[None, None, :] > anchor_positions[None, :, None] - w[:, None, None]  # [L', A, S]
                logits = jnp.where(seen[:, None, None], logits, -jnp.inf)
            # 0 beyond the prompt; an anchor that sees no prompt key in a layer (a window shorter
            # than its look-ahead distance) gets a row of zeros, not NaN
            p = jnp.nan_to_num(jax.nn.softmax(logits, axis=-1), nan=0.0)
            if pool_kernel > 1:
                p = lax.reduce_window(p, 0.0, lax.add, (1, 1, 1, 1, pool_kernel), (1,) * 5,
                                      [(0, 0)] * 4 + [(left, right)]) / pool_kernel
            tok = p.max(axis=(0, 1, 2)).mean(axis=0)                             # [S_cache]
            # Chunk means over real tokens only; chunks past the prompt sort last.
            C = -(S_cache // -chunk_size)
            tok = jnp.pad(jnp.where(real, tok, 0.0), (0, C * chunk_size - S_cache))
            cnt = jnp.clip(n_real - jnp.arange(C) * chunk_size, 0, chunk_size)   # [C]
            chunk = tok.reshape(C, chunk_size).sum(axis=1) / jnp.maximum(cnt, 1)  # [C]
            neg = jnp.where(cnt > 0, -chunk, jnp.inf)
            order = jnp.argsort(neg, stable=True)                                # ties: earlier chunk first
            rank = jnp.zeros(C, jnp.int32).at[order].set(jnp.arange(C, dtype=jnp.int32))
            keep_tok = (rank < n_keep)[pos // chunk_size] & real                 # [S_cache]
            keep_tok = keep_tok | (pos == n_real - 1)
            (idx,) = jnp.nonzero(keep_tok, size=max_kept, fill_value=-1)
            return idx.astype(jnp.int32), keep_tok.sum().astype(jnp.int32)

    return jax.jit(fn)
