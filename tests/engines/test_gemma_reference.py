"""Gemma 2 and Gemma 3 through the engine against Hugging Face transformers on the same checkpoints.

The references were made by ``scripts/make_gemma_reference.py`` on the GPU machine (transformers
5.17, PyTorch 2.11, float32, TF32 off, eager attention; ``gemma_reference.npz``). This file needs
no PyTorch. Relative error = max |ours - theirs| / max |theirs|, float32, bound 1e-4 (measured:
~1e-6). The models (``engines.testing_models.GEMMA_REFERENCE_MODELS``) have sliding windows of
3, 5 and 6 tokens: shorter than the 40-token prompt and than a 16-token chunk, longer than a
4-token chunk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import rel_err

from spectrace.engines import BaseEngine
from spectrace.engines.testing_models import GEMMA_REFERENCE_MODELS, gemma_reference_inputs, weights_digest

REFERENCE = Path(__file__).parent / "data" / "gemma_reference.npz"
RTOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE))


@pytest.fixture(scope="module", params=sorted(GEMMA_REFERENCE_MODELS))
def case(request, gemma_reference_models, reference):
    name = request.param
    cfg, seed = GEMMA_REFERENCE_MODELS[name]
    assert str(reference[f"{name}/digest"]) == weights_digest(name), (
        f"engines.testing_models no longer generates the weights {REFERENCE.name} was made from; "
        "rerun scripts/make_gemma_reference.py on the GPU machine (bash scripts/gpu_gemma.sh)")
    engine = BaseEngine.from_pretrained(gemma_reference_models[name], prefill_seq_len=16, ctx_len=64)
    return name, engine, gemma_reference_inputs(cfg, seed), reference


def test_the_reference_came_from_transformers_on_the_gpu(reference):
    assert str(reference["versions/transformers"]).startswith("5.")
    assert "H200" in str(reference["versions/device"])


def test_full_forward_matches_transformers(case):
    name, engine, inputs, ref = case
    logits = engine.forward_logits(inputs["ids"])
    assert logits.shape == ref[f"{name}/logits"].shape
    assert rel_err(logits, ref[f"{name}/logits"]) <= RTOL


@pytest.mark.parametrize("psl", [16, 4])
def test_chunked_prefill_at_k_chunks_and_one_more_token(case, gemma_reference_models, psl):
    # 32 = 2 x 16 = 8 x 4 and 33 = 32 + 1 tokens (a last chunk of one real token), and all 40.
    name, engine, inputs, ref = case
    if psl != engine.prefill_seq_len:
        engine = BaseEngine.from_pretrained(gemma_reference_models[name], prefill_seq_len=psl, ctx_len=64)
    for n in (32, 33, 40):
        result = engine.prefill_from_ids(inputs["ids"][:n], np.arange(n))
        assert result.num_chunks == -(n // -psl) and result.prompt_tokens == n
        assert rel_err(result.logits, ref[f"{name}/logits"][n - 1]) <= RTOL, n


def test_pruned_prompt_follows_the_rule_as_transformers_computes_it(case):
    # transformers' rule_logits: the full prompt with the dropped tokens masked out as keys
    # (sliding layers: key > query - window in original positions), at the kept rows.
    name, engine, inputs, ref = case
    rule = ref[f"{name}/rule_logits"]
    keep = inputs["pruned_positions"]
    result = engine.prefill_from_ids(inputs["pruned_ids"], keep)
    assert result.next_position == len(inputs["ids"])
    assert rel_err(result.logits, rule[-1]) <= RTOL
    assert rel_err(engine.forward_logits(inputs["pruned_ids"], keep), rule) <= RTOL
    kept = np.zeros(len(inputs["ids"]), bool)
    kept[keep] = True
    assert rel_err(engine.forward_logits(inputs["ids"], key_mask=kept)[keep], rule) <= RTOL


def test_greedy_decode_matches_transformers_generate(case):
    name, engine, inputs, ref = case
    greedy = ref[f"{name}/greedy"]
    np.testing.assert_array_equal(greedy, ref[f"{name}/greedy_forced"])  # transformers agrees with itself
    result = engine.decode(engine.prefill_from_ids(inputs["ids"], np.arange(len(inputs["ids"]))), len(greedy))
    np.testing.assert_array_equal(result.tokens, greedy)
