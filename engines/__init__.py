"""JAX inference engines that spectrace instruments: a Llama base engine (chunked prefill with a KV
cache, on-device decode) and, on top of it, the speculative-prefill engine.

Public names are re-exported here; modules stay one concept each (config, params, model, cache,
checkpoint, tokenizer, presets, defaults, base).
"""

from __future__ import annotations

from spectrace.engines.base import BaseEngine
from spectrace.engines.cache import KVCache, allocate_cache
from spectrace.engines.checkpoint import CheckpointError, load_weights, read_config, save_checkpoint
from spectrace.engines.config import EngineOptions, LlamaConfig, RopeScaling
from spectrace.engines.defaults import default_pair
from spectrace.engines.params import init_params, init_params_numpy, param_shapes, weight_bytes
from spectrace.engines.presets import PRESET_NAMES, RANDOM_PRESETS, resolve
from spectrace.engines.results import GenerateResult, PrefillResult
from spectrace.engines.spec import SpecPrefillEngine, SpecResult
from spectrace.engines.tokenizer import load_tokenizer

__all__ = [
    "BaseEngine", "CheckpointError", "EngineOptions", "GenerateResult", "KVCache", "LlamaConfig",
    "PRESET_NAMES", "PrefillResult", "RANDOM_PRESETS", "RopeScaling", "allocate_cache", "default_pair",
    "init_params", "init_params_numpy", "load_tokenizer", "load_weights", "param_shapes", "read_config",
    "resolve", "save_checkpoint", "weight_bytes", "SpecPrefillEngine", "SpecResult",
]
