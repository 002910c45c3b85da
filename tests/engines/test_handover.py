"""The pruned base chunk queued on the device behind device scoring (engines.speculative.handover).

prefill_seq_len 64, so a ~57-token prompt is one draft chunk and its kept tokens one base chunk
(the case the handover takes); the tiny embedded models, float32 on the CPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from spectrace.tracer.testing import capture_trace

from spectrace.engines import BaseEngine
from spectrace.engines.speculative import handover
from spectrace.engines.speculative import scoring as scoring_mod
from spectrace.engines.speculative.engine import SpecPrefillEngine
from spectrace.engines.tokenizer import corpus_text
from test_scoring import assert_same_selection, reference_scores, reference_select

T, CTX = 64, 256
OPTS = dict(keep=0.3, chunk_size=8, look_ahead=4)
PROMPT = corpus_text()[:260]


@pytest.fixture(scope="module")
def models():
    draft = BaseEngine.from_pretrained("default-draft", prefill_seq_len=T, ctx_len=CTX, name="spec")
    base = BaseEngine.from_pretrained("default-base", prefill_seq_len=T, ctx_len=CTX)
    return draft, base


def pruned_spans(t):
    window = t.one("ttft.base_pruned")
    return t.one("bind", engine="base", within=window), t.one("prefill.chunk", engine="base", within=window)


def test_the_queued_pruned_chunk_gives_the_round_trips_answer(models, monkeypatch):
    draft, base = models
    eng = SpecPrefillEngine(draft, base, scoring="device", **OPTS)
    with capture_trace() as t:
        got = eng.run(PROMPT, gen_len=4)                                       # baseline first: the cache exists
    bind, chunk = pruned_spans(t)
    assert bind["queued"] is True and chunk["queued"] is True
    t.assert_bytes("other", 0, span=bind)                                      # the inputs were gathered on the device
    assert chunk["chunk.tokens"] == got.kept_tokens
    bound = scoring_mod.max_kept_tokens(got.prompt_tokens, eng.chunk_size, eng.keep)
    assert got.padded_len_pruned == min(T, -(bound // -handover.PRUNED_MULTIPLE) * handover.PRUNED_MULTIPLE) == 32
    assert got.num_chunks_pruned == 1

    monkeypatch.setattr(handover, "same_device", lambda d, b: False)           # the host round trip
    with capture_trace() as t:
        want = eng.run(PROMPT, gen_len=4)
    bind, chunk = pruned_spans(t)
    assert "queued" not in bind.attributes and t.bytes("other", span=bind) > 0
    assert got.kept_indices.tolist() == want.kept_indices.tolist()
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    assert got.tokens.tolist() == want.tokens.tolist()
    # And against no cache at all: a plain forward over the kept tokens at their original positions.
    ids = np.asarray(base.tokenizer(PROMPT)["input_ids"])
    kept = got.kept_indices
    np.testing.assert_allclose(got.logits, base.forward_logits(ids[kept], kept)[-1], rtol=1e-4, atol=1e-4)


def test_the_handover_keeps_the_reference_selection(models):
    draft, base = models
    rh = SpecPrefillEngine(draft, base, **OPTS).run(PROMPT, gen_len=0, baseline=False)
    keys = np.asarray(draft.cache.stacked_keys(rh.prompt_tokens))             # [L, S, K, H]
    rd = SpecPrefillEngine(draft, base, scoring="device", **OPTS).run(PROMPT, gen_len=0, baseline=False)
    ref_scores = reference_scores(rh.anchor_queries, keys, 13)
    ref_idx = reference_select(ref_scores, OPTS["keep"], OPTS["chunk_size"])
    assert_same_selection(rd.kept_indices, ref_idx, ref_scores, OPTS["keep"], OPTS["chunk_size"])


def test_an_eos_in_the_look_ahead_drops_the_queued_chunk(models):
    # The chunk was queued with every anchor's scoring; an EOS among the fed tokens means fewer
    # anchors, scoring again, and the base prefilled again from the host's indices.
    draft, base = models
    pre = draft.prefill(PROMPT, window=None)
    fed = draft.decode(pre, 4, window=None).tokens[:-1]
    cut = max(i for i in range(len(fed)) if fed[i] not in fed[:i])
    saved = draft.config
    try:
        draft.config = dataclasses.replace(saved, eos_token_id=int(fed[cut]))
        with capture_trace() as t:
            r = SpecPrefillEngine(draft, base, scoring="device", **OPTS).run(PROMPT, gen_len=2, baseline=True)
        rh = SpecPrefillEngine(draft, base, **OPTS).run(PROMPT, gen_len=0, baseline=False)
    finally:
        draft.config = saved
    bind, _ = pruned_spans(t)
    assert "queued" not in bind.attributes and r.anchors == rh.anchors == 1 + cut
    keys = np.asarray(draft.cache.stacked_keys(rh.prompt_tokens))
    ref_scores = reference_scores(rh.anchor_queries, keys, 13)
    assert_same_selection(r.kept_indices, reference_select(ref_scores, 0.3, 8), ref_scores, 0.3, 8)
    ids = np.asarray(base.tokenizer(PROMPT)["input_ids"])
    np.testing.assert_allclose(r.logits, base.forward_logits(ids[r.kept_indices], r.kept_indices)[-1],
                               rtol=1e-4, atol=1e-4)


def test_no_handover_where_the_kept_tokens_need_more_than_one_chunk(models):
    draft, base = models
    small = BaseEngine.from_pretrained("default-base", prefill_seq_len=16, ctx_len=CTX)
    small.prefill_from_ids(np.arange(3, 8), np.arange(5))                      # a cache exists
    assert handover.pruned_rows(small, 57, chunk_size=8, keep=0.3) is None     # up to 25 kept > 16 rows
    base.prefill_from_ids(np.arange(3, 8), np.arange(5))                       # (run alone: a cache exists)
    assert handover.pruned_rows(base, 57, chunk_size=8, keep=0.3) == 32       # up to 25 kept: 16s, not 128s
    assert handover.pruned_rows(base, 180, chunk_size=8, keep=0.3) == 64      # up to 57 kept: 64 = T
    full = BaseEngine(base.config, base.params, base.tokenizer, prefill_seq_len=T, ctx_len=CTX, device=base.device,
                      options=dataclasses.replace(base.options, last_chunk="full"))
    full.prefill_from_ids(np.arange(3, 8), np.arange(5))
    assert handover.pruned_rows(full, 57, chunk_size=8, keep=0.3) == T         # whole chunks, as the base's own
    assert handover.same_device(draft, base)
