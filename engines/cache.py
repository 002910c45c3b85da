"""The KV cache: a pytree preallocated for the context, updated by returning a new value.

Slots are written in order (slot index = tokens written so far), independently of position ids;
each slot remembers its token's position so attention can mask by position (``pos`` -1 = empty
or padding). That is what lets a pruned prompt keep its original, gapped positions.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from engines.config import LlamaConfig


class KVCache(NamedTuple):
    """Post-RoPE keys and values of every layer, plus each slot's position id.

    k, v: [L, B, S, K, H] in the model dtype; pos: [B, S] int32 (-1 = nothing there);
    length: [] int32, the next slot to write.
    """

    k: jax.Array
    v: jax.Array
    pos: jax.Array
    length: jax.Array

    @property
    def capacity(self) -> int:
        """S, the number of slots."""
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return sum(x.size * x.dtype.itemsize for x in self)


def allocate_cache(cfg: LlamaConfig, *, batch: int, slots: int, dtype, device) -> KVCache:
    """An empty cache built directly on ``device`` (no host buffer, no transfer).

    The builder is compiled once per (config, batch, slots, dtype, device): a fresh ``jax.jit``
    per call would recompile on every prefill (tens of ms inside the timed window).
    """
    return _builder(cfg, int(batch), int(slots), jnp.dtype(dtype), device)()


@functools.lru_cache(maxsize=32)
def _builder(cfg: LlamaConfig, batch: int, slots: int, dtype, device):
    L, K, H = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim

    def make():
        return KVCache(
            k=jnp.zeros((L, batch, slots, K, H), dtype),                           # [L, B, S, K, H]
            v=jnp.zeros((L, batch, slots, K, H), dtype),                           # [L, B, S, K, H]
            pos=jnp.full((batch, slots), -1, jnp.int32),                           # [B, S]
            length=jnp.zeros((), jnp.int32),
        )

    return jax.jit(make, out_shardings=jax.sharding.SingleDeviceSharding(device))
