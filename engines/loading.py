"""Where an engine's weights come from: a checkpoint directory, a preset, or seeded random weights.

A mixin of :class:`~spectrace.engines.base.BaseEngine` (its own module, as decoding is): the
constructors pick the device group, the dtype and the options, and place the weights where the
engine runs them (split tensor-parallel over a group, never whole on one device of it).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

from spectrace.engines.config import EngineOptions
from spectrace.engines.host import _default_dtype, _device_group, _placement


class LoadMixin:
    """``from_pretrained`` and ``from_config``: build the engine class they are called on."""

    @classmethod
    def from_pretrained(cls, path_or_preset: str | Path, *, prefill_seq_len: int, ctx_len: int, dtype=None,
                        devices=None, options: EngineOptions | None = None, name: str = "base",
                        seed: int = 0, cache_dir: str | Path | None = None, **switches):
        """Load a Hugging Face checkpoint directory (Llama, Gemma 2, Gemma 3) or a preset (``engines.PRESET_NAMES``).

        ``dtype``: default float32 on CPU, bfloat16 on accelerators. ``devices``: one device (or
        a one-element list; default the first JAX device), or several: the weights are split
        tensor-parallel over a mesh of them (``engines.sharding``). ``switches`` (``decode``, ``prefill``,
        ``qkv``, ``attention``) override fields of ``options``. ``seed`` seeds random presets.
        """
        from dataclasses import replace

        from spectrace.engines.checkpoint import load_weights, read_config
        from spectrace.engines.presets import resolve
        from spectrace.engines.tokenizer import load_tokenizer

        group = _device_group(devices)
        dtype = _default_dtype(group[0]) if dtype is None else jnp.dtype(dtype)
        options = replace(options or EngineOptions(), **switches)
        source = resolve(path_or_preset, cache_dir=cache_dir)
        tokenizer = load_tokenizer(source.tokenizer_path)
        if source.path is None:
            return cls.from_config(source.config, tokenizer, prefill_seq_len=prefill_seq_len, ctx_len=ctx_len,
                                   dtype=dtype, devices=group, options=options, name=name, seed=seed,
                                   model_name=source.name)
        cfg = read_config(source.path)
        params = load_weights(source.path, cfg, dtype=dtype, device=_placement(group, cfg))
        device = group[0] if len(group) == 1 else group
        return cls(cfg, params, tokenizer, prefill_seq_len=prefill_seq_len, ctx_len=ctx_len, device=device,
                   options=options, name=name, model_name=source.name)

    @classmethod
    def from_config(cls, cfg, tokenizer=None, *, prefill_seq_len: int, ctx_len: int, dtype=None,
                    devices=None, options: EngineOptions | None = None, name: str = "base", seed: int = 0,
                    model_name: str = "random", **switches):
        """An engine with seeded random weights generated on the device (benchmarks, shrunk test configs).

        ``tokenizer`` may be None when only the ``*_from_ids`` methods are used.
        """
        from dataclasses import replace

        from spectrace.engines.params import init_params

        group = _device_group(devices)
        dtype = _default_dtype(group[0]) if dtype is None else jnp.dtype(dtype)
        params = init_params(cfg, seed, dtype, _placement(group, cfg))
        device = group[0] if len(group) == 1 else group
        return cls(cfg, params, tokenizer, prefill_seq_len=prefill_seq_len, ctx_len=ctx_len, device=device,
                   options=replace(options or EngineOptions(), **switches), name=name, model_name=model_name)
