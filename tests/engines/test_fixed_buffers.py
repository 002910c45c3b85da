"""Chunks at fixed device addresses (engines.fixed_buffers): the same results, every buffer of a
chunk call in place from one request to the next, and the lifetime rule it costs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from spectrace.engines.base import BaseEngine
from spectrace.engines.defaults import DEFAULT_BASE
from spectrace.engines.fixed_buffers import enabled


def _engine(monkeypatch, fixed: bool) -> BaseEngine:
    monkeypatch.setenv("SPECTRACE_FIXED_BUFFERS", "base" if fixed else "")
    return BaseEngine.from_config(DEFAULT_BASE, prefill_seq_len=64, ctx_len=160, dtype=np.float32)


def _prompts():
    rng = np.random.default_rng(5)
    return [rng.integers(2, 2000, size=n).astype(np.int32) for n in (40, 40, 100, 40, 100)]


def test_the_switch_names_engines(monkeypatch):
    monkeypatch.setenv("SPECTRACE_FIXED_BUFFERS", "spec, base")
    assert enabled("spec") and enabled("base")
    monkeypatch.setenv("SPECTRACE_FIXED_BUFFERS", "")
    assert not enabled("spec")
    monkeypatch.setenv("SPECTRACE_FIXED_BUFFERS", "sepc")
    with pytest.raises(ValueError, match="SPECTRACE_FIXED_BUFFERS='sepc': unknown engine 'sepc'"):
        enabled("spec")


def test_fixed_buffers_compute_the_same_logits_queries_and_tokens(monkeypatch):
    plain, fixed = _engine(monkeypatch, False), _engine(monkeypatch, True)
    assert plain.fixed is None and fixed.fixed is not None
    for ids in _prompts():  # one and two chunks, repeated: the kept arrays are reused
        a = plain.prefill_from_ids(ids, np.arange(len(ids)), return_queries=True)
        b = fixed.prefill_from_ids(ids, np.arange(len(ids)), return_queries=True)
        np.testing.assert_array_equal(a.logits, b.logits)
        np.testing.assert_array_equal(np.asarray(a.queries), np.asarray(b.queries))
        np.testing.assert_array_equal(plain.decode(a, 4, window=None).tokens, fixed.decode(b, 4, window=None).tokens)


def test_a_chunks_inputs_and_outputs_keep_their_addresses(monkeypatch):
    engine = _engine(monkeypatch, True)

    def addresses(result):
        return [x.unsafe_buffer_pointer() for x in (*result.device_inputs, result.last_logits)]
    one, two = _prompts()[0], _prompts()[2]                                         # one chunk, two chunks
    held = [engine.prefill_from_ids(ids, np.arange(len(ids)), return_queries=True) for ids in (one, two)]
    seen = {}
    for ids in (one, two, one, two):  # the first call of each shape had nothing kept
        before = held.pop(0)
        r = engine.prefill_from_ids(ids, np.arange(len(ids)), return_queries=True)
        seen.setdefault(len(ids), []).append(addresses(r))
        held.append(r)
        del before
    for runs in seen.values():
        assert runs[0] == runs[1]
    # Without it a request's copies and outputs are new arrays, in new buffers while the earlier
    # results hold theirs, as they were held above.
    plain = _engine(monkeypatch, False)
    held = [plain.prefill_from_ids(ids, np.arange(len(ids))) for ids in (one, one, one)]
    assert len({tuple(addresses(r)) for r in held}) == len(held)


def test_the_speculative_draft_runs_request_after_request_at_fixed_addresses(monkeypatch):
    # The switch's intended use: the draft's device arrays are read only within a request
    # (look-ahead, scoring, the queued pruned chunk), so deleting them at the next one is safe.
    from spectrace.engines.speculative import SpecPrefillEngine
    from spectrace.engines.tokenizer import exact_prompt

    results = {}
    for flag in ("", "spec"):
        monkeypatch.setenv("SPECTRACE_FIXED_BUFFERS", flag)
        spec = SpecPrefillEngine.from_pretrained("default-draft", base="default-base", prefill_seq_len=256,
                                                 ctx_len=700, keep=0.1, scoring="device")
        assert (spec.draft.fixed is not None) == bool(flag) and spec.base.fixed is None
        prompt = exact_prompt(spec.base.tokenizer, 600)
        results[flag] = [spec.run(prompt, gen_len=3, baseline=False) for _ in range(3)]
    for a, b in zip(results[""], results["spec"]):
        np.testing.assert_array_equal(a.kept_indices, b.kept_indices)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.logits, b.logits)


def test_a_kept_array_is_deleted_when_its_chunk_runs_again(monkeypatch):
    # The price (the module docstring): results' device arrays live until the same chunk runs again.
    engine = _engine(monkeypatch, True)
    ids = _prompts()[0]
    engine.prefill_from_ids(ids, np.arange(len(ids)))
    old = engine.prefill_from_ids(ids, np.arange(len(ids)))
    engine.prefill_from_ids(ids, np.arange(len(ids)))
    with pytest.raises(RuntimeError, match="deleted"):
        jax.block_until_ready(old.last_logits + 0)
