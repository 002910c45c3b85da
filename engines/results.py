"""What the engines return: the outcome of a prefill and of a greedy decode."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PrefillResult:
    """One prefill pass.

    ``padded_len`` is the length the chunk loop computes, padding included: ``num_chunks *
    prefill_seq_len`` (QEfficient's meaning) with ``EngineOptions(last_chunk="full")``, less when
    the final chunk is fitted (``"fit"``, the default). ``cache_len`` is how many cache slots hold real tokens after it
    (``prompt_tokens`` plus any cache continued from before). ``next_position`` is the position
    id the first generated token gets: the last real position + 1, which for a pruned prompt is
    the original prompt length. ``queries`` (only when asked) is the post-RoPE query of the last
    real token in every layer, ``[L, N, H]`` float32, left on the device.
    """

    logits: np.ndarray | None        # [V] float32, the last real token's (None: left on the device)
    prompt_tokens: int
    padded_len: int
    num_chunks: int
    next_position: int
    cache_len: int
    token_ids: np.ndarray            # [P] int32, real tokens only
    positions: np.ndarray            # [P] int32
    elapsed_s: float                 # wall time of the whole call (tokenize .. logits on host)
    queries: object = None           # jax.Array [L, N, H] float32, or None
    last_logits: object = field(default=None, repr=False)  # jax.Array [B, V] on device (decode starts here)
    serial: int = field(default=0, repr=False)             # which cache state this belongs to
    #: The chunks' inputs as placed on the device: one [2, 1, T_i] int32 array per chunk (tokens;
    #: positions), real tokens first, padding at position -1. None for the per-token Python prefill
    #: and for a queued prefill. What the speculative engine gathers the kept tokens from.
    device_inputs: tuple | None = field(default=None, repr=False)


@dataclass(frozen=True)
class QueuedPrefill:
    """A one-chunk prefill dispatched from inputs already on the device, not yet waited for
    (:meth:`BaseEngine.queue_prefill`); :meth:`BaseEngine.prefill_from_ids` takes it as ``queued``.

    ``rows``: the chunk's computed length (real tokens plus padding at position -1).
    """

    logits: object                   # jax.Array [B, V] float32, its copy to the host queued
    rows: int
    serial: int                      # the engine's cache state it produced


@dataclass
class GenerateResult:
    """A greedy decode: ``tokens[0]`` is the argmax of the prefill logits, each next one a step later.

    ``queries`` (only when asked): post-RoPE queries of the fed tokens ``tokens[:-1]`` in every
    layer, ``[G-1, L, N, H]`` float32 on the device (the look-ahead anchors of speculative prefill).
    ``last_token=False`` (``DecodeMixin.decode``): every token was fed, none made after the last,
    so ``queries`` is ``[G, L, N, H]`` and there were ``G`` forward passes.
    """

    tokens: np.ndarray               # [G] int32
    prefill: PrefillResult
    decode_s: float                  # wall time of the decode (incl. tokens back to host)
    text: str | None = None
    queries: object = None
    last_token: bool = True          # False: the last step fed its token for its queries only

    @property
    def steps(self) -> int:
        """Forward passes the decode ran (one fewer than tokens, the first coming from prefill;
        as many as tokens without ``last_token``)."""
        return len(self.tokens) if not self.last_token else max(len(self.tokens) - 1, 0)

    @property
    def ms_per_token(self) -> float:
        return 1e3 * self.decode_s / self.steps if self.steps else 0.0
