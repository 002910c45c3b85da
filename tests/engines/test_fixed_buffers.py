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
    seen = []

    def addresses(result):
        return [x.unsafe_buffer_pointer() for x in (*result.device_inputs, result.last_logits)]
    for ids in _prompts()[:2] * 2:
        seen.append(addresses(engine.prefill_from_ids(ids, np.arange(len(ids)), return_queries=True)))
    assert seen[1] == seen[2] == seen[3]  # the first call has nothing kept yet
    # Without it a request's copies and outputs are new arrays, in new buffers while the earlier
    # results hold theirs.
    plain = _engine(monkeypatch, False)
    held = [plain.prefill_from_ids(ids, np.arange(len(ids))) for ids in _prompts()[:2] * 2]
    assert len({tuple(addresses(r)) for r in held}) == len(held)


def test_a_kept_array_is_deleted_when_its_chunk_runs_again(monkeypatch):
    # The price (the module docstring): results' device arrays live until the same chunk runs again.
    engine = _engine(monkeypatch, True)
    ids = _prompts()[0]
    engine.prefill_from_ids(ids, np.arange(len(ids)))
    old = engine.prefill_from_ids(ids, np.arange(len(ids)))
    engine.prefill_from_ids(ids, np.arange(len(ids)))
    with pytest.raises(RuntimeError, match="deleted"):
        jax.block_until_ready(old.last_logits + 0)
