"""Speculative prefill with a Gemma pair (the embedded gemma-tiny-draft / gemma-tiny-base, Gemma 3:
layers s s F s s F, windows 16 and 32), on CPU.

The draft scores every layer by default ("all"), each as it attends: on a sliding layer an
anchor at position p reads only the keys at positions > p - window (docs/gemma.md says why).
The base prefills the kept tokens at their original positions, and the pruned-prompt rule
holds on its sliding layers: a kept token sees the kept subset of its full-prompt window.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from spectrace.tracer.testing import capture_trace

from spectrace.engines import BaseEngine
from spectrace.engines.speculative import scoring
from spectrace.engines.speculative.engine import SpecPrefillEngine
from spectrace.engines.tokenizer import corpus_text
from test_scoring import assert_same_selection, reference_select

T, CTX = 16, 256
OPTS = dict(keep=0.3, chunk_size=8, look_ahead=4)
PROMPT = corpus_text()[:900]  # 199 tokens: 25 scoring chunks, 8 kept; the draft's window is 16


@pytest.fixture(scope="module")
def pair(spectrace_cache):
    draft = BaseEngine.from_pretrained("gemma-tiny-draft", prefill_seq_len=T, ctx_len=CTX, name="spec",
                                       cache_dir=spectrace_cache)
    base = BaseEngine.from_pretrained("gemma-tiny-base", prefill_seq_len=T, ctx_len=CTX, cache_dir=spectrace_cache)
    return draft, base


@pytest.fixture(scope="module")
def host(pair):
    return SpecPrefillEngine(*pair, **OPTS)


def reference_scores(queries, keys, windows, anchor_positions, pool_kernel):
    """Token scores [S] in float64 with loops: per layer, head and anchor, softmax over the keys the
    anchor sees (a sliding layer: positions > anchor - window), zero-padded average pool, max over
    layers x heads, mean over anchors."""
    queries, keys = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    A, L, N, H = queries.shape
    S, K = keys.shape[1], keys.shape[2]
    best = np.full((A, S), -np.inf)
    for a in range(A):
        for l in range(L):
            seen = [s for s in range(S) if windows[l] is None or s > anchor_positions[a] - windows[l]]
            for n in range(N):
                logits = np.array([queries[a, l, n] @ keys[l, s, n // (N // K)] for s in seen]) / math.sqrt(H)
                probs = np.zeros(S)
                probs[seen] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                pooled = np.array([sum(probs[j] for j in range(i - pool_kernel // 2, i - pool_kernel // 2 + pool_kernel)
                                       if 0 <= j < S) / pool_kernel for i in range(S)])
                best[a] = np.maximum(best[a], pooled)
    return best.mean(axis=0)


def test_the_pair_has_sliding_and_full_layers(pair):
    draft, base = pair
    assert draft.config.layer_windows == (16, 16, None, 16, 16, None)
    assert base.config.layer_windows == (32, 32, None, 32, 32, None) and base.config.rope_scaling.factor == 8.0


def test_keep_one_gives_the_full_prefill_logits(pair):
    r = SpecPrefillEngine(*pair, keep=1.0, chunk_size=8, look_ahead=2).run(PROMPT, gen_len=0)
    assert r.kept_indices.tolist() == list(range(r.prompt_tokens))
    np.testing.assert_allclose(r.logits, r.baseline_logits, rtol=1e-6, atol=1e-6)


def test_the_pruned_base_prefill_is_the_rule_and_decode_continues_at_the_original_length(host):
    r = host.run(PROMPT, gen_len=5)
    base = host.base
    ids = np.asarray(base.tokenizer(PROMPT)["input_ids"])
    kept, n = r.kept_indices, r.prompt_tokens
    assert len(kept) < n and np.diff(kept).max() > base.config.sliding_window  # gaps past the window
    # the draft's sliding layers rank its last window first (their softmax is over <= 16 keys)
    assert set(range(n - host.draft.config.sliding_window, n)) <= set(kept.tolist())
    key_mask = np.zeros(n, bool)
    key_mask[kept] = True
    rule = base.forward_logits(ids, key_mask=key_mask)[kept[-1]]          # full prompt, dropped keys masked
    np.testing.assert_allclose(r.logits, rule, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r.logits, base.forward_logits(ids[kept], kept)[-1], rtol=1e-4, atol=1e-4)
    seq_ids = np.concatenate([ids[kept], r.tokens[:-1]])
    seq_pos = np.concatenate([kept, np.arange(n, n + len(r.tokens) - 1)])
    assert base.forward_logits(seq_ids, seq_pos)[len(kept) - 1:].argmax(-1).tolist() == r.tokens.tolist()


def test_host_and_device_scoring_keep_the_float64_windowed_reference(pair, host, spectrace_cache):
    draft = pair[0]
    own_draft = BaseEngine.from_pretrained("gemma-tiny-draft", prefill_seq_len=T, ctx_len=CTX, name="spec",
                                           cache_dir=spectrace_cache)
    device = SpecPrefillEngine(own_draft, pair[1], scoring="device", **OPTS)
    rh = host.run(PROMPT, gen_len=0, baseline=False)
    n = rh.prompt_tokens
    keys = np.asarray(host.draft.cache.stacked_keys(n))                     # [L, S, K, H]
    rd = device.run(PROMPT, gen_len=0, baseline=False)
    apos = np.arange(n - 1, n - 1 + rh.anchors)
    ref = reference_scores(rh.anchor_queries, keys, draft.config.layer_windows, apos, host.pool_kernel)
    ref_idx = reference_select(ref, host.keep, host.chunk_size)
    assert_same_selection(rh.kept_indices, ref_idx, ref, host.keep, host.chunk_size)
    assert_same_selection(rd.kept_indices, ref_idx, ref, host.keep, host.chunk_size)
    # the windows matter: scoring every layer over the whole prompt keeps other tokens
    unwindowed = reference_scores(rh.anchor_queries, keys, (None,) * 6, apos, host.pool_kernel)
    assert reference_select(unwindowed, host.keep, host.chunk_size).tolist() != ref_idx.tolist()


def test_a_sliding_layer_scores_only_its_window(host):
    r = host.run(PROMPT, gen_len=0, baseline=False)
    n, W = r.prompt_tokens, host.draft.config.sliding_window
    keys = np.asarray(host.draft.cache.stacked_keys(n))
    apos = np.arange(n - 1, n - 1 + r.anchors)
    sliding = [0, 1, 3, 4]
    s = scoring.compute(r.anchor_queries[:, sliding], keys[sliding], pool_kernel=13, windows=(W,) * 4,
                        anchor_positions=apos)
    first_seen = n - 1 - W + 1                                              # the last prompt anchor's window
    assert np.all(s[: first_seen - 13 // 2] == 0) and np.all(s[first_seen:] > 0)


def test_full_layers_only_move_fewer_query_bytes(pair):
    eng = SpecPrefillEngine(*pair, layers="full", **OPTS)
    with capture_trace() as trace:
        r = eng.run(PROMPT, gen_len=0, baseline=False)
    cfg = eng.draft.config
    assert r.anchor_queries.shape == (r.anchors, 2, cfg.n_heads, cfg.head_dim)   # layers 2 and 5
    for c in trace.all("prefill.chunk", engine="spec"):
        trace.assert_bytes("prefill_queries", 2 * cfg.n_heads * cfg.head_dim * 4, span=c)
    with pytest.raises(ValueError, match="no sliding-attention layers"):
        scoring.layer_indices(4, "sliding", (None,) * 4)
