"""Invariants of the base engine (MaxText's habit): chunked = one-shot, pruned = full forward with
the same position ids, cached decode = teacher forcing, every implementation switch = the default.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectrace.engines import BaseEngine, EngineOptions, LlamaConfig, RopeScaling, model
from spectrace.engines.params import init_params
from spectrace.tracer.testing import capture_trace

CFG = LlamaConfig(vocab_size=211, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, head_dim=16, ffn_dim=96,
                  rope_theta=10000.0, rope_scaling=RopeScaling("llama3", original_max_position=16),
                  tie_embeddings=False)
ATOL = 2e-5


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, 7, np.float32, jax.devices()[0])


@pytest.fixture(scope="module")
def make(params):
    def make(prefill_seq_len, ctx_len=96, cfg=CFG, **switches):
        return BaseEngine(cfg, params, None, prefill_seq_len=prefill_seq_len, ctx_len=ctx_len,
                          device=jax.devices()[0], options=EngineOptions(**switches))
    return make


def ids_of(n, seed=0):
    return np.random.default_rng(seed).integers(3, CFG.vocab_size, n).astype(np.int32)


@pytest.mark.parametrize("psl", [4, 7, 16])
def test_chunked_prefill_equals_one_shot(make, psl):
    one_shot, chunked = make(64), make(psl)
    for n in (2 * psl, 2 * psl + 1, 3 * psl, 3 * psl + 1):
        ids = ids_of(n, seed=n)
        ref = one_shot.prefill_from_ids(ids, np.arange(n), return_queries=True)
        ref_keys = np.asarray(one_shot.cache_keys())
        got = chunked.prefill_from_ids(ids, np.arange(n), return_queries=True)
        assert (got.num_chunks, got.padded_len) == (-(n // -psl), -(n // -psl) * psl)
        np.testing.assert_allclose(got.logits, ref.logits, atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(got.queries), np.asarray(ref.queries), atol=ATOL)
        keys = np.asarray(chunked.cache_keys())
        assert keys.shape == (CFG.n_layers, n, CFG.n_kv_heads, CFG.head_dim)
        np.testing.assert_allclose(keys, ref_keys, atol=ATOL)


def test_fitted_last_chunk_computes_less_and_the_same_logits(make):
    # prefill_seq_len 256: a 300-token prompt is chunks of 256 and 44 real tokens; "fit" runs the
    # tail as 128 rows (FIT_MULTIPLE), "full" as 256 (QEfficient's fixed shape).
    fit, full = make(256, ctx_len=512), make(256, ctx_len=512, last_chunk="full")
    ids = ids_of(300, seed=5)
    a = fit.prefill_from_ids(ids, np.arange(300), return_queries=True)
    b = full.prefill_from_ids(ids, np.arange(300), return_queries=True)
    assert (a.num_chunks, a.padded_len) == (2, 256 + 128)
    assert (b.num_chunks, b.padded_len) == (2, 512)
    np.testing.assert_allclose(a.logits, b.logits, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(a.queries), np.asarray(b.queries), atol=ATOL)
    np.testing.assert_allclose(a.logits, fit.forward_logits(ids)[-1], atol=ATOL, rtol=1e-5)
    # decode continues from the fitted cache as from the full one
    assert list(fit.decode(a, 4, window=None).tokens) == list(full.decode(b, 4, window=None).tokens)


def test_pruned_prefill_equals_full_forward_with_positions(make):
    engine = make(8)
    full_ids = ids_of(40, seed=3)
    keep = np.array([0, 1, 2, 5, 6, 9, 13, 14, 15, 21, 22, 23, 30, 33, 39])
    expected = engine.forward_logits(full_ids[keep], keep)[-1]
    engine.prefill_from_ids(full_ids, np.arange(40))  # a full prompt before must not leak into the next
    pruned = engine.prefill_from_ids(full_ids[keep], keep)
    assert (pruned.num_chunks, pruned.next_position, pruned.cache_len) == (2, 40, len(keep))
    np.testing.assert_allclose(pruned.logits, expected, atol=ATOL, rtol=1e-5)
    # and it differs from the unpruned prompt's logits: the positions and the missing tokens matter
    assert np.abs(pruned.logits - engine.forward_logits(full_ids)[-1]).max() > 1e-3


def test_continue_cache_equals_one_shot(make):
    engine = make(8)
    ids = ids_of(27, seed=4)
    first = engine.prefill_from_ids(ids[:11], np.arange(11))
    assert first.cache_len == 11
    second = engine.prefill_from_ids(ids[11:], np.arange(11, 27), continue_cache=True)
    assert second.cache_len == 27 and second.next_position == 27
    np.testing.assert_allclose(second.logits, engine.forward_logits(ids)[-1], atol=ATOL, rtol=1e-5)


def test_continue_cache_refuses_positions_not_after_the_cached_ones(make):
    # Chunk attention takes "earlier slot" for "earlier position"; a continuation that goes back
    # would silently attend wrongly, so it is refused, also after a decode moved the position on.
    engine = make(8)
    ids = ids_of(20, seed=6)
    first = engine.prefill_from_ids(ids[:11], np.arange(11))
    with pytest.raises(ValueError, match=r"continuing the cache at position 5: the cache already holds "
                                         r"positions up to 10"):
        engine.prefill_from_ids(ids[11:14], np.arange(5, 8), continue_cache=True)
    engine.decode(first, 4, window=None)  # feeds positions 11..13
    with pytest.raises(ValueError, match="at position 12: the cache already holds positions up to 13"):
        engine.prefill_from_ids(ids[11:14], np.arange(12, 15), continue_cache=True)
    assert engine.prefill_from_ids(ids[11:14], np.arange(14, 17), continue_cache=True).next_position == 17


def teacher_forced(engine, ids, positions, generated):
    """Greedy tokens a full forward predicts when fed the prompt plus the generated tokens."""
    start = positions[-1] + 1
    all_ids = np.concatenate([ids, generated[:-1]])
    all_pos = np.concatenate([positions, np.arange(start, start + len(generated) - 1)])
    logits = engine.forward_logits(all_ids, all_pos)[len(ids) - 1:]
    return logits.argmax(-1)


@pytest.mark.parametrize("pruned", [False, True], ids=["full", "pruned"])
def test_scan_decode_equals_python_decode_equals_teacher_forcing(make, pruned):
    ids = ids_of(21, seed=5)
    positions = np.arange(21)
    if pruned:
        keep = np.array([0, 3, 4, 8, 12, 13, 20])
        ids, positions = ids[keep], positions[keep]
    scan, python = make(8), make(8, decode="python")
    by_scan = scan.decode(scan.prefill_from_ids(ids, positions), 12)
    by_python = python.decode(python.prefill_from_ids(ids, positions), 12)
    assert by_scan.tokens.shape == (12,) and by_scan.steps == 11
    np.testing.assert_array_equal(by_scan.tokens, by_python.tokens)
    np.testing.assert_array_equal(by_scan.tokens, teacher_forced(scan, ids, positions, by_scan.tokens))


VARIANTS = [dict(decode="python"), dict(prefill="python"), dict(qkv="separate"), dict(attention="vmap"),
            dict(attention="batched"), dict(mlp="epilogue"),
            dict(decode="python", prefill="python", qkv="separate", attention="vmap")]


@pytest.mark.parametrize("switches", VARIANTS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_switch_gives_the_same_logits_and_tokens(make, switches):
    ids = ids_of(19, seed=6)
    default, variant = make(8), make(8, **switches)
    ref = default.prefill_from_ids(ids, np.arange(19), return_queries=True)
    got = variant.prefill_from_ids(ids, np.arange(19), return_queries=True)
    np.testing.assert_allclose(got.logits, ref.logits, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got.queries), np.asarray(ref.queries), atol=ATOL)
    np.testing.assert_allclose(np.asarray(variant.cache_keys()), np.asarray(default.cache_keys()), atol=ATOL)
    a, b = default.decode(ref, 6, return_queries=True), variant.decode(got, 6, return_queries=True)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(np.asarray(a.queries), np.asarray(b.queries), atol=ATOL)


def _rope_np(x, pos, cfg):
    from spectrace.engines.model import rope_inv_freq

    ang = pos * rope_inv_freq(cfg).astype(np.float64)
    cos, sin = np.cos(np.concatenate([ang, ang])), np.sin(np.concatenate([ang, ang]))
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], -1) * sin


def test_queries_and_keys_are_post_rope_values_of_real_tokens(make, params):
    """Layer 0's query/key of a token, recomputed in numpy from the weights (independent of the model code)."""
    engine = make(8, qkv="separate")
    ids = ids_of(13, seed=8)
    positions = np.array([0, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 17])  # last chunk: 5 real + 3 padding
    result = engine.prefill_from_ids(ids, positions, return_queries=True)
    assert result.queries.shape == (CFG.n_layers, CFG.n_heads, CFG.head_dim)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    x = p["embed"][ids]                                                       # [P, D]
    h = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + CFG.rms_eps) * p["layers"]["attn_norm"][0]
    q_last = np.einsum("D,DNH->NH", h[-1], p["layers"]["wq"][0])
    np.testing.assert_allclose(np.asarray(result.queries[0]), _rope_np(q_last, 17, CFG), atol=1e-4)
    keys = np.asarray(engine.cache_keys())                                    # [L, P, K, H]
    k0 = np.einsum("PD,DKH->PKH", h, p["layers"]["wk"][0])
    expected = np.stack([_rope_np(k0[i], positions[i], CFG) for i in range(len(ids))])
    np.testing.assert_allclose(keys[0], expected, atol=1e-4)


def test_decode_returns_lookahead_queries(make):
    engine = make(8)
    result = engine.prefill_from_ids(ids_of(9), np.arange(9), return_queries=True)
    out = engine.decode(result, 8, return_queries=True)
    assert out.queries.shape == (7, CFG.n_layers, CFG.n_heads, CFG.head_dim)
    assert engine.cache_keys().shape[1] == 9 + 7
    assert engine.cache_keys(9).shape == (CFG.n_layers, 9, CFG.n_kv_heads, CFG.head_dim)


@pytest.mark.parametrize("n", [2, 8])
@pytest.mark.parametrize("decode", ["scan", "python"])
def test_a_lookahead_without_its_last_token_feeds_the_same_tokens_queries_and_cache(make, n, decode):
    # last_token=False (the speculative look-ahead): the last step feeds its token for its queries
    # and cache entries only, with no LM head; the fed tokens, their queries and the cache are
    # those of the whole loop, and the token after the last step is simply not made. Two
    # engines, so that the cache compared was written by its own decode alone.
    ids = ids_of(9)
    full, lean = make(8, decode=decode), make(8, decode=decode)
    want = full.decode(full.prefill_from_ids(ids, np.arange(9), return_queries=True), n, return_queries=True)
    got = lean.decode(lean.prefill_from_ids(ids, np.arange(9), return_queries=True), n, return_queries=True,
                      last_token=False)
    np.testing.assert_array_equal(got.tokens, want.tokens[:-1])
    assert len(got.tokens) == n - 1 == got.steps and want.steps == n - 1
    np.testing.assert_allclose(np.asarray(got.queries), np.asarray(want.queries), atol=ATOL)
    np.testing.assert_allclose(np.asarray(lean.cache_keys()), np.asarray(full.cache_keys()), atol=ATOL)
    assert lean._cache_len == full._cache_len == 9 + n - 1
    # The queries-only step has no LM head: no value of shape [.., V] (tensor<1xVxf32>: a step's logits).
    def step_hlo(queries_only):
        fn = functools.partial(model.decode_step, cfg=CFG, opts=lean.options, return_queries=True,
                               queries_only=queries_only)
        return jax.jit(fn).lower(lean.params, lean.cache, jnp.zeros((1,), jnp.int32),
                                 jnp.zeros((1,), jnp.int32)).as_text()
    assert f"x{CFG.vocab_size}x" in step_hlo(False) and f"x{CFG.vocab_size}x" not in step_hlo(True)
    with pytest.raises(ValueError, match="last_token=False needs return_queries=True and max_new_tokens >= 2, "
                                         "got return_queries=False, max_new_tokens=3"):
        lean.decode(got.prefill, 3, last_token=False)


def test_a_decode_queued_behind_the_last_chunk_equals_a_decode_after_it(make):
    # queue_decode from on_last_dispatch (the speculative engine's look-ahead) runs the same loop
    # on the same cache as decode() after the prefill: same tokens, queries and bookkeeping.
    engine = make(8)
    ids = ids_of(19)
    after = engine.prefill_from_ids(ids, np.arange(19), return_queries=True)
    want = engine.decode(after, 5, return_queries=True)
    want_len = engine._cache_len
    queued = {}

    def queue(logits, next_position):
        assert next_position == 19
        queued["loop"] = engine.queue_decode(logits, next_position, 4, return_queries=True)

    ahead = engine.prefill_from_ids(ids, np.arange(19), return_queries=True, on_last_dispatch=queue)
    got = engine.decode(ahead, 5, return_queries=True, queued=queued["loop"])
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(np.asarray(got.queries), np.asarray(want.queries), atol=ATOL)
    assert engine._cache_len == want_len == 19 + 4
    with pytest.raises(ValueError, match="max_new_tokens=3, last_token=True: the queued loop has 4 steps"):
        engine.decode(ahead, 3, queued=queued["loop"])
    with pytest.raises(ValueError, match="the queued loop has 4 steps, last_token=True"):
        engine.decode(ahead, 5, return_queries=True, queued=queued["loop"], last_token=False)
    with pytest.raises(ValueError, match="last_token=False needs return_queries=True and steps >= 1, got "
                                         "return_queries=True, steps=0"):
        engine.queue_decode(ahead.last_logits, 19, 0, return_queries=True, last_token=False)


def test_a_queued_prefill_of_device_inputs_equals_prefill_from_ids(make):
    # queue_prefill (the speculative engine's pruned base chunk, queued behind device scoring):
    # the chunk's inputs are made on the device with more padding rows than prefill_from_ids
    # would fit (the bound on the kept count, not the count); padding sits at position -1, so
    # the logits, the cache and decoding from it are the same.
    engine = make(64, ctx_len=96)
    kept = np.array([0, 3, 4, 9, 17, 18, 30, 31, 40], np.int32)               # gapped original positions
    ids = ids_of(41)[kept]
    engine.prefill_from_ids(ids_of(5), np.arange(5))                           # the cache exists
    want = engine.prefill_from_ids(ids, kept)
    want_dec = engine.decode(want, 4)
    want_keys = np.asarray(engine.cache_keys(len(kept)))
    R = 48                                                                     # > the fitted 9 -> 9 rows here
    inputs = np.stack([np.full((1, R), 1, np.int32), np.full((1, R), -1, np.int32)])  # [2, 1, R]
    inputs[0, 0, :len(kept)], inputs[1, 0, :len(kept)] = ids, kept
    queued = engine.queue_prefill(jnp.asarray(inputs))
    with capture_trace() as t:
        got = engine.prefill_from_ids(ids, kept, queued=queued)
    np.testing.assert_allclose(got.logits, want.logits, atol=ATOL)
    assert got.padded_len == R and got.next_position == 41 and got.cache_len == len(kept)
    np.testing.assert_allclose(np.asarray(engine.cache_keys(len(kept))), want_keys, atol=ATOL)
    np.testing.assert_array_equal(engine.decode(got, 4).tokens, want_dec.tokens)
    bind, chunk = t.one("bind"), t.one("prefill.chunk")
    assert bind["queued"] is True and chunk["queued"] is True and chunk["chunk.tokens"] == len(kept)
    t.assert_bytes("other", 0, span=bind)                                      # nothing placed: made on the device
    # A queued prefill is consumed once, right after it was dispatched, for the tokens it holds.
    with pytest.raises(RuntimeError, match="queued prefill is stale"):
        engine.prefill_from_ids(ids, kept, queued=queued)
    queued = engine.queue_prefill(jnp.asarray(inputs))
    with pytest.raises(ValueError, match="do not match the queued chunk of 48 rows"):
        engine.prefill_from_ids(ids_of(49), np.arange(49), queued=queued)
    with pytest.raises(ValueError, match="65 rows do not fit one chunk of prefill_seq_len=64"):
        engine.queue_prefill(jnp.zeros((2, 1, 65), jnp.int32))


@pytest.mark.parametrize("norm_kernel", [False, True])
def test_decode_with_two_row_projections_gives_the_same_tokens_and_queries(make, monkeypatch, kernels_on_cpu,
                                                                            norm_kernel):
    # On GPU a decode step feeds small projections two identical rows (models.common.gemm_rows:
    # XLA would make the one-row dot a slow reduce); here the same path is forced on the CPU.
    # With the fused norm's and RoPE's kernels, the norm writes the QKV's row twice and reads the
    # out projection's doubled product (fused_norm.add_rms_norm(copies=)): neither a concatenate
    # of the stream's row nor a slice of the product is left to XLA.
    from spectrace.engines import fused_norm, model, rope_cache
    from spectrace.engines.models import common

    if norm_kernel:  # the kernels take power-of-two sizes, RoPE's a head of 32 or more
        kernels_on_cpu(fused_norm, rope_cache)
        cfg = dataclasses.replace(CFG, dim=64, n_heads=8, head_dim=32)
        engine = BaseEngine(cfg, init_params(cfg, 7, np.float32, jax.devices()[0]), None, prefill_seq_len=8,
                            ctx_len=96, device=jax.devices()[0], options=EngineOptions())
    else:
        engine = make(8)
    D = engine.config.dim
    monkeypatch.setattr(common, "LM_HEAD_MIN_WEIGHT", 0)  # this model's head is tiny: double it too
    out = {}
    for backends in ((), ("cpu", "gpu")):
        monkeypatch.setattr(common, "GEMM_ROWS_BACKENDS", backends)
        jax.clear_caches()  # the compiled steps were traced under the other setting
        result = engine.prefill_from_ids(ids_of(9), np.arange(9), return_queries=True)
        out[backends] = engine.decode(result, 6, return_queries=True)
        hlo = model.decode_step_jit.lower(engine.params, engine.cache, np.zeros(1, np.int32), np.zeros(1, np.int32),
                                          cfg=engine.config, opts=engine.options, return_queries=False).as_text()
        assert (f"tensor<1x2x{D}xf32>" in hlo) == bool(backends)  # the doubled [B, 2, D] row
        ops = [line for line in hlo.splitlines() if "stablehlo.concatenate" in line or "stablehlo.slice" in line]
        doubled = [op for op in ops if f"tensor<1x2x{D}xf32>" in op]              # concatenated or sliced [B, 2, D]
        head = 2 if backends else 0                                                # the LM head's row, doubled and taken
        assert len(doubled) == head + (0 if norm_kernel or not backends else 2 * CFG.n_layers), doubled
    jax.clear_caches()
    np.testing.assert_array_equal(out[()].tokens, out[("cpu", "gpu")].tokens)
    np.testing.assert_allclose(np.asarray(out[()].queries), np.asarray(out[("cpu", "gpu")].queries), atol=ATOL)
    # The chunk's LM head takes the same doubled row (models.common.lm_head_rows): same logits.
    np.testing.assert_allclose(out[()].prefill.logits, out[("cpu", "gpu")].prefill.logits, atol=ATOL)


def test_lm_head_takes_two_rows_only_from_a_large_head(monkeypatch):
    # The 8B's head (525M elements) gains as two rows; the 1B's (263M) did not (docs/performance.md).
    from spectrace.engines.models import common

    monkeypatch.setattr(common, "GEMM_ROWS_BACKENDS", [jax.default_backend()])
    x = jnp.ones((1, 1, 8), jnp.float32)
    assert common.lm_head_rows(x, 128256 * 4096).shape == (1, 2, 8)
    assert common.lm_head_rows(x, 128256 * 2048).shape == (1, 1, 8)
    monkeypatch.setattr(common, "GEMM_ROWS_BACKENDS", [])
    assert common.lm_head_rows(x, 128256 * 4096).shape == (1, 1, 8)  # only where XLA rewrites one row


@pytest.mark.parametrize("ctx_len", [128, 130])
def test_fitted_cache_holds_every_split_of_a_full_context(make, ctx_len):
    # With fitted last chunks the cache is ctx_len rounded up to 128, plus 128 (not whole
    # prefill_seq_len chunks): every prefill, continued or not, and decoding to ctx_len fit.
    engine = make(1024, ctx_len=ctx_len)
    assert engine.cache_slots == -(ctx_len // -128) * 128 + 128 < 1024
    assert make(1024, ctx_len=ctx_len, last_chunk="full").cache_slots == 1024
    ids = ids_of(ctx_len, seed=3)
    for split in (1, ctx_len // 2, ctx_len - 2):
        engine.prefill_from_ids(ids[:split], np.arange(split))
        second = engine.prefill_from_ids(ids[split:ctx_len - 1], np.arange(split, ctx_len - 1), continue_cache=True)
        np.testing.assert_allclose(second.logits, engine.forward_logits(ids[:ctx_len - 1])[-1], atol=ATOL, rtol=1e-5)
        assert engine.decode(second, 2).tokens.shape == (2,)  # the last slot of ctx_len


def test_chunk_fn_contract(make, params):
    engine = make(8)
    fn = engine.chunk_fn(return_queries=True)
    from spectrace.engines.cache import allocate_cache

    cache = allocate_cache(CFG, batch=1, slots=16, dtype=np.float32, device=jax.devices()[0])
    tokens = ids_of(8)[None]
    positions = np.array([[0, 1, 2, 3, 4, -1, -1, -1]], np.int32)
    logits, cache, q = fn(engine.params, cache, np.stack([tokens, positions]))  # its last real row: 4
    assert logits.shape == (1, CFG.vocab_size) and q.shape == (CFG.n_layers, 1, CFG.n_heads, CFG.head_dim)
    assert int(cache.length) == 5
    np.testing.assert_allclose(np.asarray(logits[0]), engine.forward_logits(tokens[0, :5])[-1], atol=ATOL)


# ---- errors -----------------------------------------------------------------------------------
def test_prompt_longer_than_ctx_len_is_refused(make):
    engine = make(8, ctx_len=20)
    with pytest.raises(ValueError, match=r"21 tokens, more than ctx_len=20"):
        engine.prefill_from_ids(ids_of(21), np.arange(21))
    engine.prefill_from_ids(ids_of(15), np.arange(15))
    with pytest.raises(ValueError, match=r"on top of 15 cached.*ctx_len=20"):
        engine.prefill_from_ids(ids_of(6), np.arange(15, 21), continue_cache=True)


def test_decode_past_ctx_len_is_refused(make):
    engine = make(8, ctx_len=20)
    result = engine.prefill_from_ids(ids_of(15), np.arange(15))
    with pytest.raises(ValueError, match=r"max_new_tokens=7 does not fit.*ctx_len=20"):
        engine.decode(result, 7)
    assert engine.decode(result, 6).tokens.shape == (6,)


def test_bad_inputs_are_refused(make):
    engine = make(8)
    with pytest.raises(ValueError, match="ids is empty"):
        engine.prefill_from_ids([], [])
    with pytest.raises(ValueError, match="strictly increasing"):
        engine.prefill_from_ids([5, 6, 7], [0, 2, 1])
    with pytest.raises(ValueError, match=r"vocab_size=211"):
        engine.prefill_from_ids([5, 211], [0, 1])
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        engine.decode(engine.prefill_from_ids([5], [0]), 0)
    stale = engine.prefill_from_ids([5, 6], [0, 1])
    engine.prefill_from_ids([7], [0])
    with pytest.raises(RuntimeError, match="no longer holds this prefill"):
        engine.decode(stale, 2)
    with pytest.raises(ValueError, match="prefill_seq_len=0"):
        make(0)
    with pytest.raises(ValueError, match=r"EngineOptions.decode='fast'"):
        make(8, decode="fast")


def test_config_validation():
    with pytest.raises(ValueError, match="n_heads=6 must be a multiple of n_kv_heads=4"):
        dataclasses.replace(CFG, n_kv_heads=4)
    with pytest.raises(ValueError, match="rope_type='yarn'"):
        RopeScaling("yarn")
