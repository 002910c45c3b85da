"""BaseEngine.prefill_tokenized: tokenize()'s padded output prefilled as it is, the same as the
unpadded ids through prefill_from_ids (the speculative draft's path before session 20)."""

from __future__ import annotations

import numpy as np
import pytest

from spectrace import tracer
from spectrace.engines.base import BaseEngine
from spectrace.engines.tokenizer import exact_prompt


@pytest.fixture(scope="module")
def engine():
    return BaseEngine.from_pretrained("default-draft", prefill_seq_len=128, ctx_len=400)


def test_it_computes_what_prefill_from_ids_computes(engine):
    ids, positions, num_chunks = engine.tokenize(exact_prompt(engine.tokenizer, 300))
    real = positions >= 0
    assert num_chunks == 3 and len(ids) == 3 * 128
    a = engine.prefill_from_ids(ids[real], positions[real], return_queries=True)
    b = engine.prefill_tokenized(ids, positions, num_chunks, return_queries=True)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(np.asarray(a.queries), np.asarray(b.queries))
    assert (a.prompt_tokens, a.padded_len, a.next_position) == (b.prompt_tokens, b.padded_len, b.next_position)


def test_its_bind_span_carries_the_genai_attributes(engine):
    ids, positions, num_chunks = engine.tokenize(exact_prompt(engine.tokenizer, 100))
    tracer.configure(enabled=True, exporter="none")
    with tracer.capture() as t:
        engine.prefill_tokenized(ids, positions, num_chunks)
    (bind,) = [s for s in t.spans if s.name == "bind"]
    assert bind.attributes["gen_ai.usage.input_tokens"] == 100
    assert bind.attributes["engine"] == engine.name


def test_unpadded_ids_are_refused_in_one_line(engine):
    ids, positions, num_chunks = engine.tokenize(exact_prompt(engine.tokenizer, 100))
    real = positions >= 0
    with pytest.raises(ValueError, match="num_chunks=1 chunks of 128"):
        engine.prefill_tokenized(ids[real], positions[real], num_chunks)
