"""The handover from device scoring to the pruned base prefill, kept on the device.

Without it the host waits for the kept indices, copies them back, builds the base's chunk
inputs from them and places those on the device again; the base chunk's first kernel then
starts after the host's wake-up, the copy, ``bind`` (1.5 ms in ``DevicePutWithSharding`` on the
H200 host for 9 KB) and the chunk's dispatch (1.5 ms from the call to its first kernel, ~260
argument buffers): docs/performance.md, session 10's idle gaps.

Here the kept tokens are gathered on the device from the draft's own chunk inputs, and the
base's chunk is queued behind scoring, while the draft's look-ahead still runs: the chunk's
shape is known before the count, because the kept count of a prompt of ``P`` tokens is at most
``max_kept_tokens(P)`` (``scoring``), and rows past the count are padding at position -1,
invisible to every query (``engines.attention``), so they change neither logits nor cache.
The host still reads the indices (``SpecResult.kept_indices``, the trace) while the base runs.

Only where it is the same computation: device scoring queued behind the look-ahead, draft and
base on one device, and a pruned prompt that fits one base chunk. Everything else takes the
host round trip, as does a look-ahead that fed an EOS (the anchors change, scoring runs again,
and what was queued here is dropped; the base's next prefill starts its cache afresh anyway).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from spectrace.engines.speculative import scoring as score


#: The queued base chunk's rows are the kept-token bound rounded up to this, not to the base's
#: ``FIT_MULTIPLE`` (128; the cache's slots stay multiples of 128). An 8B chunk's time grows with its
#: rows whatever the tiles: on an H100 1104 rows took 0.956x and 1096 0.959x the time of 1152, but
#: the bound itself, 1089 rows, 1.002x: odd counts are slow (``scripts/probe_chunk_rows.py``,
#: docs/performance.md "Session 16"). The 10741-token prompt's bound of 1089 fits 1104 rows here.
PRUNED_MULTIPLE = 16


def pruned_rows(base, n_real: int, *, chunk_size: int, keep: float) -> int | None:
    """Rows of the base chunk any kept subset of an ``n_real``-token prompt fits (the bound
    rounded up to :data:`PRUNED_MULTIPLE`; a whole chunk with the base's ``last_chunk="full"``),
    or None when that is more than one chunk or the base cannot queue."""
    bound = score.max_kept_tokens(n_real, chunk_size, keep)
    if bound > base.prefill_seq_len:
        return None
    rows = base._chunk_lengths(bound, 1, multiple=PRUNED_MULTIPLE)[0]
    return rows if base.can_queue(rows) else None


def same_device(draft, base) -> bool:
    """Whether draft and base share one device (the gather reads the draft's inputs in place)."""
    return draft.mesh is None and base.mesh is None and draft.device == base.device


def queue_pruned(base, inputs: tuple, indices, rows: int):
    """Queue the base's prefill of the kept tokens behind scoring; returns its ``QueuedPrefill``.

    ``inputs``: the draft prefill's ``device_inputs`` (a ``[2, 1, T_i]`` array per chunk); ``indices``
    ``[M]`` int32: device scoring's sorted kept indices, then -1 (the count is not needed: the
    padding tells the chunk where its real rows end).
    """
    return base.queue_prefill(_kept_chunk(inputs, indices, rows=rows, pad_id=base._pad_id))


@functools.partial(jax.jit, static_argnames=("rows", "pad_id"))
def _kept_chunk(inputs: tuple, indices, *, rows: int, pad_id: int):
    """The base chunk's inputs ``[2, 1, R]`` from the draft's: the kept tokens and their original
    positions, then ``pad_id`` at position -1 (the chunk counts its real rows itself).

    The draft's chunks hold the prompt's real tokens first, in order, so token ``i`` of the
    prompt is entry ``i`` of their concatenation (what the kept indices index).
    """
    with jax.named_scope("spec_handover"):
        both = jnp.concatenate([a[:, 0] for a in inputs], axis=1)                  # [2, P_pad]: ids; positions
        M = indices.shape[0]
        sel = indices[:rows] if M >= rows else jnp.pad(indices, (0, rows - M), constant_values=-1)  # [R]
        fill = jnp.array([[pad_id], [-1]], jnp.int32)                              # [2, 1]: padding's id, position
        kept = jnp.where(sel >= 0, both[:, jnp.maximum(sel, 0)], fill)             # [2, R]
        return kept.astype(jnp.int32)[:, None]                                     # [2, 1, R]
