"""The base engine's instrumentation, checked with the project's own trace assertions."""

from __future__ import annotations

import numpy as np
import pytest

from spectrace import tracer
from spectrace.engines import BaseEngine
from spectrace.engines.tokenizer import corpus_text
from spectrace.tracer.testing import capture_trace

PROMPT = corpus_text()[:300]


@pytest.fixture(scope="module")
def engine(spectrace_cache):
    engine = BaseEngine.from_pretrained("default-draft", prefill_seq_len=32, ctx_len=160, cache_dir=spectrace_cache)
    engine.generate(PROMPT, 4)  # compile outside the traced runs
    return engine


def test_prefill_spans_transfers_and_attributes(engine):
    with capture_trace() as trace:
        result = engine.prefill(PROMPT)
    V, n, C = engine.config.vocab_size, result.prompt_tokens, result.num_chunks
    assert C == -(n // -32) >= 2
    window = trace.one("ttft.baseline")
    window.assert_attr({"gen_ai.request.model": "default-draft", "gen_ai.usage.input_tokens": n, "engine": "base"})
    boot = trace.one("tokenize", stage="bootstrap").assert_within(window)
    trace.one("tokenize", stage="max_length").assert_within(window)
    bind = trace.one("bind").assert_within(window)
    boot.assert_before(bind)
    chunks = window.all("prefill.chunk")
    assert [c["chunk.index"] for c in chunks] == list(range(C))
    assert sum(c["chunk.tokens"] for c in chunks) == n
    assert all(c["engine"] == "base" for c in chunks)
    assert chunks[-1]["chunk.tokens"] == n - 32 * (C - 1)
    trace.assert_no_overlap(*chunks)
    bind.assert_before(chunks[0])
    # inputs go over once, in bind: ids and positions (int32, C*T each) as one array per chunk
    bind.assert_bytes("other", 4 * 2 * C * 32)
    assert [a.shape for a in result.device_inputs] == [(2, 1, 32)] * (C - 1) + [(2, 1, result.padded_len - 32 * (C - 1))]
    # the last token's logits come back once, float32 [1, V], inside the last chunk
    chunks[-1].assert_bytes("logits", 4 * V)
    for c in chunks[:-1]:
        c.assert_bytes("logits", 0)
    window.assert_bytes("logits", 4 * V)
    logits_copies = [t for t in trace.transfers if t.category == "logits"]
    assert len(logits_copies) == 1 and logits_copies[0].direction == "d2h"
    assert tracer.io_metrics()["categories"]["logits"]["bytes"] == 4 * V
    assert result.logits.shape == (V,) and result.logits.dtype == np.float32


def test_decode_window(engine):
    with capture_trace() as trace:
        engine.decode(engine.prefill(PROMPT), 6)
    decode = trace.one("decode")
    decode.assert_attr({"gen_ai.usage.output_tokens": 6, "engine": "base"})
    assert decode["decode.tokens_per_s"] > 0
    trace.one("ttft.baseline").assert_before(decode)
    # the start position goes in (4 bytes), the 6 tokens come back once (int32)
    d2h = [t for t in decode.transfers if t.direction == "d2h"]
    assert [t.nbytes for t in d2h] == [6 * 4]


def test_prompt_text_is_never_recorded(engine):
    with capture_trace() as trace:
        engine.generate(PROMPT, 2)
    words = {w for w in PROMPT.split() if len(w) > 4}
    for span in trace.spans:
        for value in span.attributes.values():
            assert not (isinstance(value, str) and any(w in value for w in words)), (span.name, value)


def test_engine_name_and_window_are_configurable(engine):
    engine.name = "spec"
    try:
        with capture_trace() as trace, tracer.window("ttft.spec_device"):
            ids = engine.tokenizer(PROMPT)["input_ids"]
            engine.prefill_from_ids(ids, np.arange(len(ids)), window=None)
    finally:
        engine.name = "base"
    window = trace.one("ttft.spec_device")
    for c in window.all("prefill.chunk"):
        assert c["engine"] == "spec"
    trace.one("bind").assert_attr({"gen_ai.usage.input_tokens": len(ids), "engine": "spec"})
    trace.assert_count("ttft.baseline", 0)


def test_on_chunk_sees_each_chunk_inside_its_span(engine):
    seen = []

    def on_chunk(index, q_rows):
        with tracer.transfer("prefill_queries", "d2h", q_rows.nbytes):
            seen.append((index, np.asarray(q_rows).shape))

    with capture_trace() as trace:
        result = engine.prefill(PROMPT, return_queries=True, on_chunk=on_chunk)
    cfg = engine.config
    assert seen == [(i, (cfg.n_layers, cfg.n_heads, cfg.head_dim)) for i in range(result.num_chunks)]
    for c in trace.all("prefill.chunk"):
        c.assert_bytes("prefill_queries", 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim)


def test_to_host_waits_for_the_device_before_it_times_the_copy(monkeypatch):
    # A d2h transfer times the copy only: the array is waited for outside the transfer, so a
    # read-back at the end of a device program does not report that program as copy time.
    import jax
    import jax.numpy as jnp

    from spectrace.engines import base

    order = []
    wait, transfer = base.jax.block_until_ready, base.tracer.transfer
    monkeypatch.setattr(base.jax, "block_until_ready", lambda x: (order.append("wait"), wait(x))[1])
    monkeypatch.setattr(base.tracer, "transfer", lambda *a, **k: (order.append("copy"), transfer(*a, **k))[1])
    x = jnp.arange(6, dtype=jnp.float32) * 2
    with capture_trace() as trace:
        with tracer.span("outer"):
            got = base.to_host(x, "past_key.3_RetainedState")
    np.testing.assert_array_equal(got, np.arange(6) * 2)
    assert order == ["wait", "copy"]
    io = trace.one("outer").io_of("past_key")
    assert (io.bytes, io.count) == (24, 1)
    assert isinstance(got, np.ndarray) and not isinstance(got, jax.Array)
