"""Named models: real Llama and Gemma 3 shapes with seeded random weights, and the embedded pairs.

Random-weight presets exist so benchmarks need no download: timing depends on shapes, not on
values. Their weights are generated on the device in the target dtype; they use the embedded
tokenizer (its ids are all below any preset's vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spectrace.engines.config import LlamaConfig, RopeScaling
from spectrace.engines.models.gemma_config import GemmaConfig, gemma3_layer_types

_LLAMA31_ROPE = RopeScaling(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position=8192)
_LLAMA32_ROPE = RopeScaling(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position=8192)

# Shapes from Meta's published config.json files.
RANDOM_PRESETS: dict[str, LlamaConfig] = {
    "llama-3.1-8b": LlamaConfig(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                                head_dim=128, ffn_dim=14336, rms_eps=1e-5, rope_theta=500000.0,
                                rope_scaling=_LLAMA31_ROPE, tie_embeddings=False, max_position=131072,
                                bos_token_id=128000, eos_token_id=128001),
    "llama-3.1-70b": LlamaConfig(vocab_size=128256, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                                 head_dim=128, ffn_dim=28672, rms_eps=1e-5, rope_theta=500000.0,
                                 rope_scaling=_LLAMA31_ROPE, tie_embeddings=False, max_position=131072,
                                 bos_token_id=128000, eos_token_id=128001),
    "llama-3.2-1b": LlamaConfig(vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                                head_dim=64, ffn_dim=8192, rms_eps=1e-5, rope_theta=500000.0,
                                rope_scaling=_LLAMA32_ROPE, tie_embeddings=True, max_position=131072,
                                bos_token_id=128000, eos_token_id=128001),
}


def _gemma3(vocab, dim, layers, heads, kv, ffn, window, max_position, scaling=None) -> GemmaConfig:
    return GemmaConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv, head_dim=256,
                       ffn_dim=ffn, layer_types=gemma3_layer_types(layers), sliding_window=window,
                       query_pre_attn_scalar=256, model_type="gemma3_text", rms_eps=1e-6, rope_theta=1_000_000.0,
                       rope_local_theta=10_000.0, rope_scaling=scaling, max_position=max_position,
                       bos_token_id=2, eos_token_id=1)


# Gemma 3 text towers, shapes from Google's config.json files (the 4B and 12B are the language
# models of Gemma3ForConditionalGeneration: vocab 262208, linear RoPE scaling 8 on full layers).
_LINEAR8 = RopeScaling(rope_type="linear", factor=8.0)
RANDOM_PRESETS.update({
    "gemma-3-1b": _gemma3(262144, 1152, 26, 4, 1, 6912, 512, 32768),
    "gemma-3-4b": _gemma3(262208, 2560, 34, 8, 4, 10240, 1024, 131072, _LINEAR8),
    "gemma-3-12b": _gemma3(262208, 3840, 48, 16, 8, 15360, 1024, 131072, _LINEAR8),
})
DEFAULT_PRESETS = ("default-base", "default-draft")
# The embedded Gemma pair (engines.defaults.GEMMA_*): checkpoint directories like the default pair.
GEMMA_TINY_PRESETS = ("gemma-tiny-base", "gemma-tiny-draft")
PRESET_NAMES = (*DEFAULT_PRESETS, *GEMMA_TINY_PRESETS, *RANDOM_PRESETS)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a checkpoint directory, or a random-weight config (``path`` None).

    ``tokenizer_path`` is the directory whose tokenizer files to load.
    """

    name: str
    path: Path | None
    config: LlamaConfig | GemmaConfig | None
    tokenizer_path: Path


def resolve(path_or_preset: str | Path, *, cache_dir: str | Path | None = None) -> ModelSource:
    """Turn a preset name or a checkpoint path into a :class:`ModelSource`."""
    from spectrace.engines.defaults import default_pair

    key = str(path_or_preset)
    if key in DEFAULT_PRESETS:
        draft, base = default_pair(cache_dir)
        path = base if key == "default-base" else draft
        return ModelSource(key, path, None, path)
    if key in GEMMA_TINY_PRESETS:
        draft, base = default_pair(cache_dir, family="gemma")
        path = base if key == "gemma-tiny-base" else draft
        return ModelSource(key, path, None, path)
    if key in RANDOM_PRESETS:
        _, base = default_pair(cache_dir)
        return ModelSource(key, None, RANDOM_PRESETS[key], base)
    path = Path(path_or_preset).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{key!r} is neither a checkpoint directory nor a preset; "
                                f"presets: {list(PRESET_NAMES)}")
    return ModelSource(path.name or key, path, None, path)
