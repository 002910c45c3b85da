"""The engine against Hugging Face transformers (PyTorch): logits from the same checkpoints.

The reference logits were made by ``scripts/make_reference.py``; this file needs no PyTorch.
Relative error = max |ours - theirs| / max |theirs|, float32, bound 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import rel_err

from spectrace.engines import BaseEngine
from spectrace.engines.testing_models import REFERENCE_MODELS, reference_inputs, weights_digest

REFERENCE = Path(__file__).parent / "data" / "reference.npz"
RTOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE))


@pytest.fixture(scope="module", params=sorted(REFERENCE_MODELS))
def case(request, reference_models, reference):
    name = request.param
    cfg, seed = REFERENCE_MODELS[name]
    assert str(reference[f"{name}/digest"]) == weights_digest(name), (
        f"engines.testing_models no longer generates the weights {REFERENCE.name} was made from; "
        "rerun scripts/make_reference.py (needs torch)")
    engine = BaseEngine.from_pretrained(reference_models[name], prefill_seq_len=16, ctx_len=64)
    return name, engine, reference_inputs(cfg, seed), reference


def test_full_forward_matches_transformers(case):
    name, engine, inputs, ref = case
    logits = engine.forward_logits(inputs["ids"])
    assert logits.shape == ref[f"{name}/logits"].shape
    assert rel_err(logits, ref[f"{name}/logits"]) <= RTOL


def test_chunked_prefill_matches_transformers(case):
    name, engine, inputs, ref = case
    n = len(inputs["ids"])  # 40 tokens: chunks of 16, 16 and 8 real + 8 padding
    result = engine.prefill_from_ids(inputs["ids"], np.arange(n))
    assert result.num_chunks == 3 and result.padded_len == 48 and result.prompt_tokens == n
    assert rel_err(result.logits, ref[f"{name}/logits"][-1]) <= RTOL


def test_pruned_prefill_matches_transformers_with_position_ids(case):
    name, engine, inputs, ref = case
    result = engine.prefill_from_ids(inputs["pruned_ids"], inputs["pruned_positions"])
    assert result.next_position == len(inputs["ids"])
    assert rel_err(result.logits, ref[f"{name}/pruned_logits"][-1]) <= RTOL
    full = engine.forward_logits(inputs["pruned_ids"], inputs["pruned_positions"])
    assert rel_err(full, ref[f"{name}/pruned_logits"]) <= RTOL


def test_greedy_decode_matches_transformers_generate(case):
    name, engine, inputs, ref = case
    greedy = ref[f"{name}/greedy"]
    result = engine.decode(engine.prefill_from_ids(inputs["ids"], np.arange(len(inputs["ids"]))), len(greedy))
    np.testing.assert_array_equal(result.tokens, greedy)
