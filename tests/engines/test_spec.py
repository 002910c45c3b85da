"""The speculative-prefill engine, checked over its recorded trace and against independent references.

Tiny embedded models (default-draft / default-base), prefill_seq_len 16, chunks of 8 tokens, so
prompts of ~60 tokens have several prefill chunks and several scoring chunks.
"""

from __future__ import annotations

import copy

import jax.numpy as jnp
import numpy as np
import pytest
from spectrace.tracer.testing import capture_trace

from spectrace.engines import BaseEngine
from spectrace.engines.speculative import scoring as scoring_mod
from spectrace.engines.cache import allocate_cache
from spectrace.engines.speculative.engine import TTFT_FIELDS, SpecPrefillEngine
from spectrace.engines.tokenizer import corpus_text
from test_scoring import assert_same_selection, reference_scores, reference_select

T, CTX = 16, 256
OPTS = dict(prefill_seq_len=T, ctx_len=CTX, keep=0.3, chunk_size=8, look_ahead=4)


@pytest.fixture(scope="module")
def models():
    draft = BaseEngine.from_pretrained("default-draft", prefill_seq_len=T, ctx_len=CTX, name="spec")
    base = BaseEngine.from_pretrained("default-base", prefill_seq_len=T, ctx_len=CTX)
    return draft, base


@pytest.fixture(scope="module")
def host(models):
    return SpecPrefillEngine(*models, **{k: v for k, v in OPTS.items() if k not in ("prefill_seq_len", "ctx_len")})


@pytest.fixture(scope="module")
def device(models):
    draft = BaseEngine.from_pretrained("default-draft", prefill_seq_len=T, ctx_len=CTX, name="spec")
    return SpecPrefillEngine.from_pretrained(draft, base=models[1], scoring="device", **OPTS)


@pytest.fixture
def trace():
    with capture_trace() as t:
        yield t


def prompt_of(engine, n_tokens):
    """A corpus prefix that tokenizes to exactly ``n_tokens`` tokens."""
    text = corpus_text()
    for end in range(1, len(text)):
        n = len(engine.tokenizer(text[:end])["input_ids"])
        if n == n_tokens:
            return text[:end]
        if n > n_tokens:
            break
    raise AssertionError(f"no corpus prefix of {n_tokens} tokens")


PROMPT = corpus_text()[:260]


def test_host_mode_moves_queries_every_chunk_and_keys_on_the_last(host, trace):
    r = host.run(PROMPT, gen_len=3)
    cfg = host.draft.config
    window = trace.one("ttft.spec_device")
    chunks = trace.all("prefill.chunk", engine="spec")
    assert len(chunks) == r.num_chunks > 2
    for c in chunks:
        c.assert_within(window)
        trace.assert_bytes("prefill_queries", cfg.n_layers * cfg.n_heads * cfg.head_dim * 4, span=c)
    for c in chunks[:-1]:
        trace.assert_bytes("past_key", 0, span=c)
    cache_bytes = cfg.n_layers * host.draft.cache_slots * cfg.n_kv_heads * cfg.head_dim * 4
    trace.assert_bytes("past_key", cache_bytes, span=chunks[-1])
    trace.assert_bytes("past_key", cache_bytes, span=window)           # nowhere else in the pass
    for tok in trace.all("tokenize", engine="spec"):
        tok.assert_within(window)
    assert len(trace.all("tokenize", engine="spec")) == 2
    for name in ("score.assemble", "score.compute", "score.select"):
        trace.one(name).assert_within(trace.one("ttft.host_scoring"))
    trace.one("lookahead", engine="spec").assert_within(window)             # look-ahead is draft work
    row = cfg.n_layers * cfg.n_heads * cfg.head_dim * 4                     # one [L, N, H] float32
    trace.assert_bytes("prefill_queries", (r.num_chunks + host.look_ahead - 1) * row, span=window)
    assert r.anchors == host.look_ahead and len(r.tokens) == 3


def test_windows_tile_the_speculative_ttft(host, trace):
    r = host.run(PROMPT, gen_len=2)
    spec, scoring, pruned = (trace.one(n) for n in ("ttft.spec_device", "ttft.host_scoring", "ttft.base_pruned"))
    trace.assert_no_overlap(spec, scoring, pruned, trace.one("ttft.baseline"))
    trace.assert_before(spec, scoring)
    trace.assert_before(scoring, pruned)
    assert r.ttft_spec_device_s == spec.duration_ns / 1e9
    assert r.ttft_host_scoring_s == scoring.duration_ns / 1e9
    assert r.ttft_base_pruned_only_s == pruned.duration_ns / 1e9
    assert r.ttft_baseline_s == trace.one("ttft.baseline").duration_ns / 1e9
    assert r.ttft_speculative_s == pytest.approx(r.ttft_spec_device_s + r.ttft_host_scoring_s
                                                 + r.ttft_base_pruned_only_s, abs=1e-12)
    assert r.ttft_spec_only_s == pytest.approx(r.ttft_spec_device_s + r.ttft_host_scoring_s, abs=1e-12)
    parts = r.t_assemble_s + r.t_score_s + r.t_select_s
    assert 0 < parts <= r.ttft_host_scoring_s
    assert r.t_score_s == trace.one("score.compute").duration_ns / 1e9
    # Same prompt, same chunking: spec and base agree on num_chunks.
    assert len(trace.all("prefill.chunk", engine="base", within=trace.one("ttft.baseline"))) == r.num_chunks
    assert len(trace.all("prefill.chunk", engine="base", within=pruned)) == r.num_chunks_pruned
    assert r.padded_len == r.num_chunks * T and r.padded_len_pruned == r.num_chunks_pruned * T
    assert r.kept_tokens == len(r.kept_indices) and set(r.ttft()) == set(TTFT_FIELDS)


def test_device_mode_brings_back_only_indices(device, trace):
    r = device.run(PROMPT, gen_len=2)
    spec = trace.one("ttft.spec_device")
    trace.assert_bytes("prefill_queries", 0)
    trace.assert_bytes("past_key", 0, span=spec)
    trace.assert_bytes("logits", 0, span=spec)  # the draft's logits feed the look-ahead on the device
    scoring = trace.one("ttft.host_scoring")
    [copy_back] = [t for t in trace.transfers if t.span is not None and t.span.name == "score.select"]
    assert copy_back.category == "other" and copy_back.direction == "d2h"
    # A fixed-size index vector (bounded by the cache, so one compilation) plus the count.
    bound = scoring_mod.max_kept_tokens(device.draft.cache_slots, device.chunk_size, device.keep)
    assert trace.bytes(None, span=scoring) == copy_back.nbytes == 4 * (bound + 1)
    assert r.kept_tokens == len(r.kept_indices) and r.kept_indices[-1] == r.prompt_tokens - 1


def test_host_and_device_keep_the_float64_reference_indices(host, device):
    rh = host.run(PROMPT, gen_len=0, baseline=False)
    anchors, n = rh.anchor_queries, rh.prompt_tokens
    keys = np.asarray(host.draft.cache.stacked_keys(n))                    # [L, S, K, H], prompt slots
    rd = device.run(PROMPT, gen_len=0, baseline=False)
    np.testing.assert_allclose(np.asarray(rd.anchor_queries), anchors, rtol=1e-5, atol=1e-6)
    ref_scores = reference_scores(anchors, keys, host.pool_kernel)
    ref_idx = reference_select(ref_scores, host.keep, host.chunk_size)
    assert_same_selection(rh.kept_indices, ref_idx, ref_scores, host.keep, host.chunk_size)
    assert_same_selection(rd.kept_indices, ref_idx, ref_scores, host.keep, host.chunk_size)
    assert_same_selection(rd.kept_indices, rh.kept_indices, ref_scores, host.keep, host.chunk_size)
    assert len(rh.kept_indices) < n                                        # something was pruned


def test_an_eos_in_the_look_ahead_cuts_the_anchors_in_both_modes(models):
    # Device mode queues scoring behind the look-ahead with every anchor before the host sees the
    # tokens; an EOS among the fed tokens means scoring again with the anchors before it.
    import dataclasses

    draft, base = models
    pre = draft.prefill(PROMPT, window=None)
    fed = draft.decode(pre, 4, window=None).tokens[:-1]                    # the 3 look-ahead inputs
    # The first fed token that appears there for the first time, latest first (this tiny random
    # model repeats one token: then 0, no look-ahead anchor left at all).
    cut = max(i for i in range(len(fed)) if fed[i] not in fed[:i])
    saved = draft.config
    try:
        draft.config = dataclasses.replace(saved, eos_token_id=int(fed[cut]))
        opts = dict(keep=0.3, chunk_size=8, look_ahead=4)
        rh = SpecPrefillEngine(draft, base, **opts).run(PROMPT, gen_len=0, baseline=False)
        rd = SpecPrefillEngine(draft, base, scoring="device", **opts).run(PROMPT, gen_len=0, baseline=False)
    finally:
        draft.config = saved
    assert rh.anchors == rd.anchors == 1 + cut
    np.testing.assert_allclose(np.asarray(rd.anchor_queries), rh.anchor_queries, rtol=1e-5, atol=1e-6)
    keys = np.asarray(draft.cache.stacked_keys(rh.prompt_tokens))          # [L, S, K, H]
    ref_scores = reference_scores(rh.anchor_queries, keys, 13)
    ref_idx = reference_select(ref_scores, 0.3, 8)
    assert_same_selection(rd.kept_indices, ref_idx, ref_scores, 0.3, 8)
    assert_same_selection(rh.kept_indices, ref_idx, ref_scores, 0.3, 8)


def test_keep_one_gives_the_full_prefill_logits(models):
    eng = SpecPrefillEngine(*models, keep=1.0, chunk_size=8, look_ahead=2)
    r = eng.run(PROMPT, gen_len=0)
    assert r.kept_indices.tolist() == list(range(r.prompt_tokens))
    np.testing.assert_allclose(r.logits, r.baseline_logits, rtol=1e-6, atol=1e-6)


def test_pruned_after_full_equals_fresh_engine_and_no_cache_reference(host):
    warm = host.run(PROMPT, gen_len=4, baseline=True)                      # full prefill first
    fresh = SpecPrefillEngine.from_pretrained("default-draft", base="default-base", **OPTS).run(
        PROMPT, gen_len=4, baseline=False)
    assert warm.kept_indices.tolist() == fresh.kept_indices.tolist()
    np.testing.assert_allclose(warm.logits, fresh.logits, rtol=1e-5, atol=1e-5)
    assert warm.tokens.tolist() == fresh.tokens.tolist()
    # Independent of any cache: a plain forward over the kept tokens at their original positions.
    ids = host.base.tokenizer(PROMPT)["input_ids"]
    kept = warm.kept_indices
    want = host.base.forward_logits(np.asarray(ids)[kept], kept)[-1]
    np.testing.assert_allclose(warm.logits, want, rtol=1e-4, atol=1e-4)
    # Decoding continues at the original prompt length: teacher-force the generated tokens.
    seq_ids = np.concatenate([np.asarray(ids)[kept], warm.tokens[:-1]])
    seq_pos = np.concatenate([kept, np.arange(warm.prompt_tokens, warm.prompt_tokens + len(warm.tokens) - 1)])
    forced = host.base.forward_logits(seq_ids, seq_pos)[len(kept) - 1:].argmax(-1)
    assert forced.tolist() == warm.tokens.tolist()


def test_anchor_is_the_last_real_token_not_the_pad_slot(models):
    draft, base = models
    n = 3 * T + 1                                                          # final chunk: 1 real token, 15 pads
    prompt = prompt_of(draft, n)
    r = SpecPrefillEngine(draft, base, keep=0.5, chunk_size=8, look_ahead=1).run(prompt, gen_len=0, baseline=False)
    assert r.prompt_tokens == n and r.num_chunks == 4 and r.anchors == 1
    # One-shot forward over the whole prompt in one chunk: the query at row n - 1.
    ids = np.asarray(draft.tokenizer(prompt)["input_ids"], np.int32)
    one = 64
    tokens = np.zeros((1, one), np.int32)
    tokens[0, :n] = ids
    positions = np.full((1, one), -1, np.int32)
    positions[0, :n] = np.arange(n)
    fn = draft.chunk_fn(return_queries=True)

    def query_at(row):
        cache = allocate_cache(draft.config, batch=1, slots=one, dtype=draft.dtype, device=draft.device)
        return np.asarray(fn(draft.params, cache, jnp.asarray(np.stack([tokens, positions])), np.int32(row))[2][:, 0])

    np.testing.assert_allclose(r.anchor_queries[0], query_at(n - 1), rtol=1e-4, atol=1e-5)
    assert not np.allclose(r.anchor_queries[0], query_at(one - 1), atol=1e-2)  # QEfficient's pad slot


def test_layer_subset_moves_fewer_query_bytes(models, trace):
    eng = SpecPrefillEngine(*models, keep=0.3, chunk_size=8, look_ahead=2, layers="last1")
    r = eng.run(PROMPT, gen_len=0, baseline=False)
    cfg = eng.draft.config
    for c in trace.all("prefill.chunk", engine="spec"):
        trace.assert_bytes("prefill_queries", cfg.n_heads * cfg.head_dim * 4, span=c)
    assert r.anchor_queries.shape == (2, 1, cfg.n_heads, cfg.head_dim)


def test_debug_prints_chunk_line_and_io_table(host, capfd):
    from spectrace import tracer

    tracer.configure(debug=True)
    r = host.run(PROMPT, gen_len=0, baseline=False)
    err = capfd.readouterr().err
    assert f"[spec:prefill] chunks={r.num_chunks} total=" in err
    assert f"[spec:prefill] chunks={r.num_chunks_pruned} total=" in err
    assert "ttft.spec_device" in err and "prefill_queries" in err and "past_key" in err


@pytest.mark.parametrize("kwargs,name", [
    (dict(keep=0.0), "keep"), (dict(keep=1.01), "keep"), (dict(keep=-0.5), "keep"),
    (dict(chunk_size=0), "chunk_size"), (dict(look_ahead=0), "look_ahead"), (dict(scoring="gpu"), "scoring"),
    (dict(layers="first"), "layers"),
])
def test_bad_options_name_the_parameter(kwargs, name):
    args = dict(OPTS, base="default-base") | kwargs
    with pytest.raises(ValueError, match=name):
        SpecPrefillEngine.from_pretrained("default-draft", **args)


def test_bad_prompts_name_the_parameter(host):
    with pytest.raises(ValueError, match="prompt"):
        host.run("")
    long = " ".join(corpus_text().split()[:400])
    with pytest.raises(ValueError, match="prompt.*ctx_len"):
        host.run(long, baseline=False)
    with pytest.raises(ValueError, match="gen_len"):
        host.run(PROMPT, gen_len=-1)


def test_disagreeing_tokenizers_are_refused(models):
    draft, base = models
    other = copy.copy(draft)
    other.tokenizer = copy.deepcopy(draft.tokenizer)
    other.tokenizer.add_tokens(["<|draft-only|>"])
    with pytest.raises(ValueError, match="tokenizers disagree"):
        SpecPrefillEngine(other, base)
    short = copy.copy(base)
    short.prefill_seq_len = 2 * T
    with pytest.raises(ValueError, match="prefill_seq_len"):
        SpecPrefillEngine(draft, short)
