"""Small seeded checkpoints that the engine is checked against Hugging Face transformers with.

``scripts/make_reference.py`` writes each model here, runs it through ``transformers``'
``LlamaForCausalLM`` (PyTorch, float32) and stores the logits in ``tests/engines/data/reference.npz``;
the tests regenerate the same checkpoints (numpy PCG64: identical bytes everywhere) and compare
without PyTorch. :func:`weights_digest` guards against the generator drifting from the stored
reference.

Together the models cover grouped-query and multi-query attention, tied and untied embeddings,
llama3 and linear RoPE scaling, and ``head_dim != dim / n_heads``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from spectrace.engines.checkpoint import hf_state_dict, save_checkpoint
from spectrace.engines.config import LlamaConfig, RopeScaling
from spectrace.engines.params import init_params_numpy
from spectrace.engines.tokenizer import save_embedded_tokenizer

REFERENCE_MODELS: dict[str, tuple[LlamaConfig, int]] = {
    # GQA (4 query heads on 2 KV heads), tied embeddings, llama3 RoPE whose bands all matter at
    # these lengths (original context 32), head_dim 24 while dim / n_heads = 16.
    "gqa_tied_llama3": (LlamaConfig(
        vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=24, ffn_dim=96,
        rms_eps=1e-5, rope_theta=10000.0,
        rope_scaling=RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position=32),
        tie_embeddings=True, max_position=256, bos_token_id=0, eos_token_id=1), 11),
    # Multi-query (6 query heads on 1 KV head), untied LM head, plain RoPE, 3 layers, eps 1e-6.
    "mqa_untied": (LlamaConfig(
        vocab_size=128, dim=48, n_layers=3, n_heads=6, n_kv_heads=1, head_dim=8, ffn_dim=80,
        rms_eps=1e-6, rope_theta=10000.0, rope_scaling=None, tie_embeddings=False, max_position=256,
        bos_token_id=0, eos_token_id=1), 12),
    # Multi-head (K = N), linear RoPE scaling, head_dim 32 with dim / n_heads = 8.
    "mha_linear": (LlamaConfig(
        vocab_size=101, dim=32, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=32, ffn_dim=64,
        rms_eps=1e-5, rope_theta=500000.0, rope_scaling=RopeScaling("linear", factor=2.0),
        tie_embeddings=False, max_position=256, bos_token_id=0, eos_token_id=1), 13),
}

# The token sequences the reference logits are taken at (ids < every model's vocab).
SEQ_LEN = 40


def reference_inputs(cfg: LlamaConfig, seed: int) -> dict[str, np.ndarray]:
    """ids [SEQ_LEN]; a pruned subset of them with their original (gapped) positions."""
    rng = np.random.default_rng(seed + 1000)
    ids = rng.integers(2, cfg.vocab_size, SEQ_LEN).astype(np.int64)
    keep = np.sort(rng.choice(SEQ_LEN - 1, size=SEQ_LEN // 2, replace=False))
    keep = np.append(keep, SEQ_LEN - 1)  # the last token is always kept
    return {"ids": ids, "pruned_positions": keep.astype(np.int64), "pruned_ids": ids[keep]}


def write_reference_model(name: str, dest: str | Path, *, max_shard_bytes: int | None = None) -> Path:
    """Write model ``name`` as a checkpoint directory (with the embedded tokenizer) at ``dest``."""
    cfg, seed = REFERENCE_MODELS[name]
    dest = Path(dest)
    save_checkpoint(dest, cfg, init_params_numpy(cfg, seed), max_shard_bytes=max_shard_bytes)
    save_embedded_tokenizer(dest)
    return dest


def weights_digest(name: str) -> str:
    """sha256 over the model's tensors (name, shape, bytes): changes iff the generator's output does."""
    cfg, seed = REFERENCE_MODELS[name]
    h = hashlib.sha256()
    for key, value in sorted(hf_state_dict(init_params_numpy(cfg, seed), cfg).items()):
        h.update(key.encode())
        h.update(str(value.shape).encode())
        h.update(np.ascontiguousarray(value, np.float32).tobytes())
    return h.hexdigest()
