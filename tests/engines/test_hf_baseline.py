"""engines.hf_baseline on CPU: the transformers model the benches time is the engine's shape and dtype."""

from __future__ import annotations

import pytest

from engines.hf_baseline import hf_model, prefill_s, timed_s
from engines.testing_models import REFERENCE_MODELS

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

CFG, _ = REFERENCE_MODELS["gqa_tied_llama3"]


def test_model_has_the_configs_shapes_dtype_and_sdpa():
    model = hf_model(CFG, "bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert model.config._attn_implementation == "sdpa"
    assert model.config.num_hidden_layers == CFG.n_layers and model.config.head_dim == CFG.head_dim
    assert model.model.embed_tokens.weight.shape == (CFG.vocab_size, CFG.dim)
    assert torch.get_default_dtype() == torch.float32  # restored after building in bfloat16


def test_same_seed_same_weights():
    a, b = hf_model(CFG, "float32", seed=3), hf_model(CFG, "float32", seed=3)
    assert torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)


def test_unsupported_dtype_is_named():
    with pytest.raises(ValueError, match=r"dtype float64; expected one of \['bfloat16', 'float16', 'float32'\]"):
        hf_model(CFG, "float64")


def test_prefill_and_timed_return_seconds():
    model = hf_model(CFG, "float32")
    ids = torch.arange(3, 40, dtype=torch.long)[None]
    assert 0 < prefill_s(model, ids) < 60
    calls = []
    assert timed_s(lambda: calls.append(1), "cpu") >= 0 and calls == [1]
