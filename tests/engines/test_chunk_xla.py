"""Per-program XLA options for the prefill chunks (engines.host.chunk_xla, model.chunk_jit).

On a GPU the base engine's chunks compile with cuBLAS GEMMs, not Triton's (measured in
engines.host.GPU_BASE_CHUNK_XLA's comment); here: who gets which options, the experiment
switch's parsing, that a chunk compiled with options computes the same logits, and that the
chunk programs keep the donated cache in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectrace.engines import model
from spectrace.engines.base import BaseEngine
from spectrace.engines.defaults import DEFAULT_BASE
from spectrace.engines.host import GPU_BASE_CHUNK_XLA, chunk_xla, decode_xla


def _plain_and_tuned(monkeypatch, var: str, *, ctx_len: int):
    """Two engines of the default base: built without ``$var``, and with one CPU option in it."""
    monkeypatch.delenv(var, raising=False)
    plain = BaseEngine.from_config(DEFAULT_BASE, prefill_seq_len=32, ctx_len=ctx_len, dtype=np.float32)
    monkeypatch.setenv(var, "base:xla_cpu_enable_fast_math=false")
    return plain, BaseEngine.from_config(DEFAULT_BASE, prefill_seq_len=32, ctx_len=ctx_len, dtype=np.float32)


def test_only_the_gpu_base_gets_the_default_options(monkeypatch):
    monkeypatch.delenv("SPECTRACE_CHUNK_XLA", raising=False)
    assert chunk_xla("base", "gpu") == GPU_BASE_CHUNK_XLA
    assert chunk_xla("spec", "gpu") == ()
    assert chunk_xla("base", "cpu") == ()


def test_the_switch_replaces_the_defaults_with_typed_values(monkeypatch):
    monkeypatch.setenv("SPECTRACE_CHUNK_XLA", "base:xla_a=;base:xla_b=false; spec:xla_c=3")
    assert chunk_xla("base", "gpu") == (("xla_a", ""), ("xla_b", False))
    assert chunk_xla("spec", "cpu") == (("xla_c", 3),)
    monkeypatch.setenv("SPECTRACE_CHUNK_XLA", "")
    assert chunk_xla("base", "gpu") == ()


def test_a_malformed_switch_names_itself(monkeypatch):
    monkeypatch.setenv("SPECTRACE_CHUNK_XLA", "base-xla_a")
    with pytest.raises(ValueError, match=r"SPECTRACE_CHUNK_XLA='base-xla_a': 'base-xla_a' is not engine:option=value"):
        chunk_xla("base", "gpu")


def test_a_chunk_compiled_with_options_gives_the_same_logits(monkeypatch):
    ids = np.random.default_rng(0).integers(2, 2000, size=70).astype(np.int32)
    pos = np.arange(70, dtype=np.int32)
    plain, tuned = _plain_and_tuned(monkeypatch, "SPECTRACE_CHUNK_XLA", ctx_len=96)
    assert plain.chunk_xla == () and plain.chunk_fn().func is model.chunk_forward_jit
    assert tuned.chunk_xla == (("xla_cpu_enable_fast_math", False),)
    assert tuned.chunk_fn().func is not model.chunk_forward_jit
    a = plain.prefill_from_ids(ids, pos).logits
    b = tuned.prefill_from_ids(ids, pos).logits
    assert np.max(np.abs(a - b)) / np.max(np.abs(a)) < 1e-5


def test_decode_programs_take_their_own_switch(monkeypatch):
    monkeypatch.delenv("SPECTRACE_DECODE_XLA", raising=False)
    monkeypatch.setenv("SPECTRACE_CHUNK_XLA", "base:xla_a=1")
    assert decode_xla("base", "gpu") == () and decode_xla("spec", "gpu") == ()
    monkeypatch.setenv("SPECTRACE_DECODE_XLA", "spec:xla_gpu_command_buffer_unroll_loops=true")
    assert decode_xla("spec", "gpu") == (("xla_gpu_command_buffer_unroll_loops", True),)
    assert decode_xla("base", "gpu") == ()
    monkeypatch.setenv("SPECTRACE_DECODE_XLA", "spec")
    with pytest.raises(ValueError, match=r"SPECTRACE_DECODE_XLA='spec': 'spec' is not engine:option=value"):
        decode_xla("spec", "gpu")


def test_a_decode_compiled_with_options_gives_the_same_tokens(monkeypatch):
    ids = np.random.default_rng(1).integers(2, 2000, size=40).astype(np.int32)
    pos = np.arange(40, dtype=np.int32)
    plain, tuned = _plain_and_tuned(monkeypatch, "SPECTRACE_DECODE_XLA", ctx_len=64)
    assert plain.decode_xla == () and tuned.decode_xla == (("xla_cpu_enable_fast_math", False),)
    assert model.decode_jit(tuned.decode_xla) is not model.decode_scan_jit is model.decode_jit(())
    a = plain.decode(plain.prefill_from_ids(ids, pos), 6, window=None)
    b = tuned.decode(tuned.prefill_from_ids(ids, pos), 6, window=None)
    np.testing.assert_array_equal(a.tokens, b.tokens)


def test_a_fresh_prefill_writes_the_cache_in_place():
    # The chunk programs donate the cache, and every one of its buffers comes back at its
    # address: also the slot positions and the length, which a fresh chunk overwrites without
    # reading (kept as arguments so that they alias). On a GPU a program's CUDA graph is recorded
    # with its buffers' addresses, and a moved one makes the host update the graph before its
    # launch (scripts/probe_graph_updates.py).
    engine = BaseEngine.from_config(DEFAULT_BASE, prefill_seq_len=64, ctx_len=96, dtype=np.float32)
    ids = np.random.default_rng(2).integers(2, 2000, size=48).astype(np.int32)

    def addresses():
        return [x.unsafe_buffer_pointer() for x in jax.tree_util.tree_leaves(engine.cache)]
    engine.prefill_from_ids(ids[:30], np.arange(30))
    first = addresses()
    for n in (30, 41):
        engine.prefill_from_ids(ids[:n], np.arange(n))
        assert addresses() == first
    inputs = np.stack([ids[None], np.arange(48, dtype=np.int32)[None]])           # [2, 1, 48]
    engine.queue_prefill(jnp.asarray(inputs))
    assert addresses() == first
