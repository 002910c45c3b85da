"""Small seeded checkpoints that the engine is checked against Hugging Face transformers with.

``scripts/make_reference.py`` writes each Llama model here, runs it through ``transformers``'
``LlamaForCausalLM`` (PyTorch, float32) and stores the logits in ``tests/engines/data/reference.npz``;
``scripts/make_gemma_reference.py`` does the same for :data:`GEMMA_REFERENCE_MODELS` with
``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM`` into ``gemma_reference.npz``. The tests regenerate
the same checkpoints (numpy PCG64: identical bytes everywhere) and compare without PyTorch.
:func:`weights_digest` guards against the generator drifting from the stored reference.

Together the Llama models cover grouped-query and multi-query attention, tied and untied
embeddings, llama3 and linear RoPE scaling, and ``head_dim != dim / n_heads``. The Gemma models
cover both families, sliding windows shorter than the prompt and than a prefill chunk (16),
full layers first and last, Gemma 3's QK-norm and two RoPE bases with linear scaling on full
layers only, Gemma 2's attention and final soft-capping, soft-capping on Gemma 3, MQA and GQA,
``head_dim != dim / n_heads`` and ``query_pre_attn_scalar != head_dim``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from spectrace.engines.checkpoint import hf_state_dict, save_checkpoint
from spectrace.engines.config import LlamaConfig, RopeScaling
from spectrace.engines.models.gemma_config import FULL, SLIDING, GemmaConfig, gemma2_layer_types, gemma3_layer_types
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

GEMMA_REFERENCE_MODELS: dict[str, tuple[GemmaConfig, int]] = {
    # Gemma 3: MQA, head_dim 32 while dim / n_heads = 16, layers s s F s s (pattern 3), window 5,
    # full layers on rope_theta 1000 with linear scaling 4, sliding ones on 10000; no soft-caps.
    "gemma3_mqa_window5": (GemmaConfig(
        vocab_size=113, dim=64, n_layers=5, n_heads=4, n_kv_heads=1, head_dim=32, ffn_dim=96,
        layer_types=gemma3_layer_types(5, pattern=3), sliding_window=5, query_pre_attn_scalar=20.0,
        model_type="gemma3_text", rms_eps=1e-6, rope_theta=1000.0, rope_local_theta=10000.0,
        rope_scaling=RopeScaling("linear", factor=4.0), max_position=256, bos_token_id=0, eos_token_id=1), 21),
    # Gemma 3 with explicit layer_types F s s F, GQA, window 3, a final soft-cap, one RoPE base.
    "gemma3_gqa_window3": (GemmaConfig(
        vocab_size=89, dim=64, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=80,
        layer_types=(FULL, SLIDING, SLIDING, FULL), sliding_window=3, query_pre_attn_scalar=16.0,
        model_type="gemma3_text", rms_eps=1e-6, rope_theta=10000.0, rope_local_theta=10000.0,
        final_softcap=4.0, max_position=256, bos_token_id=0, eos_token_id=1), 22),
    # Gemma 2: s F s F, GQA, head_dim 24 while dim / n_heads = 12, window 6, scores soft-capped
    # at 2 and logits at 3 (tight enough that tanh bends them), no QK-norm.
    "gemma2_softcap": (GemmaConfig(
        vocab_size=101, dim=48, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=24, ffn_dim=80,
        layer_types=gemma2_layer_types(4), sliding_window=6, query_pre_attn_scalar=32.0, model_type="gemma2",
        rms_eps=1e-6, rope_theta=10000.0, rope_local_theta=10000.0, qk_norm=False, attn_softcap=2.0,
        final_softcap=3.0, max_position=256, bos_token_id=0, eos_token_id=1), 23),
}

# The token sequences the reference logits are taken at (ids < every model's vocab).
SEQ_LEN = 40
# A pruned prompt for the sliding-window rule: dropped runs of 2 and 1 (inside every window
# above, 3-6) and of 10 and 8 (past every window); the last token is kept.
GEMMA_KEEP = np.array([0, 1, 2, 3, 6, 7, 8, 19, 20, 21, 23, 26, 35, 36, 39])


def reference_inputs(cfg: LlamaConfig, seed: int) -> dict[str, np.ndarray]:
    """ids [SEQ_LEN]; a pruned subset of them with their original (gapped) positions."""
    rng = np.random.default_rng(seed + 1000)
    ids = rng.integers(2, cfg.vocab_size, SEQ_LEN).astype(np.int64)
    keep = np.sort(rng.choice(SEQ_LEN - 1, size=SEQ_LEN // 2, replace=False))
    keep = np.append(keep, SEQ_LEN - 1)  # the last token is always kept
    return {"ids": ids, "pruned_positions": keep.astype(np.int64), "pruned_ids": ids[keep]}


def gemma_reference_inputs(cfg: GemmaConfig, seed: int) -> dict[str, np.ndarray]:
    """ids [SEQ_LEN]; the kept positions :data:`GEMMA_KEEP` and their ids."""
    ids = np.random.default_rng(seed + 1000).integers(2, cfg.vocab_size, SEQ_LEN).astype(np.int64)
    return {"ids": ids, "pruned_positions": GEMMA_KEEP.astype(np.int64), "pruned_ids": ids[GEMMA_KEEP]}


def rule_masks(cfg: GemmaConfig, n: int, keep) -> dict[str, np.ndarray]:
    """The pruned-prompt rule as boolean [n, n] masks over the full prompt, per layer type:
    query q sees key k iff k is kept, ``k <= q``, and on sliding layers ``k > q - window``
    (positions are the original ones: the full prompt's indices)."""
    q, k = np.arange(n)[:, None], np.arange(n)[None, :]
    kept = np.zeros(n, bool)
    kept[np.asarray(keep)] = True
    causal = kept[None, :] & (k <= q)
    return {FULL: causal, SLIDING: causal & (k > q - cfg.sliding_window)}


def _model(name: str):
    return REFERENCE_MODELS[name] if name in REFERENCE_MODELS else GEMMA_REFERENCE_MODELS[name]


def write_reference_model(name: str, dest: str | Path, *, max_shard_bytes: int | None = None) -> Path:
    """Write model ``name`` (Llama or Gemma) as a checkpoint directory (with the embedded tokenizer) at ``dest``."""
    cfg, seed = _model(name)
    dest = Path(dest)
    save_checkpoint(dest, cfg, init_params_numpy(cfg, seed), max_shard_bytes=max_shard_bytes)
    save_embedded_tokenizer(dest)
    return dest


def weights_digest(name: str) -> str:
    """sha256 over the model's tensors (name, shape, bytes): changes iff the generator's output does."""
    cfg, seed = _model(name)
    h = hashlib.sha256()
    for key, value in sorted(hf_state_dict(init_params_numpy(cfg, seed), cfg).items()):
        h.update(key.encode())
        h.update(str(value.shape).encode())
        h.update(np.ascontiguousarray(value, np.float32).tobytes())
    return h.hexdigest()
