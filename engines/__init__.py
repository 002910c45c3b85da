"""JAX inference engines that spectrace instruments: a base engine for Llama and Gemma 2 / Gemma 3
models (chunked prefill with a KV cache, on-device decode) and, on top of it, the
speculative-prefill engine.

Public names are re-exported here. The parts: ``models/`` (one module per model family, their
configs and shared pieces), ``model`` (the forward pass every family shares: cache, chunks,
decode), ``attention``, ``cache``, ``params``, ``checkpoint``, ``tokenizer``, ``presets``,
``defaults``, ``base`` (the engine); the speculative pipeline ``spec`` + ``scoring``; the
benchmarks ``bench_base``, ``bench_spec``, ``hf_baseline``; ``jobs`` / ``limits`` (the CLI's).
"""

from __future__ import annotations

from spectrace.engines.base import BaseEngine
from spectrace.engines.cache import KVCache, allocate_cache
from spectrace.engines.checkpoint import CheckpointError, load_weights, read_config, save_checkpoint
from spectrace.engines.config import EngineOptions, LlamaConfig, RopeScaling
from spectrace.engines.defaults import default_pair
from spectrace.engines.models import SUPPORTED_MODEL_TYPES, GemmaConfig
from spectrace.engines.params import init_params, init_params_numpy, param_shapes, weight_bytes
from spectrace.engines.presets import PRESET_NAMES, RANDOM_PRESETS, resolve
from spectrace.engines.results import GenerateResult, PrefillResult
from spectrace.engines.speculative.engine import SpecPrefillEngine, SpecResult
from spectrace.engines.tokenizer import load_tokenizer

__all__ = [
    "BaseEngine", "CheckpointError", "EngineOptions", "GemmaConfig", "GenerateResult", "KVCache", "LlamaConfig",
    "SUPPORTED_MODEL_TYPES",
    "PRESET_NAMES", "PrefillResult", "RANDOM_PRESETS", "RopeScaling", "allocate_cache", "default_pair",
    "init_params", "init_params_numpy", "load_tokenizer", "load_weights", "param_shapes", "read_config",
    "resolve", "save_checkpoint", "weight_bytes", "SpecPrefillEngine", "SpecResult",
]
