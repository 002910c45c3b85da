"""Model families the engines run, one module each: ``llama`` (Llama 3.x) and ``gemma`` (Gemma 2, Gemma 3 text).

:func:`family` picks a config's module; :data:`SUPPORTED_MODEL_TYPES` maps every config.json
``model_type`` the checkpoint reader accepts to its config class and architecture name.
"""

from __future__ import annotations

from types import ModuleType

from spectrace.engines.config import LlamaConfig
from spectrace.engines.models.gemma_config import GemmaConfig, gemma2_layer_types, gemma3_layer_types

# model_type -> (config class, the architecture name transformers gives it)
SUPPORTED_MODEL_TYPES = {
    "llama": (LlamaConfig, "LlamaForCausalLM"),
    "gemma2": (GemmaConfig, "Gemma2ForCausalLM"),
    "gemma3_text": (GemmaConfig, "Gemma3ForCausalLM"),
}


def family(cfg) -> ModuleType:
    """The module that computes ``cfg``'s layers (``cfg.family``: ``"llama"`` or ``"gemma"``)."""
    from spectrace.engines.models import gemma, llama

    modules = {"llama": llama, "gemma": gemma}
    try:
        return modules[cfg.family]
    except (AttributeError, KeyError):
        raise TypeError(f"no model family for {type(cfg).__name__}; families: {sorted(modules)}") from None


__all__ = ["GemmaConfig", "SUPPORTED_MODEL_TYPES", "family", "gemma2_layer_types", "gemma3_layer_types"]
