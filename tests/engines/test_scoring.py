"""SpecPrefill scoring: host (numpy) and device (jax) against a float64 reference with loops.

The reference below is written from the algorithm's description, not from engines.scoring, so
a shared misreading would have to be made twice.
"""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import pytest

from spectrace.engines.speculative import scoring


def reference_scores(queries, keys, pool_kernel):
    """Token scores [S] in float64: queries [A, L, N, H], keys [L, S, K, H]."""
    queries = np.asarray(queries, np.float64)
    keys = np.asarray(keys, np.float64)
    A, L, N, H = queries.shape
    S, K = keys.shape[1], keys.shape[2]
    group = N // K
    per_anchor = np.full((A, S), -np.inf)
    for a in range(A):
        for l in range(L):
            for n in range(N):
                kv = n // group
                logits = np.array([queries[a, l, n] @ keys[l, s, kv] for s in range(S)]) / math.sqrt(H)
                probs = np.exp(logits - logits.max())
                probs /= probs.sum()
                pooled = np.zeros(S)
                for i in range(S):
                    total = 0.0
                    for j in range(i - pool_kernel // 2, i - pool_kernel // 2 + pool_kernel):
                        if 0 <= j < S:  # zero padding outside the prompt
                            total += probs[j]
                    pooled[i] = total / pool_kernel
                per_anchor[a] = np.maximum(per_anchor[a], pooled)
    return per_anchor.mean(axis=0)


def reference_chunks(scores, chunk_size):
    chunks = [scores[i:i + chunk_size] for i in range(0, len(scores), chunk_size)]
    return np.array([c.mean() for c in chunks])


def reference_select(scores, keep, chunk_size):
    chunk_scores = reference_chunks(scores, chunk_size)
    n = len(chunk_scores)
    n_keep = max(1, math.ceil(round(n * keep, 9)))
    order = sorted(range(n), key=lambda c: (-chunk_scores[c], c))
    kept = set()
    for c in order[:n_keep]:
        kept.update(range(c * chunk_size, min((c + 1) * chunk_size, len(scores))))
    kept.add(len(scores) - 1)
    return np.array(sorted(kept))


def assert_same_selection(got, want, ref_scores, keep, chunk_size, rtol=1e-4):
    """Equal index sets, except that chunks tied with the cut-off (within rtol) may swap."""
    got, want = set(np.asarray(got).tolist()), set(np.asarray(want).tolist())
    if got == want:
        return
    chunk_scores = reference_chunks(ref_scores, chunk_size)
    n_keep = max(1, math.ceil(round(len(chunk_scores) * keep, 9)))
    cutoff = np.sort(chunk_scores)[::-1][n_keep - 1]
    last = len(ref_scores) - 1
    for tok in got ^ want:
        if tok == last:
            raise AssertionError(f"last token {last} must always be kept")
        c = tok // chunk_size
        assert abs(chunk_scores[c] - cutoff) <= rtol * abs(cutoff), (
            f"token {tok} (chunk {c}, score {chunk_scores[c]:.6g}) differs, cut-off {cutoff:.6g}")
    assert len(got) == len(want)


def make_inputs(rng, A, L, N, K, H, S):
    # A peaked key set makes the attention (and the selection) non-trivial.
    q = rng.standard_normal((A, L, N, H)).astype(np.float32)
    k = rng.standard_normal((L, S, K, H)).astype(np.float32)
    k[:, rng.choice(S, size=max(1, S // 10), replace=False)] *= 3.0
    return q, k


CASES = [
    # A, L, N, K, H, S, keep, chunk, kernel
    (1, 2, 4, 4, 8, 64, 0.25, 32, 13),    # MHA, S a multiple of 32
    (3, 3, 8, 2, 16, 77, 0.34, 32, 13),   # GQA 4:1, S not a multiple of 32, A > 1
    (8, 2, 4, 1, 8, 150, 0.10, 32, 13),   # MQA, look-ahead 8 anchors, partial last chunk
    (2, 2, 6, 3, 4, 45, 0.5, 8, 4),       # even kernel, small chunks
    (2, 1, 2, 1, 4, 5, 1.0, 32, 13),      # prompt shorter than the kernel and one chunk
    (2, 2, 4, 2, 8, 100, 0.2, 7, 1),      # no pooling
]


@pytest.mark.parametrize("A,L,N,K,H,S,keep,chunk,kernel", CASES)
def test_host_and_device_match_float64_reference(A, L, N, K, H, S, keep, chunk, kernel):
    import jax.numpy as jnp

    rng = np.random.default_rng(S * 31 + A)
    q, k = make_inputs(rng, A, L, N, K, H, S)
    ref_scores = reference_scores(q, k, kernel)
    ref_idx = reference_select(ref_scores, keep, chunk)

    qh, kh = scoring.assemble(list(q), k, S)
    host_scores = scoring.compute(qh, kh, pool_kernel=kernel)
    np.testing.assert_allclose(host_scores, ref_scores, rtol=2e-4, atol=1e-7)
    host_idx = scoring.select(host_scores, keep=keep, chunk_size=chunk)
    assert host_idx.dtype == np.int32 and np.all(np.diff(host_idx) > 0)
    assert_same_selection(host_idx, ref_idx, ref_scores, keep, chunk)

    # Device: the cache is longer than the prompt (garbage past it) and stored "LKSH".
    s_cache = S + 19
    cache = rng.standard_normal((L, K, s_cache, H)).astype(np.float32) * 5
    cache[:, :, :S] = np.transpose(k, (0, 2, 1, 3))
    idx, count = scoring.score_device(jnp.asarray(q), jnp.asarray(cache), S, keep=keep,
                                      chunk_size=chunk, pool_kernel=kernel, key_layout="LKSH")
    idx, count = np.asarray(idx), int(count)
    assert idx.shape == (scoring.max_kept_tokens(s_cache, chunk, keep),)
    assert np.all(idx[count:] == -1)
    assert_same_selection(idx[:count], ref_idx, ref_scores, keep, chunk)
    assert_same_selection(idx[:count], host_idx, ref_scores, keep, chunk)


@pytest.mark.parametrize("layers,expect", [("all", slice(0, 6)), ("last4", slice(2, 6)), ("last1", slice(5, 6))])
def test_layer_subsets_use_only_those_layers(layers, expect):
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    q, k = make_inputs(rng, 2, 6, 4, 2, 8, 90)
    ref_scores = reference_scores(q[:, expect], k[expect], 13)
    ref_idx = reference_select(ref_scores, 0.3, 16)
    host = scoring.score_host(list(q), k, 90, keep=0.3, chunk_size=16, layers=layers)
    assert_same_selection(host, ref_idx, ref_scores, 0.3, 16)
    idx, count = scoring.score_device(jnp.asarray(q), jnp.asarray(k), 90, keep=0.3, chunk_size=16, layers=layers)
    assert_same_selection(np.asarray(idx)[:int(count)], ref_idx, ref_scores, 0.3, 16)


def test_assemble_takes_per_layer_keys_and_cuts_to_the_prompt():
    rng = np.random.default_rng(0)
    per_layer = [rng.standard_normal((2, 40, 8)).astype(np.float16) for _ in range(3)]  # [K, S_cache, H]
    anchors = [rng.standard_normal((3, 4, 8)).astype(np.float32) for _ in range(2)]       # [L, N, H]
    q, k = scoring.assemble(anchors, per_layer, 33, key_layout="LKSH", layers="last4")
    assert q.shape == (2, 3, 4, 8) and q.dtype == np.float32
    assert k.shape == (3, 33, 2, 8) and k.dtype == np.float32
    np.testing.assert_array_equal(k[1, 5, 1], per_layer[1][1, 5].astype(np.float32))


def test_kept_chunk_count_is_ceil_without_float_overshoot():
    assert scoring.num_kept_chunks(30 * 32, 32, 0.1) == 3          # 30 * 0.1 = 3.0000000000000004
    assert scoring.num_kept_chunks(31 * 32, 32, 0.1) == 4
    assert scoring.num_kept_chunks(10741, 32, 0.1) == 34            # 336 chunks
    assert scoring.num_kept_chunks(5, 32, 0.01) == 1
    assert scoring.max_kept_tokens(10, 32, 0.1) == 10


def test_last_token_always_kept_even_in_a_dropped_chunk():
    scores = np.zeros(70, np.float32)
    scores[:32] = 1.0                                               # chunk 0 wins, chunk 2 (64..69) loses
    idx = scoring.select(scores, keep=0.2, chunk_size=32)
    assert idx.tolist() == list(range(32)) + [69]


@pytest.mark.parametrize("kwargs,name", [
    (dict(keep=0.0), "keep"), (dict(keep=1.5), "keep"), (dict(chunk_size=0), "chunk_size"),
    (dict(pool_kernel=0), "pool_kernel"), (dict(layers="first2"), "layers"),
])
def test_validate_names_the_parameter(kwargs, name):
    args = dict(keep=0.1, chunk_size=32, pool_kernel=13, layers="all") | kwargs
    with pytest.raises(ValueError, match=name):
        scoring.validate(**args)


@pytest.mark.parametrize("kernel", [13, 4, 1])
def test_pooling_equals_the_reference_avg_pool1d(kernel):
    """The published worker pools with F.avg_pool1d(kernel_size=k, padding=k // 2, stride=1).

    The expected scores were computed with PyTorch by scripts/make_pool_reference.py.
    """
    ref = np.load(Path(__file__).parent / "data" / "avg_pool1d.npz")
    q, k, want = ref[f"k{kernel}/q"], ref[f"k{kernel}/k"], ref[f"k{kernel}/scores"]
    got = scoring.compute(q, k, pool_kernel=kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
