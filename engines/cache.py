"""The KV cache: a pytree preallocated for the context, updated by returning a new value.

Slots are written in order (slot index = tokens written so far), independently of position ids;
each slot remembers its token's position so attention can mask by position (``pos`` -1 = empty
or padding). That is what lets a pruned prompt keep its original, gapped positions.

Keys and values are one buffer per layer, not one stacked ``[L, ...]`` array: the unrolled layer
loop reads and updates each layer's buffer in place, where a slice of a stacked buffer would be
copied out for the attention kernel first (a cache's worth of traffic per chunk or decode step).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp



class KVCache(NamedTuple):
    """Post-RoPE keys and values of every layer, plus each slot's position id.

    k, v: tuples of L arrays [B, S, K, H] in the model dtype; pos: [B, S] int32 (-1 = nothing
    there); length: [] int32, the next slot to write.
    """

    k: tuple
    v: tuple
    pos: jax.Array
    length: jax.Array

    @property
    def capacity(self) -> int:
        """S, the number of slots."""
        return self.pos.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(self))

    def stacked_keys(self, n: int):
        """Keys of the first ``n`` slots of batch row 0, stacked: ``[L, n, K, H]`` (a device copy)."""
        return jnp.stack([k[0, :n] for k in self.k])


def allocate_cache(cfg, *, batch: int, slots: int, dtype, device) -> KVCache:
    """An empty cache built directly on ``device`` (no host buffer, no transfer); ``device`` may
    be a ``jax.sharding.Mesh`` (keys and values split by KV head, ``engines.sharding``).

    The builder is compiled once per (config, batch, slots, dtype, device): a fresh ``jax.jit``
    per call would recompile on every prefill (tens of ms inside the timed window).
    """
    return _builder(cfg, int(batch), int(slots), jnp.dtype(dtype), device)()


@functools.partial(jax.jit, donate_argnums=0)
def reset_cache(cache: KVCache) -> KVCache:
    """The same buffers emptied in place: every slot's position -1, length 0.

    The chunked prefill does this inside its first chunk (``model.chunk_forward(fresh=True)``),
    one program fewer per request; the one-token prefill path calls this.

    Keys and values stay as they were: a slot with position -1 is invisible to attention and the
    next prefill overwrites slots from 0. Reusing the buffers, rather than allocating a new cache
    per prefill, saves the allocation and keeps the cache's device addresses stable; XLA
    re-records its command buffers (CUDA graphs) when buffer addresses change, which an H100
    XPlane showed costing ~7 ms on the look-ahead's first call with a fresh cache. The TTFT
    effect of this change alone was within the GPU's run-to-run noise.
    """
    return cache._replace(pos=jnp.full_like(cache.pos, -1), length=jnp.zeros_like(cache.length))


@functools.lru_cache(maxsize=32)
def _builder(cfg, batch: int, slots: int, dtype, device):
    L, K, H = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim

    def make():
        return KVCache(
            k=tuple(jnp.zeros((batch, slots, K, H), dtype) for _ in range(L)),     # L x [B, S, K, H]
            v=tuple(jnp.zeros((batch, slots, K, H), dtype) for _ in range(L)),     # L x [B, S, K, H]
            pos=jnp.full((batch, slots), -1, jnp.int32),                           # [B, S]
            length=jnp.zeros((), jnp.int32),
        )

    if isinstance(device, jax.sharding.Mesh):  # a tensor-parallel engine: split by KV head
        from spectrace.engines.sharding import cache_shardings

        return jax.jit(make, out_shardings=cache_shardings(L, device))
    return jax.jit(make, out_shardings=jax.sharding.SingleDeviceSharding(device))
